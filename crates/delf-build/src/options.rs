//! What a build is asked for, with the defaults every caller (CLI flags, evaluation, cluster) shares.

use std::path::PathBuf;

use delf_index::{IndexSpec, SearchParams};

use crate::error::BuildError;

/// Images sampled evenly to fit an index's PCA, unless told otherwise.
pub const DEFAULT_PCA_SAMPLE: usize = 50;
/// Descriptor dimensions after PCA, as in the reference (DELF: 40).
pub const DEFAULT_PCA_DIM: i64 = 40;

/// The parameters of one index build.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    /// Index folder to write.
    pub out: PathBuf,
    /// Number of shards (whole extraction units per shard: unit u goes to shard u % shards).
    pub shards: u32,
    /// Index structure (default: chosen from the number of descriptors, [`IndexSpec::auto`]).
    pub spec: Option<IndexSpec>,
    /// A fitted PCA to use instead of fitting one (ignored when the job applied its own PCA).
    pub pca: Option<PathBuf>,
    /// Images sampled evenly to fit the PCA.
    pub pca_sample: usize,
    /// Descriptor dimensions after PCA.
    pub dim: i64,
    /// Cells probed per query descriptor, stored as the index's default (capped at the index's cell count).
    pub nprobe: usize,
}

impl BuildOptions {
    /// The defaults, writing to `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            shards: 1,
            spec: None,
            pca: None,
            pca_sample: DEFAULT_PCA_SAMPLE,
            dim: DEFAULT_PCA_DIM,
            nprobe: SearchParams::default().nprobe,
        }
    }

    /// Checks what can be checked before any work.
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.shards == 0 {
            return Err(BuildError::Input("the shard count must be at least 1".into()));
        }
        if self.dim <= 0 {
            return Err(BuildError::Input(format!("the PCA dimension must be positive, not {}", self.dim)));
        }
        if self.nprobe == 0 {
            return Err(BuildError::Input("nprobe must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_nonsense_does_not() {
        let o = BuildOptions::new("/tmp/x");
        assert!(o.validate().is_ok());
        assert_eq!(o.nprobe, SearchParams::default().nprobe);
        for bad in [
            BuildOptions { shards: 0, ..o.clone() },
            BuildOptions { dim: 0, ..o.clone() },
            BuildOptions { nprobe: 0, ..o.clone() },
        ] {
            assert!(matches!(bad.validate(), Err(BuildError::Input(_))), "{bad:?}");
        }
    }
}
