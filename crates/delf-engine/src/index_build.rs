//! An index built from images with the configured model, as `delf index build SOURCE --out DIR` and the evaluations
//! run it: an extraction job over the source's images (raw descriptors, Parquet feature shards in `DIR/extraction`,
//! each unit committed exactly once, so a rerun resumes), then the index from those shards: PCA fitted on a sample
//! unless given, codebooks, shards, manifest. Everything lands in one folder (docs/search.md). Indexing an existing
//! job's features skips the extraction. The stages are `delf-build`'s; this wires the configured model to them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use delf_build::Progress;
use delf_build::{BuildOptions, Built, ExtractionJob, JobSettings, MakeReducer};
use delf_features::{Assignment, StoreError};
use delf_search::manifest::EXTRACTION_DIR;
use delf_storage::Stores;

use crate::config::{Config, ExtractSettings};
use crate::model;

/// Images per work unit of an index build's extraction: what a killed build redoes at most.
const UNIT_SIZE: usize = 64;

/// Images per unit for `images` images in `shards` shards: [`UNIT_SIZE`], or fewer when that would leave a shard
/// without a unit (shards take whole units, `delf_build::assignment`).
fn unit_size(images: usize, shards: u32) -> usize {
    match shards {
        0 | 1 => UNIT_SIZE,
        s => images.div_ceil(s as usize).clamp(1, UNIT_SIZE),
    }
}

/// What an index is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildInput {
    /// Images: a local folder, a list file, or an object-store folder or list (`delf_build::source_list`).
    Images(String),
    /// An existing extraction job's feature shards (their URI prefix): no extraction.
    Features(String),
}

impl Config {
    /// `options` with the configuration's defaults where they leave a choice open: `index.spec` when no structure
    /// is given, `model.pca` when no PCA is; checked. The PCA's dimensions are [`Config::pca_dim`]'s.
    pub fn build_options(&self, mut options: BuildOptions) -> Result<BuildOptions> {
        if options.spec.is_none() {
            options.spec = self.index.spec.as_deref().filter(|s| !s.is_empty()).map(str::parse).transpose()?;
        }
        if options.pca.is_none() {
            options.pca.clone_from(&self.model.pca);
        }
        options.validate()?;
        Ok(options)
    }

    /// Descriptor dimensions after the PCA: `flag` when given, else `index.pca_dim`, else 40.
    pub fn pca_dim(&self, flag: Option<i64>) -> i64 {
        flag.or(self.index.pca_dim).unwrap_or(delf_build::options::DEFAULT_PCA_DIM)
    }
}

/// Writes what a build made: `what` completes the descriptor count's parenthesis.
fn write_summary(
    report: &mut dyn std::io::Write,
    built: &Built,
    what: &str,
    out: &Path,
    started: Instant,
) -> Result<()> {
    let m = &built.manifest;
    writeln!(
        report,
        "indexed {} images ({} descriptors, {what} into {}: {}, {} shard(s), {:.1} bytes per descriptor, {:.0} s",
        m.images,
        m.descriptors,
        out.display(),
        m.spec,
        m.shards,
        built.bytes_per_descriptor,
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// What reduces a job's raw descriptors: the configured model, with the job's extraction settings and the
/// build's PCA, on `device` (default: the `device` setting).
pub fn reducer<'a>(
    config: &'a Config,
    device: Option<&'a str>,
) -> impl Fn(&delf_features::JobSpec, &Path) -> Result<delf_model::Extractor, delf_build::BuildError> + 'a {
    move |job, pca| {
        let make = || -> Result<delf_model::Extractor> {
            let settings = ExtractSettings::from_stored(&job.extract, "job", config)?;
            let device = model::device(device, config)?;
            model::extractor(config, settings.to_config(), Some(pca), device)
        };
        make().map_err(|e| delf_build::BuildError::Reducer(e.into()))
    }
}

