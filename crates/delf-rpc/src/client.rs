//! Outgoing calls: lazily connected channels with the cluster's timeouts and message limits, and requests carrying
//! the request id (`x-request-id`), the bearer token and the deadline (`grpc-timeout`).

use std::time::Duration;

use delf_proto::MAX_MESSAGE_BYTES;
use delf_proto::v1::coordinator_client::CoordinatorClient;
use delf_proto::v1::index_node_client::IndexNodeClient;
use delf_proto::v1::worker_client::WorkerClient;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::error::RpcError;
use crate::security::Security;

/// Metadata key carrying the request id across the fan-out.
pub const REQUEST_ID: &str = "x-request-id";

/// A channel to `host:port`, connected on first use (so a role starts while its peers are still down) and
/// reconnected after failures. Must be called inside a Tokio runtime.
pub fn channel(addr: &str, connect_timeout: Duration, security: &Security) -> Result<Channel, RpcError> {
    crate::addr::check_addr(addr)?;
    let bad = |reason: String| RpcError::Address { addr: addr.into(), reason };
    let scheme = if security.uses_tls() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| bad(e.to_string()))?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_matches(['[', ']']);
    if let Some(tls) = security.client_tls(host) {
        crate::security::install_crypto_provider();
        endpoint = endpoint.tls_config(tls).map_err(|e| bad(format!("TLS: {e}")))?;
    }
    let endpoint = endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// Channels by address, made once (with the same connect timeout and security) and shared by every call to that
/// address: a channel is one HTTP/2 connection, reconnected by tonic when it drops.
pub struct Channels {
    channels: std::sync::Mutex<std::collections::HashMap<String, Channel>>,
    connect_timeout: Duration,
    security: Security,
}

impl Channels {
    /// An empty pool.
    pub fn new(connect_timeout: Duration, security: &Security) -> Self {
        Self { channels: std::sync::Mutex::default(), connect_timeout, security: security.clone() }
    }

    /// The channel to `addr` (see [`channel`]), made on first use. Must be called inside a Tokio runtime.
    pub fn get(&self, addr: &str) -> Result<Channel, RpcError> {
        let mut channels = self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = channel(addr, self.connect_timeout, &self.security)?;
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

/// An index node client with the cluster's message limits.
pub fn index_node(channel: Channel) -> IndexNodeClient<Channel> {
    IndexNodeClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A worker client with the cluster's message limits.
pub fn worker(channel: Channel) -> WorkerClient<Channel> {
    WorkerClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A coordinator client with the cluster's message limits.
pub fn coordinator(channel: Channel) -> CoordinatorClient<Channel> {
    CoordinatorClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A request with the cluster's metadata: request id, bearer token (if any) and deadline.
pub fn request<T>(message: T, request_id: &str, token: Option<&str>, timeout: Duration) -> Request<T> {
    let mut r = Request::new(message);
    if let Ok(v) = MetadataValue::try_from(request_id) {
        r.metadata_mut().insert(REQUEST_ID, v);
    }
    if let Some(t) = token
        && let Ok(v) = MetadataValue::try_from(format!("Bearer {t}"))
    {
        r.metadata_mut().insert("authorization", v);
    }
    r.set_timeout(timeout);
    r
}

/// The request id of an incoming request (`x-request-id`), if it sent one.
pub fn request_id_of<T>(r: &Request<T>) -> Option<String> {
    r.metadata().get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A new request id: 16 hex digits from the clock and a process-wide counter.
pub fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut rng = delf_core::rng::SplitMix64(nanos ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_left(32));
    format!("{:016x}", rng.next_u64())
}
