//! Prometheus metrics of a role, served as text on `GET /metrics` (`delf serve ... --metrics-listen HOST:PORT`):
//! calls by method and status code, call latency histograms, shard load state and size, work in flight on
//! workers, replica failovers, worker retries and degraded answers on the coordinator. The registry, the metric
//! types and the text format (Prometheus 0.0.4) are `prometheus-client`'s; the endpoint is a hyper HTTP/1.1
//! server. Metrics are named where they are recorded and registered on first use.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::RpcError;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Label pairs in the order given.
type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter<f64, AtomicU64>>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// One registered metric family.
#[derive(Clone)]
enum Metric {
    Counter(Counters),
    Gauge(Gauges),
    Histogram(Histograms),
}

#[derive(Default)]
struct Metrics {
    registry: Registry,
    families: HashMap<&'static str, Metric>,
}

fn metrics() -> &'static Mutex<Metrics> {
    static M: OnceLock<Mutex<Metrics>> = OnceLock::new();
    M.get_or_init(Mutex::default)
}

/// The family named `name`, registered with `make` on first use; None (and a warning) if the name is taken by a
/// metric of another kind.
fn family(name: &'static str, help: &'static str, make: fn() -> Metric, same: fn(&Metric) -> bool) -> Option<Metric> {
    let mut m = metrics().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(f) = m.families.get(name) {
        return if same(f) {
            Some(f.clone())
        } else {
            tracing::warn!(name, "a metric of another kind has this name; not recorded");
            None
        };
    }
    let f = make();
    // The text encoder adds `_total` to counters.
    match &f {
        Metric::Counter(c) => m.registry.register(name.strip_suffix("_total").unwrap_or(name), help, c.clone()),
        Metric::Gauge(g) => m.registry.register(name, help, g.clone()),
        Metric::Histogram(h) => m.registry.register(name, help, h.clone()),
    }
    m.families.insert(name, f.clone());
    Some(f)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
}

fn gauge(name: &'static str, help: &'static str) -> Option<Gauges> {
    match family(name, help, || Metric::Gauge(Gauges::default()), |m| matches!(m, Metric::Gauge(_)))? {
        Metric::Gauge(g) => Some(g),
        _ => None,
    }
}

/// Adds `by` to a counter.
pub fn count(name: &'static str, help: &'static str, pairs: &[(&str, &str)], by: f64) {
    if let Some(Metric::Counter(c)) =
        family(name, help, || Metric::Counter(Counters::default()), |m| matches!(m, Metric::Counter(_)))
    {
        c.get_or_create(&labels(pairs)).inc_by(by);
    }
}

/// Sets a gauge.
pub fn set(name: &'static str, help: &'static str, pairs: &[(&str, &str)], value: f64) {
    if let Some(g) = gauge(name, help) {
        g.get_or_create(&labels(pairs)).set(value);
    }
}

/// Adds `by` (possibly negative) to a gauge.
pub fn add(name: &'static str, help: &'static str, pairs: &[(&str, &str)], by: f64) {
    if let Some(g) = gauge(name, help) {
        g.get_or_create(&labels(pairs)).inc_by(by);
    }
}

/// Records a latency.
pub fn observe(name: &'static str, help: &'static str, pairs: &[(&str, &str)], d: Duration) {
    let make = || Metric::Histogram(Histograms::new_with_constructor(latency_histogram as fn() -> Histogram));
    if let Some(Metric::Histogram(h)) = family(name, help, make, |m| matches!(m, Metric::Histogram(_))) {
        h.get_or_create(&labels(pairs)).observe(d.as_secs_f64());
    }
}

/// One finished gRPC call of `role`: its count by status code and its latency.
pub fn call(role: &str, method: &str, code: tonic::Code, started: Instant) {
    let code = format!("{code:?}");
    count(
        "delf_grpc_requests_total",
        "gRPC calls handled, by method and status code",
        &[("role", role), ("method", method), ("code", &code)],
        1.0,
    );
    observe(
        "delf_grpc_request_duration_seconds",
        "gRPC call latency, by method",
        &[("role", role), ("method", method)],
        started.elapsed(),
    );
}

/// The result's status code (OK for a success).
pub fn code_of<T>(r: &Result<T, tonic::Status>) -> tonic::Code {
    r.as_ref().map_or_else(tonic::Status::code, |_| tonic::Code::Ok)
}

/// Everything in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    let m = metrics().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry) {
        tracing::warn!(error = %e, "encoding the metrics failed");
    }
    out
}

/// Binds the metrics endpoint (so a taken port fails the role's start, not silently later).
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener, RpcError> {
    crate::addr::check_addr(listen)?;
    let bad = |e: std::io::Error| RpcError::Address { addr: listen.to_string(), reason: e.to_string() };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(bad)?;
    tracing::info!(addr = %listen, "metrics on http://{listen}/metrics");
    Ok(listener)
}

/// The answer to one HTTP request: the metrics for `GET /metrics`, 404 for anything else.
async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    let (status, content_type, body) = if request.method() == hyper::Method::GET && request.uri().path() == "/metrics" {
        (hyper::StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", render())
    } else {
        (hyper::StatusCode::NOT_FOUND, "text/plain", "only GET /metrics is served here\n".to_string())
    };
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    Ok(response)
}

/// Serves `GET /metrics` over HTTP/1.1 (hyper) until the process stops, one request per connection; anything else
/// gets 404; a connection whose request does not arrive within 5 s is dropped.
pub async fn run(listener: tokio::net::TcpListener) {
    loop {
        let Ok((socket, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(socket);
            // One request per connection (a scrape is one), closed after the answer.
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(io, hyper::service::service_fn(answer));
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "metrics connection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_help_type_buckets_sum_and_count() {
        count("delf_test_total", "a test counter", &[("role", "x"), ("code", "Ok")], 2.0);
        set("delf_test_ready", "a test gauge", &[("shard", "3")], 1.0);
        add("delf_test_ready", "a test gauge", &[("shard", "3")], 2.0);
        observe("delf_test_seconds", "a test histogram", &[("method", "Search")], Duration::from_millis(30));
        // A name taken by another kind is not recorded (and does not break the others).
        count("delf_test_ready", "not a counter", &[], 1.0);
        let text = render();
        assert!(
            text.contains("# TYPE delf_test_total counter\ndelf_test_total{role=\"x\",code=\"Ok\"} 2.0\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE delf_test_ready gauge\ndelf_test_ready{shard=\"3\"} 3.0\n"), "{text}");
        assert!(text.contains("delf_test_seconds_bucket{method=\"Search\",le=\"0.025\"} 0"), "{text}");
        assert!(text.contains("delf_test_seconds_bucket{method=\"Search\",le=\"0.05\"} 1"), "{text}");
        assert!(text.contains("delf_test_seconds_bucket{method=\"Search\",le=\"+Inf\"} 1"), "{text}");
        assert!(text.contains("delf_test_seconds_count{method=\"Search\"} 1"), "{text}");
        count("delf_test_quotes_total", "escaping", &[("a", "q\"uote")], 1.0);
        assert!(render().contains("delf_test_quotes_total{a=\"q\\\"uote\"} 1.0\n"), "{}", render());
    }

    #[tokio::test]
    async fn the_endpoint_serves_get_metrics_and_nothing_else() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        count("delf_test_served_total", "served", &[], 1.0);
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(run(listener));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            // No `Connection: close`: the server closes after one answer anyway, as scrapers expect.
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            s.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK") && ok.contains("delf_test_served_total 1.0\n"), "{ok}");
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));
    }
}
