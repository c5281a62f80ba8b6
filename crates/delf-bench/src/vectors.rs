//! `delf bench vectors`: the real descriptor set every index benchmark runs on (issue 22). Every photo the setup
//! installed under `<home>/data` is extracted with the configured model, as it is and as seeded hard views
//! (rotation, scale, perspective, blur, JPEG, tone, noise, occlusion; the same renderer as `delf eval views`);
//! a PCA to 40 dimensions is fitted on the base as an index build would; queries are descriptors of other views
//! of some of the photos, views that are not in the base. The base rows are written in a seeded random order, so
//! that any prefix is a random subset. The median query-to-nearest-neighbour distance is measured on 1/8, 1/4,
//! 1/2 and all of the base, a power law fitted to it is extrapolated to `--expand-to` rows, and the expansion of
//! the base that lands on that value is calibrated and measured (delf_index::expand). Output: `base.npy`,
//! `queries.npy`, `pca.safetensors` and `vectors.json` (provenance, the curve, the expansion).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use delf_build::Progress;
use delf_core::rng::SplitMix64;
use delf_engine::Config;
use delf_engine::model;
use delf_eval::views::recipe::{Bin, ROTATIONS, Recipe};
use delf_eval::views::render::render;
use delf_index::{Expansion, PowerLaw, median_nn_distance, npy};
use delf_model::Pca;
use delf_model::extractor::l2_normalize;

/// `delf bench vectors`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchVectorsArgs {
    /// Output folder (default `<home>/bench/vectors`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seeded hard views per photo in the base, besides the photo itself.
    #[arg(long, default_value_t = 1)]
    pub views: usize,
    /// Every this many photos gives one more view whose descriptors are queries (not in the base).
    #[arg(long, default_value_t = 4)]
    pub query_every: usize,
    /// Query descriptors kept (a seeded sample of the query views' descriptors).
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Dimensions after the PCA.
    #[arg(long, default_value_t = 40)]
    pub dim: usize,
    /// Base descriptors the PCA is fitted on.
    #[arg(long, default_value_t = 100_000)]
    pub pca_sample: usize,
    /// Size to extrapolate the distance curve to and calibrate the expansion for (0 = none).
    #[arg(long, default_value_t = 10_000_000)]
    pub expand_to: usize,
    /// Seed of the views, the PCA sample, the row order and the expansion.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Device to run on: cpu, cuda, cuda:N or auto.
    #[arg(long)]
    pub device: Option<String>,
}

/// The file `delf bench vectors` writes beside the arrays, read by `delf bench index`.
pub const VECTORS_JSON: &str = "vectors.json";

/// Where `delf bench vectors` writes and `delf bench index` reads by default.
pub fn default_dir(config: &Config) -> PathBuf {
    config.home.join("bench/vectors")
}

/// Every photo under `<home>/data` (JPEG, PNG, WebP), sorted by path.
fn photos(data: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![data.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {} (run scripts/setup.sh)", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png" | "webp"))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A seeded hard view of photo `i` (its `k`-th), stressing one of the rendered bins in turn.
fn view(i: usize, k: usize, seed: u64) -> Recipe {
    let mut rng = SplitMix64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((k as u64) << 48));
    let bin = Bin::RENDERED[(i + k) % Bin::RENDERED.len()];
    Recipe::draw(bin, ROTATIONS[(i * 7 + k) % ROTATIONS.len()], &mut rng)
}

