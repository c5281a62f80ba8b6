//! `delf index build SOURCE --out DIR`: extract (resumable), fit the PCA on a sample if none is given, train the
//! coarse quantizer and PQ, build the shards, write the manifest. Everything lands in one folder (docs/search.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use delf_core::{FeatureSet, Fingerprint, feature_file};
use delf_index::{Codebooks, IndexSpec, NewImage, SearchParams, ShardedIndex, TrainConfig};
use delf_model::Pca;
use delf_search::manifest::{FEATURES_DIR, MANIFEST_FORMAT, PCA_FILE};
use delf_search::{ImageSource, IndexManifest, SourceImage};

use crate::commands::model;
use crate::config::Config;
use crate::progress::Progress;

/// Options of `delf index build`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Folder or list file.
    pub source: String,
    /// Index folder.
    pub out: PathBuf,
    /// Shards.
    pub shards: u32,
    /// Index structure (default: from the descriptor count).
    pub spec: Option<IndexSpec>,
    /// A fitted PCA to use instead of fitting one.
    pub pca: Option<PathBuf>,
    /// Images sampled (evenly) to fit the PCA.
    pub pca_sample: usize,
    /// PCA output dimensions.
    pub dim: i64,
    /// Cells probed per query descriptor by default.
    pub nprobe: usize,
    /// Device.
    pub device: Option<String>,
}

/// Cache file of one image's features: keyed by descriptor fingerprint, id, size and modification time, so a
/// changed file, model or PCA is re-extracted and an unchanged one is not.
fn cache_path(dir: &Path, fingerprint: &Fingerprint, image: &SourceImage) -> PathBuf {
    let meta = std::fs::metadata(&image.path).ok();
    let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let key = Fingerprint::of(
        "f",
        &[fingerprint.as_str().as_bytes(), image.id.as_bytes(), &len.to_le_bytes(), &mtime.to_le_bytes()],
    );
    dir.join(format!("{}.dfeat", &key.as_str()[2..]))
}

fn read_cache(path: &Path, fingerprint: &Fingerprint) -> Option<FeatureSet> {
    let f = feature_file::decode(&std::fs::read(path).ok()?).ok()?;
    (&f.fingerprint == fingerprint).then_some(f)
}

