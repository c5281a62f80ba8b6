//! The interface every DELF backbone implements, and the EfficientNet-Lite implementation of it.

use std::path::Path;

use tch::{Device, Kind, Tensor, nn};

use crate::ModelError;
use crate::efficientnet_lite::{EfficientNetLite, FeatureTap, LiteVariant};
use crate::geometry::LayerGeometry;
use crate::preprocess::Normalization;

/// A fully convolutional network that turns a normalised image into a dense feature map.
pub trait Backbone: Send {
    /// Name and feature layer, e.g. `efficientnet-lite0:block11.expand`; part of the feature fingerprint.
    fn name(&self) -> String;
    /// Channels of the feature map.
    fn channels(&self) -> i64;
    /// The pixel normalisation the weights were trained with.
    fn normalization(&self) -> Normalization;
    /// Layers from the input to the feature map, for receptive-field geometry.
    fn layers(&self) -> Vec<LayerGeometry>;
    /// Inference: `[N, 3, H, W]` normalised images to `[N, C, h, w]` features.
    fn features(&self, x: &Tensor) -> Tensor;
    /// Bytes that identify the weights (for fingerprints).
    fn weights_digest(&self) -> &[u8];
    /// Converts the weights (and BatchNorm statistics) to `kind`; inputs must then be of that kind.
    fn set_kind(&mut self, kind: Kind);
    /// Whether [`Backbone::global_descriptor`] gives one (so that callers skip the work otherwise).
    fn has_global_descriptor(&self) -> bool {
        false
    }
    /// A global (whole-image) descriptor `[N, D]`, L2-normalised, for networks trained with one (DELG); `None`
    /// for the others.
    fn global_descriptor(&self, _x: &Tensor) -> Option<Tensor> {
        None
    }
}

/// EfficientNet-Lite cut at a [`FeatureTap`].
#[derive(Debug)]
pub struct LiteBackbone {
    vs: nn::VarStore,
    net: EfficientNetLite,
    tap: FeatureTap,
    digest: Vec<u8>,
}

impl LiteBackbone {
    /// The embedded default's feature layer: the output of block 10, the last block of the 112-channel
    /// stride-16 stage (the analogue of ResNet's conv4). Chosen by measured matching quality on real photos
    /// against the neighbouring layers (docs/extraction.md): with a 40-d PCA it separates true from unrelated
    /// pairs best of the stride-16 candidates, and it is the cheapest of them.
    pub const DEFAULT_TAP: FeatureTap = FeatureTap::BlockOutput(10);

    /// Loads the weights of `variant` from a safetensors file and cuts the network at `tap`.
    pub fn load(path: &Path, variant: LiteVariant, tap: FeatureTap, device: Device) -> Result<Self, ModelError> {
        let (vs, net) = EfficientNetLite::load(path, variant, device)?;
        if net.channels(tap) == 0 {
            return Err(ModelError::Config(format!("{} has no feature layer {tap}", variant.name)));
        }
        let digest = file_digest(path)?;
        Ok(Self { vs, net, tap, digest })
    }

    /// The underlying network (for the ImageNet head and tests).
    pub fn network(&self) -> &EfficientNetLite {
        &self.net
    }
}

impl Backbone for LiteBackbone {
    fn name(&self) -> String {
        format!("{}:{}", self.net.variant().name, self.tap)
    }

    fn channels(&self) -> i64 {
        self.net.channels(self.tap)
    }

    fn normalization(&self) -> Normalization {
        Normalization::EFFICIENTNET_LITE
    }

    fn layers(&self) -> Vec<LayerGeometry> {
        self.net.layers(self.tap)
    }

    fn features(&self, x: &Tensor) -> Tensor {
        self.net.features(x, self.tap, false)
    }

    fn weights_digest(&self) -> &[u8] {
        &self.digest
    }

    fn set_kind(&mut self, kind: Kind) {
        self.vs.set_kind(kind);
    }
}

/// A 64-bit FNV-1a digest of a file's bytes.
pub fn file_digest(path: &Path) -> Result<Vec<u8>, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::Config(format!("cannot read {}: {e}", path.display())))?;
    let fp = delf_core::Fingerprint::of("file", &[&bytes]);
    Ok(fp.0.into_bytes())
}
