//! What every role's gRPC server has in common: the standard `grpc.health.v1` service and server reflection (so
//! `grpcurl` and Kubernetes probes work), the message size limits, the bearer-token check on the delf services,
//! binding, and a graceful stop on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Status};

use crate::error::ClusterError;
use crate::security::Security;

/// Checks `authorization: Bearer <token>` on every call of a delf service when a token is configured. Health and
/// reflection stay open (probes carry no credentials and reveal nothing).
#[derive(Clone, Default)]
pub struct BearerAuth {
    expected: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth").field("enabled", &self.expected.is_some()).finish()
    }
}

impl BearerAuth {
    /// Requires `token` (none = every call is allowed).
    pub fn new(token: Option<&str>) -> Self {
        Self { expected: token.map(|t| Arc::from(format!("Bearer {t}").into_bytes().into_boxed_slice())) }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else { return Ok(request) };
        let given = request.metadata().get("authorization").map(|v| v.as_bytes()).unwrap_or_default();
        // Compared in time independent of where the first difference is.
        let same =
            given.len() == expected.len() && given.iter().zip(expected.iter()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
        if same { Ok(request) } else { Err(Status::unauthenticated("missing or wrong bearer token")) }
    }
}

/// A server builder with TLS when `security` has it.
pub fn builder(security: &Security) -> Result<tonic::transport::Server, ClusterError> {
    crate::security::install_crypto_provider();
    let builder = tonic::transport::Server::builder();
    Ok(match security.server_tls() {
        Some(tls) => builder.tls_config(tls)?,
        None => builder,
    })
}

/// Binds `host:port` (port 0 picks a free one; [`TcpIncoming::local_addr`] tells which).
pub fn bind(addr: &str) -> Result<TcpIncoming, ClusterError> {
    let bad = |reason: String| ClusterError::Address { addr: addr.to_string(), reason };
    crate::config::check_addr(addr)?;
    let sock: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))?;
    let incoming = TcpIncoming::bind(sock).map_err(|e| bad(e.to_string()))?;
    Ok(incoming.with_nodelay(Some(true)))
}

/// The reflection service, describing the delf services and the health service.
pub fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    ClusterError,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(delf_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ClusterError::Config(format!("reflection descriptors: {e}")))
}

/// Resolves on SIGTERM or Ctrl-C (then servers stop accepting and finish the calls in flight).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn call(auth: &mut BearerAuth, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut r = Request::new(());
        if let Some(h) = header {
            r.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        auth.call(r).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn the_token_is_required_only_when_configured() {
        assert_eq!(call(&mut BearerAuth::new(None), None), Ok(()));
        let mut auth = BearerAuth::new(Some("s3cret"));
        assert_eq!(call(&mut auth, Some("Bearer s3cret")), Ok(()));
        assert_eq!(call(&mut auth, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(call(&mut auth, Some("Bearer s3cre")), Err(tonic::Code::Unauthenticated));
        assert_eq!(call(&mut auth, Some("Bearer s3cret ")), Err(tonic::Code::Unauthenticated));
    }
}
