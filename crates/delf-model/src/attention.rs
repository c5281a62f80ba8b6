//! Attention scores: which feature-map cells are worth keeping as keypoints.

use std::path::Path;

use tch::{Device, Tensor, nn};

use crate::ModelError;

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

    /// Part of the feature fingerprint.
    pub fn describe(&self) -> String {
        match self {
            Attention::Head(h) => format!("head:{}", String::from_utf8_lossy(&h.digest)),
            Attention::FeatureNorm => "feature-norm".into(),
        }
    }
}

/// The trained attention head; variables `attention.conv1`, `attention.bn`, `attention.conv2`.
#[derive(Debug)]
pub struct AttentionHead {
    _vs: Option<nn::VarStore>,
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
        let vs = vs / "attention";
        Self {
            _vs: None,
            conv1: nn::conv2d(&vs / "conv1", channels, Self::HIDDEN, 1, Default::default()),
            bn: nn::batch_norm2d(&vs / "bn", Self::HIDDEN, Default::default()),
            conv2: nn::conv2d(&vs / "conv2", Self::HIDDEN, 1, 1, Default::default()),
            digest: b"untrained".to_vec(),
        }
    }

    /// Loads a trained head for `channels`-dimensional features from safetensors.
    pub fn load(path: &Path, channels: i64, device: Device) -> Result<Self, ModelError> {
        let mut vs = nn::VarStore::new(device);
        let mut head = Self::new(&vs.root(), channels);
        vs.load(path).map_err(|source| ModelError::Weights { path: path.to_path_buf(), source })?;
        vs.freeze();
        head.digest = crate::backbone::file_digest(path)?;
        head._vs = Some(vs);
        Ok(head)
    }

    /// Scores `[N, h, w]` (softplus, so never negative), in inference mode.
    pub fn forward(&self, features: &Tensor) -> Tensor {
        self.forward_t(features, false)
    }

    /// Scores `[N, h, w]`, with BatchNorm in training mode when `train`.
    pub fn forward_t(&self, features: &Tensor, train: bool) -> Tensor {
        features.apply(&self.conv1).apply_t(&self.bn, train).relu().apply(&self.conv2).softplus().squeeze_dim(1)
    }
}
