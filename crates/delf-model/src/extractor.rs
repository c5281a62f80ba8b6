//! DELF extraction (paper sections 4.1-4.3): an image pyramid through the backbone, attention scores per cell,
//! keypoints at receptive-field centres, global top-N by score, then L2 -> PCA -> L2.

use delf_core::{FeatureSet, Fingerprint, Keypoint};
use delf_image::Projective;
use delf_image::RgbImage;
use tch::{Device, Kind, Tensor};

use crate::ModelError;
use crate::attention::Attention;
use crate::backbone::Backbone;
use crate::cache::FeatureCache;
use crate::cells::{Candidate, CoreStats};
use crate::geometry::AxisGeometry;
use crate::pca::Pca;
use crate::preprocess::to_tensor;

/// Extraction settings; defaults are the reference's (`../shared/reference/DELF.md` section 1).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractConfig {
    /// Pyramid scales, applied after the `max_side` downscale.
    pub scales: Vec<f64>,
    /// Longest image side before the pyramid (larger images are downscaled first); `None` = no limit.
    pub max_side: Option<u32>,
    /// Scaled images smaller than this on either side give no features at that scale.
    pub min_side: u32,
    /// Features kept over all scales (highest scores).
    pub max_features: usize,
    /// Cells scoring below this are dropped at every scale; `None` keeps all (the right choice for
    /// [`Attention::FeatureNorm`], whose scale is not the trained head's).
    pub score_threshold: Option<f32>,
    /// Arithmetic of the network (backbone and attention head); descriptors are normalised, selected and reduced
    /// in fp32 either way.
    pub precision: Precision,
    /// Cells that see no scene of their own give no keypoint: a cell is kept only when its core (a square two
    /// strides wide around its centre, in input pixels) lies at least 90 % inside the image and inside what the
    /// caller marks as covered (the filled corners of a rotated view), and the grey levels there vary with a
    /// standard deviation of at least this value (0-255 units). Drops the outer ring of cells, whose features come
    /// from the network's zero padding, and flat areas (fill, blank backgrounds), whose keypoints match any other
    /// flat area at the same place. `None` keeps every cell.
    pub min_texture: Option<f32>,
}

/// What a rotated pass of [`Extractor::extract_rotations`] may cost: the image is first brought to at most
/// `max_side` pixels on its longest side, and pyramid levels above `max_scale` are skipped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotatedPass {
    /// Longest side of the image before it is turned.
    pub max_side: u32,
    /// Largest pyramid scale used.
    pub max_scale: f64,
}

impl RotatedPass {
    /// Every level at full size: a rotated pass costs as much as the upright extraction (about twice where the
    /// canvas of a diagonal turn is larger).
    pub const FULL: Self = Self { max_side: u32::MAX, max_scale: f64::INFINITY };
}

/// Share of a cell's core that must be inside the image and covered (see [`ExtractConfig::min_texture`]).
const MIN_CORE_COVERAGE: f64 = 0.9;

/// The arithmetic the network runs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Single precision everywhere.
    #[default]
    Fp32,
    /// CUDA autocast: fp16 convolutions with fp32 accumulation and outputs. CUDA only.
    Fp16,
    /// Weights and activations in bfloat16 (fp32's range, 8 bits of mantissa); outputs back in fp32. Any device;
    /// on a CPU with native bf16 instructions it measured 1.7-1.9x faster than fp32 (docs/benchmarks.md).
    Bf16,
}

impl Precision {
    /// `fp32`, `fp16` or `bf16`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Fp16 => "fp16",
            Self::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "fp32" => Ok(Self::Fp32),
            "fp16" => Ok(Self::Fp16),
            "bf16" => Ok(Self::Bf16),
            other => Err(ModelError::Config(format!("unknown precision {other:?} (fp32, fp16 or bf16)"))),
        }
    }
}

impl ExtractConfig {
    /// Default [`ExtractConfig::min_texture`]. 12 rather than 4: on the full robustness benchmark (seed 1,
    /// docs/benchmarks.md) it answered 1 of 55 distractors instead of 3 (best distractor 22 inliers instead of
    /// 24) at the same R@1 (0.979), with blur 0.90 instead of 0.85: the keypoint budget moves from flat areas
    /// (sky, plain backgrounds), whose descriptors match other flat areas at the same place, to textured ones.
    pub const DEFAULT_MIN_TEXTURE: f32 = 12.0;
}

