//! Stage progress: an `indicatif` bar redrawn in place on a terminal, plain log lines (every 10 %) otherwise.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of one stage.
pub struct Progress {
    stage: &'static str,
    total: usize,
    done: usize,
    /// Hidden (draws nothing) when stderr is not a terminal.
    bar: ProgressBar,
    next_log: usize,
    started: Instant,
}

impl Progress {
    /// Starts a stage of `total` steps.
    pub fn new(stage: &'static str, total: usize) -> Self {
        tracing::info!(stage, total, "started");
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{msg:<10} [{bar:30}] {pos}/{len} {eta} left") {
            bar.set_style(style.progress_chars("#> "));
        }
        bar.set_message(stage);
        Self { stage, total, done: 0, bar, next_log: 1, started: Instant::now() }
    }

    /// One more step done.
    pub fn inc(&mut self) {
        self.done += 1;
        self.bar.inc(1);
        if self.bar.is_hidden() && self.done * 10 >= self.next_log * self.total {
            let elapsed = self.started.elapsed().as_secs_f64();
            let eta = elapsed / self.done as f64 * (self.total - self.done.min(self.total)) as f64;
            tracing::info!(stage = self.stage, done = self.done, total = self.total, eta_s = eta.round(), "progress");
            self.next_log = (self.done * 10 / self.total.max(1)) + 1;
        }
    }

    /// Ends the stage; returns its duration in seconds.
    pub fn finish(self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        self.bar.finish();
        if !self.bar.is_hidden() {
            // Log lines after it start on a line of their own.
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
