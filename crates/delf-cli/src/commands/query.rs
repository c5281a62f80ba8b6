//! `delf query --coordinator ADDR IMAGE...` and `delf cluster status`: gRPC clients of a running cluster. Query
//! output has the shape of `delf search` (table, or `--json` lines), plus the degraded flag and missing shards.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use delf_engine::Config;
use delf_proto::v1 as pb;
use delf_rpc::client;

use crate::cli::{FailurePolicyArg, HealthArgs, QueryArgs};

/// A call the cluster refused or failed, with its gRPC status code.
#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RemoteError {
    /// The gRPC status code.
    pub code: tonic::Code,
    /// The server's message.
    pub message: String,
}

impl RemoteError {
    /// True when the request itself was refused (bad image, wrong fingerprint, unknown shard): exit code 3.
    pub fn is_bad_input(&self) -> bool {
        matches!(self.code, tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::NotFound)
    }
}

impl From<tonic::Status> for RemoteError {
    fn from(s: tonic::Status) -> Self {
        Self { code: s.code(), message: s.message().to_string() }
    }
}

pub fn connect(
    addr: Option<&String>,
    config: &Config,
) -> Result<delf_proto::v1::coordinator_client::CoordinatorClient<tonic::transport::Channel>> {
    let addr = addr.unwrap_or(&config.cluster.coordinator);
    let security = config.cluster.security()?;
    let channel = client::channel(addr, Duration::from_millis(config.cluster.connect_timeout_ms), &security)?;
    Ok(client::coordinator(channel))
}

/// Sends every query; a query that fails is reported and the others still run.
pub fn run(args: &QueryArgs, config: &Config) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _in_runtime = rt.enter();
    let mut coordinator = connect(args.coordinator.as_ref(), config)?;
    let token = config.cluster.token.as_deref();
    let deadline_ms = args.deadline_ms.map_or(config.cluster.deadline_ms, u64::from);
    let mut stdout = std::io::stdout().lock();
    let mut failed = None;
    for path in &args.queries {
        let result = (|| -> Result<pb::SearchResponse> {
            let image = read_query(path)?;
            let request = pb::SearchRequest {
                request_id: client::new_request_id(),
                query: Some(pb::search_request::Query::Image(image)),
                top: args.retrieval.top,
                candidates: args.retrieval.candidates.unwrap_or(0),
                nprobe: args.retrieval.nprobe.unwrap_or(0),
                min_inliers: args.retrieval.min_inliers,
                on_shard_failure: match args.on_shard_failure {
                    None => pb::ShardFailurePolicy::Unspecified,
                    Some(FailurePolicyArg::Partial) => pb::ShardFailurePolicy::Partial,
                    Some(FailurePolicyArg::Fail) => pb::ShardFailurePolicy::Fail,
                } as i32,
                deadline_ms: args.deadline_ms.unwrap_or(0),
            };
            // The coordinator enforces the deadline; the client waits a little longer for its answer.
            let wait = Duration::from_millis(deadline_ms + 2_000);
            let id = request.request_id.clone();
            let response = rt
                .block_on(coordinator.search(client::request(request, &id, token, wait)))
                .map_err(RemoteError::from)
                .with_context(|| format!("query {} (request {id})", path.display()))?;
            Ok(response.into_inner())
        })();
        match result {
            Ok(r) => {
                if args.json {
                    writeln!(stdout, "{}", json_line(path, &r))?;
                } else {
                    print_table(&mut stdout, path, &r)?;
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                eprintln!("error: {message}");
                if args.json {
                    writeln!(stdout, "{}", serde_json::json!({ "query": path, "error": message }))?;
                }
                failed.get_or_insert(e);
            }
        }
    }
    stdout.flush()?;
    match failed {
        Some(e) => Err(e.context("some queries failed")),
        None => Ok(()),
    }
}

fn read_query(path: &Path) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).map_err(|e| delf_image::ImageError::Io { path: path.to_path_buf(), source: e })?;
    // The workers' decode limit: a larger photo would be refused after the upload.
    let limit = delf_image::DecodeLimits::default().max_file_bytes;
    if meta.len() > limit {
        anyhow::bail!(delf_image::ImageError::FileTooLarge { bytes: meta.len(), limit });
    }
    std::fs::read(path).map_err(|e| delf_image::ImageError::Io { path: path.to_path_buf(), source: e }.into())
}

fn json_line(query: &Path, r: &pb::SearchResponse) -> serde_json::Value {
    let results: Vec<serde_json::Value> = r
        .results
        .iter()
        .map(|m| serde_json::json!({ "image_id": m.image_id, "score": m.score, "votes": m.votes, "rank": m.rank }))
        .collect();
    let t = r.timing.unwrap_or_default();
    serde_json::json!({
        "query": query,
        "request_id": r.request_id,
        "version": r.version,
        "results": results,
        "verified": r.verified,
        "degraded": r.degraded,
        "missing_shards": r.missing_shards,
        "timing_ms": { "extract": t.extract_ms, "ann": t.ann_ms, "verify": t.verify_ms, "total": t.total_ms },
    })
}

fn print_table(out: &mut impl Write, query: &Path, r: &pb::SearchResponse) -> Result<()> {
    let t = r.timing.unwrap_or_default();
    writeln!(
        out,
        "query {} (request {}): extract {:.0} ms, ann {:.0} ms, verify {:.0} ms ({} candidates), total {:.0} ms",
        query.display(),
        r.request_id,
        t.extract_ms,
        t.ann_ms,
        t.verify_ms,
        r.verified,
        t.total_ms
    )?;
    if r.degraded {
        writeln!(
            out,
            "  DEGRADED: no replica of shard(s) {:?} answered; results may miss their images",
            r.missing_shards
        )?;
    }
    if r.results.is_empty() {
        writeln!(out, "  no match")?;
        return Ok(());
    }
    writeln!(out, "  {:>4}  {:>6}  {:>6}  image", "rank", "score", "votes")?;
    for m in &r.results {
        writeln!(out, "  {:>4}  {:>6}  {:>6}  {}", m.rank, m.score, m.votes, m.image_id)?;
    }
    Ok(())
}

/// `delf health ADDR`: SERVING exits 0; anything else (NOT_SERVING, unknown service, no answer) is an error.
pub fn health(args: &HealthArgs, config: &Config) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _in_runtime = rt.enter();
    let security = config.cluster.security()?;
    let t = Duration::from_millis(args.timeout_ms.max(1));
    let channel = client::channel(&args.addr, t, &security)?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest { service: args.service.clone() };
    let answer = rt
        .block_on(async { tokio::time::timeout(t, health.check(request)).await })
        .map_err(|_| RemoteError { code: tonic::Code::DeadlineExceeded, message: format!("no answer within {t:?}") })?
        .map_err(RemoteError::from)
        .context("health check")?
        .into_inner();
    let status = tonic_health::pb::health_check_response::ServingStatus::try_from(answer.status)
        .map_or_else(|_| format!("status {}", answer.status), |s| s.as_str_name().to_string());
    println!("{}: {status}", args.addr);
    if answer.status != tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
        anyhow::bail!(RemoteError { code: tonic::Code::Unavailable, message: format!("{} is {status}", args.addr) });
    }
    Ok(())
}
