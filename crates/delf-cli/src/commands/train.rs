//! `delf train descriptor|attention`: the paper's two training stages from image-level labels (docs/training.md).

use anyhow::{Result, bail};
use delf_engine::Config;
use delf_engine::model;
use delf_storage::Stores;
use delf_train::loader::ImageSource;
use delf_train::{AugmentConfig, LabelSet, Stage, TrainConfig};

use crate::cli::{TrainArgs, TrainCommand};

/// Decoded pixels kept in memory while training (a small corpus is decoded once).
const DECODE_CACHE_BYTES: usize = 2 << 30;

/// Runs `delf train ...`.
pub fn run(command: &TrainCommand, config: &Config) -> Result<()> {
    let (stage, args) = match command {
        TrainCommand::Descriptor(args) => (Stage::Descriptor, args),
        TrainCommand::Attention(args) => (Stage::Attention, args),
    };
    let train_config = settings(stage, args, config)?;
    let device = model::device(args.device.as_deref(), config)?;
    let stores = Stores::new();
    let labels = read_labels(&stores, args)?;
    labels.check_local_files()?;
    let threads =
        args.loader_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    let source = ImageSource::new(stores, train_config.max_image_side, DECODE_CACHE_BYTES)?;
    let options = delf_train::RunOptions {
        weights: args.weights.clone().unwrap_or_else(|| config.weights_path()),
        out: args.out.clone(),
        device,
        loader_threads: threads,
        stop_after: args.stop_after,
        log_every: args.log_every,
    };
    let summary = delf_train::train(&train_config, &labels, source, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "{} stage: {} of {} steps (resumed from {}), {:.1} views/s",
        stage.name(),
        summary.steps,
        summary.total_steps,
        summary.resumed_from,
        summary.images_per_s
    );
    println!("  last epoch: loss {:.4}, accuracy {:.3}", summary.train_loss, summary.train_accuracy);
    if let Some(v) = &summary.validation {
        println!("  validation ({} on {} images): loss {:.4}, accuracy {:.3}", v.on, v.images, v.loss, v.accuracy);
    }
    match &summary.output {
        Some(path) => println!("  wrote {}", path.display()),
        None => println!("  stopped early; run the same command again to continue"),
    }
    Ok(())
}

fn read_labels(stores: &Stores, args: &TrainArgs) -> Result<LabelSet> {
    let uri = delf_storage::to_url(&args.labels)?.to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let bytes = rt.block_on(stores.read(&uri))?;
    Ok(LabelSet::parse(&uri, &bytes, args.images.as_deref())?)
}

/// The recipe with the flags applied.
fn settings(stage: Stage, args: &TrainArgs, config: &Config) -> Result<TrainConfig> {
    let mut c = TrainConfig::paper(stage);
    match args.recipe.as_str() {
        "paper" => {}
        "instance" => {
            c.augment = AugmentConfig::instance();
            c.val_fraction = 0.0;
        }
        other => bail!(delf_train::TrainError::Config(format!("unknown recipe {other:?} (paper, instance)"))),
    }
    c.backbone = config.model.backbone.clone();
    if let Some(layer) = &config.model.layer {
        c.layer = layer.clone();
    }
    c.epochs = args.epochs.unwrap_or(c.epochs);
    c.batch_size = args.batch_size.unwrap_or(c.batch_size);
    c.repeats = args.repeats.unwrap_or(c.repeats);
    c.input_size = args.input_size.unwrap_or(c.input_size);
    c.min_input_scale = args.min_input_scale.unwrap_or(c.min_input_scale);
    c.lr = args.lr.unwrap_or(c.lr);
    c.warmup_steps = args.warmup_steps.unwrap_or(c.warmup_steps);
    c.val_fraction = args.val_fraction.unwrap_or(c.val_fraction);
    c.seed = args.seed.unwrap_or(c.seed);
    c.regions = args.regions.unwrap_or(c.regions);
    c.checkpoint_every = args.checkpoint_every.unwrap_or(c.checkpoint_every);
    Ok(c)
}
