//! delf-rs in one process, as a user configures it: the configuration file's one shape ([`Config`]: defaults, a
//! TOML file, `DELF_*` environment variables), the network and extractor that it names ([`model`]), and the query
//! path over an open index ([`Searcher`]: extraction, the upright search, the rotated passes), and the index built
//! from images with that model ([`index_build`]).
//!
//! The `delf` binary parses flags into these and prints what they return; benchmarks (delf-bench) and evaluations
//! open the same things the same way, so that a benchmark measures what `delf search` runs.

pub mod config;
pub mod index_build;
pub mod model;
mod searcher;

pub use config::{Config, ConfigError, ExtractSettings, IndexSettings, LogFormat, SearchSettings};
pub use searcher::Searcher;

/// The async runtime of a command's object-store I/O (two threads: the work is waiting on the network and disks;
/// decoding runs on its own blocking threads).
pub fn io_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}
