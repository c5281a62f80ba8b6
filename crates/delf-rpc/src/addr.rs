//! Addresses: `host:port` as configured, checked before use, and bound for serving.

use std::net::SocketAddr;

use tonic::transport::server::TcpIncoming;

use crate::error::RpcError;

/// Parses `host:port` (a socket address; host names are resolved when connecting).
pub fn check_addr(addr: &str) -> Result<(), RpcError> {
    let bad = |reason: &str| RpcError::Address { addr: addr.to_string(), reason: reason.into() };
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("expected host:port"))?;
    if host.is_empty() || addr.contains("://") {
        return Err(bad("expected host:port without a scheme"));
    }
    port.parse::<u16>().map_err(|_| bad("the port is not a number in 0..65535"))?;
    Ok(())
}

/// Binds `host:port` for a gRPC server (port 0 picks a free one; [`TcpIncoming::local_addr`] tells which).
pub fn bind(addr: &str) -> Result<TcpIncoming, RpcError> {
    let bad = |reason: String| RpcError::Address { addr: addr.to_string(), reason };
    check_addr(addr)?;
    let sock: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))?;
    let incoming = TcpIncoming::bind(sock).map_err(|e| bad(e.to_string()))?;
    Ok(incoming.with_nodelay(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_a_host_and_a_port_without_a_scheme() {
        assert!(check_addr("127.0.0.1:7001").is_ok());
        assert!(check_addr("node-b:0").is_ok());
        for bad in ["127.0.0.1", ":7001", "http://127.0.0.1:7001", "host:port", "host:70000"] {
            assert!(matches!(check_addr(bad), Err(RpcError::Address { .. })), "{bad}");
        }
    }
}