fn write_cache(path: &Path, f: &FeatureSet) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, feature_file::encode(f)).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Runs the build.
pub fn run(opts: &BuildOptions, config: &Config) -> Result<()> {
    let started = Instant::now();
    let source = ImageSource::list(&opts.source)?;
    if opts.shards == 0 {
        bail!("--shards must be at least 1");
    }
    let out = &opts.out;
    std::fs::create_dir_all(out.join(FEATURES_DIR)).with_context(|| format!("creating {}", out.display()))?;
    let device = model::device(opts.device.as_deref(), config)?;
    let settings = config.extract.to_config();
    let mut timings = Vec::new();

    // 1. Raw (pre-PCA) features of every image: one network pass each, cached so a rerun resumes.
    let raw_extractor = model::extractor(config, settings.clone(), None, device)?;
    let raw_fp = raw_extractor.raw_fingerprint().clone();
    let cache_dir = out.join(FEATURES_DIR);
    let mut raw: Vec<(usize, FeatureSet)> = Vec::with_capacity(source.images.len());
    let mut skipped = Vec::new();
    let (mut cached, mut bar) = (0usize, Progress::new("extract", source.images.len()));
    for (i, im) in source.images.iter().enumerate() {
        let path = cache_path(&cache_dir, &raw_fp, im);
        if let Some(f) = read_cache(&path, &raw_fp) {
            cached += 1;
            raw.push((i, f));
        } else {
            let extracted = model::read_image(&im.path).and_then(|img| {
                raw_extractor.extract_raw(&img.rgb).with_context(|| format!("extracting {}", im.path.display()))
            });
            match extracted {
                Ok(f) => {
                    write_cache(&path, &f)?;
                    raw.push((i, f));
                }
                Err(e) => {
                    tracing::warn!(image = %im.id, error = %format!("{e:#}"), "skipped");
                    skipped.push((im.id.clone(), format!("{e:#}")));
                }
            }
        }
        bar.inc();
    }
    timings.push(("extract".to_string(), bar.finish()));
    let backbone = raw_extractor.backbone().name();
    drop(raw_extractor);

    // 2. PCA: given (flag or model.pca), or fitted on the raw descriptors of an even sample of the images.
    let pca_path = out.join(PCA_FILE);
    let t = Instant::now();
    if let Some(p) = opts.pca.clone().or_else(|| config.model.pca.clone()) {
        Pca::load(&p).with_context(|| format!("loading PCA {}", p.display()))?;
        std::fs::copy(&p, &pca_path).with_context(|| format!("copying {} into the index", p.display()))?;
    } else {
        let n = raw.len().max(1);
        let take = opts.pca_sample.clamp(1, n);
        let flat: Vec<f32> =
            (0..take).filter_map(|i| raw.get(i * n / take)).flat_map(|(_, f)| f.descriptors.iter().copied()).collect();
        let channels = raw.first().map_or(1, |(_, f)| f.dim);
        let rows = flat.len() / channels;
        if (rows as i64) < opts.dim {
            bail!("only {rows} descriptors to fit a {}-d PCA: index more (or larger) images", opts.dim);
        }
        let samples = tch::Tensor::from_slice(&flat).view([rows as i64, channels as i64]);
        Pca::fit(&samples, opts.dim as usize, false, &backbone)?.save(&pca_path)?;
        tracing::info!(images = take, descriptors = rows, "fitted the PCA");
    }
    let extractor = model::extractor(config, settings, Some(&pca_path), device)?;
    let fingerprint = extractor.fingerprint().clone();
    let features: Vec<(usize, FeatureSet)> =
        raw.into_iter().map(|(i, f)| Ok((i, extractor.reduce(f)?))).collect::<Result<_>>()?;
    timings.push(("pca".to_string(), t.elapsed().as_secs_f64()));
    let total: usize = features.iter().map(|(_, f)| f.len()).sum();
    if total == 0 {
        bail!("no features were extracted from {} ({} images skipped)", opts.source, skipped.len());
    }
    tracing::info!(images = features.len(), cached, skipped = skipped.len(), descriptors = total, "features ready");

    // 3. Codebooks on every descriptor (k-means subsamples internally).
    let dim = extractor.dim();
    let spec = opts.spec.unwrap_or_else(|| IndexSpec::auto(total, dim));
    let t = Instant::now();
    let mut all = Vec::with_capacity(total * dim);
    for (_, f) in &features {
        all.extend_from_slice(&f.descriptors);
    }
    let codebooks = Arc::new(Codebooks::train(&all, dim, spec, &TrainConfig::default())?);
    drop(all);
    timings.push(("train".to_string(), t.elapsed().as_secs_f64()));

    // 4. Shards.
    let t = Instant::now();
    let mut index = ShardedIndex::new(Arc::clone(&codebooks), fingerprint.as_str(), opts.shards)?;
    let keypoints: Vec<Vec<[f32; 2]>> =
        features.iter().map(|(_, f)| f.keypoints.iter().map(|k| [k.x, k.y]).collect()).collect();
    let batch: Vec<NewImage<'_>> = features
        .iter()
        .zip(&keypoints)
        .map(|((i, f), kp)| NewImage {
            number: *i as u32,
            name: &source.images[*i].id,
            descriptors: &f.descriptors,
            keypoints: kp,
        })
        .collect();
    for chunk in batch.chunks(256) {
        index.add_images(chunk, dim)?;
    }
    index.save(out)?;
    timings.push(("build".to_string(), t.elapsed().as_secs_f64()));

    let manifest = IndexManifest {
        format: MANIFEST_FORMAT,
        delf_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        descriptor_fingerprint: fingerprint.to_string(),
        model: format!("{} ({}-d after PCA)", extractor.backbone().name(), dim),
        extract: serde_json::to_value(&config.extract)?,
        pca: PCA_FILE.to_string(),
        spec: spec.to_string(),
        codebooks_fingerprint: codebooks.fingerprint().to_string(),
        shards: opts.shards,
        images: features.len(),
        descriptors: total,
        skipped,
        source: opts.source.clone(),
        root: source.root.clone(),
        search: SearchParams { nprobe: opts.nprobe.min(spec.nlist), ..SearchParams::default() },
        timings_s: timings,
    };
    manifest.save(out)?;
    println!(
        "indexed {} images ({} descriptors, {} from cache, {} skipped) into {}: {spec}, {} shard(s), {:.1} bytes per \
         descriptor, {:.0} s",
        manifest.images,
        total,
        cached,
        manifest.skipped.len(),
        out.display(),
        opts.shards,
        index.shards()[0].bytes_per_descriptor(),
        started.elapsed().as_secs_f64()
    );
    for (id, why) in &manifest.skipped {
        println!("skipped {id}: {why}");
    }
    Ok(())
}