impl Default for ExtractConfig {
    // The reference configuration's literal scales (sqrt(2) apart, written to 4 decimals), kept as published.
    #[allow(clippy::approx_constant)]
    fn default() -> Self {
        Self {
            scales: vec![0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0],
            max_side: Some(1024),
            min_side: 10,
            max_features: 1000,
            score_threshold: None,
            precision: Precision::Fp32,
            min_texture: Some(ExtractConfig::DEFAULT_MIN_TEXTURE),
        }
    }
}

/// Backbone + attention + optional PCA on one device.
pub struct Extractor {
    backbone: Box<dyn Backbone>,
    attention: Attention,
    pca: Option<Pca>,
    config: ExtractConfig,
    device: Device,
    fingerprint: Fingerprint,
    raw_fingerprint: Fingerprint,
    cache: Option<FeatureCache>,
}

impl std::fmt::Debug for Extractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extractor")
            .field("backbone", &self.backbone.name())
            .field("attention", &self.attention.describe())
            .field("pca", &self.pca.as_ref().map(Pca::dim_out))
            .field("config", &self.config)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl Extractor {
    /// Assembles an extractor. A PCA must have been fitted on this backbone's descriptors.
    pub fn new(
        mut backbone: Box<dyn Backbone>,
        mut attention: Attention,
        pca: Option<Pca>,
        config: ExtractConfig,
        device: Device,
    ) -> Result<Self, ModelError> {
        if let Some(p) = pca
            .as_ref()
            .filter(|p| p.dim_in() != backbone.channels() || (!p.source().is_empty() && p.source() != backbone.name()))
        {
            return Err(ModelError::Config(format!(
                "PCA fitted on {} ({}-d) cannot reduce {} ({}-d) descriptors",
                p.source(),
                p.dim_in(),
                backbone.name(),
                backbone.channels()
            )));
        }
        match config.precision {
            Precision::Fp16 if !device.is_cuda() => {
                return Err(ModelError::Config("fp16 (autocast) needs a CUDA device; bf16 runs anywhere".into()));
            }
            Precision::Bf16 => {
                backbone.set_kind(Kind::BFloat16);
                attention.set_kind(Kind::BFloat16);
            }
            Precision::Fp32 | Precision::Fp16 => {}
        }
        if config.scales.is_empty() || config.scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(ModelError::Config(format!("invalid pyramid scales {:?}", config.scales)));
        }
        let mut scales = format!("{:?}/{:?}/{}", config.scales, config.max_side, config.min_side);
        // Absent before cells were filtered, so that indexes built then keep their fingerprint.
        if let Some(t) = config.min_texture {
            scales.push_str(&format!("/texture{t}"));
        }
        let identity = |pca_digest: &[u8]| {
            Fingerprint::of(
                "delf",
                &[
                    backbone.name().as_bytes(),
                    backbone.weights_digest(),
                    attention.describe().as_bytes(),
                    pca_digest,
                    scales.as_bytes(),
                ],
            )
        };
        let fingerprint = identity(&pca.as_ref().map(Pca::digest).unwrap_or_default());
        let raw_fingerprint = identity(&[]);
        Ok(Self { backbone, attention, pca, config, device, fingerprint, raw_fingerprint, cache: None })
    }

    /// This extractor reading and writing `cache`: an image whose pixels, settings and model were extracted before
    /// (by any process of this build) gives the stored candidates instead of a forward pass. The features are the
    /// same bit for bit.
    pub fn with_cache(mut self, cache: FeatureCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The feature cache, if any.
    pub fn cache(&self) -> Option<&FeatureCache> {
        self.cache.as_ref()
    }

    /// The fingerprint every feature set from this extractor carries.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Descriptor dimension of the output.
    pub fn dim(&self) -> usize {
        self.pca.as_ref().map_or(self.backbone.channels(), Pca::dim_out) as usize
    }

    /// The backbone.
    pub fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    /// The device the network runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The settings.
    pub fn config(&self) -> &ExtractConfig {
        &self.config
    }

    /// Extracts the features of one image.
    pub fn extract(&self, rgb: &RgbImage) -> Result<FeatureSet, ModelError> {
        self.reduce(self.extract_raw(rgb)?)
    }

    /// Features before the PCA: the selected keypoints with their L2-normalised backbone descriptors, carrying
    /// [`Extractor::raw_fingerprint`]. [`Extractor::reduce`] finishes them; `extract` = `reduce(extract_raw)`, so
    /// an index build can extract once, fit the PCA on a sample, then reduce everything without a second pass.
    pub fn extract_raw(&self, rgb: &RgbImage) -> Result<FeatureSet, ModelError> {
        let raw = self.raw_features(rgb)?;
        Ok(self.raw_feature_set(rgb, raw))
    }

    /// Fingerprint of raw (pre-PCA) features: this extractor's without its PCA.
    pub fn raw_fingerprint(&self) -> &Fingerprint {
        &self.raw_fingerprint
    }

    /// Applies this extractor's PCA (then L2) to raw features from the same backbone and settings; without a PCA
    /// the raw features are returned as they are.
    pub fn reduce(&self, raw: FeatureSet) -> Result<FeatureSet, ModelError> {
        if raw.fingerprint != self.raw_fingerprint {
            return Err(ModelError::Config(format!(
                "raw features from {} cannot be reduced by an extractor for {}",
                raw.fingerprint, self.raw_fingerprint
            )));
        }
        let Some(pca) = &self.pca else { return Ok(raw) };
        let n = raw.len();
        let descriptors: Vec<f32> = if n == 0 {
            Vec::new()
        } else {
            let d = Tensor::from_slice(&raw.descriptors).view([n as i64, raw.dim as i64]);
            l2_normalize(&pca.project(&d)?).flatten(0, -1).try_into()?
        };
        let features = FeatureSet { dim: self.dim(), descriptors, fingerprint: self.fingerprint.clone(), ..raw };
        debug_assert!(features.validate().is_ok());
        Ok(features)
    }

    /// The backbone's global descriptor of the whole image (DELG), `None` for backbones without one: the image
    /// (within `max_side`) at DELG's global scales 0.7071, 1 and 1.4142, each scale's descriptor L2-normalised,
    /// summed and L2-normalised again, as DELG's extraction does.
    pub fn global_descriptor(&self, rgb: &RgbImage) -> Result<Option<Vec<f32>>, ModelError> {
        if !self.backbone.has_global_descriptor() {
            return Ok(None);
        }
        let (w, h) = (f64::from(rgb.width()), f64::from(rgb.height()));
        let base = self.base_scale(w, h);
        let x = to_tensor(rgb, self.backbone.normalization(), self.device);
        tch::no_grad(|| {
            let mut per_scale = Vec::with_capacity(GLOBAL_SCALES.len());
            for s in GLOBAL_SCALES {
                let scaled =
                    resized(&x, (h * base * s).round().max(1.0) as i64, (w * base * s).round().max(1.0) as i64)?;
                let input =
                    if self.config.precision == Precision::Bf16 { scaled.to_kind(Kind::BFloat16) } else { scaled };
                let Some(d) = self.backbone.global_descriptor(&input) else { return Ok(None) };
                per_scale.push(d.to_kind(Kind::Float));
            }
            let sum = Tensor::stack(&per_scale, 0).sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
            Ok(Some(l2_normalize(&sum).to_device(Device::Cpu).flatten(0, -1).try_into()?))
        })
    }

    /// The factor that brings an image of `w x h` within `max_side` (1 when it already is).
    fn base_scale(&self, w: f64, h: f64) -> f64 {
        match self.config.max_side {
            Some(m) if w.max(h) > f64::from(m) => f64::from(m) / w.max(h),
            _ => 1.0,
        }
    }

    /// Raw (un-reduced) L2-normalised descriptors of a sample of images, for fitting a PCA: `[N, C]`.
    pub fn raw_descriptors(&self, rgb: &RgbImage) -> Result<Tensor, ModelError> {
        let raw = self.extract_raw(rgb)?;
        Ok(Tensor::from_slice(&raw.descriptors).view([raw.len() as i64, raw.dim as i64]))
    }

    /// Extracts the features of several images, running images of the same size through the network together
    /// (`max_batch` at a time; 1 = one image per forward pass). Each result equals [`Extractor::extract`] of that
    /// image: batch normalisation is in inference mode, so images in a batch do not influence each other.
    pub fn extract_batch(&self, images: &[&RgbImage], max_batch: usize) -> Vec<Result<FeatureSet, ModelError>> {
        self.batched(images, max_batch, true)
    }

    /// [`Extractor::extract_raw`] of several images, batched like [`Extractor::extract_batch`].
    pub fn extract_raw_batch(&self, images: &[&RgbImage], max_batch: usize) -> Vec<Result<FeatureSet, ModelError>> {
        self.batched(images, max_batch, false)
    }

    fn batched(&self, images: &[&RgbImage], max_batch: usize, reduce: bool) -> Vec<Result<FeatureSet, ModelError>> {
        let mut out: Vec<Option<Result<FeatureSet, ModelError>>> = images.iter().map(|_| None).collect();
        let mut groups: Vec<((u32, u32), Vec<usize>)> = Vec::new();
        for (i, im) in images.iter().enumerate() {
            match groups.iter_mut().find(|(size, _)| *size == im.dimensions()) {
                Some((_, members)) => members.push(i),
                None => groups.push((im.dimensions(), vec![i])),
            }
        }
        for (_, members) in groups {
            for chunk in members.chunks(max_batch.max(1)) {
                let batch: Vec<&RgbImage> = chunk.iter().map(|&i| images[i]).collect();
                match self.raw_features_batch(&batch, &vec![None; batch.len()], f64::INFINITY) {
                    Ok(per_image) => {
                        for (&i, raw) in chunk.iter().zip(per_image) {
                            let raw = self.raw_feature_set(images[i], raw);
                            out[i] = Some(if reduce { self.reduce(raw) } else { Ok(raw) });
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        for &i in chunk {
                            out[i] = Some(Err(ModelError::Config(format!("batched extraction failed: {message}"))));
                        }
                    }
                }
            }
        }
        out.into_iter().map(|r| r.unwrap_or_else(|| Err(ModelError::Config("image not extracted".into())))).collect()
    }

    fn raw_feature_set(&self, rgb: &RgbImage, raw: Vec<Candidate>) -> FeatureSet {
        let (keypoints, descriptors): (Vec<Keypoint>, Vec<Vec<f32>>) =
            raw.into_iter().map(|c| (c.keypoint, c.descriptor)).unzip();
        FeatureSet {
            width: rgb.width(),
            height: rgb.height(),
            dim: self.backbone.channels() as usize,
            keypoints,
            descriptors: descriptors.concat(),
            fingerprint: self.raw_fingerprint.clone(),
        }
    }

    /// Top-N cells over all pyramid levels, with their raw descriptors L2-normalised (the first step of the
    /// reference post-processing, whether or not a PCA follows).
    fn raw_features(&self, rgb: &RgbImage) -> Result<Vec<Candidate>, ModelError> {
        self.raw_features_within(rgb, None, f64::INFINITY)
    }

    /// [`Extractor::raw_features`] where only the pixels flagged in `coverage` show the scene, from the pyramid
    /// levels up to `max_scale`.
    fn raw_features_within(
        &self,
        rgb: &RgbImage,
        coverage: Option<&[bool]>,
        max_scale: f64,
    ) -> Result<Vec<Candidate>, ModelError> {
        Ok(self.raw_features_batch(&[rgb], &[coverage], max_scale)?.pop().unwrap_or_default())
    }

    /// Features of `rgb` seen at several in-plane rotations (degrees, counter-clockwise; 0 = as it is), one set per
    /// rotation in the order of `degrees`: each rotation on a canvas that holds the whole image, the filled corners
    /// giving no keypoints, each with its own top `max_features`, and every keypoint mapped back to `rgb`'s
    /// coordinates. A query searched this way finds database photos that show its scene turned by up to about half
    /// the step between the angles (the network's features are not rotation invariant; docs/search.md has the
    /// measured tolerance). `pass` bounds the cost of each rotated pass.
    pub fn extract_rotations(
        &self,
        rgb: &RgbImage,
        degrees: &[f64],
        pass: RotatedPass,
    ) -> Result<Vec<FeatureSet>, ModelError> {
        self.extract_raw_rotations(rgb, degrees, pass)?.into_iter().map(|raw| self.reduce(raw)).collect()
    }

    /// [`Extractor::extract_rotations`] before the PCA.
    pub fn extract_raw_rotations(
        &self,
        rgb: &RgbImage,
        degrees: &[f64],
        pass: RotatedPass,
    ) -> Result<Vec<FeatureSet>, ModelError> {
        let longest = f64::from(rgb.width().max(rgb.height()));
        let f = (f64::from(pass.max_side) / longest).min(1.0);
        let (sw, sh) = ((f64::from(rgb.width()) * f).round().max(1.0), (f64::from(rgb.height()) * f).round().max(1.0));
        let shrink = Projective::scaling(sw / f64::from(rgb.width()), sh / f64::from(rgb.height()));
        let mut passes = Vec::with_capacity(degrees.len());
        for &d in degrees {
            if d.rem_euclid(360.0) == 0.0 && f == 1.0 {
                passes.push(self.raw_feature_set(rgb, self.raw_features_within(rgb, None, pass.max_scale)?));
                continue;
            }
            let (turn, w, h) = delf_image::geometry::rotation_canvas(sw as u32, sh as u32, d, true);
            let map = shrink.then(&turn);
            let view = delf_image::warp::warp(rgb, &map, w, h, delf_image::Fill::Color([0, 0, 0]));
            let back = map.inverse().ok_or_else(|| ModelError::Config(format!("rotation by {d} is singular")))?;
            let mut features = self.raw_features_within(&view.image, Some(&view.coverage), pass.max_scale)?;
            for c in &mut features {
                let (x, y) = back.apply(f64::from(c.keypoint.x), f64::from(c.keypoint.y)).unwrap_or((-1.0, -1.0));
                c.keypoint.x = x as f32;
                c.keypoint.y = y as f32;
                c.keypoint.scale /= f as f32;
            }
            passes.push(self.raw_feature_set(rgb, features));
        }
        Ok(passes)
    }

    /// [`Extractor::raw_features`] of images that all have the same size, one forward pass per pyramid level;
    /// `coverage` holds, per image, which pixels show the scene (`None`: all of them); levels above `max_scale`
    /// are skipped.
    fn raw_features_batch(
        &self,
        images: &[&RgbImage],
        coverage: &[Option<&[bool]>],
        max_scale: f64,
    ) -> Result<Vec<Vec<Candidate>>, ModelError> {
        let Some(cache) = &self.cache else { return self.network_features_batch(images, coverage, max_scale) };
        let coverage_of = |i: usize| coverage.get(i).copied().flatten();
        let context =
            format!("{}/{:?}/{:?}/{:016x}", self.raw_fingerprint, self.config, self.device, max_scale.to_bits());
        let dim = self.backbone.channels() as usize;
        let keys: Vec<String> = images
            .iter()
            .enumerate()
            .map(|(i, im)| cache.key(context.as_bytes(), im.dimensions(), im.as_raw(), coverage_of(i)))
            .collect();
        let mut found: Vec<Option<Vec<Candidate>>> = keys.iter().map(|k| cache.get(k, dim)).collect();
        let missing: Vec<usize> = (0..images.len()).filter(|&i| found[i].is_none()).collect();
        if !missing.is_empty() {
            let batch: Vec<&RgbImage> = missing.iter().map(|&i| images[i]).collect();
            let covered: Vec<Option<&[bool]>> = missing.iter().map(|&i| coverage_of(i)).collect();
            for (&i, candidates) in missing.iter().zip(self.network_features_batch(&batch, &covered, max_scale)?) {
                cache.put(&keys[i], &candidates, dim);
                found[i] = Some(candidates);
            }
        }
        Ok(found.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// [`Extractor::raw_features_batch`] through the network.
    fn network_features_batch(
        &self,
        images: &[&RgbImage],
        coverage: &[Option<&[bool]>],
        max_scale: f64,
    ) -> Result<Vec<Vec<Candidate>>, ModelError> {
        let Some(first) = images.first() else { return Ok(Vec::new()) };
        if images.iter().any(|im| im.dimensions() != first.dimensions()) {
            return Err(ModelError::Config("a batch must hold images of one size".into()));
        }
        let (w, h) = (f64::from(first.width()), f64::from(first.height()));
        let base = self.base_scale(w, h);
        let norm = self.backbone.normalization();
        let batch = Tensor::cat(&images.iter().map(|im| to_tensor(im, norm, self.device)).collect::<Vec<_>>(), 0);
        let layers = self.backbone.layers();
        let keep = self.config.max_features;
        let c = self.backbone.channels() as usize;
        let mut candidates: Vec<Vec<Candidate>> = images.iter().map(|_| Vec::new()).collect();
        // Which cells may give keypoints (ExtractConfig::min_texture), from tables of each input image.
        let cores: Vec<Option<CoreStats>> = images
            .iter()
            .zip(coverage.iter().chain(std::iter::repeat(&None)))
            .map(|(im, cov)| (self.config.min_texture.is_some() || cov.is_some()).then(|| CoreStats::new(im, *cov)))
            .collect();
        let min_std = f64::from(self.config.min_texture.unwrap_or(0.0));
        tch::no_grad(|| -> Result<(), ModelError> {
            for &s in self.config.scales.iter().filter(|&&s| s <= max_scale) {
                let scale = base * s;
                let (sh, sw) = ((h * scale).round() as i64, (w * scale).round() as i64);
                if sh < i64::from(self.config.min_side) || sw < i64::from(self.config.min_side) {
                    continue;
                }
                let x = resized(&batch, sh, sw)?;
                let forward = || {
                    let feats = match self.config.precision {
                        Precision::Bf16 => self.backbone.features(&x.to_kind(Kind::BFloat16)),
                        Precision::Fp32 | Precision::Fp16 => self.backbone.features(&x),
                    };
                    let scores = self.attention.scores(&feats);
                    (feats.to_kind(Kind::Float), scores.to_kind(Kind::Float))
                };
                // Only enter autocast when asked: toggling it costs a call and a deprecation warning per level.
                let (feats, scores) =
                    if self.config.precision == Precision::Fp16 { tch::autocast(true, forward) } else { forward() };
                let (fh, fw) = (feats.size()[2], feats.size()[3]);
                let gy = AxisGeometry::compute(&layers, sh);
                let gx = AxisGeometry::compute(&layers, sw);
                debug_assert_eq!((gy.cells, gx.cells), (fh, fw));
                let k = (keep as i64).min(fh * fw);
                for (b, found) in candidates.iter_mut().enumerate() {
                    let mut scores = scores.get(b as i64).flatten(0, -1);
                    if let Some(stats) = &cores[b] {
                        // The core: one stride either way of the centre, in input pixels.
                        let r = gx.stride as f64 / scale;
                        let keep: Vec<bool> = (0..fh * fw)
                            .map(|cell| {
                                let (cx, cy) =
                                    ((gx.center(cell % fw) + 0.5) / scale, (gy.center(cell / fw) + 0.5) / scale);
                                stats.keep(cx, cy, r, MIN_CORE_COVERAGE, min_std)
                            })
                            .collect();
                        let refused = Tensor::from_slice(&keep).to_device(scores.device()).logical_not();
                        scores = scores.masked_fill(&refused, f64::NEG_INFINITY);
                    }
                    let (top_scores, top_idx) = scores.f_topk(k, 0, true, true)?;
                    let map = feats.get(b as i64).view([-1, fh * fw]);
                    let descs = l2_normalize(&map.index_select(1, &top_idx).tr());
                    let descs: Vec<f32> = descs.to_device(Device::Cpu).contiguous().flatten(0, -1).try_into()?;
                    let top_scores: Vec<f32> = top_scores.to_device(Device::Cpu).try_into()?;
                    let top_idx: Vec<i64> = top_idx.to_device(Device::Cpu).try_into()?;
                    for (r, (&score, &cell)) in top_scores.iter().zip(&top_idx).enumerate() {
                        if score == f32::NEG_INFINITY || self.config.score_threshold.is_some_and(|t| score < t) {
                            continue;
                        }
                        let (row, col) = (cell / fw, cell % fw);
                        found.push(Candidate {
                            keypoint: Keypoint {
                                x: ((gx.center(col) + 0.5) / scale) as f32,
                                y: ((gy.center(row) + 0.5) / scale) as f32,
                                scale: (1.0 / scale) as f32,
                                score,
                            },
                            descriptor: descs[r * c..(r + 1) * c].to_vec(),
                        });
                    }
                }
            }
            Ok(())
        })?;
        for found in &mut candidates {
            // Highest score first; ties broken by position so the order is deterministic.
            found.sort_by(|a, b| {
                b.keypoint
                    .score
                    .total_cmp(&a.keypoint.score)
                    .then(a.keypoint.scale.total_cmp(&b.keypoint.scale))
                    .then(a.keypoint.y.total_cmp(&b.keypoint.y))
                    .then(a.keypoint.x.total_cmp(&b.keypoint.x))
            });
            found.truncate(keep);
        }
        Ok(candidates)
    }
}

/// `x` (`[N, C, H, W]`) resized bilinearly to `h x w`; itself when it already has that size.
fn resized(x: &Tensor, h: i64, w: i64) -> Result<Tensor, ModelError> {
    let size = x.size();
    Ok(if (size[2], size[3]) == (h, w) {
        x.shallow_clone()
    } else {
        x.f_upsample_bilinear2d([h, w], false, None, None)?
    })
}

/// Image scales of DELG's global descriptor (its release configs' `image_scales_ind` 3, 4, 5).
const GLOBAL_SCALES: [f64; 3] = [std::f64::consts::FRAC_1_SQRT_2, 1.0, std::f64::consts::SQRT_2];

/// Rows scaled to unit L2 norm (zero rows stay zero).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let norm = x.norm_scalaropt_dim(2, [-1i64].as_slice(), true).clamp_min(1e-12);
    (x / norm).to_kind(Kind::Float)
}
