//! `delf bench verify`: RANSAC (affine) verifications per second on synthetic correspondences, beside OpenCV's
//! estimateAffine2D in the same run.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use delf_verify::rng::SplitMix64;
use delf_verify::synthetic::{Scene, scene};
use delf_verify::{Affine, RansacConfig, ransac};

const THRESHOLD: f64 = 20.0;
const MAX_TRIALS: u32 = 1000;
const CONFIDENCE: f64 = 0.99;

fn scenes(count: usize, matches: usize, outliers: f64) -> Vec<Scene> {
    let mut g = SplitMix64(2024);
    (0..count)
        .map(|i| {
            // A plausible viewpoint change: rotation up to 30 degrees, scale 0.6-1.4, mild shear, a shift.
            let (t, s) = ((g.uniform() - 0.5) * 1.05, 0.6 + 0.8 * g.uniform());
            let shear = (g.uniform() - 0.5) * 0.2;
            let m =
                [s * t.cos(), -s * t.sin() + shear, 100.0 * g.uniform(), s * t.sin(), s * t.cos(), 80.0 * g.uniform()];
            scene(&Affine { m }, matches, outliers, 1.0, (1024.0, 768.0), 7 + i as u64)
        })
        .collect()
}

fn ours(scenes: &[Scene], runs: usize, config: &RansacConfig) -> (f64, f64, f64) {
    let (mut inliers, mut trials) = (0usize, 0u64);
    let start = Instant::now();
    for _ in 0..runs {
        for s in scenes {
            let est = ransac::<Affine>(&s.src, &s.dst, config);
            inliers += est.num_inliers;
            trials += u64::from(est.trials);
        }
    }
    let total = (runs * scenes.len()) as f64;
    (total / start.elapsed().as_secs_f64(), inliers as f64 / total, trials as f64 / total)
}

fn opencv(scenes: &[Scene], runs: usize, python: &str) -> Result<serde_json::Value> {
    let path = std::env::temp_dir().join(format!("delf-bench-verify-{}.bin", std::process::id()));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    f.write_all(&(scenes.len() as u64).to_le_bytes())?;
    f.write_all(&(scenes[0].src.len() as u64).to_le_bytes())?;
    for s in scenes {
        for p in s.src.iter().chain(&s.dst) {
            f.write_all(&p.x.to_le_bytes())?;
            f.write_all(&p.y.to_le_bytes())?;
        }
    }
    drop(f);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/python/bench_opencv_ransac.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(&path)
        .args([THRESHOLD.to_string(), MAX_TRIALS.to_string(), CONFIDENCE.to_string(), runs.to_string()])
        .output()
        .with_context(|| format!("running {python} (scripts/setup.sh installs OpenCV in .cache/venv)"))?;
    std::fs::remove_file(&path).ok();
    if !out.status.success() {
        bail!("OpenCV baseline failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Prints the table: `matches` correspondences with `outliers` of them wrong, `n_scenes` scenes, `runs` passes;
/// `python` with OpenCV for the baseline (`none` skips it).
pub fn run(matches: usize, outliers: f64, n_scenes: usize, runs: usize, python: &str) -> Result<()> {
    if matches < 3 || n_scenes == 0 || runs == 0 || !(0.0..1.0).contains(&outliers) {
        bail!("need at least 3 matches, one scene, one run, and an outlier fraction in [0, 1)");
    }
    let data = scenes(n_scenes, matches, outliers);
    println!(
        "RANSAC affine: {matches} correspondences, {:.0} % outliers, 1 px noise, threshold {THRESHOLD} px, \
         at most {MAX_TRIALS} trials, confidence {CONFIDENCE}, 1 thread, {n_scenes} scenes x {runs} runs",
        outliers * 100.0
    );
    println!("| implementation | verifications/s | mean inliers | mean trials |");
    println!("|---|---|---|---|");
    let base = RansacConfig {
        residual_threshold: THRESHOLD,
        max_trials: MAX_TRIALS,
        confidence: CONFIDENCE,
        ..RansacConfig::default()
    };
    for (name, config) in [
        ("delf-verify, LO-RANSAC (default)", base),
        ("delf-verify, plain RANSAC + final refit", RansacConfig { local_optimization: false, ..base }),
    ] {
        let (rate, inliers, trials) = ours(&data, runs, &config);
        println!("| {name} | {rate:.0} | {inliers:.1} | {trials:.0} |");
    }
    let truth =
        data.iter().map(|s| s.is_inlier.iter().filter(|&&b| b).count()).sum::<usize>() as f64 / data.len() as f64;
    if python != "none" {
        let cv = opencv(&data, runs, python)?;
        println!(
            "| OpenCV {} estimateAffine2D (RANSAC, refineIters 10) | {:.0} | {:.1} | n/a |",
            cv["opencv"].as_str().unwrap_or("?"),
            cv["verifications_per_s"].as_f64().unwrap_or(0.0),
            cv["mean_inliers"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "(generated inliers per scene: {truth:.0}; a few outliers fall within {THRESHOLD} px of the map by chance)"
    );
    Ok(())
}
