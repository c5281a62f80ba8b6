//! Recall of the IVF-PQ index against exact search on real DELF descriptors from our own extractor (opencv-doc
//! photos, PCA 40 fitted on them), and identical answers from the scalar and SIMD scan kernels on them.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use delf_image::{DecodeLimits, decode_file};
use delf_index::{Codebooks, IndexSpec, NewImage, ScanKernel, SearchParams, ShardedIndex, TrainConfig, exact_search};
use delf_model::{Attention, ExtractConfig, Extractor, LiteBackbone, LiteVariant, Pca};

fn data() -> PathBuf {
    PathBuf::from(std::env::var("DELF_HOME").expect("DELF_HOME is set by .cargo/config.toml")).join("data/opencv-doc")
}

fn extractor(pca: Option<Pca>) -> Extractor {
    let weights = data().join("../../models/efficientnet-lite0.safetensors");
    let backbone =
        LiteBackbone::load(&weights, LiteVariant::LITE0, LiteBackbone::DEFAULT_TAP, tch::Device::Cpu).unwrap();
    let config = ExtractConfig { max_side: Some(512), ..ExtractConfig::default() };
    Extractor::new(Box::new(backbone), Attention::FeatureNorm, pca, config, tch::Device::Cpu).unwrap()
}

#[test]
fn recall_on_real_delf_descriptors() {
    let names = [
        "graf1.png",
        "aero1.jpg",
        "leuvenA.jpg",
        "box.png",
        "aloeL.jpg",
        "basketball1.png",
        "rubberwhale1.png",
        "ela_original.jpg",
        "Blender_Suzanne1.jpg",
        "left.jpg",
        "fruits.jpg",
        "building.jpg",
        "home.jpg",
        "baboon.jpg",
        "stuff.jpg",
        "board.jpg",
    ];
    let queries_from = ["graf3.png", "box_in_scene.png", "leuvenB.jpg"];
    let raw_ex = extractor(None);
    let read =
        |n: &str| raw_ex.extract_raw(&decode_file(&data().join(n), &DecodeLimits::default()).unwrap().rgb).unwrap();
    let raw_db: Vec<_> = names.iter().map(|n| read(n)).collect();
    let raw_q: Vec<_> = queries_from.iter().map(|n| read(n)).collect();
    let flat: Vec<f32> = raw_db.iter().flat_map(|f| f.descriptors.iter().copied()).collect();
    let rows = (flat.len() / raw_db[0].dim) as i64;
    let pca = Pca::fit(
        &tch::Tensor::from_slice(&flat).view([rows, raw_db[0].dim as i64]),
        40,
        false,
        "efficientnet-lite0:block10",
    )
    .unwrap();
    let ex = extractor(Some(pca));
    let db: Vec<_> = raw_db.into_iter().map(|f| ex.reduce(f).unwrap()).collect();
    let queries: Vec<f32> = raw_q.into_iter().flat_map(|f| ex.reduce(f).unwrap().descriptors).collect();

    let vectors: Vec<f32> = db.iter().flat_map(|f| f.descriptors.iter().copied()).collect();
    let spec: IndexSpec = "IVF64,PQ20x8r".parse().unwrap();
    let cb = Arc::new(Codebooks::train(&vectors, 40, spec, &TrainConfig::default()).unwrap());
    let mut index = ShardedIndex::new(cb, ex.fingerprint().as_str(), 2).unwrap();
    let kps: Vec<Vec<[f32; 2]>> = db.iter().map(|f| f.keypoints.iter().map(|k| [k.x, k.y]).collect()).collect();
    let batch: Vec<NewImage<'_>> = db
        .iter()
        .enumerate()
        .map(|(i, f)| NewImage {
            number: i as u32,
            name: names[i],
            descriptors: &f.descriptors,
            keypoints: &kps[i],
            scales: &[],
        })
        .collect();
    index.add_images(&batch, 40).unwrap();
    let labels: Vec<(u32, u16)> =
        db.iter().enumerate().flat_map(|(i, f)| (0..f.len()).map(move |j| (i as u32, j as u16))).collect();

    let exact = exact_search(&vectors, &labels, &queries, 40, 60);
    let params = SearchParams { k: 60, nprobe: 8, max_distance: None };
    let found = index.search(&queries, 40, &params, ScanKernel::detect()).unwrap();
    assert_eq!(found, index.search(&queries, 40, &params, ScanKernel::Scalar).unwrap());
    let recall = |r: usize| {
        let hits = found
            .iter()
            .zip(&exact)
            .filter(|(f, e)| f.iter().take(r).any(|n| (n.image, n.feature) == (e[0].image, e[0].feature)))
            .count();
        hits as f64 / found.len() as f64
    };
    let (r1, r10, r60) = (recall(1), recall(10), recall(60));
    println!(
        "{} real descriptors, {} queries, {spec} nprobe 8: recall@1 {r1:.3} @10 {r10:.3} @60 {r60:.3}",
        vectors.len() / 40,
        found.len()
    );
    assert!(r1 >= 0.5 && r10 >= 0.85 && r60 >= 0.95, "recall {r1} {r10} {r60}");
}
