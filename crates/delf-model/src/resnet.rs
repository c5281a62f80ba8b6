//! ResNet50 up to conv4_x (the paper's `block3`, 1024 channels, stride 16), with torchvision parameter names so
//! that a torchvision checkpoint, or a DELF checkpoint converted to those names, loads unchanged
//! (docs/models.md: name mapping and conversion).
//!
//! Names: `conv1`, `bn1`, then `layer{1,2,3}.{i}.conv{1,2,3}`, `.bn{1,2,3}`, and for the first block of each
//! layer `.downsample.0` (1x1 conv) and `.downsample.1` (BatchNorm). Stride on the 3x3 convolution (torchvision
//! "v1.5"). Only these tensors are read; `layer4` and `fc` in a full checkpoint are ignored.

use std::path::Path;

use tch::{Device, Tensor, nn};

use crate::ModelError;
use crate::backbone::{Backbone, file_digest};
use crate::geometry::{LayerGeometry, Padding};
use crate::preprocess::Normalization;

/// (blocks, bottleneck width, stride of the first block) of layer1..layer3.
const LAYERS: [(usize, i64, i64); 3] = [(3, 64, 1), (4, 128, 2), (6, 256, 2)];
const EXPANSION: i64 = 4;

fn conv(vs: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    nn::conv2d(vs, c_in, c_out, k, nn::ConvConfig { stride, padding, bias: false, ..Default::default() })
}

fn bn(vs: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(vs, c, Default::default())
}

#[derive(Debug)]
struct Bottleneck {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv3: nn::Conv2D,
    bn3: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Bottleneck {
    fn new(vs: nn::Path, c_in: i64, width: i64, stride: i64) -> Self {
        let c_out = width * EXPANSION;
        let downsample = (stride != 1 || c_in != c_out)
            .then(|| (conv(&vs / "downsample" / 0, c_in, c_out, 1, stride, 0), bn(&vs / "downsample" / 1, c_out)));
        Self {
            conv1: conv(&vs / "conv1", c_in, width, 1, 1, 0),
            bn1: bn(&vs / "bn1", width),
            conv2: conv(&vs / "conv2", width, width, 3, stride, 1),
            bn2: bn(&vs / "bn2", width),
            conv3: conv(&vs / "conv3", width, c_out, 1, 1, 0),
            bn3: bn(&vs / "bn3", c_out),
            downsample,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.apply(&self.conv1).apply_t(&self.bn1, false).relu();
        let y = y.apply(&self.conv2).apply_t(&self.bn2, false).relu();
        let y = y.apply(&self.conv3).apply_t(&self.bn3, false);
        let shortcut = match &self.downsample {
            Some((c, b)) => x.apply(c).apply_t(b, false),
            None => x.shallow_clone(),
        };
        (y + shortcut).relu()
    }
}

/// ResNet50 to conv4_x.
#[derive(Debug)]
pub struct ResNet50Conv4 {
    vs: nn::VarStore,
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    blocks: Vec<Bottleneck>,
    digest: Vec<u8>,
}

impl ResNet50Conv4 {
    /// Feature channels (conv4_x output).
    pub const CHANNELS: i64 = 1024;

    fn build(vs: &nn::Path) -> (nn::Conv2D, nn::BatchNorm, Vec<Bottleneck>) {
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (l, &(n, width, stride)) in LAYERS.iter().enumerate() {
            for i in 0..n {
                let path = vs / format!("layer{}", l + 1) / i;
                blocks.push(Bottleneck::new(path, c_in, width, if i == 0 { stride } else { 1 }));
                c_in = width * EXPANSION;
            }
        }
        (conv(vs / "conv1", 3, 64, 7, 2, 3), bn(vs / "bn1", 64), blocks)
    }

    /// An untrained network (for tests, and to write a template file with every expected name).
    pub fn untrained(device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let (conv1, bn1, blocks) = Self::build(&vs.root());
        Self { vs, conv1, bn1, blocks, digest: b"untrained".to_vec() }
    }

    /// The variables, under their torchvision names.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Loads weights with torchvision names from a safetensors file.
    pub fn load(path: &Path, device: Device) -> Result<Self, ModelError> {
        let mut vs = nn::VarStore::new(device);
        let (conv1, bn1, blocks) = Self::build(&vs.root());
        vs.load(path).map_err(|source| ModelError::Weights { path: path.to_path_buf(), source })?;
        vs.freeze();
        Ok(Self { vs, conv1, bn1, blocks, digest: file_digest(path)? })
    }
}

impl Backbone for ResNet50Conv4 {
    fn name(&self) -> String {
        "resnet50:conv4".into()
    }

    fn channels(&self) -> i64 {
        Self::CHANNELS
    }

    fn normalization(&self) -> Normalization {
        Normalization::TORCHVISION_IMAGENET
    }

    fn layers(&self) -> Vec<LayerGeometry> {
        let mut layers =
            vec![LayerGeometry::new(7, 2, Padding::Symmetric(3)), LayerGeometry::new(3, 2, Padding::Symmetric(1))];
        for &(n, _, stride) in &LAYERS {
            for i in 0..n {
                layers.push(LayerGeometry::POINTWISE);
                layers.push(LayerGeometry::new(3, if i == 0 { stride } else { 1 }, Padding::Symmetric(1)));
                layers.push(LayerGeometry::POINTWISE);
            }
        }
        layers
    }

    fn features(&self, x: &Tensor) -> Tensor {
        let x = x.apply(&self.conv1).apply_t(&self.bn1, false).relu();
        let mut x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for b in &self.blocks {
            x = b.forward(&x);
        }
        x
    }

    fn weights_digest(&self) -> &[u8] {
        &self.digest
    }

    fn set_kind(&mut self, kind: tch::Kind) {
        self.vs.set_kind(kind);
    }
}