/// Builds the index that `options` describe from `input` on `device` (default: the `device` setting), drawing its
/// stages on `progress`; its summary (one line, then a line per skipped image) goes to `report`.
pub fn build_index(
    input: &BuildInput,
    options: &BuildOptions,
    device: Option<&str>,
    config: &Config,
    progress: &mut dyn Progress,
    report: &mut dyn std::io::Write,
) -> Result<Built> {
    let started = Instant::now();
    let rt = crate::io_runtime()?;
    let stores = Arc::new(Stores::new());
    let out = &options.out;
    let reducer = reducer(config, device);
    let reducer: &MakeReducer<'_> = &reducer;
    let source = match input {
        BuildInput::Features(prefix) => {
            let built =
                delf_build::build_from_features(&rt, &stores, prefix, options, reducer, None, prefix, progress)?;
            let m = &built.manifest;
            let what = format!("{} failed at extraction) from {} feature shards", m.skipped.len(), built.units);
            write_summary(report, &built, &what, out, started)?;
            return Ok(built);
        }
        BuildInput::Images(source) => source.clone(),
    };
    let (list, root) = delf_build::source_list(&source, &stores, &rt)?;
    let list = Arc::new(list);
    let job_dir = out.join(EXTRACTION_DIR);
    std::fs::create_dir_all(&job_dir).with_context(|| format!("creating {}", job_dir.display()))?;
    let job_uri = job_dir.to_string_lossy().into_owned();

    let device = model::device(device, config)?;
    let settings = config.extract.to_config();
    let raw_extractor = model::extractor(config, settings.clone(), None, device)?;
    let unit_size = unit_size(list.len(), options.shards);
    let job_settings = JobSettings { unit_size, row_group: unit_size, ..JobSettings::default() };
    let job = ExtractionJob {
        rt: &rt,
        stores: Arc::clone(&stores),
        list: Arc::clone(&list),
        out: &job_uri,
        extractor: &raw_extractor,
        extract: serde_json::to_value(ExtractSettings::from_config(&settings))?,
        pca: None,
        raw: true,
        settings: &job_settings,
        assignment: Assignment::Dynamic,
    };
    let t = Instant::now();
    let summary = match job.run(progress) {
        Ok((_, summary)) => summary,
        Err(delf_build::BuildError::Features(e @ StoreError::JobMismatch { .. })) => {
            tracing::info!(reason = %e, "the images or the model changed since the last build: extracting afresh");
            std::fs::remove_dir_all(&job_dir)?;
            std::fs::create_dir_all(&job_dir)?;
            job.run(progress)?.1
        }
        Err(e) => return Err(e.into()),
    };
    if !summary.job_complete {
        bail!(
            "the extraction job in {job_uri} is not complete ({} units held by another build)",
            summary.held_by_others
        );
    }
    let extract_s = t.elapsed().as_secs_f64();
    drop(raw_extractor);

    let mut built = delf_build::build_from_features(&rt, &stores, &job_uri, options, reducer, root, &source, progress)?;
    built.manifest.timings_s.insert(0, ("extract".to_string(), extract_s));
    built.manifest.save(out)?;
    let m = &built.manifest;
    let cached = m.images.saturating_sub(summary.rows);
    write_summary(report, &built, &format!("{cached} from cache, {} skipped)", m.skipped.len()), out, started)?;
    for (id, why) in &m.skipped {
        writeln!(report, "skipped {id}: {why}")?;
    }
    Ok(built)
}

/// Builds (or resumes building) a one-shard index in `dir` of the images at `paths` (absolute; they become the
/// image ids), with the configured PCA and structure (else the defaults); its summary goes to stderr.
pub fn build_index_of(
    paths: &[PathBuf],
    dir: &Path,
    device: Option<&str>,
    config: &Config,
    progress: &mut dyn Progress,
) -> Result<Built> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let list = dir.join("database-images.txt");
    let text: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&list, text).with_context(|| format!("writing {}", list.display()))?;
    let options = config.build_options(BuildOptions { dim: config.pca_dim(None), ..BuildOptions::new(dir) })?;
    let input = BuildInput::Images(list.display().to_string());
    build_index(&input, &options, device, config, progress, &mut std::io::stderr())
}
