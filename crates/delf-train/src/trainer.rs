//! The training loop: seeded batch plans, SGD with a warm-up + cosine learning rate, per-step metrics, epoch
//! summaries with validation, and checkpoints that a killed run resumes from bit for bit (on the CPU).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use delf_core::rng::SplitMix64;
use delf_model::preprocess::Normalization;
use delf_model::{FeatureTap, LiteVariant, TensorFile};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::TrainError;
use crate::augment::AugmentConfig;
use crate::labels::LabelSet;
use crate::loader::{BatchPlan, ImageSource, ViewSeed, prefetch, render_batch};
use crate::net::{Stage, TrainNet};
use crate::sgd::Sgd;

/// Everything that defines a run (stored in every checkpoint; a resumed run must match it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Stage 1 or 2.
    pub stage: Stage,
    /// `efficientnet-lite0`, `-lite1` or `-lite2`.
    pub backbone: String,
    /// Feature layer (`block10`, ...), as in `model.layer`.
    pub layer: String,
    /// Images per step.
    pub batch_size: usize,
    /// Passes over the training split.
    pub epochs: u64,
    /// Views of every training image per epoch (instance-level training sees each photo many times per epoch).
    pub repeats: usize,
    /// Input side in pixels.
    pub input_size: u32,
    /// Each batch is downscaled by a random factor in [min_input_scale, 1] (the paper's random downscale in
    /// stage 2; 1 = fixed size).
    pub min_input_scale: f64,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps before the cosine decay.
    pub warmup_steps: u64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay on kernels.
    pub weight_decay: f64,
    /// How views are drawn.
    pub augment: AugmentConfig,
    /// Share of every class's images held out for validation (classes of one image stay in training).
    pub val_fraction: f64,
    /// Seed of the split, the order, the views and the initial weights.
    pub seed: u64,
    /// Images are downscaled to this longest side when decoded.
    pub max_image_side: u32,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Cut every photo into a `regions x regions` grid whose cells are classes of their own (instance-level
    /// training: telling apart parts of one photo needs local structure, not a photo's overall colours); 1 = off.
    #[serde(default = "one")]
    pub regions: u32,
}

fn one() -> u32 {
    1
}

impl TrainConfig {
    /// The paper's recipe for `stage` (section 4.2), with our input sizes: stage 1 at 224 px, stage 2 at 720 px
    /// downscaled per batch by up to 4x.
    pub fn paper(stage: Stage) -> Self {
        let (augment, input_size, min_input_scale) = match stage {
            Stage::Descriptor => (AugmentConfig::paper_descriptor(), 224, 1.0),
            Stage::Attention => (AugmentConfig::paper_attention(), 720, 0.25),
        };
        Self {
            stage,
            backbone: "efficientnet-lite0".into(),
            layer: "block10".into(),
            batch_size: 32,
            epochs: 30,
            repeats: 1,
            input_size,
            min_input_scale,
            lr: 0.01,
            warmup_steps: 100,
            momentum: 0.9,
            weight_decay: 1e-4,
            augment,
            val_fraction: 0.05,
            seed: 1,
            max_image_side: 1024,
            checkpoint_every: 200,
            regions: 1,
        }
    }

    fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.batch_size == 0 || self.epochs == 0 || self.repeats == 0 || self.checkpoint_every == 0 {
            return bad("batch size, epochs, repeats and checkpoint interval must be positive".into());
        }
        if !(32..=4096).contains(&self.input_size) || !(0.1..=1.0).contains(&self.min_input_scale) {
            return bad(format!("input size {} / scale {} out of range", self.input_size, self.min_input_scale));
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && (0.0..1.0).contains(&self.momentum)) || self.weight_decay < 0.0 {
            return bad(format!("lr {} momentum {} weight decay {}", self.lr, self.momentum, self.weight_decay));
        }
        if !(1..=8).contains(&self.regions) {
            return bad(format!("regions {} not in 1..=8", self.regions));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(format!("validation fraction {} not in [0, 1)", self.val_fraction));
        }
        self.augment.validate().map_err(TrainError::Config)
    }
}

/// Where and how a run happens (not part of its identity).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Backbone weights (ImageNet, or a stage-1 result for stage 2).
    pub weights: PathBuf,
    /// Output folder: `checkpoint.safetensors`, `metrics.jsonl`, and the result.
    pub out: PathBuf,
    /// Device.
    pub device: Device,
    /// CPU threads that decode and render views.
    pub loader_threads: usize,
    /// Stop (with a checkpoint) once this many steps are done in total; the run can be resumed later.
    pub stop_after: Option<u64>,
    /// Steps between log lines.
    pub log_every: u64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Steps done in total (including those before a resume).
    pub steps: u64,
    /// Steps planned for the whole run.
    pub total_steps: u64,
    /// Step the run resumed from (0 = fresh).
    pub resumed_from: u64,
    /// Mean training loss over the last epoch (or the steps done in it).
    pub train_loss: f64,
    /// Mean training accuracy over the same steps.
    pub train_accuracy: f64,
    /// Validation loss and accuracy at the end, and what they were measured on.
    pub validation: Option<Validation>,
    /// Training views per second of this process.
    pub images_per_s: f64,
    /// The exported result, when the run finished.
    pub output: Option<PathBuf>,
}

