//! Fail points (fail-rs, as TiKV tests faults) for deterministic fault-injection tests. They exist only in builds
//! with the `failpoints` feature (test builds); in release builds every check is compiled out.
//!
//! - `meta::partition`: this coordinator neither sends nor accepts Raft messages or forwarded calls, as if cut off
//!   from the other coordinators (clients can still reach it).

/// The partition fail point's name.
pub const PARTITION: &str = "meta::partition";

/// True while the partition fail point is on.
pub fn partitioned() -> bool {
    fail::fail_point!("meta::partition", |_| true);
    false
}

/// Sets a fail point (`actions` in fail-rs syntax, e.g. `return`; empty removes it).
pub fn configure(name: &str, actions: &str) -> Result<(), String> {
    #[cfg(feature = "failpoints")]
    {
        if actions.is_empty() {
            fail::remove(name);
            Ok(())
        } else {
            fail::cfg(name, actions)
        }
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = (name, actions);
        Err("fail points are compiled out of this build (feature failpoints)".into())
    }
}
