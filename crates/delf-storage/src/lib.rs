//! Storage of delf-rs: where feature jobs, image lists, indexes and training data live.
//!
//! - [`location`]: local folders and S3 / S3-compatible, GCS and Azure buckets behind one `object_store` code
//!   path ([`Stores`], one client per bucket; [`Location`], a folder-like prefix).
//! - [`mirror`]: named files of a location in a local folder (fetched once into a cache when remote).
//! - [`upload`]: a blocking, forward-only, checksummed multipart upload for synchronous writers.
//! - [`error`]: [`StorageError`], naming the object every failure concerns.
//!
//! Formats (Parquet feature shards, index files) live with their owners (`delf-features`, `delf-index`); this crate
//! only knows objects and prefixes.

pub mod error;
pub mod location;
pub mod mirror;
pub mod upload;

pub use error::StorageError;
pub use location::{Location, Stores, to_url};
pub use upload::{Upload, Uploaded};
