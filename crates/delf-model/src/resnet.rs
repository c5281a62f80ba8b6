//! ResNet50/101 bottleneck networks in the three shapes their published weights were trained in, under one set of
//! parameter names (torchvision's), so that a torchvision checkpoint, or a DELF/DELG TensorFlow checkpoint
//! converted by `scripts/python/convert_tf_delf.py`, loads unchanged (docs/models.md).
//!
//! Names: `conv1`, `bn1`, then `layer{1..4}.{i}.conv{1,2,3}`, `.bn{1,2,3}`, and for the first unit of each layer
//! `.downsample.0` (1x1 conv) and `.downsample.1` (BatchNorm). Every BatchNorm runs with epsilon 1e-5: the
//! converter folds other epsilons and convolution biases into the running statistics, exactly.
//!
//! The three [`Layout`]s differ only in where a stage's stride sits and how the stem pads:
//! - [`Layout::Torchvision`]: stride on the first unit's 3x3 convolution; local features at conv4, stride 16.
//! - [`Layout::TfSlim`] (`resnet_v1` of TF-slim, the DELF release): stride on the **last** unit's 3x3 convolution,
//!   whose shortcut subsamples; the stem's max pool pads "SAME". conv4 (`block3`) comes out at stride 32.
//! - [`Layout::Keras`] (the DELG training code's `resnet50.py`): stride on the first unit's 1x1 convolution and
//!   its shortcut; the stem convolution pads "SAME", its max pool none; conv4 is subsampled by 2 (DELG's
//!   `block3_strides`), so local features come out at stride 32 too.
//!
//! Optional parts, present when the weights file holds them (a converted DELG checkpoint): `autoencoder.encoder`
//! (1x1 convolution that reduces the conv4 features to DELG's local descriptors) and the global branch
//! (`layer4`, GeM pooling with p = 3, the `whiten` fully connected layer).

use std::path::Path;

use tch::{Device, Kind, Tensor, nn};

use crate::ModelError;
use crate::backbone::{Backbone, file_digest};
use crate::geometry::{LayerGeometry, Padding};
use crate::preprocess::Normalization;
use crate::same_conv::same_padding;
use crate::tensor_file::TensorFile;

const EXPANSION: i64 = 4;
/// Bottleneck widths of layer1..layer4.
const WIDTHS: [i64; 4] = [64, 128, 256, 512];
/// GeM power of the DELG global branch.
const GEM_POWER: f64 = 3.0;
/// GeM's clamp before the power (DELF `pooling.gem`).
const GEM_EPS: f64 = 1e-6;

/// Where a network's stages put their stride, and how its stem pads (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// torchvision ("v1.5").
    Torchvision,
    /// TF-slim `resnet_v1` (DELF).
    TfSlim,
    /// Keras, as in DELG's training code, with `block3_strides`.
    Keras,
}

impl Layout {
    /// The name used in converted files' metadata (`layout`).
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Torchvision => "torchvision",
            Layout::TfSlim => "tf-slim",
            Layout::Keras => "keras",
        }
    }

    /// Parses [`Layout::as_str`].
    pub fn parse(s: &str) -> Result<Self, ModelError> {
        match s {
            "torchvision" => Ok(Layout::Torchvision),
            "tf-slim" => Ok(Layout::TfSlim),
            "keras" => Ok(Layout::Keras),
            other => Err(ModelError::Config(format!("unknown ResNet layout {other:?} (torchvision, tf-slim, keras)"))),
        }
    }
}

/// Depth and layout of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResNetSpec {
    /// 50 or 101.
    pub depth: u32,
    /// Stride placement and stem padding.
    pub layout: Layout,
}

impl ResNetSpec {
    /// Units per layer.
    pub fn units(&self) -> Result<[usize; 4], ModelError> {
        match self.depth {
            50 => Ok([3, 4, 6, 3]),
            101 => Ok([3, 4, 23, 3]),
            d => Err(ModelError::Config(format!("ResNet depth {d} is not supported (50, 101)"))),
        }
    }

    /// Stride of layer `l` (0-based). torchvision and Keras: layers 2 and 3 halve the resolution; TF-slim's
    /// `resnet_v1` as DELF builds it: layers 1, 2 and 3 (conv4 at stride 32). Layer 4 keeps its input's resolution
    /// (DELF's `block4` and DELG with `block3_strides`; torchvision's conv4 features never reach it).
    fn layer_stride(&self, l: usize) -> i64 {
        match (self.layout, l) {
            (_, 1 | 2) | (Layout::TfSlim, 0) => 2,
            _ => 1,
        }
    }

