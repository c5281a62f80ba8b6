//! `delf extract IMAGE...`: DELF features of each image (and a DELG checkpoint's global descriptor), as a table,
//! JSON lines on stdout, or a JSON-lines file.
//! With `--list`, a batch job into Parquet feature shards instead (`commands::batch_extract`).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use delf_core::FeatureSet;
use delf_engine::Config;
use delf_engine::model;

use crate::cli::ExtractArgs;

/// Extracts every image; a failing image is reported and skipped, and the command then exits with code 3.
pub fn run(args: &ExtractArgs, config: &Config) -> Result<()> {
    let settings = args.overrides(config.extract.to_config());
    let device = model::device(args.device.as_deref(), config)?;
    let extractor = model::extractor(config, settings, args.pca.as_deref(), device)?;
    tracing::info!(fingerprint = %extractor.fingerprint(), dim = extractor.dim(), "extractor ready");

    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => {
            Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {path}"))?))
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let json = args.json || args.out.is_some();
    if !json {
        writeln!(out, "{:<48} {:>11} {:>8} {:>5} {:>9}", "image", "size", "features", "dim", "ms")?;
    }
    let mut failed: Option<anyhow::Error> = None;
    for path in &args.images {
        let start = Instant::now();
        match extract_one(&extractor, path) {
            Ok((features, global)) => {
                let ms = start.elapsed().as_secs_f64() * 1e3;
                if json {
                    let mut line = serde_json::json!({ "path": path, "features": features });
                    if let Some(global) = global {
                        line["global_descriptor"] = serde_json::json!(global);
                    }
                    serde_json::to_writer(&mut out, &line)?;
                    writeln!(out)?;
                } else {
                    let size = format!("{}x{}", features.width, features.height);
                    let name = path.display().to_string();
                    writeln!(out, "{name:<48} {size:>11} {:>8} {:>5} {ms:>9.0}", features.len(), features.dim)?;
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = Some(e);
            }
        }
    }
    if !json {
        writeln!(out, "fingerprint: {}", extractor.fingerprint())?;
    }
    out.flush()?;
    match failed {
        Some(e) => Err(e.context("some images could not be extracted")),
        None => Ok(()),
    }
}

/// The image's local features, and its global descriptor where the backbone has one (DELG).
fn extract_one(extractor: &delf_model::Extractor, path: &Path) -> Result<(FeatureSet, Option<Vec<f32>>)> {
    let img = model::read_image(path)?;
    let features = extractor.extract(&img.rgb).with_context(|| format!("extracting {}", path.display()))?;
    let global =
        extractor.global_descriptor(&img.rgb).with_context(|| format!("global descriptor of {}", path.display()))?;
    Ok((features, global))
}
