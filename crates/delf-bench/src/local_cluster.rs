//! A static cluster of real `delf serve` processes on loopback, for `delf bench cluster`: S shards x R replicas of
//! index nodes, workers that only verify, and one coordinator with its metrics endpoint, all started from this
//! binary with one shared configuration file. [`LocalCluster::usage`] reads what the OS counted for each process
//! (user + system CPU time, `/proc/PID/stat`) and the coordinator's message-byte counters (its `/metrics`), so a
//! benchmark can take the difference over a measured run. Every process is killed when the cluster is dropped.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use delf_cluster::config::{ClusterConfig, ShardReplicas};

use crate::serve_process::ServeProcess;

/// The coordinator's counter of protobuf bytes per peer and direction (`delf_cluster::coordinator`).
const BYTES_METRIC: &str = "delf_coordinator_message_bytes_total";

/// What the processes of a [`LocalCluster`] have used so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// CPU time of the coordinator process, milliseconds.
    pub coordinator_cpu_ms: f64,
    /// CPU time of every index node process, summed, milliseconds.
    pub index_cpu_ms: f64,
    /// CPU time of every worker process, summed, milliseconds.
    pub worker_cpu_ms: f64,
    /// Protobuf bytes the coordinator received (from clients, index nodes and workers).
    pub bytes_in: f64,
    /// Protobuf bytes the coordinator sent.
    pub bytes_out: f64,
    /// The part of `bytes_in` that came from index nodes.
    pub index_bytes_in: f64,
    /// The part of `bytes_out` that went to index nodes.
    pub index_bytes_out: f64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, o: Usage) -> Usage {
        Usage {
            coordinator_cpu_ms: self.coordinator_cpu_ms - o.coordinator_cpu_ms,
            index_cpu_ms: self.index_cpu_ms - o.index_cpu_ms,
            worker_cpu_ms: self.worker_cpu_ms - o.worker_cpu_ms,
            bytes_in: self.bytes_in - o.bytes_in,
            bytes_out: self.bytes_out - o.bytes_out,
            index_bytes_in: self.index_bytes_in - o.index_bytes_in,
            index_bytes_out: self.index_bytes_out - o.index_bytes_out,
        }
    }
}

/// A running cluster of `delf serve` processes.
pub struct LocalCluster {
    /// The cluster's configuration, as every process read it.
    pub config: ClusterConfig,
    metrics: String,
    coordinator: ServeProcess,
    index_nodes: Vec<ServeProcess>,
    workers: Vec<ServeProcess>,
}

/// `n` distinct free `127.0.0.1:PORT` addresses below the kernel's ephemeral port range (32768 and up), so that the
/// outgoing connections of processes already started cannot take one before its process binds it; each is held
/// until all are found.
pub fn free_addrs(n: usize) -> Result<Vec<String>> {
    let mut held = Vec::with_capacity(n);
    let start = 20_000 + (std::process::id() % 1_000) as u16 * 12;
    for port in (start..32_768).chain(10_000..start) {
        if held.len() == n {
            break;
        }
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    if held.len() < n {
        bail!("found only {} free ports of {n} between 10000 and 32767", held.len());
    }
    held.iter().map(|l| Ok(format!("127.0.0.1:{}", l.local_addr()?.port()))).collect()
}

impl LocalCluster {
    /// Starts `shards` x `replicas` index nodes serving the index at `index`, `workers` verification-only workers
    /// and a coordinator, with their configuration and logs in `work`. Returns once every process is started (not
    /// yet ready: the caller waits for the coordinator's status).
    pub fn start(index: &Path, shards: u32, replicas: u32, workers: u32, work: &Path) -> Result<Self> {
        std::fs::create_dir_all(work.join("logs"))?;
        let mut addrs = free_addrs((shards * replicas + workers + 2) as usize)?.into_iter();
        let mut next = || addrs.next().context("too few addresses");
        let shard_routes: Vec<ShardReplicas> = (0..shards)
            .map(|id| Ok(ShardReplicas { id, replicas: (0..replicas).map(|_| next()).collect::<Result<_>>()? }))
            .collect::<Result<_>>()?;
        let config = ClusterConfig {
            index: index.display().to_string(),
            cache_dir: Some(work.join("cache")),
            coordinator: next()?,
            shards: shard_routes,
            workers: (0..workers).map(|_| next()).collect::<Result<_>>()?,
            deadline_ms: 120_000,
            shard_timeout_ms: 60_000,
            worker_timeout_ms: 60_000,
            ..ClusterConfig::default()
        };
        let file = work.join("delf.toml");
        #[derive(serde::Serialize)]
        struct File<'a> {
            cluster: &'a ClusterConfig,
        }
        std::fs::write(&file, toml::to_string(&File { cluster: &config }).context("writing the configuration")?)?;
        let exe = std::env::current_exe()?;
        let spawn = |name: String, args: &[&str]| -> Result<ServeProcess> {
            let mut p = ServeProcess::new(name, args, Vec::new(), &work.join("logs"));
            p.spawn(&exe, &file)?;
            Ok(p)
        };
        let mut index_nodes = Vec::new();
        for s in &config.shards {
            for (r, addr) in s.replicas.iter().enumerate() {
                let shard = s.id.to_string();
                index_nodes
                    .push(spawn(format!("index-{}-{r}", s.id), &["index-node", "--listen", addr, "--shard", &shard])?);
            }
        }
        let workers = config
            .workers
            .iter()
            .enumerate()
            .map(|(i, addr)| spawn(format!("worker-{i}"), &["worker", "--listen", addr, "--no-extract"]))
            .collect::<Result<_>>()?;
        let metrics = next()?;
        let coordinator = spawn(
            "coordinator".into(),
            &["coordinator", "--listen", &config.coordinator, "--metrics-listen", &metrics],
        )?;
        Ok(Self { config, metrics, coordinator, index_nodes, workers })
    }

    /// An error naming the first process that has exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        std::iter::once(&mut self.coordinator)
            .chain(&mut self.index_nodes)
            .chain(&mut self.workers)
            .try_for_each(ServeProcess::check_running)
    }

    /// CPU time and the coordinator's traffic so far.
    pub fn usage(&self) -> Result<Usage> {
        let pid = |p: &ServeProcess| p.pid().with_context(|| format!("{} is not running", p.name));
        let cpu = |procs: &[ServeProcess]| -> Result<f64> { procs.iter().map(|p| cpu_ms(pid(p)?)).sum() };
        let metrics = scrape(&self.metrics)?;
        let bytes = |direction: &str, peer: Option<&str>| {
            counter_sum(&metrics, BYTES_METRIC, |labels| {
                labels.contains(&format!("direction=\"{direction}\""))
                    && peer.is_none_or(|p| labels.contains(&format!("peer=\"{p}\"")))
            })
        };
        Ok(Usage {
            coordinator_cpu_ms: cpu_ms(pid(&self.coordinator)?)?,
            index_cpu_ms: cpu(&self.index_nodes)?,
            worker_cpu_ms: cpu(&self.workers)?,
            bytes_in: bytes("received", None),
            bytes_out: bytes("sent", None),
            index_bytes_in: bytes("received", Some("index_node")),
            index_bytes_out: bytes("sent", Some("index_node")),
        })
    }
}

