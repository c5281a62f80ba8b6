//! ImageNet-1k class names and top-k predictions.

use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::ModelError;

/// The 1000 ImageNet (ILSVRC2012) class names, in class-index order.
#[derive(Debug, Clone)]
pub struct ImagenetClasses {
    names: Vec<String>,
}

/// One prediction: class index, name and softmax probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// ImageNet class index (0..1000).
    pub class: usize,
    /// Human-readable class name.
    pub name: String,
    /// Softmax probability.
    pub probability: f32,
}

impl ImagenetClasses {
    /// Reads one class name per line (e.g. opencv-doc's `classification_classes_ILSVRC2012.txt`).
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let err = |reason: String| ModelError::Labels { path: PathBuf::from(path), reason };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        if names.len() != 1000 {
            return Err(err(format!("expected 1000 class names, found {}", names.len())));
        }
        Ok(Self { names })
    }

    /// The name of class `index`.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.names.get(index).map(String::as_str)
    }

    /// The `k` most probable classes of one row of logits.
    pub fn top_k(&self, logits: &Tensor, k: usize) -> Result<Vec<Prediction>, ModelError> {
        let probs = logits.f_softmax(-1, tch::Kind::Float)?.f_flatten(0, -1)?;
        let (values, indices) = probs.f_topk(k as i64, -1, true, true)?;
        let values: Vec<f32> = values.try_into()?;
        let indices: Vec<i64> = indices.try_into()?;
        Ok(values
            .into_iter()
            .zip(indices)
            .map(|(p, i)| Prediction {
                class: i as usize,
                name: self.name(i as usize).unwrap_or("?").to_string(),
                probability: p,
            })
            .collect())
    }
}