/// Validation metrics.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Images evaluated.
    pub images: usize,
    /// `held-out images`, or `fixed views of training images` when no class has two images.
    pub on: String,
}

/// File names in the output folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// Per-step and per-epoch metrics, one JSON object per line.
pub const METRICS_FILE: &str = "metrics.jsonl";

const CHECKPOINT_FORMAT: &str = "delf-train-checkpoint/1";

/// Trains `config.stage` on `labels`; resumes from `out/checkpoint.safetensors` when it exists.
pub fn train(
    config: &TrainConfig,
    labels: &LabelSet,
    source: ImageSource,
    options: &RunOptions,
) -> Result<Summary, TrainError> {
    config.validate()?;
    let variant = LiteVariant::named(&config.backbone).ok_or_else(|| {
        TrainError::Config(format!("training supports EfficientNet-Lite backbones, not {:?}", config.backbone))
    })?;
    let tap: FeatureTap = config.layer.parse().map_err(TrainError::Config)?;
    std::fs::create_dir_all(&options.out)
        .map_err(|source| TrainError::Io { path: options.out.display().to_string(), source })?;
    let (train_idx, val_idx) = labels.split(config.val_fraction, config.seed);
    let steps_per_epoch = ((train_idx.len() * config.repeats) / config.batch_size).max(1) as u64;
    let total_steps = steps_per_epoch * config.epochs;

    tch::manual_seed(config.seed as i64);
    let classes = labels.classes.len() * (config.regions as usize).pow(2);
    let net = TrainNet::new(config.stage, &options.weights, variant, tap, classes, options.device)?;
    let mut sgd = Sgd::new(config.momentum, config.weight_decay);
    let checkpoint = options.out.join(CHECKPOINT_FILE);
    let resumed_from =
        if checkpoint.is_file() { resume(&checkpoint, config, labels, &net, &mut sgd, options.device)? } else { 0 };
    let end = options.stop_after.map_or(total_steps, |s| s.min(total_steps));
    tracing::info!(
        stage = config.stage.name(),
        backbone = net.backbone_name(),
        classes = labels.classes.len(),
        train = train_idx.len(),
        validation = val_idx.len(),
        steps_per_epoch,
        total_steps,
        resumed_from,
        "training"
    );

    let norm = Normalization::EFFICIENTNET_LITE;
    let source = Arc::new(source);
    let samples = Arc::new(labels.samples.clone());
    let plans: Vec<BatchPlan> = (resumed_from..end).map(|s| plan(config, &train_idx, steps_per_epoch, s)).collect();
    let batches =
        prefetch(source.clone(), samples.clone(), plans, config.augment.clone(), norm, options.loader_threads, 2);
    let mut metrics = MetricsLog::open(&options.out.join(METRICS_FILE))?;
    let params = net.trainable();
    let started = Instant::now();
    let (mut epoch_loss, mut epoch_acc, mut epoch_steps, mut seen) = (0.0, 0.0, 0u64, 0usize);
    let mut last = (f64::NAN, f64::NAN);
    for step in resumed_from..end {
        let batch = batches.recv().map_err(|_| TrainError::Config("the batch loader stopped".into()))??;
        let x = batch.images.to_device(options.device);
        let y = batch.labels.to_device(options.device);
        let logits = net.logits(&x, true);
        let loss = logits.cross_entropy_for_logits(&y);
        let accuracy = f64::try_from(logits.accuracy_for_logits(&y))?;
        loss.backward();
        let lr = learning_rate(config, step, total_steps);
        sgd.step(&params, lr);
        let loss = f64::try_from(&loss)?;
        if !loss.is_finite() {
            return Err(TrainError::Config(format!("the loss diverged at step {step} (lr {lr}): lower --lr")));
        }
        seen += batch.plan.items.len();
        epoch_loss += loss;
        epoch_acc += accuracy;
        epoch_steps += 1;
        let done = step + 1;
        metrics.write(&serde_json::json!({
            "step": done, "epoch": batch.plan.epoch, "loss": loss, "accuracy": accuracy, "lr": lr,
            "side": batch.plan.side,
        }))?;
        if done % options.log_every.max(1) == 0 || done == end {
            let rate = seen as f64 / started.elapsed().as_secs_f64();
            tracing::info!(step = done, total_steps, epoch = batch.plan.epoch, loss, accuracy, lr, images_per_s = rate);
        }
        let epoch_done = done % steps_per_epoch == 0;
        if epoch_done || done == end {
            last = (epoch_loss / epoch_steps as f64, epoch_acc / epoch_steps as f64);
        }
        if epoch_done {
            let validation = validate(&net, config, labels, &source, &train_idx, &val_idx, options)?;
            tracing::info!(
                epoch = batch.plan.epoch,
                train_loss = last.0,
                train_accuracy = last.1,
                val_loss = validation.loss,
                val_accuracy = validation.accuracy,
                "epoch"
            );
            metrics.write(&serde_json::json!({
                "epoch_done": batch.plan.epoch, "train_loss": last.0, "train_accuracy": last.1,
                "val_loss": validation.loss, "val_accuracy": validation.accuracy, "val_on": validation.on,
            }))?;
            (epoch_loss, epoch_acc, epoch_steps) = (0.0, 0.0, 0);
        }
        if done % config.checkpoint_every == 0 || done == end {
            save_checkpoint(&checkpoint, config, labels, &net, &sgd, done)?;
        }
    }
    let images_per_s = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let finished = end == total_steps;
    let output = if finished {
        let path = options.out.join(match config.stage {
            Stage::Attention => "attention.safetensors",
            Stage::Descriptor => "backbone.safetensors",
        });
        let meta = HashMap::from([
            ("format".to_string(), format!("delf-{}/1", config.stage.name())),
            ("recipe".to_string(), serde_json::to_string(config).unwrap_or_default()),
            ("steps".to_string(), total_steps.to_string()),
            ("classes".to_string(), classes.to_string()),
            ("labels_checksum".to_string(), labels.checksum.clone()),
        ]);
        net.export(&path, meta)?;
        Some(path)
    } else {
        None
    };
    let validation = if finished || end > resumed_from {
        Some(validate(&net, config, labels, &source, &train_idx, &val_idx, options)?)
    } else {
        None
    };
    Ok(Summary {
        steps: end,
        total_steps,
        resumed_from,
        train_loss: last.0,
        train_accuracy: last.1,
        validation,
        images_per_s,
        output,
    })
}

