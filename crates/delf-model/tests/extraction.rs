//! DELF extraction on real photos with the real Lite0 weights: geometry, determinism, pyramid and top-N.
#![allow(clippy::unwrap_used)]

mod common;

use common::{backbone, extractor, photo};
use delf_image::RgbImage;
use delf_model::geometry::AxisGeometry;
use delf_model::preprocess::to_tensor;
use delf_model::{Attention, AttentionHead, Backbone, ExtractConfig, Extractor, FeatureTap, LiteBackbone, Precision};
use tch::{Device, Kind, Tensor};

/// Inclusive pixel ranges: first and last row, first and last column.
type Ranges<T> = (T, T, T, T);

/// Back-propagates from one feature-map cell and returns the inclusive pixel range (rows, cols) that receives
/// gradient, next to the range our geometry computes for that cell.
fn gradient_support(tap: FeatureTap, h: i64, w: i64, cell: (i64, i64)) -> (Ranges<i64>, Ranges<f64>) {
    let net = backbone(tap);
    let img = photo("graf1.png");
    let img = image::imageops::resize(&img, w as u32, h as u32, image::imageops::FilterType::Triangle);
    let x = to_tensor(&img, net.normalization(), Device::Cpu).set_requires_grad(true);
    let f = net.features(&x);
    f.get(0).select(1, cell.0).select(1, cell.1).sum(Kind::Float).backward();
    let g = x.grad().abs().sum_dim_intlist([0i64, 1].as_slice(), false, Kind::Float); // [H, W]
    let rows: Vec<f32> = g.sum_dim_intlist([1i64].as_slice(), false, Kind::Float).try_into().unwrap();
    let cols: Vec<f32> = g.sum_dim_intlist([0i64].as_slice(), false, Kind::Float).try_into().unwrap();
    let range = |v: &[f32]| {
        let first = v.iter().position(|&a| a > 0.0).unwrap() as i64;
        let last = v.iter().rposition(|&a| a > 0.0).unwrap() as i64;
        (first, last)
    };
    let ((r0, r1), (c0, c1)) = (range(&rows), range(&cols));
    let gy = AxisGeometry::compute(&net.layers(), h);
    let gx = AxisGeometry::compute(&net.layers(), w);
    assert_eq!((gy.cells, gx.cells), (f.size()[2], f.size()[3]), "geometry predicts the feature-map size");
    let (sy0, sy1) = gy.span(cell.0);
    let (sx0, sx1) = gx.span(cell.1);
    ((r0, r1, c0, c1), (sy0, sy1, sx0, sx1))
}

#[test]
fn receptive_field_matches_back_propagation() {
    // Odd and even sizes: TF "SAME" padding differs between them, and so does the geometry.
    for (tap, h, w) in [
        (LiteBackbone::DEFAULT_TAP, 512, 481),
        (FeatureTap::BlockOutput(10), 481, 512),
        (FeatureTap::BlockOutput(4), 160, 161),
    ] {
        let f = backbone(tap).features(&Tensor::zeros([1, 3, h, w], (Kind::Float, Device::Cpu)));
        let cell = (f.size()[2] / 2, f.size()[3] / 2);
        let (support, span) = gradient_support(tap, h, w, cell);
        // The computed span, clipped to the image, is exactly the set of pixels that influence the cell.
        let clip = |a: f64, n: i64| a.clamp(0.0, (n - 1) as f64) as i64;
        let expected = (clip(span.0, h), clip(span.1, h), clip(span.2, w), clip(span.3, w));
        assert_eq!(support, expected, "{tap} at {h}x{w}, cell {cell:?}: gradient support vs computed span {span:?}");
    }
}

#[test]
fn extraction_is_deterministic_on_cpu() {
    let ex = extractor(LiteBackbone::DEFAULT_TAP, ExtractConfig { max_side: Some(320), ..Default::default() });
    let img = photo("box.png");
    let a = ex.extract(&img).unwrap();
    let b = ex.extract(&img).unwrap();
    assert_eq!(a, b);
    assert!(a.validate().is_ok());
}

