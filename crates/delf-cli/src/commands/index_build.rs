//! `delf index build SOURCE --out DIR`: an extraction job over the source's images (raw descriptors, Parquet feature
//! shards in `DIR/extraction`, each unit committed exactly once, so a rerun resumes), then the index from those
//! shards (`index_from_features`): PCA fitted on a sample unless given, codebooks, shards, manifest. Everything lands
//! in one folder (docs/search.md). `--features PREFIX` skips the extraction and indexes an existing job.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use anyhow::{Result, bail};
use delf_features::{Assignment, ImageList, ListEntry, StoreError, Stores};
use delf_search::ImageSource;
use delf_search::manifest::EXTRACTION_DIR;

use crate::cli::{BatchJobArgs, IndexBuildArgs};
use crate::commands::batch_extract::JobRun;
use crate::commands::{index_from_features, model};
use crate::config::Config;

/// Images per work unit of an index build's extraction: what a killed build redoes at most.
const UNIT_SIZE: usize = 64;

/// The images of SOURCE as a list, and the folder relative ids resolve against. A local folder or list is listed
/// with each file's size and modification time in the list checksum, so a changed corpus is extracted afresh; an
/// object-store list (`s3://...`) is read as it is.
fn source_list(source: &str, stores: &Stores, rt: &tokio::runtime::Runtime) -> Result<(ImageList, Option<PathBuf>)> {
    if source.contains("://") {
        return Ok((rt.block_on(ImageList::load(stores, source))?, None));
    }
    let listed = ImageSource::list(source)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut entries = Vec::with_capacity(listed.images.len());
    for im in &listed.images {
        let meta = std::fs::metadata(&im.path).ok();
        let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
        let mtime = meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        hasher.update(format!("{}\t{}\t{len}\t{mtime}\n", im.id, im.path.display()).as_bytes());
        let uri = url::Url::from_file_path(&im.path)
            .map_err(|()| anyhow::anyhow!("{} is not an absolute path", im.path.display()))?;
        entries.push(ListEntry { image_id: im.id.clone(), uri: uri.to_string() });
    }
    let list = ImageList { uri: source.to_string(), entries, checksum: format!("{:08x}", hasher.finalize()) };
    Ok((list, Some(listed.root)))
}

/// Runs the build, its summary on stdout.
pub fn run(opts: &IndexBuildArgs, config: &Config) -> Result<()> {
    build(opts, config, &mut std::io::stdout())
}

/// Runs the build, its summary written to `report` (stderr where stdout carries another command's answer).
pub fn build(opts: &IndexBuildArgs, config: &Config, report: &mut dyn std::io::Write) -> Result<()> {
    let source = match (&opts.source, &opts.features) {
        (_, Some(prefix)) => return index_from_features::run(prefix, opts, config),
        (Some(source), None) => source.clone(),
        (None, None) => bail!("give a SOURCE folder or list, or --features PREFIX"),
    };
    index_from_features::check_args(opts)?;
    let started = Instant::now();
    let rt = crate::commands::io_runtime()?;
    let stores = Arc::new(Stores::new());
    let (list, root) = source_list(&source, &stores, &rt)?;
    let list = Arc::new(list);
    let job_dir = opts.out.join(EXTRACTION_DIR);
    std::fs::create_dir_all(&job_dir)?;
    let job_uri = job_dir.to_string_lossy().into_owned();

    let device = model::device(opts.device.as_deref(), config)?;
    let settings = config.extract.to_config();
    let raw_extractor = model::extractor(config, settings.clone(), None, device)?;
    let job_args = BatchJobArgs {
        unit_size: UNIT_SIZE,
        batch: None,
        fetch_concurrency: delf_features::DEFAULT_FETCH_CONCURRENCY,
        decode_threads: None,
        row_group: UNIT_SIZE,
        worker_id: None,
        lease_s: delf_features::DEFAULT_LEASE_S,
    };
    let job = JobRun {
        rt: &rt,
        stores: Arc::clone(&stores),
        list: Arc::clone(&list),
        out: &job_uri,
        extractor: &raw_extractor,
        settings: &settings,
        pca: None,
        raw: true,
        job: &job_args,
        assignment: Assignment::Dynamic,
    };
    let t = Instant::now();
    let summary = match job.run() {
        Ok((_, summary)) => summary,
        Err(e) if e.downcast_ref::<StoreError>().is_some_and(|e| matches!(e, StoreError::JobMismatch { .. })) => {
            tracing::info!(reason = %e, "the images or the model changed since the last build: extracting afresh");
            std::fs::remove_dir_all(&job_dir)?;
            std::fs::create_dir_all(&job_dir)?;
            job.run()?.1
        }
        Err(e) => return Err(e),
    };
    if !summary.job_complete {
        bail!(
            "the extraction job in {job_uri} is not complete ({} units held by another build)",
            summary.held_by_others
        );
    }
    let extract_s = t.elapsed().as_secs_f64();
    drop(raw_extractor);

    let mut built = index_from_features::build(&rt, &stores, &job_uri, opts, config, root, &source)?;
    built.manifest.timings_s.insert(0, ("extract".to_string(), extract_s));
    built.manifest.save(&opts.out)?;
    let m = &built.manifest;
    let cached = m.images.saturating_sub(summary.rows);
    writeln!(
        report,
        "indexed {} images ({} descriptors, {} from cache, {} skipped) into {}: {}, {} shard(s), {:.1} bytes per \
         descriptor, {:.0} s",
        m.images,
        m.descriptors,
        cached,
        m.skipped.len(),
        opts.out.display(),
        m.spec,
        m.shards,
        built.bytes_per_descriptor,
        started.elapsed().as_secs_f64()
    )?;
    for (id, why) in &m.skipped {
        writeln!(report, "skipped {id}: {why}")?;
    }
    Ok(())
}
