//! `delf index build SOURCE --out DIR`: extract (resumable), fit the PCA on a sample if none is given, train the
//! coarse quantizer and PQ, build the shards, write the manifest. Everything lands in one folder (docs/search.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use delf_core::{FeatureSet, Fingerprint, feature_file};
use delf_index::{Codebooks, IndexSpec, NewImage, SearchParams, ShardedIndex, TrainConfig};
use delf_model::{Extractor, Pca};
use delf_search::manifest::{FEATURES_DIR, MANIFEST_FORMAT, PCA_FILE};
use delf_search::{ImageSource, IndexManifest, SourceImage};

use crate::cli::IndexBuildArgs;
use crate::commands::model;
use crate::config::Config;
use crate::progress::Progress;

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

/// Raw features of the source's images, and what could not be read.
struct RawFeatures {
    /// `(image number, features)` in source order.
    features: Vec<(usize, FeatureSet)>,
    /// `(image id, reason)` of skipped images.
    skipped: Vec<(String, String)>,
    /// How many came from the cache.
    cached: usize,
}

/// Stage 1: raw (pre-PCA) features of every image, one network pass each, cached so that a rerun resumes.
fn extract_all(source: &ImageSource, cache_dir: &Path, extractor: &Extractor) -> Result<RawFeatures> {
    let fp = extractor.raw_fingerprint().clone();
    let mut out = RawFeatures { features: Vec::with_capacity(source.images.len()), skipped: Vec::new(), cached: 0 };
    let mut bar = Progress::new("extract", source.images.len());
    for (i, im) in source.images.iter().enumerate() {
        let path = cache_path(cache_dir, &fp, im);
        if let Some(f) = read_cache(&path, &fp) {
            out.cached += 1;
            out.features.push((i, f));
        } else {
            let extracted = model::read_image(&im.path).and_then(|img| {
                extractor.extract_raw(&img.rgb).with_context(|| format!("extracting {}", im.path.display()))
            });
            match extracted {
                Ok(f) => {
                    write_cache(&path, &f)?;
                    out.features.push((i, f));
                }
                Err(e) => {
                    tracing::warn!(image = %im.id, error = %format!("{e:#}"), "skipped");
                    out.skipped.push((im.id.clone(), format!("{e:#}")));
                }
            }
        }
        bar.inc();
    }
    bar.finish();
    Ok(out)
}

/// Stage 2: the PCA at `pca_path`: copied from `given`, or fitted on the raw descriptors of an even sample of
/// `sample` images of `raw`.
fn prepare_pca(
    given: Option<&Path>,
    raw: &[(usize, FeatureSet)],
    sample: usize,
    dim: i64,
    backbone: &str,
    pca_path: &Path,
) -> Result<()> {
    if let Some(p) = given {
        Pca::load(p).with_context(|| format!("loading PCA {}", p.display()))?;
        std::fs::copy(p, pca_path).with_context(|| format!("copying {} into the index", p.display()))?;
        return Ok(());
    }
    let n = raw.len().max(1);
    let take = sample.clamp(1, n);
    let flat: Vec<f32> =
        (0..take).filter_map(|i| raw.get(i * n / take)).flat_map(|(_, f)| f.descriptors.iter().copied()).collect();
    let channels = raw.first().map_or(1, |(_, f)| f.dim);
    let rows = flat.len() / channels;
    if (rows as i64) < dim {
        bail!("only {rows} descriptors to fit a {dim}-d PCA: index more (or larger) images");
    }
    let samples = tch::Tensor::from_slice(&flat).view([rows as i64, channels as i64]);
    Pca::fit(&samples, dim as usize, false, backbone)?.save(pca_path)?;
    tracing::info!(images = take, descriptors = rows, "fitted the PCA");
    Ok(())
}

/// Stage 4: every image into its shard.
fn build_shards(
    features: &[(usize, FeatureSet)],
    source: &ImageSource,
    codebooks: &Arc<Codebooks>,
    fingerprint: &str,
    shards: u32,
) -> Result<ShardedIndex> {
    let mut index = ShardedIndex::new(Arc::clone(codebooks), fingerprint, shards)?;
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
        index.add_images(chunk, codebooks.dim)?;
    }
    Ok(index)
}

/// Runs the build.
pub fn run(opts: &IndexBuildArgs, config: &Config) -> Result<()> {
    let source_arg = match (&opts.source, &opts.features) {
        (_, Some(prefix)) => return crate::commands::index_from_features::run(prefix, opts),
        (Some(source), None) => source.clone(),
        (None, None) => bail!("give a SOURCE folder or list, or --features PREFIX"),
    };
    let spec: Option<IndexSpec> = opts.spec.as_deref().map(str::parse).transpose()?;
    let started = Instant::now();
    let source = ImageSource::list(&source_arg)?;
    if opts.shards == 0 {
        bail!("--shards must be at least 1");
    }
    let out = &opts.out;
    std::fs::create_dir_all(out.join(FEATURES_DIR)).with_context(|| format!("creating {}", out.display()))?;
    let device = model::device(opts.device.as_deref(), config)?;
    let settings = config.extract.to_config();
    let mut timings = Vec::new();
    let mut stage = |name: &str, t: Instant| timings.push((name.to_string(), t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let raw_extractor = model::extractor(config, settings.clone(), None, device)?;
    let RawFeatures { features: raw, skipped, cached } = extract_all(&source, &out.join(FEATURES_DIR), &raw_extractor)?;
    let backbone = raw_extractor.backbone().name();
    drop(raw_extractor);
    stage("extract", t);

    let t = Instant::now();
    let pca_path = out.join(PCA_FILE);
    let given = opts.pca.clone().or_else(|| config.model.pca.clone());
    prepare_pca(given.as_deref(), &raw, opts.pca_sample, opts.dim, &backbone, &pca_path)?;
    let extractor = model::extractor(config, settings, Some(&pca_path), device)?;
    let fingerprint = extractor.fingerprint().clone();
    let features: Vec<(usize, FeatureSet)> =
        raw.into_iter().map(|(i, f)| Ok((i, extractor.reduce(f)?))).collect::<Result<_>>()?;
    stage("pca", t);
    let total: usize = features.iter().map(|(_, f)| f.len()).sum();
    if total == 0 {
        bail!("no features were extracted from {source_arg} ({} images skipped)", skipped.len());
    }
    tracing::info!(images = features.len(), cached, skipped = skipped.len(), descriptors = total, "features ready");

    // Stage 3: codebooks on every descriptor (k-means subsamples internally).
    let t = Instant::now();
    let dim = extractor.dim();
    let spec = spec.unwrap_or_else(|| IndexSpec::auto(total, dim));
    let all: Vec<f32> = features.iter().flat_map(|(_, f)| f.descriptors.iter().copied()).collect();
    let codebooks = Arc::new(Codebooks::train(&all, dim, spec, &TrainConfig::default())?);
    drop(all);
    stage("train", t);

    let t = Instant::now();
    let index = build_shards(&features, &source, &codebooks, fingerprint.as_str(), opts.shards)?;
    index.save(out)?;
    stage("build", t);

    let manifest = IndexManifest {
        format: MANIFEST_FORMAT,
        delf_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        descriptor_fingerprint: fingerprint.to_string(),
        model: format!("{backbone} ({dim}-d after PCA)"),
        extract: serde_json::to_value(&config.extract)?,
        pca: PCA_FILE.to_string(),
        spec: spec.to_string(),
        codebooks_fingerprint: codebooks.fingerprint().to_string(),
        shards: opts.shards,
        images: features.len(),
        descriptors: total,
        skipped,
        source: source_arg.clone(),
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