/// Clock ticks per second of the times in `/proc/PID/stat`: USER_HZ, 100 on every Linux architecture (part of
/// the kernel's user-space ABI, whatever the kernel's own tick rate).
const USER_HZ: f64 = 100.0;

/// User + system CPU time of process `pid` so far, milliseconds (`/proc/PID/stat`, fields 14 and 15).
pub fn cpu_ms(pid: u32) -> Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading process {pid}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short /proc stat line")?.parse::<u64>().context("/proc stat field")? as f64)
    };
    // Field 3 (state) is fields[0]: utime (14) and stime (15) are fields[11] and fields[12], in USER_HZ ticks.
    Ok((ticks(11)? + ticks(12)?) * 1e3 / USER_HZ)
}

/// The text of `http://ADDR/metrics`.
fn scrape(addr: &str) -> Result<String> {
    let mut stream = std::net::TcpStream::connect(addr).with_context(|| format!("metrics endpoint {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    let (head, body) = body.split_once("\r\n\r\n").context("no HTTP body from the metrics endpoint")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("metrics endpoint {addr}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// The sum of the samples of counter `name` whose label text satisfies `keep`.
fn counter_sum(text: &str, name: &str, keep: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| rest.split_once("} "))
        .filter(|(labels, _)| keep(labels))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_matching_labels() {
        let text = "# HELP x y\n\
            delf_coordinator_message_bytes_total{direction=\"sent\",peer=\"index_node\"} 100\n\
            delf_coordinator_message_bytes_total{direction=\"sent\",peer=\"worker\"} 20\n\
            delf_coordinator_message_bytes_total{direction=\"received\",peer=\"index_node\"} 7\n\
            delf_other_total{direction=\"sent\"} 1000\n";
        let sent = |l: &str| l.contains("direction=\"sent\"");
        assert_eq!(counter_sum(text, BYTES_METRIC, sent), 120.0);
        assert_eq!(counter_sum(text, BYTES_METRIC, |l| sent(l) && l.contains("peer=\"worker\"")), 20.0);
    }

    /// The process's CPU time follows what the kernel counts for the one thread that works (its schedstat, in
    /// nanoseconds), to the 10 ms tick.
    #[test]
    fn cpu_time_follows_the_kernels_count() {
        let thread_ns = || -> f64 {
            let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
            text.split_whitespace().next().unwrap().parse::<f64>().unwrap()
        };
        let (t0, p0) = (thread_ns(), cpu_ms(std::process::id()).unwrap());
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(150) {
            spin = (0..100_000u64).fold(spin, |a, b| a.wrapping_add(b * b));
        }
        assert!(spin > 0);
        let (thread, process) = ((thread_ns() - t0) / 1e6, cpu_ms(std::process::id()).unwrap() - p0);
        assert!(thread > 20.0, "the spinning thread ran {thread} ms");
        assert!(
            (process - thread).abs() <= 25.0,
            "/proc/PID/stat says {process} ms, the thread's schedstat {thread} ms"
        );
    }
}
