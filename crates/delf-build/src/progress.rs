//! How a build tells its caller where it is: stages of a known number of units. The CLI draws bars; a cluster job
//! reports to its coordinator; tests stay [`Silent`].

/// Receives a build's progress.
pub trait Progress {
    /// A stage of `units` steps begins.
    fn start(&mut self, stage: &'static str, units: usize);
    /// One more step of the current stage is done.
    fn advance(&mut self);
    /// The current stage is over.
    fn finish(&mut self);
}

/// Reports nothing (the build still logs its stages through `tracing`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn start(&mut self, _stage: &'static str, _units: usize) {}
    fn advance(&mut self) {}
    fn finish(&mut self) {}
}
