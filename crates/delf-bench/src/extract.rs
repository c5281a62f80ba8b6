//! `delf bench extract`: extraction speed and peak memory per maximum image side.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use delf_engine::Config;
use delf_engine::model;

/// `delf bench extract`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchExtractArgs {
    /// Photos to extract (default: the 12 largest opencv-doc photos in the data folder).
    pub images: Vec<PathBuf>,
    /// Maximum image sides to measure.
    #[arg(long, value_delimiter = ',', default_value = "512,1024")]
    pub sizes: Vec<u32>,
    /// Passes over the photos per size (after one warm-up image).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Device to run on: cpu, cuda, cuda:N or auto.
    #[arg(long)]
    pub device: Option<String>,
    /// Network arithmetic: fp32, fp16 (CUDA autocast; CUDA only) or bf16 (default: extract.precision).
    #[arg(long)]
    pub precision: Option<delf_model::Precision>,
    /// CPU threads decoding files for the "from files" column.
    #[arg(long, default_value_t = 4)]
    pub decode_threads: usize,
    /// Also compare 1 against this many images per forward pass, on the photos resized to one size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the peak-RSS counter (Linux >= 4.0); returns false where that is not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn default_photos(config: &Config) -> Result<Vec<PathBuf>> {
    let dir = config.photos_dir();
    let mut photos: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {} (run scripts/setup.sh)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "png"))
        .filter_map(|p| std::fs::metadata(&p).ok().map(|m| (m.len(), p)))
        .collect();
    photos.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(photos.into_iter().take(12).map(|(_, p)| p).collect())
}

/// Extracts every file of `paths` (repeated `runs` times) with decoding on `threads` CPU threads, overlapped with
/// the network through a bounded queue; returns images/s from files to features.
fn pipelined(extractor: &delf_model::Extractor, paths: &[PathBuf], runs: usize, threads: usize) -> Result<f64> {
    let jobs: Vec<&PathBuf> = (0..runs).flat_map(|_| paths.iter()).collect();
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::sync_channel::<Result<delf_image::DecodedImage>>(2 * threads);
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..threads {
            let (tx, next, jobs) = (tx.clone(), &next, &jobs);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = jobs.get(i) else { break };
                    if tx.send(model::read_image(path)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for decoded in rx {
            extractor.extract(&decoded?.rgb)?;
        }
        Ok(())
    })?;
    if let tch::Device::Cuda(i) = extractor.device() {
        tch::Cuda::synchronize(i as i64);
    }
    Ok(jobs.len() as f64 / start.elapsed().as_secs_f64())
}

/// Images/s of one image per forward pass against `batch` images per forward pass, on a uniform-size corpus made
/// by resizing every photo to `size x 3/4 size` (batches group images of equal size; photos of mixed sizes would
/// not batch).
fn batched(
    decoded: &[delf_image::DecodedImage],
    sizes: &[u32],
    runs: usize,
    batch: usize,
    precision: delf_model::Precision,
    dev: tch::Device,
    config: &Config,
) -> Result<()> {
    println!("\n| max side | uniform size | batch | images/s |");
    println!("|---|---|---|---|");
    for &size in sizes {
        let (w, h) = (size, size * 3 / 4);
        let corpus: Vec<image::RgbImage> = decoded
            .iter()
            .map(|d| image::imageops::resize(&d.rgb, w, h, image::imageops::FilterType::Triangle))
            .collect();
        let refs: Vec<&image::RgbImage> = corpus.iter().collect();
        let mut settings = config.extract.to_config();
        settings.max_side = Some(size);
        settings.precision = precision;
        let extractor = model::uncached_extractor(config, settings, None, dev)?;
        for b in [1, batch] {
            for r in extractor.extract_batch(&refs, b) {
                r?; // warm-up, and every error surfaces
            }
            let start = Instant::now();
            for _ in 0..runs {
                for r in extractor.extract_batch(&refs, b) {
                    r?;
                }
            }
            if let tch::Device::Cuda(i) = dev {
                tch::Cuda::synchronize(i as i64);
            }
            let rate = (runs * refs.len()) as f64 / start.elapsed().as_secs_f64();
            println!("| {size} | {w}x{h} | {b} | {rate:.2} |");
        }
    }
    Ok(())
}

/// Runs the benchmark and prints a table.
pub fn run(opts: &BenchExtractArgs, config: &Config) -> Result<()> {
    let BenchExtractArgs { images, sizes, runs, device, precision, decode_threads, batch } = opts;
    let (runs, decode_threads, batch, device) = (*runs, *decode_threads, *batch, device.as_deref());
    let precision = precision.unwrap_or(config.extract.precision);
    let images = if images.is_empty() { default_photos(config)? } else { images.to_vec() };
    if images.is_empty() || sizes.is_empty() || runs == 0 {
        bail!("need at least one image, one size and one run");
    }
    let dev = model::device(device, config)?;
    let t = Instant::now();
    let decoded: Vec<_> = images.iter().map(|p| model::read_image(p)).collect::<Result<_>>()?;
    let decode_ms = t.elapsed().as_secs_f64() * 1e3 / images.len() as f64;
    let mean_px = decoded.iter().map(|d| f64::from(d.width() * d.height())).sum::<f64>() / decoded.len() as f64;

    println!(
        "extraction on {}: {} photos (mean {:.2} MP, decode {decode_ms:.1} ms each), scales {:?}, top {} features, \
         {} libtorch threads, {}",
        delf_model::device::describe(dev),
        images.len(),
        mean_px / 1e6,
        config.extract.scales,
        config.extract.max_features,
        tch::get_num_threads(),
        match precision {
            delf_model::Precision::Fp16 => "fp16 autocast",
            p => p.as_str(),
        }
    );
    println!(
        "| max side | images | images/s (decoded in memory) | ms/image (network + selection) | images/s from files \
         ({decode_threads} decode threads, overlapped) | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|");
    let resettable = reset_peak_rss();
    for &size in sizes {
        let mut settings = config.extract.to_config();
        settings.max_side = Some(size);
        settings.precision = precision;
        let extractor = model::uncached_extractor(config, settings, None, dev)?;
        // Warm-up over every photo: each new input shape costs libtorch (and cuDNN's algorithm search) extra time
        // the first time it is seen.
        for d in &decoded {
            extractor.extract(&d.rgb)?;
        }
        reset_peak_rss();
        let start = Instant::now();
        let mut n = 0usize;
        for _ in 0..runs {
            for d in &decoded {
                extractor.extract(&d.rgb)?;
                n += 1;
            }
        }
        if let tch::Device::Cuda(i) = dev {
            tch::Cuda::synchronize(i as i64);
        }
        let secs = start.elapsed().as_secs_f64();
        let from_files = pipelined(&extractor, &images, runs, decode_threads.max(1))?;
        let peak = peak_rss_mib().map_or("n/a".to_string(), |m| format!("{m:.0}"));
        println!("| {size} | {n} | {:.2} | {:.0} | {from_files:.2} | {peak} |", n as f64 / secs, secs * 1e3 / n as f64);
    }
    if batch > 1 {
        batched(&decoded, sizes, runs, batch, precision, dev, config)?;
    }
    if !resettable {
        println!("(peak RSS could not be reset between sizes: each figure is the peak so far)");
    }
    Ok(())
}
