//! Building the network and the extractor from the configuration, shared by the commands that extract.

use std::path::Path;

use anyhow::{Context, Result, bail};
use delf_model::{
    Attention, AttentionHead, Backbone, DeviceSpec, ExtractConfig, Extractor, FeatureTap, LiteBackbone, LiteVariant,
    Pca,
};

use crate::config::Config;

/// The EfficientNet-Lite variant named by `model.backbone`.
pub fn lite_variant(config: &Config) -> Result<LiteVariant> {
    Ok(match config.model.backbone.as_str() {
        "efficientnet-lite0" => LiteVariant::LITE0,
        "efficientnet-lite1" => LiteVariant::LITE1,
        "efficientnet-lite2" => LiteVariant::LITE2,
        other => bail!(delf_model::ModelError::Config(format!(
            "unknown backbone {other:?} (available: efficientnet-lite0, efficientnet-lite1, efficientnet-lite2)"
        ))),
    })
}

/// The device from a flag, else the config.
pub fn device(flag: Option<&str>, config: &Config) -> Result<tch::Device> {
    let spec: DeviceSpec = flag.unwrap_or(&config.device).parse()?;
    Ok(spec.resolve()?)
}

/// The configured backbone, cut at its feature layer.
pub fn backbone(config: &Config, device: tch::Device) -> Result<LiteBackbone> {
    let tap = match &config.model.layer {
        Some(layer) => layer.parse::<FeatureTap>().map_err(delf_model::ModelError::Config)?,
        None => LiteBackbone::DEFAULT_TAP,
    };
    Ok(LiteBackbone::load(&config.weights_path(), lite_variant(config)?, tap, device)?)
}

/// The configured extractor; `pca` overrides `model.pca`.
pub fn extractor(
    config: &Config,
    settings: ExtractConfig,
    pca: Option<&Path>,
    device: tch::Device,
) -> Result<Extractor> {
    let backbone = backbone(config, device)?;
    let attention = match &config.model.attention {
        Some(path) => Attention::Head(Box::new(AttentionHead::load(path, backbone.channels(), device)?)),
        None => Attention::FeatureNorm,
    };
    let pca = match pca.or(config.model.pca.as_deref()) {
        Some(path) => Some(Pca::load(path).with_context(|| format!("loading PCA {}", path.display()))?),
        None => None,
    };
    Ok(Extractor::new(Box::new(backbone), attention, pca, settings, device)?)
}
