//! `delf match A B`: extract both images, match, verify, print the inliers and the model, and draw the picture.

use std::time::Instant;

use anyhow::{Context, Result};
use delf_engine::Config;
use delf_engine::model;
use delf_verify::draw::{DrawOptions, draw_matches};
use delf_verify::{FittedModel, ModelKind, verify_pair};

use crate::cli::{MatchArgs, ModelArg};

/// Runs `delf match`.
pub fn run(args: &MatchArgs, config: &Config) -> Result<()> {
    let (img_a, img_b) = (model::read_image(&args.a)?, model::read_image(&args.b)?);
    let device = model::device(args.device.as_deref(), config)?;
    let extractor = model::extractor(config, config.extract.to_config(), args.pca.as_deref(), device)?;
    let mut verify = config.verify.to_config();
    if let Some(m) = args.model {
        verify.model = match m {
            ModelArg::Affine => ModelKind::Affine,
            ModelArg::Homography => ModelKind::Homography,
        };
    }

    let t = Instant::now();
    let fa = extractor.extract(&img_a.rgb)?;
    let fb = extractor.extract(&img_b.rgb)?;
    let extract_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let result = verify_pair(&fa, &fb, &verify)?;
    let verify_ms = t.elapsed().as_secs_f64() * 1e3;

    let (src, dst) = delf_verify::correspondences::points(&result.matches, &fa, &fb);
    if let Some(out) = &args.out {
        let options = DrawOptions { outliers: !args.no_outliers, ..DrawOptions::default() };
        let picture = draw_matches(&img_a.rgb, &img_b.rgb, &src, &dst, &result.inliers, &options);
        picture.save(out).with_context(|| format!("writing {}", out.display()))?;
    }

    if args.json {
        let correspondences: Vec<_> = result
            .matches
            .iter()
            .zip(src.iter().zip(&dst))
            .zip(&result.inliers)
            .map(|((m, (p, q)), &inlier)| {
                serde_json::json!({"a": [p.x, p.y], "b": [q.x, q.y], "distance": m.distance, "inlier": inlier})
            })
            .collect();
        let json = serde_json::json!({
            "a": args.a, "b": args.b,
            "features": [fa.len(), fb.len()],
            "putative": result.matches.len(),
            "inliers": result.num_inliers,
            "is_match": result.is_match,
            "min_inliers": verify.policy.min_inliers,
            "model": result.model,
            "trials": result.trials,
            "fingerprint": fa.fingerprint,
            "timing_ms": {"extract": extract_ms, "verify": verify_ms},
            "correspondences": correspondences,
        });
        println!("{json}");
        return Ok(());
    }
    println!("A: {} ({}x{}, {} features)", args.a.display(), fa.width, fa.height, fa.len());
    println!("B: {} ({}x{}, {} features)", args.b.display(), fb.width, fb.height, fb.len());
    println!("putative matches: {} | RANSAC trials: {}", result.matches.len(), result.trials);
    let verdict = if result.is_match { "MATCH" } else { "no match" };
    println!("inliers: {} -> {verdict} (min_inliers {})", result.num_inliers, verify.policy.min_inliers);
    match result.model {
        Some(FittedModel::Affine { m }) => println!(
            "model: affine  x' = {:.4} x + {:.4} y + {:.2}   y' = {:.4} x + {:.4} y + {:.2}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        ),
        Some(FittedModel::Homography { h }) => println!(
            "model: homography [{:.4} {:.4} {:.2}; {:.4} {:.4} {:.2}; {:.2e} {:.2e} 1]",
            h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
        ),
        None => println!("model: none"),
    }
    println!("time: extract {extract_ms:.0} ms, match + verify {verify_ms:.1} ms");
    if let Some(out) = &args.out {
        println!("picture: {}", out.display());
    }
    Ok(())
}
