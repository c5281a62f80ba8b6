//! The processes of `delf bench chaos`: a Raft-managed cluster of real `delf serve` processes on loopback
//! (coordinators with their own Raft folders, index nodes with stable names, verification-only workers), each of
//! which can be SIGKILLed and started again with the same name, address and folder, or SIGSTOPped and continued.
//! Every process is killed when the cluster is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::commands::chaos_schedule::{FaultKind, Target};

/// One `delf serve` process and how to start it again.
pub struct Managed {
    /// Log and report name (`coordinator2`, `node3`, `worker1`).
    pub name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    stopped: bool,
}

impl Managed {
    fn spawn(&mut self, exe: &Path, config: &Path, logs: &Path) -> Result<()> {
        let log = std::fs::File::options().create(true).append(true).open(logs.join(format!("{}.log", self.name)))?;
        let mut c = Command::new(exe);
        c.arg("--config").arg(config).arg("serve").args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        self.stopped = false;
        Ok(())
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let Some(child) = &self.child else { bail!("{} is not running", self.name) };
        let status = Command::new("kill").args([sig, &child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill {sig} {} failed", self.name);
        }
        Ok(())
    }

    /// Whether the process accepts TCP connections on its `--listen` address: a restarted process counts as back
    /// only once it does (under load a restart can take seconds, and the schedule must not count it as up before).
    fn listening(&self) -> bool {
        use std::net::ToSocketAddrs;
        let Some(addr) = self.args.iter().position(|a| a == "--listen").and_then(|i| self.args.get(i + 1)) else {
            return true;
        };
        let first = addr.to_socket_addrs().ok().and_then(|mut a| a.next());
        first.is_some_and(|a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_millis(100)).is_ok())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stopped = false;
    }
}

/// The chaos cluster.
pub struct ChaosCluster {
    exe: PathBuf,
    config: PathBuf,
    logs: PathBuf,
    /// Raft coordinators, id = position + 1.
    pub coordinators: Vec<Managed>,
    /// Index nodes (`node1`...).
    pub index_nodes: Vec<Managed>,
    /// Workers.
    pub workers: Vec<Managed>,
}

impl ChaosCluster {
    /// Processes to be started with configuration file `config` (which names the coordinators' addresses, in
    /// order), logs and Raft folders under `work`.
    pub fn new(config: &Path, work: &Path, coordinators: &[String]) -> Result<Self> {
        let logs = work.join("logs");
        std::fs::create_dir_all(&logs)?;
        let coordinators = coordinators
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let id = i + 1;
                Managed {
                    name: format!("coordinator{id}"),
                    args: vec!["coordinator".into(), "--listen".into(), addr.clone()],
                    env: vec![
                        ("DELF_META__ID".into(), id.to_string()),
                        ("DELF_META__DATA_DIR".into(), work.join("meta").join(id.to_string()).display().to_string()),
                    ],
                    child: None,
                    stopped: false,
                }
            })
            .collect();
        Ok(Self {
            exe: std::env::current_exe()?,
            config: config.to_path_buf(),
            logs,
            coordinators,
            index_nodes: Vec::new(),
            workers: Vec::new(),
        })
    }

    /// Adds (and starts) index node `node<N>` at `addr`.
    pub fn add_index_node(&mut self, addr: &str) -> Result<()> {
        let name = format!("node{}", self.index_nodes.len() + 1);
        let args = ["index-node", "--listen", addr, "--node", &name].map(String::from).to_vec();
        let mut m = Managed { name, args, env: Vec::new(), child: None, stopped: false };
        m.spawn(&self.exe, &self.config, &self.logs)?;
        self.index_nodes.push(m);
        Ok(())
    }

    /// Adds (and starts) a verification-only worker at `addr`.
    pub fn add_worker(&mut self, addr: &str) -> Result<()> {
        let name = format!("worker{}", self.workers.len() + 1);
        let args = ["worker", "--listen", addr, "--no-extract"].map(String::from).to_vec();
        let mut m = Managed { name, args, env: Vec::new(), child: None, stopped: false };
        m.spawn(&self.exe, &self.config, &self.logs)?;
        self.workers.push(m);
        Ok(())
    }

    /// Starts every coordinator.
    pub fn start_coordinators(&mut self) -> Result<()> {
        for c in &mut self.coordinators {
            c.spawn(&self.exe, &self.config, &self.logs)?;
        }
        Ok(())
    }

    fn process(&mut self, target: Target, index: usize) -> Result<&mut Managed> {
        let list = match target {
            Target::Coordinator => &mut self.coordinators,
            Target::IndexNode => &mut self.index_nodes,
            Target::Worker => &mut self.workers,
        };
        list.get_mut(index).with_context(|| format!("no {target:?} {index}"))
    }

    /// The name of process `index` of `target`.
    pub fn name(&mut self, target: Target, index: usize) -> Result<String> {
        Ok(self.process(target, index)?.name.clone())
    }

    /// Applies a fault: SIGKILL (the process is gone until [`Self::recover`]) or SIGSTOP.
    pub fn fault(&mut self, target: Target, index: usize, kind: FaultKind) -> Result<()> {
        let p = self.process(target, index)?;
        match kind {
            FaultKind::Kill => p.kill(),
            FaultKind::Stop => {
                p.signal("-STOP")?;
                p.stopped = true;
            }
        }
        Ok(())
    }

    /// Ends a fault: a stopped process is continued, a killed one started again.
    pub fn recover(&mut self, target: Target, index: usize) -> Result<()> {
        let (exe, config, logs) = (self.exe.clone(), self.config.clone(), self.logs.clone());
        let p = self.process(target, index)?;
        if p.stopped {
            p.signal("-CONT")?;
            p.stopped = false;
        } else if p.child.is_none() {
            p.spawn(&exe, &config, &logs)?;
        }
        Ok(())
    }

    /// Whether process `index` of `target` accepts connections (see [`Managed::listening`]).
    pub fn listening(&mut self, target: Target, index: usize) -> Result<bool> {
        Ok(self.process(target, index)?.listening())
    }

    /// An error naming a process that exited by itself (not killed by the schedule), with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        let logs = self.logs.clone();
        for p in self.coordinators.iter_mut().chain(&mut self.index_nodes).chain(&mut self.workers) {
            if let Some(child) = &mut p.child
                && let Some(status) = child.try_wait()?
            {
                let log = std::fs::read_to_string(logs.join(format!("{}.log", p.name))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
                bail!("{} exited by itself ({status}); the end of its log:\n{}", p.name, tail.join("\n"));
            }
        }
        Ok(())
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        for p in self.coordinators.iter_mut().chain(&mut self.index_nodes).chain(&mut self.workers) {
            p.kill();
        }
    }
}
