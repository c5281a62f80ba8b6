//! What the real-process cluster tests share: running `delf` with a configuration and the cluster token, free
//! loopback ports, `delf serve` processes killed when dropped, and reading `delf query --json` output.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The bearer token every test cluster requires.
pub const TOKEN: &str = "cluster-test-token";

/// `delf` with the configuration file and the token.
pub fn delf(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_delf"));
    c.env("DELF_LOG__LEVEL", "warn").env("DELF_CONFIG", config).env("DELF_CLUSTER__TOKEN", TOKEN);
    c
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The project's Python (`.cache/venv`, installed by scripts/setup.sh; `DELFRS_PYTHON` overrides it).
pub fn python() -> PathBuf {
    std::env::var_os("DELFRS_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".cache/venv/bin/python"))
}

/// Lossy UTF-8.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Stdout of a command that must have succeeded.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `delf serve` process, killed when dropped.
pub struct Role {
    pub name: String,
    pub child: Child,
}

impl Role {
    /// Starts `delf serve ARGS` with its stderr in `<log_dir>/<name>.log`.
    pub fn start(config: &Path, log_dir: &Path, name: &str, args: &[&str]) -> Self {
        Self::start_with(delf(config), log_dir, name, args)
    }

    /// [`Self::start`] from a prepared command (extra environment).
    pub fn start_with(mut command: Command, log_dir: &Path, name: &str, args: &[&str]) -> Self {
        let log = std::fs::File::options().create(true).append(true).open(log_dir.join(format!("{name}.log"))).unwrap();
        let child = command.arg("serve").args(args).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        Self { name: name.into(), child }
    }

    /// Sends a signal (`-STOP`, `-CONT`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill {sig} {}", self.name);
    }

    /// SIGKILL, and wait for it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (image id, score) per result of each JSON line, in rank order. Votes are left out: a cluster's shards answer
/// only their K' nearest of the K neighbours (docs/cluster.md, step 3), which may drop a far vote, never a result.
pub fn answers(stdout: &str) -> Vec<Vec<(String, u64)>> {
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let id = r["image_id"].as_str().unwrap().to_string();
                    (id, r["score"].as_u64().unwrap())
                })
                .collect()
        })
        .collect()
}

/// Every line of stdout as JSON.
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `GET /metrics` over a plain socket.
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

/// The value of one series (`name` or `name{labels}`, exactly as exposed) in a Prometheus text scrape.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until `delf cluster status` reports every shard replica loaded and every worker serving (the coordinator
/// answers status before a worker has loaded its model: a query then would find no worker); returns that status.
/// Panics after `timeout` with the last error.
pub fn wait_until_ready(config: &Path, timeout: std::time::Duration) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let out = delf(config).args(["cluster", "status", "--json"]).output().unwrap();
        if out.status.success() {
            let s: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
            let all = |v: &serde_json::Value| v.as_array().unwrap().iter().all(|h| h.as_bool().unwrap());
            if s["shards"].as_array().unwrap().iter().all(|sh| all(&sh["healthy"])) && all(&s["workers_healthy"]) {
                return s;
            }
        }
        assert!(started.elapsed() < timeout, "the cluster did not come up: {}", text(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
