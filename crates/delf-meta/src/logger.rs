//! raft-rs logs through `slog`; this drain hands its records to `tracing`, so Raft's own messages (elections,
//! snapshots, membership) appear in the coordinator's log with everything else.

use slog::{Drain, Level, OwnedKVList, Record};

struct ToTracing;

impl Drain for ToTracing {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, _values: &OwnedKVList) -> Result<(), slog::Never> {
        let msg = record.msg().to_string();
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{msg}"),
            Level::Warning => tracing::warn!(target: "raft", "{msg}"),
            Level::Info => tracing::info!(target: "raft", "{msg}"),
            Level::Debug | Level::Trace => tracing::debug!(target: "raft", "{msg}"),
        }
        Ok(())
    }
}

/// A slog logger for raft-rs that writes through `tracing` (target `raft`), tagged with the coordinator's id.
pub fn raft_logger(id: u64) -> slog::Logger {
    slog::Logger::root(ToTracing.fuse(), slog::o!("raft_id" => id))
}
