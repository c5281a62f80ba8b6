//! Prometheus metrics of a role, served as text on `GET /metrics` (`delf serve ... --metrics-listen HOST:PORT`):
//! calls by method and status code, call latency histograms, shard load state and size, work in flight on
//! workers, replica failovers, worker retries and degraded answers on the coordinator. A small registry of its own
//! (counters, gauges, fixed-bucket histograms) in the Prometheus text format, so no metrics framework is needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::RpcError;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

type Key = (&'static str, String);

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<Key, f64>,
    gauges: BTreeMap<Key, f64>,
    histograms: BTreeMap<Key, Histogram>,
    help: BTreeMap<&'static str, (&'static str, &'static str)>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Mutex::default)
}

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut r = registry().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut r)
}

/// `a="x",b="y"` from label pairs (values escaped).
fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Adds `by` to a counter.
pub fn count(name: &'static str, help: &'static str, pairs: &[(&str, &str)], by: f64) {
    with(|r| {
        r.help.entry(name).or_insert((help, "counter"));
        *r.counters.entry((name, labels(pairs))).or_default() += by;
    });
}

/// Sets a gauge.
pub fn set(name: &'static str, help: &'static str, pairs: &[(&str, &str)], value: f64) {
    with(|r| {
        r.help.entry(name).or_insert((help, "gauge"));
        r.gauges.insert((name, labels(pairs)), value);
    });
}

/// Adds `by` (possibly negative) to a gauge.
pub fn add(name: &'static str, help: &'static str, pairs: &[(&str, &str)], by: f64) {
    with(|r| {
        r.help.entry(name).or_insert((help, "gauge"));
        *r.gauges.entry((name, labels(pairs))).or_default() += by;
    });
}

/// Records a latency.
pub fn observe(name: &'static str, help: &'static str, pairs: &[(&str, &str)], d: Duration) {
    let s = d.as_secs_f64();
    with(|r| {
        r.help.entry(name).or_insert((help, "histogram"));
        let h = r.histograms.entry((name, labels(pairs))).or_default();
        for (b, upper) in h.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if s <= upper {
                *b += 1;
            }
        }
        h.count += 1;
        h.sum += s;
    });
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

fn braces(labels: &str) -> String {
    if labels.is_empty() { String::new() } else { format!("{{{labels}}}") }
}

/// Everything in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    with(|r| {
        let mut out = String::new();
        let header = |out: &mut String, name: &'static str| {
            if let Some((help, kind)) = r.help.get(name) {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            }
        };
        let mut last = "";
        for ((name, l), v) in r.counters.iter().chain(r.gauges.iter()) {
            if *name != last {
                header(&mut out, name);
                last = name;
            }
            let _ = writeln!(out, "{name}{} {v}", braces(l));
        }
        for ((name, l), h) in &r.histograms {
            if *name != last {
                header(&mut out, name);
                last = name;
            }
            let sep = if l.is_empty() { "" } else { "," };
            for (b, upper) in h.buckets.iter().zip(LATENCY_BUCKETS) {
                let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"{upper}\"}} {b}");
            }
            let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{} {}", braces(l), h.sum);
            let _ = writeln!(out, "{name}_count{} {}", braces(l), h.count);
        }
        out
    })
}

/// Binds the metrics endpoint (so a taken port fails the role's start, not silently later).
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener, RpcError> {
    crate::addr::check_addr(listen)?;
    let bad = |e: std::io::Error| RpcError::Address { addr: listen.to_string(), reason: e.to_string() };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(bad)?;
    tracing::info!(addr = %listen, "metrics on http://{listen}/metrics");
    Ok(listener)
}

/// Serves `GET /metrics` over plain HTTP/1.1 until the process stops (one request per connection; anything else
/// gets 404; a request that does not arrive within 5 s is dropped).
pub async fn run(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = socket.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let (status, body) = match head.split_whitespace().take(2).collect::<Vec<_>>().as_slice() {
                ["GET", "/metrics"] => ("200 OK", render()),
                _ => ("404 Not Found", "only GET /metrics is served here\n".to_string()),
            };
            let headers = "Content-Type: text/plain; version=0.0.4\r\nConnection: close";
            let response = format!("HTTP/1.1 {status}\r\n{headers}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let _ = socket.write_all(response.as_bytes()).await;
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
        observe("delf_test_seconds", "a test histogram", &[("method", "Search")], Duration::from_millis(30));
        let text = render();
        assert!(text.contains("# TYPE delf_test_total counter\ndelf_test_total{role=\"x\",code=\"Ok\"} 2"), "{text}");
        assert!(text.contains("# TYPE delf_test_ready gauge\ndelf_test_ready{shard=\"3\"} 1"), "{text}");
        assert!(text.contains("delf_test_seconds_bucket{method=\"Search\",le=\"0.025\"} 0"), "{text}");
        assert!(text.contains("delf_test_seconds_bucket{method=\"Search\",le=\"0.05\"} 1"), "{text}");
        assert!(text.contains("delf_test_seconds_bucket{method=\"Search\",le=\"+Inf\"} 1"), "{text}");
        assert!(text.contains("delf_test_seconds_count{method=\"Search\"} 1"), "{text}");
        assert_eq!(labels(&[("a", "q\"uote")]), "a=\"q\\\"uote\"");
    }
}
