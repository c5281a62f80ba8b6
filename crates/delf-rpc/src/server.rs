//! What every role's gRPC server has in common: the standard `grpc.health.v1` service and server reflection (so
//! `grpcurl` and Kubernetes probes work), TLS, and a graceful stop on SIGTERM or Ctrl-C. Binding is
//! [`crate::addr::bind`]; the token check is [`crate::security::BearerAuth`].

use crate::error::RpcError;
use crate::security::Security;

/// A server builder with TLS when `security` has it.
pub fn builder(security: &Security) -> Result<tonic::transport::Server, RpcError> {
    crate::security::install_crypto_provider();
    let builder = tonic::transport::Server::builder();
    Ok(match security.server_tls() {
        Some(tls) => builder.tls_config(tls)?,
        None => builder,
    })
}

/// The reflection service, describing the delf services and the health service.
pub fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    RpcError,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(delf_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RpcError::Config(format!("reflection descriptors: {e}")))
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