#[test]
fn batched_extraction_matches_one_image_at_a_time() {
    let ex = extractor(LiteBackbone::DEFAULT_TAP, ExtractConfig { max_side: Some(320), ..Default::default() });
    let a = photo("box.png");
    let flipped = image::imageops::flip_horizontal(&a);
    let other = photo("graf1.png");
    let batch = ex.extract_batch(&[&a, &other, &flipped], 8);
    assert_eq!(batch.len(), 3);
    for (got, img) in batch.into_iter().zip([&a, &other, &flipped]) {
        let got = got.unwrap();
        let want = ex.extract(img).unwrap();
        // Same keypoints in the same order; descriptors equal up to the last bits of a batched convolution.
        assert_eq!(got.keypoints.len(), want.keypoints.len());
        let same_points = got.keypoints.iter().zip(&want.keypoints).filter(|(g, w)| (g.x, g.y) == (w.x, w.y)).count();
        assert!(same_points as f64 >= 0.99 * want.len() as f64, "{same_points} of {}", want.len());
        let worst = got.descriptors.iter().zip(&want.descriptors).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
        println!(
            "{}x{}: {same_points}/{} keypoints identical, max descriptor difference {worst:e}",
            img.width(),
            img.height(),
            want.len()
        );
        assert!(worst < 1e-4, "{worst}");
    }
}

/// bf16 (weights, BatchNorm statistics and activations of the backbone and the shipped head) on CPU: the same
/// strongest keypoints for the most part and nearly the same descriptors; fp16 autocast is refused off CUDA.
#[test]
fn bf16_extraction_agrees_with_fp32() {
    let make = |precision| {
        let b = backbone(LiteBackbone::DEFAULT_TAP);
        let head = AttentionHead::shipped_for(&b, Device::Cpu).unwrap().expect("the shipped head fits Lite0 block10");
        let config = ExtractConfig { max_side: Some(320), precision, ..Default::default() };
        Extractor::new(Box::new(b), Attention::Head(Box::new(head)), None, config, Device::Cpu)
    };
    assert!(make(Precision::Fp16).unwrap_err().to_string().contains("needs a CUDA device"));
    let (fp32, bf16) = (make(Precision::Fp32).unwrap(), make(Precision::Bf16).unwrap());
    for name in ["box.png", "graf1.png"] {
        let img = photo(name);
        let (want, got) = (fp32.extract(&img).unwrap(), bf16.extract(&img).unwrap());
        assert!(got.validate().is_ok());
        assert_eq!(got.len(), want.len());
        let dim = want.dim;
        let at: std::collections::HashMap<(u32, u32, u32), usize> = want
            .keypoints
            .iter()
            .enumerate()
            .map(|(i, k)| ((k.x.to_bits(), k.y.to_bits(), k.scale.to_bits()), i))
            .collect();
        let mut cosines = Vec::new();
        for (j, k) in got.keypoints.iter().enumerate() {
            if let Some(&i) = at.get(&(k.x.to_bits(), k.y.to_bits(), k.scale.to_bits())) {
                let (a, b) = (&want.descriptors[i * dim..(i + 1) * dim], &got.descriptors[j * dim..(j + 1) * dim]);
                cosines.push(a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>());
            }
        }
        cosines.sort_by(f32::total_cmp);
        let shared = cosines.len() as f64 / want.len() as f64;
        let median = cosines[cosines.len() / 2];
        println!(
            "{name}: {:.1} % of keypoints shared, descriptor cosine median {median:.4}, lowest {:.4}",
            shared * 100.0,
            cosines[0]
        );
        assert!(shared > 0.8, "{shared}");
        assert!(median > 0.99, "{median}");
    }
}