/// The batch of global step `step`: the epoch's seeded permutation of the training split (each image `repeats`
/// times), a slice of it, a view seed per slot and the batch's input side.
pub fn plan(config: &TrainConfig, train_idx: &[usize], steps_per_epoch: u64, step: u64) -> BatchPlan {
    let epoch = step / steps_per_epoch;
    let within = (step % steps_per_epoch) as usize;
    let mut order: Vec<usize> = (0..config.repeats).flat_map(|_| train_idx.iter().copied()).collect();
    let mut rng = SplitMix64(mix(config.seed, 0x0e90_c400, epoch));
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let start = within * config.batch_size;
    let slice = &order[start.min(order.len())..(start + config.batch_size).min(order.len())];
    let items = slice.iter().enumerate().map(|(slot, &i)| (i, ViewSeed(mix(config.seed, step, slot as u64)))).collect();
    let mut size_rng = SplitMix64(mix(config.seed, 0x5_1ce, step));
    let scale = config.min_input_scale + (1.0 - config.min_input_scale) * size_rng.uniform();
    let side = ((f64::from(config.input_size) * scale / 16.0).round() as u32).max(2) * 16;
    BatchPlan { step, epoch, items, side, regions: config.regions }
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut r = SplitMix64(seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    r.next_u64()
}

/// Linear warm-up to `lr`, then cosine decay to 1 % of it at the last step.
pub fn learning_rate(config: &TrainConfig, step: u64, total: u64) -> f64 {
    if step < config.warmup_steps {
        return config.lr * (step + 1) as f64 / config.warmup_steps as f64;
    }
    let span = total.saturating_sub(config.warmup_steps).max(1) as f64;
    let t = (step - config.warmup_steps) as f64 / span;
    config.lr * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
}

/// Loss and accuracy in inference mode on the held-out images (their centre views), or, when every class has a
/// single image, on fixed seeded views of the training images (how well the classes are told apart under new
/// crops, which is what instance-level training is after).
fn validate(
    net: &TrainNet,
    config: &TrainConfig,
    labels: &LabelSet,
    source: &ImageSource,
    train_idx: &[usize],
    val_idx: &[usize],
    options: &RunOptions,
) -> Result<Validation, TrainError> {
    let (indices, on, augment) = if val_idx.is_empty() {
        (
            train_idx.iter().copied().take(512).collect::<Vec<_>>(),
            "fixed views of training images",
            config.augment.clone(),
        )
    } else {
        let centre = AugmentConfig { crop_min: 0.9, crop_max: 0.9, centred: true, ..AugmentConfig::paper_descriptor() };
        (val_idx.to_vec(), "held-out images", centre)
    };
    let (mut loss, mut correct) = (0.0, 0.0);
    for (k, chunk) in indices.chunks(config.batch_size).enumerate() {
        let items = chunk
            .iter()
            .enumerate()
            .map(|(slot, &i)| (i, ViewSeed(mix(config.seed ^ 0x7a11d, k as u64, slot as u64))))
            .collect();
        let side = ((f64::from(config.input_size) * (1.0 + config.min_input_scale) / 2.0 / 16.0).round() as u32) * 16;
        let plan = BatchPlan { step: k as u64, epoch: 0, items, side, regions: config.regions };
        let batch = render_batch(
            source,
            &labels.samples,
            plan,
            &augment,
            Normalization::EFFICIENTNET_LITE,
            options.loader_threads,
        )?;
        let n = chunk.len() as f64;
        tch::no_grad(|| -> Result<(), TrainError> {
            let logits = net.logits(&batch.images.to_device(options.device), false);
            let y = batch.labels.to_device(options.device);
            loss += f64::try_from(logits.cross_entropy_for_logits(&y))? * n;
            correct += f64::try_from(logits.accuracy_for_logits(&y))? * n;
            Ok(())
        })?;
    }
    let images = indices.len();
    Ok(Validation { loss: loss / images as f64, accuracy: correct / images as f64, images, on: on.into() })
}

fn save_checkpoint(
    path: &Path,
    config: &TrainConfig,
    labels: &LabelSet,
    net: &TrainNet,
    sgd: &Sgd,
    step: u64,
) -> Result<(), TrainError> {
    let mut tensors = net.state();
    tensors.extend(sgd.state());
    let meta = HashMap::from([
        ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
        ("step".to_string(), step.to_string()),
        ("config".to_string(), serde_json::to_string(config).unwrap_or_default()),
        ("labels_checksum".to_string(), labels.checksum.clone()),
        ("classes".to_string(), serde_json::to_string(&labels.classes).unwrap_or_default()),
        ("backbone".to_string(), net.backbone_name().to_string()),
        ("backbone_weights".to_string(), net.backbone_digest().to_string()),
    ]);
    Ok(TensorFile::save(path, &tensors, meta)?)
}

/// Loads a checkpoint into `net` and `sgd`; returns its step. The run must be the same one: same settings (the
/// number of epochs may grow), labels and starting weights.
fn resume(
    path: &Path,
    config: &TrainConfig,
    labels: &LabelSet,
    net: &TrainNet,
    sgd: &mut Sgd,
    device: Device,
) -> Result<u64, TrainError> {
    let what = path.display().to_string();
    let bad = |reason: String| TrainError::Checkpoint { path: what.clone(), reason };
    let file = TensorFile::load(path)?;
    let meta = |k: &str| file.meta.get(k).cloned().unwrap_or_default();
    if meta("format") != CHECKPOINT_FORMAT {
        return Err(bad("not a delf training checkpoint".into()));
    }
    let saved: TrainConfig =
        serde_json::from_str(&meta("config")).map_err(|e| bad(format!("unreadable settings: {e}")))?;
    if (TrainConfig { epochs: config.epochs, ..saved.clone() }) != *config {
        return Err(bad(format!(
            "it was written by a run with other settings ({}); use another output folder or the same settings",
            serde_json::to_string(&saved).unwrap_or_default()
        )));
    }
    if meta("labels_checksum") != labels.checksum {
        return Err(bad(format!("it was trained on other labels than {}", labels.uri)));
    }
    if meta("backbone_weights") != net.backbone_digest() {
        return Err(bad("it started from other backbone weights".into()));
    }
    net.restore(&file, &what)?;
    let device_tensors: Vec<(String, Tensor)> =
        file.tensors.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    sgd.restore(&device_tensors, device);
    let step: u64 = meta("step").parse().map_err(|_| bad("no step".into()))?;
    tracing::info!(step, checkpoint = %path.display(), "resuming");
    Ok(step)
}

struct MetricsLog(std::fs::File, PathBuf);

impl MetricsLog {
    fn open(path: &Path) -> Result<Self, TrainError> {
        let io = |source| TrainError::Io { path: path.display().to_string(), source };
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        Ok(Self(file, path.to_path_buf()))
    }

    fn write(&mut self, value: &serde_json::Value) -> Result<(), TrainError> {
        writeln!(self.0, "{value}").map_err(|source| TrainError::Io { path: self.1.display().to_string(), source })
    }
}
