//! Test support shared by the integration tests of several crates.
//!
//! [`S3Server`] starts a real S3-compatible server (`moto_server` from PyPI `moto[s3,server]`, installed into
//! `.cache/venv` by `scripts/setup.sh`) on a free local port, creates buckets over plain HTTP, and stops it on drop.
//! Tests talk to it through the same `object_store` client production uses, configured by [`S3Server::options`].
//! [`tls::TestCa`] issues real certificates for TLS tests.

pub mod tls;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `moto_server`, killed when dropped.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    port: u16,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl S3Server {
    /// Starts the server (`DELFRS_MOTO_SERVER` names the executable; default `.cache/venv/bin/moto_server`) and
    /// waits until it answers. An error says how to install it.
    pub fn start() -> Result<Self, String> {
        let exe = std::env::var_os("DELFRS_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".cache/venv/bin/moto_server"));
        if !exe.is_file() {
            return Err(format!("{} not found: run scripts/setup.sh (it installs moto[s3,server])", exe.display()));
        }
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port().map_err(|e| e.to_string())?;
            let child = Command::new(&exe)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", exe.display()))?;
            let mut server = Self { child, endpoint: format!("http://127.0.0.1:{port}"), port };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = server.child.try_wait() {
                    last = format!("moto_server exited with {status}");
                    break;
                }
                if server.request("GET", "/").is_ok_and(|code| code == 200) {
                    return Ok(server);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if last.is_empty() {
                last = "moto_server did not answer within 60 s".into();
            }
        }
        Err(last)
    }

    /// Sends a bodiless request and returns the HTTP status code.
    fn request(&self, method: &str, path: &str) -> std::io::Result<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        let text = String::from_utf8_lossy(&head);
        text.get(9..12)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad HTTP response {text:?}")))
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        match self.request("PUT", &format!("/{name}")) {
            Ok(200) => Ok(()),
            Ok(code) => Err(format!("creating bucket {name}: HTTP {code}")),
            Err(e) => Err(format!("creating bucket {name}: {e}")),
        }
    }

    /// The `object_store` settings (as environment variables) that reach this server.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real opencv-doc photos installed by `scripts/setup.sh` (`$DELF_HOME/data/opencv-doc`; `DELF_HOME` is set for
/// tests by `.cargo/config.toml`, relative paths are relative to the repository root). Panics with the fix when the
/// folder is missing.
pub fn photos_dir() -> PathBuf {
    home_data("opencv-doc")
}

/// The training photos of the shipped attention head (`$DELF_HOME/data/train-photos`, with its `labels.csv`),
/// kept apart from [`photos_dir`]. Panics with the fix when the folder is missing.
pub fn train_photos_dir() -> PathBuf {
    home_data("train-photos")
}

/// The EfficientNet-Lite0 ImageNet weights installed by `scripts/setup.sh`.
pub fn lite0_weights() -> PathBuf {
    let path = home_data("../models").join("efficientnet-lite0.safetensors");
    assert!(path.is_file(), "{} missing: run scripts/setup.sh", path.display());
    path
}

fn home_data(name: &str) -> PathBuf {
    let home = std::env::var("DELF_HOME").unwrap_or_else(|_| ".cache/delf".into());
    let dir = repo_root().join(home).join("data").join(name);
    assert!(dir.is_dir(), "{} missing: run scripts/setup.sh", dir.display());
    dir
}
