//! Exit codes of `delf`, and how errors map to them. Documented in `delf --help` and docs/cli.md.

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// A runtime failure not covered below.
pub const FAILURE: u8 = 1;
/// Usage error (returned by clap itself, and by `delf config --check`).
pub const USAGE: u8 = 2;
/// Bad input: unreadable, corrupt or oversized image, missing input file.
pub const BAD_INPUT: u8 = 3;
/// Invalid configuration.
pub const CONFIG: u8 = 4;
/// The model or its weights are unavailable (run scripts/setup.sh), or the requested device is absent.
pub const MODEL: u8 = 5;
/// A coordinator's own Raft data is damaged (not a torn last write): it must come back under a new id.
pub const DAMAGED_STATE: u8 = 6;

/// A command line that does not parse (checked with `delf config --check`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The exit code for an error, from the most specific typed cause in its chain.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<Usage>() {
            return USAGE;
        }
        if cause.is::<delf_engine::config::ConfigError>() {
            return CONFIG;
        }
        if cause.is::<delf_search::SearchError>() || cause.is::<delf_index::IndexError>() {
            return BAD_INPUT;
        }
        if let Some(e) = cause.downcast_ref::<delf_storage::StorageError>() {
            return storage(e);
        }
        if let Some(e) = cause.downcast_ref::<delf_features::StoreError>() {
            return features(e);
        }
        if let Some(e) = cause.downcast_ref::<delf_build::BuildError>() {
            use delf_build::BuildError as B;
            return match e {
                B::Input(_) | B::NotReady(_) | B::Index(_) | B::Search(_) => BAD_INPUT,
                B::Features(e) => features(e),
                B::Storage(e) => storage(e),
                B::Model(e) => model(e),
                B::Reducer(_) => MODEL,
                B::Io { .. } => FAILURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<delf_rpc::RpcError>() {
            return rpc(e);
        }
        if let Some(e) = cause.downcast_ref::<crate::commands::query::RemoteError>() {
            return if e.is_bad_input() { BAD_INPUT } else { FAILURE };
        }
        if let Some(e) = cause.downcast_ref::<delf_meta::MetaError>() {
            return match e {
                delf_meta::MetaError::Config(_) => CONFIG,
                delf_meta::MetaError::DamagedLog { .. } | delf_meta::MetaError::Corrupt { .. } => DAMAGED_STATE,
                delf_meta::MetaError::Rpc(e) => rpc(e),
                delf_meta::MetaError::Store(e) => storage(e),
                _ => FAILURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<delf_cluster::ClusterError>() {
            return match e {
                delf_cluster::ClusterError::Config(_) => CONFIG,
                delf_cluster::ClusterError::Rpc(e) => rpc(e),
                delf_cluster::ClusterError::Store(e) => storage(e),
                delf_cluster::ClusterError::Index(_) | delf_cluster::ClusterError::Shard(_) => BAD_INPUT,
                _ => FAILURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<delf_train::TrainError>() {
            use delf_train::TrainError as T;
            match e {
                T::Labels { .. } | T::MissingImages { .. } | T::Image { .. } => return BAD_INPUT,
                T::Config(_) | T::Checkpoint { .. } => return CONFIG,
                T::Io { .. } | T::Torch(_) => return FAILURE,
                T::Store(e) => return storage(e),
                T::Model(_) => {} // its own type below
            }
        }
        if cause.is::<delf_eval::EvalError>() {
            return BAD_INPUT;
        }
        if cause.is::<delf_image::ImageError>() {
            return BAD_INPUT;
        }
        if let Some(e) = cause.downcast_ref::<delf_model::ModelError>() {
            return model(e);
        }
    }
    FAILURE
}

/// A feature-store failure: a job that does not fit or a corrupt file is the input's; storage decides for itself.
fn features(e: &delf_features::StoreError) -> u8 {
    match e {
        delf_features::StoreError::Storage(e) => storage(e),
        delf_features::StoreError::Extractor(_) => FAILURE,
        _ => BAD_INPUT,
    }
}

/// A model failure: an unreadable image is the input's, libtorch failing is the run's, the rest is the model's.
fn model(e: &delf_model::ModelError) -> u8 {
    match e {
        delf_model::ModelError::Image(_) => BAD_INPUT,
        delf_model::ModelError::Torch(_) => FAILURE,
        _ => MODEL,
    }
}

/// A storage failure: the store's own failure is the run's; a bad location or a missing object is the input's.
fn storage(e: &delf_storage::StorageError) -> u8 {
    use delf_storage::StorageError as S;
    match e {
        S::ObjectStore { .. } | S::Io { .. } => FAILURE,
        S::BadLocation { .. } | S::NotFound { .. } => BAD_INPUT,
    }
}

/// A gRPC setup failure: addresses and certificates are configuration; the transport failing is the run's.
fn rpc(e: &delf_rpc::RpcError) -> u8 {
    use delf_rpc::RpcError as R;
    match e {
        R::Address { .. } | R::Config(_) | R::Io { .. } => CONFIG,
        R::Transport(_) => FAILURE,
    }
}

/// Converts a code to a process exit code.
pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_causes_map_to_documented_codes() {
        let e = anyhow::Error::new(delf_train::TrainError::Labels { uri: "l.csv".into(), line: 1, reason: "x".into() });
        assert_eq!(code_for(&e), BAD_INPUT);
        let e = anyhow::Error::new(delf_image::ImageError::UnsupportedFormat).context("reading query");
        assert_eq!(code_for(&e), BAD_INPUT);
        let e = anyhow::Error::new(delf_model::ModelError::UnknownDevice("tpu".into()));
        assert_eq!(code_for(&e), MODEL);
        assert_eq!(code_for(&anyhow::anyhow!("something else")), FAILURE);
        let e = anyhow::Error::new(delf_meta::MetaError::DamagedLog { path: "raft.wal".into(), offset: 8, next: 40 });
        assert_eq!(code_for(&e.context("starting the coordinator")), DAMAGED_STATE);
    }

    /// Errors wrapped by the layers they pass through (`#[error(transparent)]` hides the inner one from the chain)
    /// keep the code of what went wrong.
    #[test]
    fn wrapped_causes_keep_their_codes() {
        let mismatch = delf_features::StoreError::JobMismatch {
            prefix: "out".into(),
            field: "unit size",
            existing: "1".into(),
            requested: "4".into(),
        };
        assert_eq!(code_for(&anyhow::Error::new(delf_build::BuildError::Features(mismatch))), BAD_INPUT);
        let missing = delf_storage::StorageError::NotFound { uri: "s3://b/x".into() };
        assert_eq!(code_for(&anyhow::Error::new(delf_features::StoreError::Storage(missing))), BAD_INPUT);
        let io = delf_storage::StorageError::Io { path: "/x".into(), source: std::io::Error::other("disk") };
        assert_eq!(code_for(&anyhow::Error::new(delf_build::BuildError::Storage(io))), FAILURE);
        let addr = delf_rpc::RpcError::Address { addr: "x".into(), reason: "no port".into() };
        assert_eq!(code_for(&anyhow::Error::new(delf_cluster::ClusterError::Rpc(addr))), CONFIG);
        let shards = delf_build::BuildError::Input("the shard count must be at least 1".into());
        assert_eq!(code_for(&anyhow::Error::new(shards)), BAD_INPUT);
    }
}
