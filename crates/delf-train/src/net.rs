//! The networks being trained: the backbone with a classifier on its pooled features (stage 1), or the frozen
//! backbone with the attention head and a classifier on the attention-pooled features (stage 2).

use std::path::Path;

use delf_model::tensor_file::named_variables as named;
use delf_model::{AttentionHead, EfficientNetLite, FeatureTap, LiteVariant, TensorFile};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use crate::TrainError;

/// Which of the paper's two stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Stage 1: fine-tune the backbone with a softmax classifier.
    Descriptor,
    /// Stage 2: train the attention head on the frozen backbone.
    Attention,
}

impl Stage {
    /// `descriptor` or `attention`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Descriptor => "descriptor",
            Stage::Attention => "attention",
        }
    }
}

/// Backbone + (attention) + classifier, with the variables of each part in their own store.
pub struct TrainNet {
    stage: Stage,
    backbone_vs: nn::VarStore,
    net: EfficientNetLite,
    tap: FeatureTap,
    head_vs: nn::VarStore,
    attention: Option<AttentionHead>,
    classifier: nn::Linear,
    backbone_name: String,
    backbone_digest: String,
}

impl std::fmt::Debug for TrainNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainNet").field("stage", &self.stage).field("backbone", &self.backbone_name).finish()
    }
}

/// Scale of the stage-1 cosine logits.
pub const COSINE_SCALE: f64 = 16.0;

/// Prefix of backbone variables in checkpoints.
pub const BACKBONE_PREFIX: &str = "backbone.";
/// Prefix of head and classifier variables in checkpoints.
pub const HEAD_PREFIX: &str = "head.";

impl TrainNet {
    /// Loads the backbone weights and declares the trained parts for `classes` classes (seeded by `tch`'s RNG).
    pub fn new(
        stage: Stage,
        weights: &Path,
        variant: LiteVariant,
        tap: FeatureTap,
        classes: usize,
        device: Device,
    ) -> Result<Self, TrainError> {
        let (mut backbone_vs, net) = EfficientNetLite::load(weights, variant, device)?;
        if stage == Stage::Descriptor {
            backbone_vs.unfreeze();
        }
        let channels = net.channels(tap);
        if channels == 0 {
            return Err(TrainError::Config(format!("{} has no feature layer {tap}", variant.name)));
        }
        let head_vs = nn::VarStore::new(device);
        let root = head_vs.root();
        let attention = (stage == Stage::Attention).then(|| AttentionHead::new(&root, channels));
        let classifier = nn::linear(&root / "classifier", channels, classes as i64, Default::default());
        let backbone_digest = String::from_utf8_lossy(&delf_model::backbone::file_digest(weights)?).into_owned();
        Ok(Self {
            stage,
            backbone_vs,
            net,
            tap,
            head_vs,
            attention,
            classifier,
            backbone_name: format!("{}:{tap}", variant.name),
            backbone_digest,
        })
    }

    /// Class logits `[N, classes]` for a normalised batch; BatchNorm of the trained parts in training mode when
    /// `train` (the backbone's BatchNorm always uses its ImageNet statistics: batches here are too small to
    /// re-estimate them).
    pub fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        match &self.attention {
            None => {
                // Cosine softmax (as DELG trains its descriptor): the plain classifier on raw pooled block10
                // features takes steps so large that one SGD step at lr 1e-3 already raises the loss.
                let pooled = self.net.features(x, self.tap, false).mean_dim([2i64, 3].as_slice(), false, Kind::Float);
                let unit = |t: &Tensor| t / (t.norm_scalaropt_dim(2, [1i64].as_slice(), true) + 1e-6);
                unit(&pooled).matmul(&unit(&self.classifier.ws).tr()) * COSINE_SCALE
            }
            Some(head) => {
                let f = tch::no_grad(|| self.net.features(x, self.tap, false));
                let alpha = head.forward_t(&f, train);
                // The reference's attention pooling: mean over cells of alpha * L2-normalised feature.
                let unit = &f / (f.norm_scalaropt_dim(2, [1i64].as_slice(), true) + 1e-6);
                (unit * alpha.unsqueeze(1)).mean_dim([2i64, 3].as_slice(), false, Kind::Float).apply(&self.classifier)
            }
        }
    }

    /// Attention scores `[N, h, w]` in inference mode (stage 2 only).
    pub fn attention_scores(&self, x: &Tensor) -> Option<Tensor> {
        let head = self.attention.as_ref()?;
        Some(tch::no_grad(|| head.forward(&self.net.features(x, self.tap, false))))
    }

    /// The parameters the optimiser updates, with their checkpoint names.
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        if self.stage == Stage::Descriptor {
            out.extend(named(&self.backbone_vs, BACKBONE_PREFIX).into_iter().filter(|(_, t)| t.requires_grad()));
        }
        out.extend(named(&self.head_vs, HEAD_PREFIX).into_iter().filter(|(_, t)| t.requires_grad()));
        out
    }

    /// Everything a checkpoint must hold to continue: trained variables and BatchNorm statistics.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = named(&self.head_vs, HEAD_PREFIX);
        if self.stage == Stage::Descriptor {
            out.extend(named(&self.backbone_vs, BACKBONE_PREFIX));
        }
        out
    }

    /// Restores [`TrainNet::state`] from a checkpoint.
    pub fn restore(&self, file: &TensorFile, what: &str) -> Result<(), TrainError> {
        file.copy_into(&self.head_vs, HEAD_PREFIX, what)?;
        if self.stage == Stage::Descriptor {
            file.copy_into(&self.backbone_vs, BACKBONE_PREFIX, what)?;
        }
        Ok(())
    }

    /// `efficientnet-lite0:block10`.
    pub fn backbone_name(&self) -> &str {
        &self.backbone_name
    }

    /// Digest of the backbone weights file the run started from.
    pub fn backbone_digest(&self) -> &str {
        &self.backbone_digest
    }

    /// Writes what the stage produces for extraction: the attention head (stage 2, names `attention.*`, loadable
    /// as `model.attention`) or the fine-tuned backbone (stage 1, the original file's names, loadable as
    /// `model.weights`). `meta` describes the run.
    pub fn export(&self, path: &Path, mut meta: std::collections::HashMap<String, String>) -> Result<(), TrainError> {
        meta.insert("backbone".into(), self.backbone_name.clone());
        let tensors = match self.stage {
            Stage::Attention => {
                meta.insert("backbone_weights".into(), self.backbone_digest.clone());
                named(&self.head_vs, "").into_iter().filter(|(n, _)| n.starts_with("attention.")).collect()
            }
            Stage::Descriptor => {
                meta.insert("fine_tuned_from".into(), self.backbone_digest.clone());
                named(&self.backbone_vs, "")
            }
        };
        Ok(TensorFile::save(path, &tensors, meta)?)
    }
}