#[test]
fn pyramid_and_top_n() {
    let config = ExtractConfig { max_side: Some(400), max_features: 300, ..Default::default() };
    let ex = extractor(LiteBackbone::DEFAULT_TAP, config.clone());
    let img = photo("aero1.jpg");
    let f = ex.extract(&img).unwrap();
    assert_eq!(f.len(), 300);
    assert_eq!(f.dim, ex.backbone().channels() as usize);
    assert!(f.keypoints.windows(2).all(|w| w[0].score >= w[1].score), "sorted by score");
    let base = 400.0 / f64::from(img.width().max(img.height()));
    let allowed: Vec<f32> = config.scales.iter().map(|s| (1.0 / (base * s)) as f32).collect();
    let mut used = std::collections::BTreeSet::new();
    for k in &f.keypoints {
        let i = allowed.iter().position(|a| (a - k.scale).abs() < 1e-4).expect("scale is 1/s of a pyramid level");
        used.insert(i);
        assert!(k.x >= 0.0 && k.x <= img.width() as f32 && k.y >= 0.0 && k.y <= img.height() as f32, "{k:?}");
    }
    assert!(used.len() >= 3, "features come from several pyramid levels: {used:?}");
    for i in 0..f.len() {
        let norm: f32 = f.descriptor(i).iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[test]
fn tiny_images_give_no_features_not_errors() {
    let ex = extractor(LiteBackbone::DEFAULT_TAP, ExtractConfig::default());
    // Under 10 px on a side at every pyramid level (the largest is x2): no features, and no error.
    for (w, h) in [(4, 4), (1, 300), (300, 1)] {
        let f = ex.extract(&RgbImage::from_pixel(w, h, image::Rgb([120, 30, 200]))).unwrap();
        assert!(f.is_empty() && f.validate().is_ok(), "{w}x{h}");
    }
    // 8x8 reaches 10 px only at scales 1.4142 (11x11) and 2.0 (16x16): features come from those levels only
    // (with every cell kept: the default cell filter keeps none of these, whose cores are mostly padding).
    let img = RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 99]));
    assert!(ex.extract(&img).unwrap().is_empty());
    let every_cell = extractor(LiteBackbone::DEFAULT_TAP, ExtractConfig { min_texture: None, ..Default::default() });
    let f = every_cell.extract(&img).unwrap();
    assert!(!f.is_empty());
    let levels: Vec<f32> = ExtractConfig::default().scales[5..].iter().map(|s| (1.0 / s) as f32).collect();
    assert!(f.keypoints.iter().all(|k| levels.iter().any(|l| (k.scale - l).abs() < 1e-4)), "{levels:?}");
}

#[test]
fn keypoints_follow_a_known_crop_offset() {
    // The same content seen in the full image and in a crop shifted by (48, 32): matching features must sit
    // 48 px / 32 px apart in the two images' coordinates. Sizes keep the stride-16 grids aligned.
    let full = image::imageops::resize(&photo("graf1.png"), 640, 512, image::imageops::FilterType::Triangle);
    let crop = image::imageops::crop_imm(&full, 48, 32, 512, 416).to_image();
    let config = ExtractConfig { scales: vec![1.0], max_side: None, max_features: 400, ..Default::default() };
    let ex = extractor(LiteBackbone::DEFAULT_TAP, config);
    let (a, b) = (ex.extract(&full).unwrap(), ex.extract(&crop).unwrap());
    let mut offsets = Vec::new();
    for i in 0..b.len() {
        let d = b.descriptor(i);
        let (best, sim) = (0..a.len())
            .map(|j| (j, a.descriptor(j).iter().zip(d).map(|(x, y)| x * y).sum::<f32>()))
            .max_by(|p, q| p.1.total_cmp(&q.1))
            .unwrap();
        if sim > 0.9 {
            offsets.push((a.keypoints[best].x - b.keypoints[i].x, a.keypoints[best].y - b.keypoints[i].y));
        }
    }
    assert!(offsets.len() > 50, "only {} confident matches", offsets.len());
    let exact = offsets.iter().filter(|(dx, dy)| (dx - 48.0).abs() < 0.01 && (dy - 32.0).abs() < 0.01).count();
    assert!(exact * 10 >= offsets.len() * 8, "{exact} of {} matches at exactly (+48, +32)", offsets.len());
}

#[test]
fn true_pairs_share_far_more_mutual_matches_than_unrelated_pairs() {
    // The default layer and a 40-d PCA fitted on other photos (common::PCA_PHOTOS).
    let ex = common::extractor_with_pca(LiteBackbone::DEFAULT_TAP, common::quality_config(), 40);
    assert_eq!(ex.dim(), 40);
    let (t, u) = common::pair_scores(&ex);
    eprintln!("mutual matches, true pairs {t:?}, unrelated pairs {u:?}");
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
    assert!(t.iter().min() > u.iter().max(), "every true pair beats every unrelated pair: {t:?} vs {u:?}");
    assert!(mean(&t) > 4.0 * mean(&u), "true pairs {t:?} vs unrelated {u:?}");
}

