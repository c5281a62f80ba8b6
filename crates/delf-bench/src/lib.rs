//! `delf bench ...`: the benchmarks of delf-rs, each printing a table beside its reference implementation in the
//! same run (OpenCV, FAISS, one-process search), with the options the `delf` binary parses for them.
//!
//! They drive real components: real photos and descriptors ([`vectors`], [`index`], [`extract`], the robustness
//! benchmark [`views`]), real processes on loopback ([`cluster`], [`chaos`], [`index_build`]). The processes are the
//! running executable started as `delf serve ...` (or `delf index encode ...`): these benchmarks run from the
//! `delf` binary. [`protocols`] runs the published evaluations' searches. Figures go to docs/benchmarks.md, never
//! into timed tests.

pub mod chaos;
mod chaos_cluster;
pub mod chaos_schedule;
pub mod cluster;
pub mod extract;
pub mod index;
pub mod index_build;
mod local_cluster;
pub mod protocols;
mod serve_process;
pub mod vectors;
pub mod verify;
pub mod views;

use anyhow::Result;
use clap::Subcommand;
use delf_build::Progress;
use delf_engine::Config;

/// `delf bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// RANSAC (affine) verifications per second on synthetic correspondences, beside OpenCV's estimateAffine2D.
    Verify {
        /// Correspondences per verification.
        #[arg(long, default_value_t = 1000)]
        matches: usize,
        /// Fraction of outliers.
        #[arg(long, default_value_t = 0.7)]
        outliers: f64,
        /// Distinct synthetic scenes (each a different affine map).
        #[arg(long, default_value_t = 50)]
        scenes: usize,
        /// Passes over all scenes.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Python with OpenCV for the baseline (scripts/setup.sh installs one); `none` skips it.
        #[arg(long, env = "DELFRS_PYTHON", default_value = ".cache/venv/bin/python")]
        python: String,
    },
    /// IVF-PQ training, encoding, batched search and recall against exact search, beside FAISS IndexIVFPQ.
    Index(index::BenchIndexArgs),
    /// Extraction images/s and peak memory per maximum image side, on real photos.
    Extract(extract::BenchExtractArgs),
    /// Cluster queries/s and latency against shards and replicas: real gRPC on loopback, a synthetic index.
    Cluster(cluster::BenchClusterArgs),
    /// The real descriptor set of the index benchmarks: the setup's photos and seeded hard views of them, extracted,
    /// reduced, queries held out, the nearest-neighbour distance curve and its calibrated expansion.
    Vectors(vectors::BenchVectorsArgs),
    /// A bounded chaos run: real processes (3 Raft coordinators, 2 shards x 2 replicas, 2 workers) answer queries on
    /// real photos while a seeded schedule kills, stops and restarts them; counts wrong answers and lost writes.
    Chaos(chaos::BenchChaosArgs),
    /// The distributed index build on real descriptors: train once, then 1, 2, 4 ... encode worker processes,
    /// timed, with each worker's peak RSS.
    Build(index_build::BenchBuildArgs),
}

/// Runs a benchmark; `progress` draws the stages of the long ones.
pub fn run(command: &BenchCommand, config: &Config, progress: &mut dyn Progress) -> Result<()> {
    match command {
        BenchCommand::Verify { matches, outliers, scenes, runs, python } => {
            verify::run(*matches, *outliers, *scenes, *runs, python)
        }
        BenchCommand::Index(args) => index::run(args, config),
        BenchCommand::Vectors(args) => vectors::run(args, config, progress),
        BenchCommand::Extract(args) => extract::run(args, config),
        BenchCommand::Cluster(args) => cluster::run(args, config),
        BenchCommand::Chaos(args) => chaos::run(args, config),
        BenchCommand::Build(args) => index_build::run(args, config),
    }
}