/// Runs the command.
pub fn run(args: &BenchVectorsArgs, config: &Config, progress: &mut dyn Progress) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| default_dir(config));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let data = config.home.join("data");
    let photos = photos(&data)?;
    if photos.len() < 8 {
        bail!("only {} photos under {}: run scripts/setup.sh", photos.len(), data.display());
    }
    let device = model::device(args.device.as_deref(), config)?;
    let extractor = model::extractor(config, config.extract.to_config(), None, device)?;
    let started = Instant::now();

    // Raw (pre-PCA) descriptors of the base images and of the query views.
    let (mut base_raw, mut query_raw) = (Vec::new(), Vec::new());
    let (mut base_images, mut query_images, mut skipped) = (0usize, 0usize, Vec::new());
    let extract_started = Instant::now();
    progress.start("extract", photos.len());
    for (i, path) in photos.iter().enumerate() {
        let rgb = match model::read_image(path) {
            Ok(img) => img.rgb,
            Err(e) => {
                skipped.push(format!("{}: {e:#}", path.display()));
                progress.advance();
                continue;
            }
        };
        let mut images = vec![(rgb.clone(), false)];
        for k in 0..args.views {
            images.push((decode_view(&rgb, &view(i, k, args.seed))?, false));
        }
        if i % args.query_every == 0 {
            images.push((decode_view(&rgb, &view(i, args.views + 1, args.seed ^ 0x51E7))?, true));
        }
        for (img, is_query) in images {
            let raw = extractor.extract_raw(&img)?;
            if is_query {
                query_raw.extend_from_slice(&raw.descriptors);
                query_images += 1;
            } else {
                base_raw.extend_from_slice(&raw.descriptors);
                base_images += 1;
            }
        }
        progress.advance();
    }
    progress.finish();
    let extract_s = extract_started.elapsed().as_secs_f64();
    let raw_dim = extractor.backbone().channels() as usize;

    // The PCA an index build would fit (a seeded sample of the base), then every descriptor reduced and normalised.
    let n_raw = base_raw.len() / raw_dim;
    let mut rng = SplitMix64(args.seed);
    let sample: Vec<usize> = (0..args.pca_sample.min(n_raw)).map(|_| rng.below(n_raw)).collect();
    let sample_rows: Vec<f32> =
        sample.iter().flat_map(|&r| base_raw[r * raw_dim..][..raw_dim].iter().copied()).collect();
    let sample_t = tch::Tensor::from_slice(&sample_rows).view([sample.len() as i64, raw_dim as i64]);
    let pca = Pca::fit(&sample_t, args.dim, false, &extractor.backbone().name())?;
    pca.save(&out.join("pca.safetensors"))?;
    let reduce = |raw: &[f32]| -> Result<Vec<f32>> {
        let mut reduced = Vec::with_capacity(raw.len() / raw_dim * args.dim);
        for chunk in raw.chunks(raw_dim * 65_536) {
            let t = tch::Tensor::from_slice(chunk).view([(chunk.len() / raw_dim) as i64, raw_dim as i64]);
            let r: Vec<f32> = l2_normalize(&pca.project(&t)?).flatten(0, -1).try_into()?;
            reduced.extend(r);
        }
        Ok(reduced)
    };
    let dim = args.dim;
    let mut base = shuffled(&reduce(&base_raw)?, dim, args.seed);
    drop(base_raw);
    let all_queries = shuffled(&reduce(&query_raw)?, dim, args.seed ^ 1);
    let nq = args.queries.min(all_queries.len() / dim);
    let queries = all_queries[..nq * dim].to_vec();
    let n = base.len() / dim;
    if nq == 0 || n < 8 {
        bail!("too few descriptors: {n} in the base, {nq} queries");
    }
    npy::write_f32(&out.join("base.npy"), &base, dim)?;
    npy::write_f32(&out.join("queries.npy"), &queries, dim)?;
    println!(
        "{} photos ({} skipped): {base_images} base images -> {n} descriptors, {query_images} query views -> {nq} \
         query descriptors of {} ({dim}-d after PCA); extraction {extract_s:.0} s",
        photos.len(),
        skipped.len(),
        all_queries.len() / dim
    );
    for s in &skipped {
        println!("skipped {s}");
    }

    // The nearest-neighbour distance curve, its extrapolation and the expansion that follows it.
    println!("| base vectors | median query-to-NN distance | from |");
    println!("|---|---|---|");
    let mut curve = Vec::new();
    for part in [8, 4, 2, 1] {
        let m = n / part;
        let d = median_nn_distance(&base[..m * dim], &queries, dim);
        println!("| {m} | {d:.4} | measured |");
        curve.push((m, d));
    }
    let law = PowerLaw::fit(&curve).context("cannot fit the distance curve")?;
    let mut expansion = None;
    if args.expand_to > n {
        let target = law.at(args.expand_to);
        let e = Expansion::calibrate(&base, &queries, dim, args.expand_to, target, args.seed)?;
        base = e.expand(&base, dim)?;
        let measured = median_nn_distance(&base, &queries, dim);
        let gap = measured / target - 1.0;
        println!("| {} | {target:.4} | power law a n^-b, a {:.4}, b {:.4} |", args.expand_to, law.a, law.b);
        println!(
            "| {} | {measured:.4} | expanded (reach {:.3}): {:+.1} % from the extrapolation{} |",
            args.expand_to,
            e.reach,
            100.0 * gap,
            if gap.abs() <= 0.05 { "" } else { " (more than 5 %)" }
        );
        expansion = Some(serde_json::json!({ "expansion": e, "target": target, "measured": measured }));
    }
    let record = serde_json::json!({
        "photos": photos.len(),
        "skipped": skipped,
        "views_per_photo": args.views,
        "query_every": args.query_every,
        "seed": args.seed,
        "fingerprint": extractor.raw_fingerprint().as_str(),
        "extract": config.extract,
        "dim": dim,
        "base": n,
        "queries": nq,
        "curve": curve,
        "power_law": law,
        "expanded": expansion,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let json = out.join(VECTORS_JSON);
    std::fs::write(&json, serde_json::to_string_pretty(&record)?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The view rendered and read back from its JPEG bytes, as a user's copy would be.
fn decode_view(rgb: &delf_image::RgbImage, recipe: &Recipe) -> Result<delf_image::RgbImage> {
    let view = render(rgb, recipe)?;
    Ok(delf_image::decode_bytes(&view.jpeg, &Default::default())?.rgb)
}

/// The rows of `data` in a seeded random order.
fn shuffled(data: &[f32], dim: usize, seed: u64) -> Vec<f32> {
    let n = data.len() / dim;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order.iter().flat_map(|&r| data[r * dim..][..dim].iter().copied()).collect()
}

/// Reads what `delf bench vectors` wrote in `dir`: (base, queries, dim, its record).
pub fn load(dir: &Path) -> Result<(Vec<f32>, Vec<f32>, usize, serde_json::Value)> {
    let missing = || {
        format!(
            "no benchmark vectors in {}: run `delf bench vectors` first (it extracts the setup's photos, about half \
             an hour on 2 cores) or pass --vectors DIR",
            dir.display()
        )
    };
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(VECTORS_JSON)).with_context(missing)?)
            .with_context(|| format!("{} is not readable", dir.join(VECTORS_JSON).display()))?;
    let (base, dim) = npy::read_f32(&dir.join("base.npy"))?;
    let (queries, qdim) = npy::read_f32(&dir.join("queries.npy"))?;
    if qdim != dim {
        bail!("{}: queries are {qdim}-d, the base {dim}-d", dir.display());
    }
    Ok((base, queries, dim, record))
}
