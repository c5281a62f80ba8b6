//! The gRPC protocol of delf-rs, generated from `proto/delf/v1/*.proto` (package `delf.v1`): an index node per PQ
//! shard, workers for extraction and verification, and the coordinator clients call. This crate holds the wire
//! format and its size budget; the roles that serve it live in `delf-cluster`.

#![allow(missing_docs, clippy::unwrap_used)]

/// Package `delf.v1`.
pub mod v1 {
    tonic::include_proto!("delf.v1");

    /// Encoded `FileDescriptorSet` of the package, served by gRPC server reflection (so `grpcurl` works).
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("delf_v1_descriptor");
}

/// The protobuf runtime the messages are generated for (`prost::Message::encoded_len` sizes a message).
pub use prost;

/// Largest message any delf endpoint accepts or sends (decoding and encoding limits of every server and client).
/// Measured on real-shaped messages (`tests/wire_size.rs`): a query's 1000 40-d descriptors are 160 KB, a shard's
/// answer with 60 neighbours each and 6000 image ids 1.59 MiB, one image's features 182 KB. An encoded photo sent
/// for extraction may be up to the 64 MiB decode limit of `delf-image`; 80 MiB leaves room for it plus framing and
/// refuses anything larger before it is buffered.
pub const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;
