//! A completed extraction job's committed feature files, read unit by unit and row group by row group, and the
//! reduction (the job's own PCA, or one applied here) that turns its descriptors into the index's.

use std::path::Path;
use std::time::Instant;

use delf_core::FeatureSet;
use delf_features::{CommitRecord, FeatureFileReader, FeatureStore, JobManifest, StoreError};
use delf_model::{Extractor, Pca};
use delf_storage::{Location, Stores};

use crate::error::BuildError;
use crate::progress::Progress;

/// The job's committed feature files, read row group by row group.
pub(crate) struct JobRows<'a> {
    pub(crate) rt: &'a tokio::runtime::Runtime,
    pub(crate) loc: Location,
    pub(crate) manifest: JobManifest,
}

impl<'a> JobRows<'a> {
    /// The completed job at `prefix`; an incomplete or empty job is refused.
    pub(crate) fn open(
        rt: &'a tokio::runtime::Runtime,
        stores: &Stores,
        prefix: &str,
        source: &str,
    ) -> Result<Self, BuildError> {
        let loc = stores.location(prefix)?;
        let manifest = rt.block_on(FeatureStore::new(loc.clone()).manifest())?;
        if !manifest.complete {
            return Err(StoreError::Schema {
                uri: loc.uri(),
                reason: format!(
                    "the job is not complete ({} of {} units committed): finish it first",
                    manifest.units.len(),
                    manifest.job.units
                ),
            }
            .into());
        }
        if manifest.descriptors == 0 {
            return Err(BuildError::Input(format!(
                "no features were extracted from {source} ({} images failed)",
                manifest.failures
            )));
        }
        Ok(Self { rt, loc, manifest })
    }

    /// Calls `each` on every row group of `units`, in the order given: `(image id, features)`.
    pub(crate) fn for_units<'u>(
        &self,
        units: impl ExactSizeIterator<Item = &'u CommitRecord>,
        stage: &'static str,
        progress: &mut dyn Progress,
        mut each: impl FnMut(&CommitRecord, Vec<(String, FeatureSet)>) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        let (loc, manifest) = (&self.loc, &self.manifest);
        let count = units.len();
        progress.start(stage, count);
        let started = Instant::now();
        for unit in units {
            let path = loc.child(&unit.features_file);
            let mut reader = self.rt.block_on(FeatureFileReader::open(loc, &path))?;
            if reader.header.fingerprint.as_str() != manifest.job.fingerprint || reader.header.dim != manifest.job.dim {
                return Err(StoreError::Schema {
                    uri: loc.uri_of(&path),
                    reason: format!(
                        "holds {}-d descriptors of {}, the job {}-d of {}",
                        reader.header.dim, reader.header.fingerprint, manifest.job.dim, manifest.job.fingerprint
                    ),
                }
                .into());
            }
            while let Some(rows) = self.rt.block_on(reader.next_rows())? {
                each(unit, rows.into_iter().map(|r| (r.image_id, r.features)).collect())?;
            }
            progress.advance();
        }
        progress.finish();
        tracing::info!(stage, units = count, secs = started.elapsed().as_secs_f64(), "pass done");
        Ok(())
    }

    /// Calls `each` on every committed row group of the job, in unit order.
    pub(crate) fn for_each(
        &self,
        stage: &'static str,
        progress: &mut dyn Progress,
        mut each: impl FnMut(Vec<(String, FeatureSet)>) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        self.for_units(self.manifest.units.iter(), stage, progress, |_, rows| each(rows))
    }

    /// Fits a PCA on the raw descriptors of an even sample of `sample` of the job's images and saves it at `out`.
    pub(crate) fn fit_pca(
        &self,
        sample: usize,
        dim: i64,
        out: &Path,
        progress: &mut dyn Progress,
    ) -> Result<(), BuildError> {
        let n = self.manifest.rows.max(1);
        let take = sample.clamp(1, n);
        let wanted: std::collections::BTreeSet<usize> = (0..take).map(|i| i * n / take).collect();
        let mut flat = Vec::new();
        let mut row = 0usize;
        self.for_each("pca", progress, |rows| {
            for (_, f) in rows {
                if wanted.contains(&row) {
                    flat.extend_from_slice(&f.descriptors);
                }
                row += 1;
            }
            Ok(())
        })?;
        let channels = self.manifest.job.dim;
        let rows = flat.len() / channels.max(1);
        if (rows as i64) < dim {
            return Err(BuildError::Input(format!(
                "only {rows} descriptors to fit a {dim}-d PCA: index more (or larger) images"
            )));
        }
        let samples = tch::Tensor::from_slice(&flat).view([rows as i64, channels as i64]);
        Pca::fit(&samples, dim as usize, false, &self.manifest.job.backbone)?.save(out)?;
        tracing::info!(images = take, descriptors = rows, "fitted the PCA");
        Ok(())
    }
}

/// How the job's descriptors become the index's: as they are (the job applied the PCA), or through a PCA here.
pub(crate) enum Reduction {
    AsStored,
    Pca(Box<Extractor>),
}

impl Reduction {
    pub(crate) fn apply(&self, f: FeatureSet) -> Result<FeatureSet, BuildError> {
        match self {
            Reduction::AsStored => Ok(f),
            Reduction::Pca(x) => Ok(x.reduce(f)?),
        }
    }
}