    /// Stride of unit `i` of layer `l` (of `units`): the layer's stride on the unit that carries it, else 1.
    fn unit_stride(&self, l: usize, i: usize, units: usize) -> i64 {
        let s = self.layer_stride(l);
        let carrier = match self.layout {
            Layout::Torchvision | Layout::Keras => 0,
            Layout::TfSlim => units - 1,
        };
        if i == carrier { s } else { 1 }
    }
}

fn conv(vs: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    nn::conv2d(vs, c_in, c_out, k, nn::ConvConfig { stride, padding, bias: false, ..Default::default() })
}

fn bn(vs: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(vs, c, Default::default())
}

#[derive(Debug)]
enum Shortcut {
    Identity,
    /// TF-slim: `x[:, :, ::s, ::s]` (a 1x1 max pool with stride `s`).
    Subsample(i64),
    Projection(Box<(nn::Conv2D, nn::BatchNorm)>),
}

#[derive(Debug)]
struct Bottleneck {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv3: nn::Conv2D,
    bn3: nn::BatchNorm,
    shortcut: Shortcut,
}

impl Bottleneck {
    fn new(vs: nn::Path, c_in: i64, width: i64, stride: i64, layout: Layout) -> Self {
        let c_out = width * EXPANSION;
        let (s1, s2) = if layout == Layout::Keras { (stride, 1) } else { (1, stride) };
        let shortcut = if c_in != c_out || (stride != 1 && layout != Layout::TfSlim) {
            Shortcut::Projection(Box::new((
                conv(&vs / "downsample" / 0, c_in, c_out, 1, stride, 0),
                bn(&vs / "downsample" / 1, c_out),
            )))
        } else if stride != 1 {
            Shortcut::Subsample(stride)
        } else {
            Shortcut::Identity
        };
        Self {
            conv1: conv(&vs / "conv1", c_in, width, 1, s1, 0),
            bn1: bn(&vs / "bn1", width),
            conv2: conv(&vs / "conv2", width, width, 3, s2, 1),
            bn2: bn(&vs / "bn2", width),
            conv3: conv(&vs / "conv3", width, c_out, 1, 1, 0),
            bn3: bn(&vs / "bn3", c_out),
            shortcut,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.apply(&self.conv1).apply_t(&self.bn1, false).relu();
        let y = y.apply(&self.conv2).apply_t(&self.bn2, false).relu();
        let y = y.apply(&self.conv3).apply_t(&self.bn3, false);
        let shortcut = match &self.shortcut {
            Shortcut::Projection(p) => x.apply(&p.0).apply_t(&p.1, false),
            Shortcut::Subsample(s) => subsample(x, *s),
            Shortcut::Identity => x.shallow_clone(),
        };
        (y + shortcut).relu()
    }

    /// Receptive-field layers of this unit (the shortcut never widens them).
    fn layers(stride: i64, layout: Layout) -> [LayerGeometry; 3] {
        let (s1, s2) = if layout == Layout::Keras { (stride, 1) } else { (1, stride) };
        [
            LayerGeometry::new(1, s1, Padding::Symmetric(0)),
            LayerGeometry::new(3, s2, Padding::Symmetric(1)),
            LayerGeometry::POINTWISE,
        ]
    }
}

fn subsample(x: &Tensor, s: i64) -> Tensor {
    x.slice(2, 0, None, s).slice(3, 0, None, s)
}

/// DELG's global branch: conv5, GeM pooling, whitening.
#[derive(Debug)]
struct GlobalBranch {
    units: Vec<Bottleneck>,
    whiten: nn::Linear,
}

/// The layers [`ResNet::build`] declares.
#[derive(Debug)]
struct Layers {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    units: Vec<Bottleneck>,
    encoder: Option<nn::Conv2D>,
    global: Option<GlobalBranch>,
}

/// A ResNet to conv4 (local features), optionally with DELG's autoencoder and global branch.
#[derive(Debug)]
pub struct ResNet {
    vs: nn::VarStore,
    spec: ResNetSpec,
    name: String,
    normalization: Normalization,
    layers: Layers,
    digest: Vec<u8>,
}

/// Which optional parts to declare.
#[derive(Debug, Clone, Copy, Default)]
struct Parts {
    encoder: Option<(i64, i64)>,
    global: Option<i64>,
}

impl ResNet {
    /// conv4 channels.
    pub const CONV4_CHANNELS: i64 = 1024;
    /// `model.backbone` names of the networks converted from the published DELF/DELG releases.
    pub const CONVERTED: [&'static str; 3] = ["resnet50-delf", "resnet50-delg", "resnet101-delg"];

    fn build(vs: &nn::Path, spec: ResNetSpec, parts: Parts) -> Result<Layers, ModelError> {
        let units = spec.units()?;
        let stem_pad = if spec.layout == Layout::Keras { 0 } else { 3 };
        let conv1 = conv(vs / "conv1", 3, 64, 7, 2, stem_pad);
        let mut c_in = 64;
        let layer = |l: usize, c_in: &mut i64| -> Vec<Bottleneck> {
            (0..units[l])
                .map(|i| {
                    let stride = spec.unit_stride(l, i, units[l]);
                    let unit =
                        Bottleneck::new(vs / format!("layer{}", l + 1) / i, *c_in, WIDTHS[l], stride, spec.layout);
                    *c_in = WIDTHS[l] * EXPANSION;
                    unit
                })
                .collect()
        };
        let conv4: Vec<Bottleneck> = (0..3).flat_map(|l| layer(l, &mut c_in)).collect();
        let encoder = parts.encoder.map(|(c_in, c_out)| {
            nn::conv2d(
                vs / "autoencoder" / "encoder",
                c_in,
                c_out,
                1,
                nn::ConvConfig { bias: true, ..Default::default() },
            )
        });
        let global = parts.global.map(|dim| {
            let units = layer(3, &mut c_in);
            let whiten = nn::linear(vs / "whiten", WIDTHS[3] * EXPANSION, dim, Default::default());
            GlobalBranch { units, whiten }
        });
        Ok(Layers { conv1, bn1: bn(vs / "bn1", 64), units: conv4, encoder, global })
    }

    fn assemble(
        vs: nn::VarStore,
        spec: ResNetSpec,
        name: String,
        norm: Normalization,
        parts: Parts,
    ) -> Result<Self, ModelError> {
        let layers = Self::build(&vs.root(), spec, parts)?;
        Ok(Self { vs, spec, name, normalization: norm, layers, digest: b"untrained".to_vec() })
    }

    /// An untrained torchvision ResNet50 to conv4 (for tests, and to write a template file with every name).
    pub fn untrained(device: Device) -> Self {
        #[allow(clippy::expect_used)]
        Self::torchvision(device).expect("depth 50 is supported")
    }

    /// ResNet50 to conv4 in torchvision's layout and normalisation, its variables declared, untrained.
    fn torchvision(device: Device) -> Result<Self, ModelError> {
        let spec = ResNetSpec { depth: 50, layout: Layout::Torchvision };
        let vs = nn::VarStore::new(device);
        Self::assemble(vs, spec, "resnet50:conv4".into(), Normalization::TORCHVISION_IMAGENET, Parts::default())
    }

    /// The variables, under their torchvision names.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Depth and layout.
    pub fn spec(&self) -> ResNetSpec {
        self.spec
    }

    /// Loads torchvision-named ResNet50 weights (conv4 features, torchvision normalisation) from safetensors;
    /// tensors beyond conv4 (`layer4`, `fc`) are ignored.
    pub fn load_torchvision(path: &Path, device: Device) -> Result<Self, ModelError> {
        let mut net = Self::torchvision(device)?;
        net.vs.load(path).map_err(|source| ModelError::Weights { path: path.to_path_buf(), source })?;
        net.vs.freeze();
        net.digest = file_digest(path)?;
        Ok(net)
    }

    /// Loads a network converted from a DELF or DELG TensorFlow release (`convert_tf_delf.py`): `architecture`
    /// (`resnet50-delf`, `resnet50-delg`, `resnet101-delg`) must match the file's metadata, whose `layout` and
    /// tensors say the rest. Pixels are normalised as the releases do, `(x - 128) / 128`.
    pub fn load_converted(path: &Path, architecture: &str, device: Device) -> Result<Self, ModelError> {
        let file = TensorFile::load(path)?;
        let what = path.display().to_string();
        let meta = |k: &str| file.meta.get(k).map(String::as_str);
        if meta("architecture") != Some(architecture) {
            return Err(ModelError::Config(format!(
                "{what} holds {:?}, not {architecture:?} (convert it with scripts/python/convert_tf_delf.py, or set \
                 model.backbone to what it holds)",
                meta("architecture").unwrap_or("no architecture metadata")
            )));
        }
        let depth = match architecture {
            "resnet50-delf" | "resnet50-delg" => 50,
            "resnet101-delg" => 101,
            other => return Err(ModelError::Config(format!("unknown converted architecture {other:?}"))),
        };
        let layout = Layout::parse(meta("layout").unwrap_or(""))?;
        let dims = |name: &str| file.get(name).map(Tensor::size);
        let parts = Parts {
            encoder: dims("autoencoder.encoder.weight").map(|s| (s[1], s[0])),
            global: dims("whiten.weight").map(|s| s[0]),
        };
        let spec = ResNetSpec { depth, layout };
        let name = format!("{architecture}:{}", if parts.encoder.is_some() { "conv4.autoencoder" } else { "conv4" });
        let mut net = Self::assemble(nn::VarStore::new(device), spec, name, Normalization::DELF_RELEASE, parts)?;
        file.copy_into(&net.vs, "", &what)?;
        net.vs.freeze();
        net.digest = file_digest(path)?;
        Ok(net)
    }

    /// conv4 features (before DELG's autoencoder), at this layout's stride.
    pub fn conv4(&self, x: &Tensor) -> Tensor {
        let mut x = match self.spec.layout {
            Layout::Keras => {
                let (t, b) = same_padding(x.size()[2], 7, 2);
                let (l, r) = same_padding(x.size()[3], 7, 2);
                x.constant_pad_nd([l, r, t, b])
            }
            _ => x.shallow_clone(),
        }
        .apply(&self.layers.conv1)
        .apply_t(&self.layers.bn1, false)
        .relu();
        x = match self.spec.layout {
            Layout::Torchvision => x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false),
            // After the ReLU every value is >= 0, so zero padding is "SAME"'s -inf padding.
            Layout::TfSlim => {
                let (t, b) = same_padding(x.size()[2], 3, 2);
                let (l, r) = same_padding(x.size()[3], 3, 2);
                x.constant_pad_nd([l, r, t, b]).max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)
            }
            Layout::Keras => x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false),
        };
        for unit in &self.layers.units {
            x = unit.forward(&x);
        }
        if self.spec.layout == Layout::Keras { subsample(&x, 2) } else { x }
    }
}

