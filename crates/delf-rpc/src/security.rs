//! Transport security of every role: TLS (rustls) with an optional client-certificate requirement (mutual TLS),
//! and the bearer token. Both off by default, for the embedded/local mode; docs/cluster.md says how to turn them on
//! for production. Each role uses one certificate both as a server and, towards its peers, as a client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::error::RpcError;

/// `[cluster.tls]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// This role's certificate chain (PEM), presented as a server and, for mutual TLS, as a client.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA (PEM) that signed every role's certificate: servers are verified against it, and so are client
    /// certificates when they are required.
    pub ca: PathBuf,
    /// Mutual TLS: servers refuse connections without a client certificate signed by `ca`.
    #[serde(default)]
    pub require_client_cert: bool,
    /// The name checked in server certificates (default: the host part of each address).
    #[serde(default)]
    pub domain: Option<String>,
}

#[derive(Clone)]
struct LoadedTls {
    identity: Identity,
    ca: Certificate,
    require_client_cert: bool,
    domain: Option<String>,
}

/// What a role needs to talk securely: loaded certificates and the token.
#[derive(Clone, Default)]
pub struct Security {
    token: Option<String>,
    tls: Option<LoadedTls>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security").field("token", &self.token.is_some()).field("tls", &self.tls.is_some()).finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, RpcError> {
    std::fs::read(path).map_err(|source| RpcError::Io { path: path.to_path_buf(), source })
}

impl Security {
    /// No TLS, no token.
    pub fn none() -> Self {
        Self::default()
    }

    /// A token and, when `tls` is given, its certificates read from disk.
    pub fn new(token: Option<String>, tls: Option<&TlsSettings>) -> Result<Self, RpcError> {
        let tls = match tls {
            None => None,
            Some(t) => {
                let (cert, key, ca) = (read(&t.cert)?, read(&t.key)?, read(&t.ca)?);
                for (what, pem, path) in [("certificate", &cert, &t.cert), ("key", &key, &t.key), ("CA", &ca, &t.ca)] {
                    if !pem.starts_with(b"-----BEGIN") && !String::from_utf8_lossy(pem).contains("-----BEGIN") {
                        return Err(RpcError::Config(format!("{} is not a PEM {what}", path.display())));
                    }
                }
                Some(LoadedTls {
                    identity: Identity::from_pem(cert, key),
                    ca: Certificate::from_pem(ca),
                    require_client_cert: t.require_client_cert,
                    domain: t.domain.clone(),
                })
            }
        };
        Ok(Self { token: token.filter(|t| !t.is_empty()), tls })
    }

    /// The bearer token sent to peers.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// True when connections use TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The check servers apply to every delf call.
    pub fn auth(&self) -> BearerAuth {
        BearerAuth::new(self.token())
    }

    /// The server side of TLS, if on.
    pub fn server_tls(&self) -> Option<ServerTlsConfig> {
        self.tls.as_ref().map(|t| {
            let config = ServerTlsConfig::new().identity(t.identity.clone());
            if t.require_client_cert { config.client_ca_root(t.ca.clone()) } else { config }
        })
    }

    /// The client side of TLS towards `host`, if on: the CA, this role's identity, the name to check.
    pub fn client_tls(&self, host: &str) -> Option<ClientTlsConfig> {
        self.tls.as_ref().map(|t| {
            ClientTlsConfig::new()
                .ca_certificate(t.ca.clone())
                .identity(t.identity.clone())
                .domain_name(t.domain.clone().unwrap_or_else(|| host.to_string()))
        })
    }
}

/// Makes rustls use aws-lc-rs (the provider the object-store client already links) in this process. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

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

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

impl BearerAuth {
    /// Requires `token` (none = every call is allowed).
    pub fn new(token: Option<&str>) -> Self {
        Self {
            expected: token.map(|t| Arc::from(digest(format!("Bearer {t}").as_bytes()).to_vec().into_boxed_slice())),
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else { return Ok(request) };
        let given = request.metadata().get("authorization").map(|v| v.as_bytes()).unwrap_or_default();
        // Digests of equal length compared in constant time: neither the position of the first difference nor the
        // expected token's length shows in how long a refusal takes.
        let same: bool = digest(given).as_slice().ct_eq(expected).into();
        if same { Ok(request) } else { Err(Status::unauthenticated("missing or wrong bearer token")) }
    }
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
