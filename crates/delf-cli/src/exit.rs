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
        if cause.is::<crate::config::ConfigError>() {
            return CONFIG;
        }
        if cause.is::<delf_search::SearchError>() || cause.is::<delf_index::IndexError>() {
            return BAD_INPUT;
        }
        if let Some(e) = cause.downcast_ref::<delf_features::StoreError>() {
            return match e {
                delf_features::StoreError::ObjectStore { .. } | delf_features::StoreError::Extractor(_) => FAILURE,
                _ => BAD_INPUT,
            };
        }
        if let Some(e) = cause.downcast_ref::<crate::commands::query::RemoteError>() {
            return if e.is_bad_input() { BAD_INPUT } else { FAILURE };
        }
        if let Some(e) = cause.downcast_ref::<delf_meta::MetaError>() {
            return match e {
                delf_meta::MetaError::Config(_) => CONFIG,
                _ => FAILURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<delf_cluster::ClusterError>() {
            return match e {
                delf_cluster::ClusterError::Config(_) | delf_cluster::ClusterError::Address { .. } => CONFIG,
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
                T::Store(_) | T::Model(_) => {} // their own types below
            }
        }
        if cause.is::<delf_eval::EvalError>() {
            return BAD_INPUT;
        }
        if cause.is::<delf_image::ImageError>() {
            return BAD_INPUT;
        }
        if let Some(e) = cause.downcast_ref::<delf_model::ModelError>() {
            return match e {
                delf_model::ModelError::Image(_) => BAD_INPUT,
                delf_model::ModelError::Torch(_) => FAILURE,
                _ => MODEL,
            };
        }
    }
    FAILURE
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
    }
}