impl Backbone for ResNet {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn channels(&self) -> i64 {
        self.layers.encoder.as_ref().map_or(Self::CONV4_CHANNELS, |e| e.ws.size()[0])
    }

    fn normalization(&self) -> Normalization {
        self.normalization
    }

    fn layers(&self) -> Vec<LayerGeometry> {
        let layout = self.spec.layout;
        let mut layers = match layout {
            Layout::Torchvision => {
                vec![LayerGeometry::new(7, 2, Padding::Symmetric(3)), LayerGeometry::new(3, 2, Padding::Symmetric(1))]
            }
            Layout::TfSlim => {
                vec![LayerGeometry::new(7, 2, Padding::Symmetric(3)), LayerGeometry::new(3, 2, Padding::TfSame)]
            }
            Layout::Keras => {
                vec![LayerGeometry::new(7, 2, Padding::TfSame), LayerGeometry::new(3, 2, Padding::Symmetric(0))]
            }
        };
        #[allow(clippy::expect_used)]
        let units = self.spec.units().expect("checked when built");
        for (l, &n) in units.iter().enumerate().take(3) {
            for i in 0..n {
                layers.extend(Bottleneck::layers(self.spec.unit_stride(l, i, n), layout));
            }
        }
        if layout == Layout::Keras {
            layers.push(LayerGeometry::new(1, 2, Padding::Symmetric(0)));
        }
        layers
    }

    fn features(&self, x: &Tensor) -> Tensor {
        let f = self.conv4(x);
        match &self.layers.encoder {
            Some(e) => f.apply(e),
            None => f,
        }
    }

    fn weights_digest(&self) -> &[u8] {
        &self.digest
    }

    fn set_kind(&mut self, kind: tch::Kind) {
        self.vs.set_kind(kind);
    }

    fn has_global_descriptor(&self) -> bool {
        self.layers.global.is_some()
    }

    /// DELG's global branch: conv5, GeM, whitening, L2-normalised (`[N, D]`); `None` without one.
    fn global_descriptor(&self, x: &Tensor) -> Option<Tensor> {
        let global = self.layers.global.as_ref()?;
        let mut f = self.conv4(x);
        for unit in &global.units {
            f = unit.forward(&f);
        }
        let pooled =
            f.clamp_min(GEM_EPS).pow_tensor_scalar(GEM_POWER).mean_dim([2i64, 3].as_slice(), false, Kind::Float);
        let gem = pooled.pow_tensor_scalar(1.0 / GEM_POWER);
        Some(crate::extractor::l2_normalize(&gem.apply(&global.whiten)))
    }
}
