//! RANSAC on synthetic correspondences from known maps, with outliers and noise.
#![allow(clippy::unwrap_used)]

use delf_verify::rng::SplitMix64 as Gen;
use delf_verify::synthetic;
use delf_verify::{Affine, GeometricModel, Homography, Point, RansacConfig, ransac, ransac_scaled};

fn scene<M: GeometricModel>(
    truth: &M,
    n: usize,
    outliers: f64,
    sigma: f64,
    seed: u64,
) -> (Vec<Point>, Vec<Point>, Vec<bool>) {
    let s = synthetic::scene(truth, n, outliers, sigma, (800.0, 600.0), seed);
    (s.src, s.dst, s.is_inlier)
}

/// Largest distance between the two maps over a grid covering the query image.
fn max_transfer_difference<M: GeometricModel, N: GeometricModel>(a: &M, b: &N) -> f64 {
    let mut worst: f64 = 0.0;
    for i in 0..=8 {
        for j in 0..=6 {
            let p = Point::new(f64::from(i) * 100.0, f64::from(j) * 100.0);
            let (qa, qb) = (a.map(p), b.map(p));
            worst = worst.max(((qa.x - qb.x).powi(2) + (qa.y - qb.y).powi(2)).sqrt());
        }
    }
    worst
}

fn check<M: GeometricModel>(truth: M, label: &str) {
    for (outliers, trials) in [(0.0, 1000), (0.3, 1000), (0.5, 1000), (0.7, 1000), (0.8, 20_000), (0.9, 200_000)] {
        let (src, dst, is_in) = scene(&truth, 1000, outliers, 1.0, 42);
        let config = RansacConfig { residual_threshold: 5.0, max_trials: trials, ..RansacConfig::default() };
        let est = ransac::<M>(&src, &dst, &config);
        let model = est.model.unwrap_or_else(|| panic!("{label}: no model at {outliers} outliers"));
        let err = max_transfer_difference(&model, &truth);
        assert!(err < 3.0, "{label} at {outliers} outliers: model off by {err:.2} px");
        let true_in = is_in.iter().filter(|&&b| b).count();
        let found = est.inliers.iter().zip(&is_in).filter(|(f, t)| **f && **t).count();
        let wrong = est.inliers.iter().zip(&is_in).filter(|(f, t)| **f && !**t).count();
        // 1 px noise against a 5 px threshold keeps all true inliers; random outliers land within 5 px of the
        // map by chance with probability about pi*25 / (800*600) each.
        assert!(found * 100 >= true_in * 99, "{label} at {outliers}: found {found} of {true_in} inliers");
        assert!(wrong <= 1 + true_in / 100, "{label} at {outliers}: {wrong} outliers accepted");
        assert_eq!(est.num_inliers, found + wrong);
    }
}

#[test]
fn recovers_affine_maps_up_to_90_percent_outliers() {
    let (s, t) = (0.7, 0.35f64);
    check(Affine { m: [s * t.cos(), -s * t.sin() + 0.1, 40.0, s * t.sin(), s * t.cos(), -25.0] }, "affine");
}

#[test]
fn recovers_homographies_up_to_90_percent_outliers() {
    check(Homography { h: [0.9, 0.12, 30.0, -0.08, 1.05, 12.0, 2e-4, -1e-4, 1.0] }, "homography");
}

#[test]
fn tiny_and_degenerate_inputs_give_clear_results() {
    let cfg = RansacConfig::default();
    for n in 0..3 {
        let pts: Vec<Point> = (0..n).map(|i| Point::new(f64::from(i) * 10.0, 5.0)).collect();
        let est = ransac::<Affine>(&pts, &pts, &cfg);
        assert!(est.model.is_none() && est.num_inliers == 0 && est.inliers.len() == n as usize);
    }
    // Exactly three good points: the exact affine map, three inliers.
    let src = [Point::new(0.0, 0.0), Point::new(100.0, 0.0), Point::new(0.0, 100.0)];
    let dst = [Point::new(10.0, 10.0), Point::new(110.0, 10.0), Point::new(10.0, 110.0)];
    let est = ransac::<Affine>(&src, &dst, &cfg);
    assert_eq!(est.num_inliers, 3);
    // All points on one line: every sample is degenerate, so no model.
    let line: Vec<Point> = (0..50).map(|i| Point::new(f64::from(i) * 7.0, f64::from(i) * 3.0)).collect();
    let est = ransac::<Affine>(&line, &line, &cfg);
    assert!(est.model.is_none() && est.num_inliers == 0);
    let est = ransac::<Homography>(&line, &line, &cfg);
    assert!(est.model.is_none());
    // Mismatched lengths use the common prefix.
    assert_eq!(ransac::<Affine>(&src, &dst[..2], &cfg).inliers.len(), 2);
}

