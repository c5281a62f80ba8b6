//! Shared helpers of the delf-model integration tests: installed photos and weights (scripts/setup.sh).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use delf_image::{DecodeLimits, RgbImage, decode_file};
use delf_model::{Attention, ExtractConfig, Extractor, FeatureTap, LiteBackbone, LiteVariant};
use tch::Device;

pub fn home() -> PathBuf {
    PathBuf::from(std::env::var("DELF_HOME").expect("DELF_HOME is set by .cargo/config.toml"))
}

pub fn weights() -> PathBuf {
    home().join("models/efficientnet-lite0.safetensors")
}

pub fn photo(name: &str) -> RgbImage {
    let path = home().join("data/opencv-doc").join(name);
    decode_file(&path, &DecodeLimits::default())
        .unwrap_or_else(|e| panic!("{}: {e}: run scripts/setup.sh", path.display()))
        .rgb
}

pub fn backbone(tap: FeatureTap) -> LiteBackbone {
    LiteBackbone::load(&weights(), LiteVariant::LITE0, tap, Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

pub fn extractor(tap: FeatureTap, config: ExtractConfig) -> Extractor {
    Extractor::new(Box::new(backbone(tap)), Attention::FeatureNorm, None, config, Device::Cpu).unwrap()
}

/// Pairs of `kind` (`true` or `unrelated`) from the shared fixture `tests/fixtures/opencv_doc_pairs.txt`.
pub fn pairs(kind: &str) -> Vec<(String, String)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/opencv_doc_pairs.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [k, a, b] if k == kind => Some((a.to_string(), b.to_string())),
            _ => None,
        })
        .collect()
}

/// Mutual nearest neighbours within the reference distance (0.8) between two photos.
pub fn mutual_matches(ex: &Extractor, a: &str, b: &str) -> usize {
    let fa = ex.extract(&photo(a)).unwrap();
    let fb = ex.extract(&photo(b)).unwrap();
    let config = delf_verify::MatchConfig { mutual: true, ..Default::default() };
    delf_verify::putative_matches(&fa, &fb, &config).unwrap().len()
}

/// Mutual matches of every true and unrelated pair, in the order of the fixture.
pub fn pair_scores(ex: &Extractor) -> (Vec<usize>, Vec<usize>) {
    let score = |kind: &str| pairs(kind).iter().map(|(a, b)| mutual_matches(ex, a, b)).collect::<Vec<_>>();
    (score("true"), score("unrelated"))
}

/// The extraction setting of the quality checks: the reference pyramid on images of at most 512 px.
pub fn quality_config() -> ExtractConfig {
    ExtractConfig { max_side: Some(512), ..ExtractConfig::default() }
}

/// Photos used only to fit PCAs in tests: none of them appears in the pairs above.
pub const PCA_PHOTOS: [&str; 8] = [
    "left01.jpg",
    "right05.jpg",
    "messi5.jpg",
    "baboon.jpg",
    "fruits.jpg",
    "home.jpg",
    "building.jpg",
    "starry_night.jpg",
];

/// An extractor at `tap` with a `dim`-d PCA fitted on [`PCA_PHOTOS`].
pub fn extractor_with_pca(tap: FeatureTap, config: ExtractConfig, dim: usize) -> Extractor {
    let raw = extractor(tap, config.clone());
    let samples: Vec<tch::Tensor> = PCA_PHOTOS.iter().map(|p| raw.raw_descriptors(&photo(p)).unwrap()).collect();
    let pca = delf_model::Pca::fit(&tch::Tensor::cat(&samples, 0), dim, false, &raw.backbone().name()).unwrap();
    Extractor::new(Box::new(backbone(tap)), Attention::FeatureNorm, Some(pca), config, Device::Cpu).unwrap()
}
