//! Approximate nearest-neighbour index of DELF local descriptors: an inverted file (IVF) over coarse k-means cells
//! with product-quantized codes and asymmetric distances, searched one query image (about 1000 descriptors) at a
//! time. Parameters read as one string (`IVF1024,PQ20x8r`, see [`IndexSpec`]).
//!
//! Layers, bottom up: [`kmeans`] and [`pq`] train; [`Codebooks`] pairs the coarse quantizer with the PQ and is
//! shared by all shards; [`Shard`] holds inverted lists with compact ids and keypoints, takes additions, deletions
//! and compaction; [`file`] stores a shard in a checksummed, memory-mapped file; [`search()`](search::search) scans
//! lists in batches with an AVX2 or scalar [`ScanKernel`] that give identical results (8-bit codes by gathers,
//! 4-bit codes by in-register table lookups, [`fastscan`]); [`ShardedIndex`] splits
//! images over shards. The format is described in `docs/index.md`.

pub mod codebooks;
pub mod codes;
pub mod error;
pub mod expand;
pub mod fastscan;
pub mod file;
mod ids;
pub mod kmeans;
pub mod linalg;
pub mod npy;
pub mod pq;
pub mod scan;
pub mod search;
pub mod shard;
pub mod shard_cut;
pub mod sharded;
pub mod spec;
mod storage;
pub mod synthetic;
pub mod topk;

pub use codebooks::{CoarseQuantizer, Codebooks, TrainConfig};
pub use codes::CodeLayout;
pub use error::{IndexError, Result};
pub use expand::{Expansion, PowerLaw, median_nn_distance};
pub use scan::ScanKernel;
pub use search::{exact_search, search, search_probed};
pub use shard::{ImageEntry, NewImage, Shard, ShardInfo, scale_code, scale_of_code};
pub use shard_cut::{Cut, merge_cut_lists, shard_k};
pub use sharded::ShardedIndex;
pub use spec::{DEFAULT_K, DEFAULT_NPROBE, IndexSpec, SearchParams};
pub use synthetic::SyntheticDescriptors;
pub use topk::{Neighbor, merge_neighbor_lists};