#[test]
fn default_layer_geometry_numbers() {
    // The figures quoted in docs/extraction.md and docs/models.md.
    let g = AxisGeometry::compute(&backbone(LiteBackbone::DEFAULT_TAP).layers(), 512);
    assert_eq!((g.stride, g.receptive_field), (16, 339));
}

/// A quarter-turned photo searched at the opposite quarter turn is the photo itself again (quarter turns move
/// whole pixels): the same keypoints, mapped back into the turned photo's frame, and the same descriptors.
#[test]
fn a_rotated_pass_maps_keypoints_back_into_the_query() {
    let ex = extractor(LiteBackbone::DEFAULT_TAP, ExtractConfig { max_side: Some(320), ..Default::default() });
    let img = photo("box.png");
    let (turned, map) = delf_image::warp::rotate(&img, 90.0, true, delf_image::Fill::Color([0, 0, 0]));
    let mut passes = ex.extract_raw_rotations(&turned.image, &[-90.0], delf_model::RotatedPass::FULL).unwrap();
    assert_eq!(passes.len(), 1, "one set per rotation");
    let back = passes.remove(0);
    let upright = ex.extract_raw(&img).unwrap();
    assert_eq!(back.len(), upright.len());
    assert_eq!((back.width, back.height), (turned.image.width(), turned.image.height()));
    for (b, u) in back.keypoints.iter().zip(&upright.keypoints) {
        let (x, y) = map.apply(f64::from(u.x), f64::from(u.y)).unwrap();
        assert!((f64::from(b.x) - x).abs() < 1e-3 && (f64::from(b.y) - y).abs() < 1e-3, "{b:?} vs {x},{y}");
    }
    assert_eq!(back.descriptors, upright.descriptors);
}

/// Cells over blank areas and over the fill of a turned view give no keypoints: a photo pasted on a large flat
/// canvas keeps its keypoints on the photo, and a 45-degree pass keeps none in its black corners.
#[test]
fn blank_and_filled_cells_give_no_keypoints() {
    let ex = extractor(LiteBackbone::DEFAULT_TAP, ExtractConfig { max_side: Some(480), ..Default::default() });
    let img = photo("box.png");
    let mut canvas = image::RgbImage::from_pixel(480, 360, image::Rgb([250, 250, 250]));
    image::imageops::overlay(&mut canvas, &img, 120, 80);
    let (x0, y0, x1, y1) = (120.0, 80.0, 120.0 + f32::from(img.width() as u16), 80.0 + f32::from(img.height() as u16));
    let f = ex.extract(&canvas).unwrap();
    assert!(f.len() > 100, "{}", f.len());
    // A cell's core reaches one stride (16 px of its level, 16 x scale in the image) either way of its centre.
    let off = |k: &&delf_core::Keypoint| {
        let m = 16.0 * k.scale + 1.0;
        k.x < x0 - m || k.x > x1 + m || k.y < y0 - m || k.y > y1 + m
    };
    assert_eq!(f.keypoints.iter().filter(off).count(), 0, "keypoints on the blank canvas");
    let unfiltered = ExtractConfig { max_side: Some(480), min_texture: None, ..Default::default() };
    let plain = extractor(LiteBackbone::DEFAULT_TAP, unfiltered).extract(&canvas).unwrap();
    assert!(plain.keypoints.iter().filter(off).count() > 10, "the filter was not needed");
    let turned = ex.extract_raw_rotations(&img, &[45.0], delf_model::RotatedPass::FULL).unwrap().remove(0);
    let (w, h) = (img.width() as f32, img.height() as f32);
    assert!(turned.len() > 50);
    // Mapped back, every keypoint lies on the photo (the corners of the canvas were fill).
    assert!(turned.keypoints.iter().all(|k| k.x > -8.0 && k.y > -8.0 && k.x < w + 8.0 && k.y < h + 8.0));
}
