//! `delf index build SOURCE --out DIR`: an extraction job over the source's images (raw descriptors, Parquet feature
//! shards in `DIR/extraction`, each unit committed exactly once, so a rerun resumes), then the index from those
//! shards: PCA fitted on a sample unless given, codebooks, shards, manifest. Everything lands in one folder
//! (docs/search.md). `--features PREFIX` skips the extraction and indexes an existing job. The pipeline is
//! `delf-build`'s; this command wires the model and the flags to it and prints the summary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use delf_build::{BuildOptions, Built, ExtractionJob, JobSettings, MakeReducer};
use delf_features::{Assignment, StoreError};
use delf_search::manifest::EXTRACTION_DIR;
use delf_storage::Stores;

use crate::cli::{IndexBuildArgs, IndexParamsArgs};
use crate::commands::model;
use crate::config::{Config, ExtractSettings};
use crate::progress::StageBars;

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

impl IndexParamsArgs {
    /// The build options these flags ask for, writing to `out` (`--spec` falls back to `index.spec`, `--pca` to
    /// `model.pca`).
    pub(crate) fn options(&self, out: PathBuf, config: &Config) -> Result<BuildOptions> {
        let options = BuildOptions {
            out,
            shards: self.shards,
            spec: self
                .spec
                .as_deref()
                .or(config.index.spec.as_deref().filter(|s| !s.is_empty()))
                .map(str::parse)
                .transpose()?,
            pca: self.pca.clone().or_else(|| config.model.pca.clone()),
            pca_sample: self.pca_sample,
            dim: self.dim,
            nprobe: self.nprobe,
        };
        options.validate()?;
        Ok(options)
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
pub(crate) fn reducer<'a>(
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

/// Runs the build, its summary on stdout.
pub fn run(opts: &IndexBuildArgs, config: &Config) -> Result<()> {
    build(opts, config, &mut std::io::stdout())
}

/// Runs the build, its summary written to `report` (stderr where stdout carries another command's answer).
pub fn build(opts: &IndexBuildArgs, config: &Config, report: &mut dyn std::io::Write) -> Result<()> {
    let started = Instant::now();
    let rt = crate::commands::io_runtime()?;
    let stores = Arc::new(Stores::new());
    let options = opts.params.options(opts.out.clone(), config)?;
    let reducer = reducer(config, opts.params.device.as_deref());
    let reducer: &MakeReducer<'_> = &reducer;
    let build_from = |prefix: &str, root: Option<PathBuf>, source: &str| -> Result<Built> {
        let mut bars = StageBars::default();
        Ok(delf_build::build_from_features(&rt, &stores, prefix, &options, reducer, root, source, &mut bars)?)
    };
    let source = match (&opts.source, &opts.features) {
        (_, Some(prefix)) => {
            let built = build_from(prefix, None, prefix)?;
            let m = &built.manifest;
            let what = format!("{} failed at extraction) from {} feature shards", m.skipped.len(), built.units);
            return write_summary(report, &built, &what, &opts.out, started);
        }
        (Some(source), None) => source.clone(),
        (None, None) => bail!("give a SOURCE folder or list, or --features PREFIX"),
    };
    let (list, root) = delf_build::source_list(&source, &stores, &rt)?;
    let list = Arc::new(list);
    let job_dir = opts.out.join(EXTRACTION_DIR);
    std::fs::create_dir_all(&job_dir).with_context(|| format!("creating {}", job_dir.display()))?;
    let job_uri = job_dir.to_string_lossy().into_owned();

    let device = model::device(opts.params.device.as_deref(), config)?;
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
    let mut bars = StageBars::default();
    let summary = match job.run(&mut bars) {
        Ok((_, summary)) => summary,
        Err(delf_build::BuildError::Features(e @ StoreError::JobMismatch { .. })) => {
            tracing::info!(reason = %e, "the images or the model changed since the last build: extracting afresh");
            std::fs::remove_dir_all(&job_dir)?;
            std::fs::create_dir_all(&job_dir)?;
            job.run(&mut bars)?.1
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

    let mut built = build_from(&job_uri, root, &source)?;
    built.manifest.timings_s.insert(0, ("extract".to_string(), extract_s));
    built.manifest.save(&opts.out)?;
    let m = &built.manifest;
    let cached = m.images.saturating_sub(summary.rows);
    write_summary(report, &built, &format!("{cached} from cache, {} skipped)", m.skipped.len()), &opts.out, started)?;
    for (id, why) in &m.skipped {
        writeln!(report, "skipped {id}: {why}")?;
    }
    Ok(())
}

/// Builds (or resumes building) a one-shard index in `dir` of the images at `paths` (absolute; they become the
/// image ids), with the default PCA and structure; its summary goes to stderr.
pub fn build_index_of(paths: &[PathBuf], dir: &Path, device: Option<&str>, config: &Config) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let list = dir.join("database-images.txt");
    let text: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&list, text).with_context(|| format!("writing {}", list.display()))?;
    let args = crate::cli::IndexBuildArgs {
        source: Some(list.display().to_string()),
        features: None,
        out: dir.to_path_buf(),
        params: crate::cli::IndexParamsArgs {
            shards: 1,
            spec: None,
            pca: None,
            pca_sample: delf_build::options::DEFAULT_PCA_SAMPLE,
            dim: delf_build::options::DEFAULT_PCA_DIM,
            nprobe: delf_index::DEFAULT_NPROBE,
            device: device.map(str::to_string),
        },
    };
    build(&args, config, &mut std::io::stderr())
}
