//! Reading images and building the network and the extractor from the configuration, shared by the commands.

use std::path::Path;

use anyhow::{Context, Result, bail};
use delf_image::{DecodeLimits, DecodedImage, decode_file};
use delf_model::{
    Attention, AttentionHead, Backbone, DeviceSpec, ExtractConfig, Extractor, FeatureCache, FeatureTap, LiteBackbone,
    LiteVariant, Pca, ResNet,
};

use crate::config::Config;

/// The EfficientNet-Lite variant named by `model.backbone`.
pub fn lite_variant(config: &Config) -> Result<LiteVariant> {
    let name = &config.model.backbone;
    match LiteVariant::named(name) {
        Some(variant) => Ok(variant),
        None => bail!(delf_model::ModelError::Config(format!(
            "{name:?} is not an EfficientNet-Lite backbone (available: efficientnet-lite0, -lite1, -lite2, resnet50, \
             resnet50-delf, resnet50-delg, resnet101-delg)"
        ))),
    }
}

/// Decodes an input image with the default limits; the error names the file.
pub fn read_image(path: &Path) -> Result<DecodedImage> {
    decode_file(path, &DecodeLimits::default()).with_context(|| format!("reading {}", path.display()))
}

/// The device from a flag, else the config.
pub fn device(flag: Option<&str>, config: &Config) -> Result<tch::Device> {
    let spec: DeviceSpec = flag.unwrap_or(&config.device).parse()?;
    Ok(spec.resolve()?)
}

/// The configured backbone, cut at its feature layer.
pub fn backbone(config: &Config, device: tch::Device) -> Result<Box<dyn Backbone>> {
    let name = config.model.backbone.as_str();
    if ResNet::CONVERTED.contains(&name) {
        let weights = config.model.weights.as_deref().ok_or_else(|| {
            delf_model::ModelError::Config(format!(
                "{name} needs model.weights: a file converted from the published TensorFlow release by \
                 scripts/python/convert_tf_delf.py (docs/models.md)"
            ))
        })?;
        return Ok(Box::new(ResNet::load_converted(weights, name, device)?));
    }
    if name == "resnet50" {
        if config.model.layer.as_deref().is_some_and(|l| l != "conv4") {
            bail!(delf_model::ModelError::Config("resnet50 offers only the conv4 feature layer".into()));
        }
        let weights = config.model.weights.as_deref().ok_or_else(|| {
            delf_model::ModelError::Config(
                "resnet50 needs model.weights: no weights ship with delf-rs (docs/models.md explains the conversion)"
                    .into(),
            )
        })?;
        return Ok(Box::new(ResNet::load_torchvision(weights, device)?));
    }
    let tap = match &config.model.layer {
        Some(layer) => layer.parse::<FeatureTap>().map_err(delf_model::ModelError::Config)?,
        None => LiteBackbone::DEFAULT_TAP,
    };
    Ok(Box::new(LiteBackbone::load(&config.weights_path(), lite_variant(config)?, tap, device)?))
}

/// The configured extractor; `pca` overrides `model.pca`. It reads and fills the `feature_cache` when one is set.
pub fn extractor(
    config: &Config,
    settings: ExtractConfig,
    pca: Option<&Path>,
    device: tch::Device,
) -> Result<Extractor> {
    let extractor = uncached_extractor(config, settings, pca, device)?;
    Ok(match &config.feature_cache {
        Some(dir) if !dir.as_os_str().is_empty() => extractor.with_cache(FeatureCache::open(dir)?),
        _ => extractor,
    })
}

/// [`extractor`] that always runs the network (what benchmarks time).
pub fn uncached_extractor(
    config: &Config,
    settings: ExtractConfig,
    pca: Option<&Path>,
    device: tch::Device,
) -> Result<Extractor> {
    let backbone = backbone(config, device)?;
    let attention = attention(config, backbone.as_ref(), device)?;
    let pca = match pca.or(config.model.pca.as_deref()) {
        Some(path) => Some(Pca::load(path).with_context(|| format!("loading PCA {}", path.display()))?),
        None => None,
    };
    Ok(Extractor::new(backbone, attention, pca, settings, device)?)
}

/// The configured keypoint scores: a head file, `feature-norm`, or (unset) the head that ships for this backbone,
/// falling back to feature norms where none was trained for it.
pub fn attention(config: &Config, backbone: &dyn Backbone, device: tch::Device) -> Result<Attention> {
    Ok(match config.model.attention.as_deref() {
        Some(path) if path == Path::new(FEATURE_NORM) => Attention::FeatureNorm,
        Some(path) => Attention::Head(Box::new(AttentionHead::load(path, backbone.channels(), device)?)),
        // A converted DELF/DELG release carries its trained head in the same file.
        None if ResNet::CONVERTED.contains(&config.model.backbone.as_str()) => {
            let weights = config.model.weights.as_deref().unwrap_or(Path::new(""));
            Attention::Head(Box::new(AttentionHead::load(weights, backbone.channels(), device)?))
        }
        None => match AttentionHead::shipped_for(backbone, device)? {
            Some(head) => Attention::Head(Box::new(head)),
            None => {
                tracing::info!(backbone = %backbone.name(), "no attention head ships for this backbone: feature-norm scores");
                Attention::FeatureNorm
            }
        },
    })
}

/// `model.attention` value that selects feature-norm scores instead of a trained head.
pub const FEATURE_NORM: &str = "feature-norm";
