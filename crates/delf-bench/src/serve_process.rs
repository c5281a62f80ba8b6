//! One `delf serve` process started from this binary, as the local benchmark clusters run them (`delf bench
//! cluster`, `delf bench chaos`): its arguments and environment, kept so that it can be started again with the
//! same name, address and folders, its log file, and the signals the chaos schedule sends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

/// One `delf serve` process and how to start it again.
pub struct ServeProcess {
    /// Log and report name (`coordinator2`, `index-0-1`, `worker1`).
    pub name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// Whether it was sent SIGSTOP (and not SIGCONT since).
    pub stopped: bool,
}

impl ServeProcess {
    /// A process (not started) running `delf --config CONFIG serve ARGS` with `env`, logging to `logs/NAME.log`.
    pub fn new(name: impl Into<String>, args: &[&str], env: Vec<(String, String)>, logs: &Path) -> Self {
        let name = name.into();
        let log = logs.join(format!("{name}.log"));
        Self { name, args: args.iter().map(|a| a.to_string()).collect(), env, log, child: None, stopped: false }
    }

    /// Starts it (again): `exe --config CONFIG serve ARGS`, stdout and stderr appended to its log.
    pub fn spawn(&mut self, exe: &Path, config: &Path) -> Result<()> {
        let log = std::fs::File::options().create(true).append(true).open(&self.log)?;
        let mut c = Command::new(exe);
        c.arg("--config").arg(config).arg("serve").args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        self.stopped = false;
        Ok(())
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it has been started and not killed since.
    pub fn started(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `sig` (`-STOP`, `-CONT`) with `kill`.
    pub fn signal(&self, sig: &str) -> Result<()> {
        let Some(child) = &self.child else { bail!("{} is not running", self.name) };
        let status = Command::new("kill").args([sig, &child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill {sig} {} failed", self.name);
        }
        Ok(())
    }

    /// Whether the process accepts TCP connections on its `--listen` address: a restarted process counts as back
    /// only once it does (under load a restart can take seconds, and the schedule must not count it as up before).
    pub fn listening(&self) -> bool {
        use std::net::ToSocketAddrs;
        let Some(addr) = self.args.iter().position(|a| a == "--listen").and_then(|i| self.args.get(i + 1)) else {
            return true;
        };
        let first = addr.to_socket_addrs().ok().and_then(|mut a| a.next());
        first.is_some_and(|a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_millis(100)).is_ok())
    }

    /// SIGKILL and reap; it stays down until [`Self::spawn`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stopped = false;
    }

    /// An error naming it, with the end of its log, when it has exited by itself (not killed through [`Self::kill`]).
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait()?
        {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("{} exited by itself ({status}); the end of its log:\n{}", self.name, tail.join("\n"));
        }
        Ok(())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
