//! The processes of `delf bench chaos`: a Raft-managed cluster of real `delf serve` processes on loopback
//! (coordinators with their own Raft folders, index nodes with stable names, verification-only workers), each of
//! which can be SIGKILLed and started again with the same name, address and folder, or SIGSTOPped and continued.
//! Every process is killed when the cluster is dropped.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::chaos_schedule::{FaultKind, Target};
use crate::serve_process::ServeProcess;

/// The chaos cluster.
pub struct ChaosCluster {
    exe: PathBuf,
    config: PathBuf,
    logs: PathBuf,
    /// Raft coordinators, id = position + 1.
    pub coordinators: Vec<ServeProcess>,
    /// Index nodes (`node1`...).
    pub index_nodes: Vec<ServeProcess>,
    /// Workers.
    pub workers: Vec<ServeProcess>,
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
                let env = vec![
                    ("DELF_META__ID".into(), id.to_string()),
                    ("DELF_META__DATA_DIR".into(), work.join("meta").join(id.to_string()).display().to_string()),
                ];
                ServeProcess::new(format!("coordinator{id}"), &["coordinator", "--listen", addr], env, &logs)
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
        let mut m =
            ServeProcess::new(&name, &["index-node", "--listen", addr, "--node", &name], Vec::new(), &self.logs);
        m.spawn(&self.exe, &self.config)?;
        self.index_nodes.push(m);
        Ok(())
    }

    /// Adds (and starts) a verification-only worker at `addr`.
    pub fn add_worker(&mut self, addr: &str) -> Result<()> {
        let name = format!("worker{}", self.workers.len() + 1);
        let mut m = ServeProcess::new(name, &["worker", "--listen", addr, "--no-extract"], Vec::new(), &self.logs);
        m.spawn(&self.exe, &self.config)?;
        self.workers.push(m);
        Ok(())
    }

    /// Starts every coordinator.
    pub fn start_coordinators(&mut self) -> Result<()> {
        for c in &mut self.coordinators {
            c.spawn(&self.exe, &self.config)?;
        }
        Ok(())
    }

    fn process(&mut self, target: Target, index: usize) -> Result<&mut ServeProcess> {
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
        let (exe, config) = (self.exe.clone(), self.config.clone());
        let p = self.process(target, index)?;
        if p.stopped {
            p.signal("-CONT")?;
            p.stopped = false;
        } else if !p.started() {
            p.spawn(&exe, &config)?;
        }
        Ok(())
    }

    /// Whether process `index` of `target` accepts connections (see [`ServeProcess::listening`]).
    pub fn listening(&mut self, target: Target, index: usize) -> Result<bool> {
        Ok(self.process(target, index)?.listening())
    }

    /// An error naming a process that exited by itself (not killed by the schedule), with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        self.coordinators
            .iter_mut()
            .chain(&mut self.index_nodes)
            .chain(&mut self.workers)
            .try_for_each(|p| p.check_running())
    }
}
