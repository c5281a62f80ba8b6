//! `delf index train | encode | finalize`: the index build as parallel jobs straight to object storage (the
//! steps are `delf_build::distributed`'s; docs/operations.md, "Re-indexing"). These commands wire the model, the
//! flags and the storage options to them and print what each step did.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use delf_build::{BuildError, EncodeWorker, MakeReducer};
use delf_engine::Config;
use delf_engine::index_build::reducer;
use delf_storage::Stores;

use crate::cli::{IndexEncodeArgs, IndexTrainArgs};
use crate::progress::StageBars;

/// `delf index train`.
pub fn train(args: &IndexTrainArgs, config: &Config) -> Result<()> {
    let rt = delf_engine::io_runtime()?;
    let stores = Arc::new(Stores::new());
    let options = args.params.options(PathBuf::new(), config)?;
    let reducer = reducer(config, args.params.device.as_deref());
    let reducer: &MakeReducer<'_> = &reducer;
    let mut bars = StageBars::default();
    let plan = delf_build::distributed::train(&rt, &stores, &args.features, &args.index, &options, reducer, &mut bars)?;
    println!(
        "trained {}: {}, {} shard(s), {}-d descriptors of {}; run up to {} encode worker(s), then finalize",
        args.index, plan.spec, plan.shards, plan.dim, plan.descriptor_fingerprint, plan.shards
    );
    Ok(())
}

/// `delf index encode`.
pub fn encode(args: &IndexEncodeArgs, config: &Config) -> Result<()> {
    delf_build::distributed::fail_points_from_env();
    let rt = delf_engine::io_runtime()?;
    let stores = Arc::new(Stores::new());
    let worker = EncodeWorker {
        worker: args.worker,
        workers: args.workers,
        worker_id: args.worker_id.clone().unwrap_or_else(delf_features::default_worker_id),
        cache: config.home.join("build-cache"),
    };
    let reducer = reducer(config, args.device.as_deref());
    let reducer: &MakeReducer<'_> = &reducer;
    let mut bars = StageBars::default();
    let done = waiting(args.wait_s, || {
        delf_build::distributed::encode(&rt, &stores, &args.index, &worker, reducer, &mut bars)
    })?;
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    println!(
        "worker {} of {}: committed {} shard(s) [{}], skipped {} already committed [{}], lost {} race(s) [{}]",
        args.worker,
        args.workers,
        done.committed.len(),
        list(&done.committed),
        done.skipped.len(),
        list(&done.skipped),
        done.lost.len(),
        list(&done.lost)
    );
    Ok(())
}

/// `delf index finalize`.
pub fn finalize(index: &str, wait_s: u64) -> Result<()> {
    let rt = delf_engine::io_runtime()?;
    let stores = Stores::new();
    let m = waiting(wait_s, || delf_build::distributed::finalize(&rt, &stores, index))?;
    println!(
        "finalized {index}: {} images, {} descriptors, {}, {} shard(s); manifest written",
        m.images, m.descriptors, m.spec, m.shards
    );
    Ok(())
}

/// Runs `step` until it is no longer waiting for an earlier step ([`BuildError::NotReady`]), for at most `wait_s`
/// seconds, polling every few seconds (at most 15).
fn waiting<T>(wait_s: u64, mut step: impl FnMut() -> Result<T, BuildError>) -> Result<T, BuildError> {
    let deadline = Instant::now() + Duration::from_secs(wait_s);
    let mut pause = Duration::from_secs(1);
    loop {
        match step() {
            Err(BuildError::NotReady(why)) if Instant::now() + pause < deadline => {
                tracing::info!(reason = %why, secs = pause.as_secs(), "waiting for an earlier step");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(15));
            }
            other => return other,
        }
    }
}
