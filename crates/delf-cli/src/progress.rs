//! Stage progress: a bar redrawn in place on a terminal, plain log lines (every 10 %) otherwise.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Progress of one stage.
pub struct Progress {
    stage: &'static str,
    total: usize,
    done: usize,
    tty: bool,
    next_log: usize,
    started: Instant,
}

impl Progress {
    /// Starts a stage of `total` steps.
    pub fn new(stage: &'static str, total: usize) -> Self {
        let tty = std::io::stderr().is_terminal();
        tracing::info!(stage, total, "started");
        Self { stage, total, done: 0, tty, next_log: 1, started: Instant::now() }
    }

    /// One more step done.
    pub fn inc(&mut self) {
        self.done += 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = if self.done > 0 {
            elapsed / self.done as f64 * (self.total - self.done.min(self.total)) as f64
        } else {
            0.0
        };
        if self.tty {
            let width = 30;
            let filled = (self.done * width).checked_div(self.total).unwrap_or(width).min(width);
            eprint!(
                "\r{:<10} [{}{}] {}/{} {:.0}s left   ",
                self.stage,
                "#".repeat(filled),
                " ".repeat(width - filled),
                self.done,
                self.total,
                eta
            );
            std::io::stderr().flush().ok();
        } else if self.done * 10 >= self.next_log * self.total {
            tracing::info!(stage = self.stage, done = self.done, total = self.total, eta_s = eta.round(), "progress");
            self.next_log = (self.done * 10 / self.total.max(1)) + 1;
        }
    }

    /// Ends the stage; returns its duration in seconds.
    pub fn finish(self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if self.tty {
            eprintln!();
        }
        tracing::info!(stage = self.stage, done = self.done, secs, "finished");
        secs
    }
}

/// Library stages (index builds, extraction jobs) drawn as one [`Progress`] per stage.
#[derive(Default)]
pub struct StageBars {
    current: Option<Progress>,
}

impl delf_build::Progress for StageBars {
    fn start(&mut self, stage: &'static str, units: usize) {
        if let Some(p) = self.current.replace(Progress::new(stage, units)) {
            p.finish();
        }
    }

    fn advance(&mut self) {
        if let Some(p) = &mut self.current {
            p.inc();
        }
    }

    fn finish(&mut self) {
        if let Some(p) = self.current.take() {
            p.finish();
        }
    }
}
