//! Which Lite0 layer gives the best local features? For each candidate feature layer, prints the mutual
//! nearest neighbours (distance <= 0.8) of true multi-view pairs and of unrelated pairs of real photos.
//! Run: `cargo run -p delf-model --example layer_quality [layers|attention]` (after scripts/setup.sh; both parts
//! by default). Results: docs/extraction.md.

// A measurement tool run by hand after scripts/setup.sh: failing loudly on a missing photo is what we want.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use delf_model::{Attention, AttentionHead, Extractor, FeatureTap, LiteBackbone};

fn main() {
    let part = std::env::args().nth(1).unwrap_or_default();
    if part != "attention" {
        layers();
    }
    if part != "layers" {
        attention();
    }
}

fn layers() {
    let taps = [
        FeatureTap::BlockOutput(7),
        FeatureTap::BlockOutput(10),
        FeatureTap::BlockExpansion(11),
        FeatureTap::BlockOutput(14),
        FeatureTap::BlockExpansion(15),
    ];
    println!(
        "| layer | channels | PCA | stride | true pairs: mutual matches | unrelated pairs | min true / max unrelated |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (tap, pca) in taps.iter().flat_map(|&t| [(t, false), (t, true)]) {
        let ex = if pca {
            common::extractor_with_pca(tap, common::quality_config(), 40)
        } else {
            common::extractor(tap, common::quality_config())
        };
        let stride = delf_model::geometry::AxisGeometry::compute(&ex.backbone().layers(), 512).stride;
        let (t, u) = common::pair_scores(&ex);
        let (tmin, umax) = (t.iter().min().copied().unwrap_or(0), u.iter().max().copied().unwrap_or(0));
        println!(
            "| {tap} | {} | {} | {stride} | {t:?} (mean {:.0}) | {u:?} (mean {:.0}) | {tmin} / {umax} |",
            ex.backbone().channels(),
            if pca { "40" } else { "none" },
            t.iter().sum::<usize>() as f64 / t.len() as f64,
            u.iter().sum::<usize>() as f64 / u.len() as f64,
        );
    }
}

fn attention() {
    // Keypoint scores at the default layer: feature norm, an untrained, randomly initialised DELF head (which ranks
    // cells without any knowledge of what matches), and the trained head that ships (docs/training.md).
    let tap = LiteBackbone::DEFAULT_TAP;
    let with_norm = common::extractor_with_pca(tap, common::quality_config(), 40);
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let head = AttentionHead::new(&vs.root(), with_norm.backbone().channels());
    let raw = common::extractor(tap, common::quality_config());
    let samples: Vec<tch::Tensor> =
        common::PCA_PHOTOS.iter().map(|p| raw.raw_descriptors(&common::photo(p)).unwrap()).collect();
    let pca = delf_model::Pca::fit(&tch::Tensor::cat(&samples, 0), 40, false, &raw.backbone().name()).unwrap();
    let with_random = Extractor::new(
        Box::new(common::backbone(tap)),
        Attention::Head(Box::new(head)),
        Some(pca),
        common::quality_config(),
        tch::Device::Cpu,
    )
    .unwrap();
    let backbone = common::backbone(tap);
    let shipped = AttentionHead::shipped_for(&backbone, tch::Device::Cpu).unwrap().expect("a head ships for Lite0");
    let pca = delf_model::Pca::fit(&tch::Tensor::cat(&samples, 0), 40, false, &raw.backbone().name()).unwrap();
    let with_trained = Extractor::new(
        Box::new(backbone),
        Attention::Head(Box::new(shipped)),
        Some(pca),
        common::quality_config(),
        tch::Device::Cpu,
    )
    .unwrap();
    println!();
    println!("| scores at {tap} (PCA 40) | true pairs | unrelated pairs | min true / max unrelated |");
    println!("|---|---|---|---|");
    let rows = [
        ("feature norm", &with_norm),
        ("untrained random head", &with_random),
        ("shipped trained head", &with_trained),
    ];
    for (name, ex) in rows {
        let (t, u) = common::pair_scores(ex);
        println!(
            "| {name} | {t:?} (mean {:.0}) | {u:?} (mean {:.0}) | {} / {} |",
            t.iter().sum::<usize>() as f64 / t.len() as f64,
            u.iter().sum::<usize>() as f64 / u.len() as f64,
            t.iter().min().unwrap(),
            u.iter().max().unwrap()
        );
    }
}