#[test]
fn same_seed_same_answer() {
    let truth = Affine { m: [1.0, 0.05, 3.0, -0.05, 1.0, 7.0] };
    let (src, dst, _) = scene(&truth, 500, 0.6, 2.0, 9);
    let cfg = RansacConfig::default();
    let (a, b) = (ransac::<Affine>(&src, &dst, &cfg), ransac::<Affine>(&src, &dst, &cfg));
    assert_eq!(a, b);
    assert!(a.trials < cfg.max_trials, "adaptive stop: {} trials", a.trials);
}

#[test]
fn collapsed_models_are_rejected_by_default_bounds() {
    // Many query points matched to (nearly) one database point: an affine map with tiny scale explains them all.
    let mut g = Gen(3);
    let src: Vec<Point> = (0..100).map(|_| Point::new(g.uniform() * 800.0, g.uniform() * 600.0)).collect();
    let dst: Vec<Point> = src.iter().map(|_| Point::new(400.0 + g.normal(), 300.0 + g.normal())).collect();
    let unbounded = RansacConfig { bounds: delf_verify::ModelBounds::UNBOUNDED, ..RansacConfig::default() };
    assert!(ransac::<Affine>(&src, &dst, &unbounded).num_inliers > 90, "the reference accepts the collapse");
    let est = ransac::<Affine>(&src, &dst, &RansacConfig::default());
    assert!(est.num_inliers < 10, "bounded RANSAC found {} inliers", est.num_inliers);
}

/// With keypoint scales, a correspondence whose scale ratio disagrees with the model's scale change by more than
/// the tolerance is not an inlier, even where its position fits; unknown (NaN) ratios are judged by position.
#[test]
fn scale_tolerance_keeps_only_scale_consistent_inliers() {
    let truth = Affine { m: [2.0, 0.1, 30.0, -0.1, 2.0, 40.0] };
    let (src, dst, _) = scene(&truth, 90, 0.0, 0.5, 7);
    let sigma = (2.0f32 * 2.0 + 0.1 * 0.1).sqrt();
    // 50 agree with the model (a quarter octave either way), 30 are two octaves off, 10 are unknown.
    let ratios: Vec<f32> = (0..90)
        .map(|i| match i % 9 {
            0 => f32::NAN,
            1..=3 => sigma / 4.0,
            4 => sigma * 2f32.powf(0.25),
            5 => sigma * 2f32.powf(-0.25),
            _ => sigma,
        })
        .collect();
    let consistent = ratios.iter().filter(|r| r.is_nan() || (**r / sigma).log2().abs() <= 0.5).count();
    assert_eq!(consistent, 60);
    let positions = RansacConfig { residual_threshold: 5.0, ..RansacConfig::default() };
    assert_eq!(
        ransac_scaled::<Affine>(&src, &dst, &ratios, &positions).num_inliers,
        90,
        "no tolerance: positions only"
    );
    let scaled = RansacConfig { scale_tolerance: Some(0.5), ..positions };
    let est = ransac_scaled::<Affine>(&src, &dst, &ratios, &scaled);
    assert_eq!(est.num_inliers, 60);
    assert!(
        est.inliers.iter().zip(&ratios).all(|(&inlier, r)| !inlier || r.is_nan() || (*r / sigma).log2().abs() <= 0.5)
    );
    assert_eq!(ransac_scaled::<Affine>(&src, &dst, &[], &scaled).num_inliers, 90, "no ratios: positions only");
    assert_eq!(
        ransac_scaled::<Homography>(&src, &dst, &ratios, &scaled).num_inliers,
        60,
        "a homography's scale is local"
    );
}
