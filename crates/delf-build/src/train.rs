//! The training step of an index build: the PCA (the job's own, a given one, or one fitted on a sample) and the
//! codebooks, trained on an even sample of the job's descriptors. What every shard of the index then shares.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use delf_features::JobSpec;
use delf_features::job::PCA_FILE as JOB_PCA_FILE;
use delf_index::{Codebooks, IndexSpec, TrainConfig};
use delf_model::{Extractor, Pca};

use crate::error::BuildError;
use crate::job_rows::{JobRows, Reduction};
use crate::options::BuildOptions;
use crate::progress::Progress;

/// Makes the extractor that reduces a raw job's descriptors: the job's backbone and extraction settings (as the
/// job stored them) with the PCA at the given path. The caller owns the model configuration (weights, device).
pub type MakeReducer<'a> = dyn Fn(&delf_features::JobSpec, &Path) -> Result<Extractor, BuildError> + 'a;

/// What training gives the encode step.
pub(crate) struct Trained {
    /// How the job's descriptors become the index's.
    pub(crate) reduction: Reduction,
    /// Fingerprint of the index's descriptors (model + PCA).
    pub(crate) fingerprint: String,
    /// Their dimension.
    pub(crate) dim: usize,
    /// The index structure.
    pub(crate) spec: IndexSpec,
    /// The codebooks every shard shares.
    pub(crate) codebooks: Arc<Codebooks>,
    /// Seconds per step (`pca`, `train`).
    pub(crate) timings: Vec<(String, f64)>,
}

/// The reduction of `job`'s descriptors with the PCA at `pca` (already in place): none when the job applied it.
pub(crate) fn reduction(
    job: &JobSpec,
    job_uri: &str,
    pca: &Path,
    reducer: &MakeReducer<'_>,
) -> Result<(Reduction, String, usize), BuildError> {
    if job.pca {
        return Ok((Reduction::AsStored, job.fingerprint.clone(), job.dim));
    }
    let x = reducer(job, pca)?;
    if x.raw_fingerprint().as_str() != job.fingerprint {
        return Err(delf_features::StoreError::Schema {
            uri: job_uri.to_string(),
            reason: format!(
                "the job holds descriptors of {} ({}), the configured model gives {}: configure the same model",
                job.backbone,
                job.fingerprint,
                x.raw_fingerprint()
            ),
        }
        .into());
    }
    let (fp, dim) = (x.fingerprint().to_string(), x.dim());
    Ok((Reduction::Pca(Box::new(x)), fp, dim))
}

/// Puts the index's PCA at `pca_out` and trains the codebooks.
pub(crate) fn train(
    rows: &JobRows<'_>,
    opts: &BuildOptions,
    pca_out: &Path,
    reducer: &MakeReducer<'_>,
    progress: &mut dyn Progress,
) -> Result<Trained, BuildError> {
    let job = &rows.manifest.job;
    let mut timings = Vec::new();

    // The PCA: the job's own, or a given one, or one fitted on a sample.
    let t = Instant::now();
    if job.pca {
        let pca = rows.rt.block_on(rows.loc.get(&rows.loc.child(JOB_PCA_FILE)))?;
        delf_core::durable::write_atomic(pca_out, &pca).map_err(BuildError::io(pca_out))?;
    } else {
        match &opts.pca {
            Some(given) => {
                Pca::load(given)?;
                std::fs::copy(given, pca_out).map_err(BuildError::io(pca_out))?;
            }
            None => rows.fit_pca(opts.pca_sample, opts.dim, pca_out, progress)?,
        }
    }
    let (reduction, fingerprint, dim) = reduction(job, &rows.loc.uri(), pca_out, reducer)?;
    timings.push(("pca".to_string(), t.elapsed().as_secs_f64()));

    // Codebooks on an even sample of the descriptors, as many as k-means uses (all of them for small corpora).
    let t = Instant::now();
    let total = rows.manifest.descriptors as usize;
    let spec = opts.spec.unwrap_or_else(|| IndexSpec::auto(total, dim));
    let train = TrainConfig::default();
    let wanted =
        (spec.nlist * train.coarse.max_points_per_centroid).max(spec.ksub() * train.pq.max_points_per_centroid);
    let stride = total.div_ceil(wanted).max(1);
    let mut sample: Vec<f32> = Vec::with_capacity(total.div_ceil(stride) * dim);
    let mut seen = 0usize;
    rows.for_each("sample", progress, |batch| {
        for (_, f) in batch {
            let f = reduction.apply(f)?;
            for i in 0..f.len() {
                if seen.is_multiple_of(stride) {
                    sample.extend_from_slice(f.descriptor(i));
                }
                seen += 1;
            }
        }
        Ok(())
    })?;
    let codebooks = Arc::new(Codebooks::train(&sample, dim, spec, &train)?);
    timings.push(("train".to_string(), t.elapsed().as_secs_f64()));
    Ok(Trained { reduction, fingerprint, dim, spec, codebooks, timings })
}
