//! `delf doctor`: proves the installation end to end on a real photo. It loads the default backbone with its
//! real weights, classifies a photo with the ImageNet head, and prints the top-5 classes and timings. A squirrel
//! photo coming out as a squirrel shows that libtorch, the weights and the preprocessing are all right.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use delf_engine::Config;
use delf_engine::model;
use delf_model::imagenet::ImagenetClasses;
use delf_model::preprocess::{Normalization, center_crop_resize, to_tensor};
use delf_model::{EfficientNetLite, device};

use crate::cli::DoctorArgs;

/// Timed forward passes after one warm-up run.
const TIMED_RUNS: u32 = 5;

/// Runs the check and prints a report on stdout.
pub fn run(args: &DoctorArgs, config: &Config) -> Result<()> {
    let variant = model::lite_variant(config)?;
    let dev = model::device(args.device.as_deref(), config)?;

    println!("delf {}", env!("CARGO_PKG_VERSION"));
    println!(
        "libtorch {} | CUDA devices: {} | cuDNN: {} | CPU threads: {}",
        delf_model::LIBTORCH_VERSION,
        tch::Cuda::device_count(),
        if tch::Cuda::cudnn_is_available() { "yes" } else { "no" },
        tch::get_num_threads()
    );
    println!("device: {} (requested: {})", device::describe(dev), args.device.as_deref().unwrap_or(&config.device));

    let weights = config.weights_path();
    let start = Instant::now();
    let (vs, net) = EfficientNetLite::load(&weights, variant, dev)?;
    let values: usize = vs.variables().values().map(tch::Tensor::numel).sum();
    tracing::info!(backbone = variant.name, weights = %weights.display(), values, "loaded backbone weights");
    println!(
        "backbone: {} | weights: {} | {:.2} M values (weights and BatchNorm statistics) | loaded in {:.0} ms",
        variant.name,
        weights.display(),
        values as f64 / 1e6,
        start.elapsed().as_secs_f64() * 1e3
    );

    let image_path: PathBuf = args.image.clone().unwrap_or_else(|| config.photos_dir().join("squirrel_cls.jpg"));
    let img = model::read_image(&image_path)?;
    let crop = center_crop_resize(&img.rgb, variant.resolution);
    let input = to_tensor(&crop, Normalization::EFFICIENTNET_LITE, dev);
    println!("image: {} ({}x{})", image_path.display(), img.width(), img.height());

    let logits = tch::no_grad(|| net.logits(&input));
    let mut total = 0.0;
    for _ in 0..TIMED_RUNS {
        let t = Instant::now();
        let out = tch::no_grad(|| net.logits(&input));
        if let tch::Device::Cuda(_) = dev {
            tch::Cuda::synchronize(0);
        }
        drop(out);
        total += t.elapsed().as_secs_f64();
    }

    let classes = ImagenetClasses::load(&config.imagenet_classes_path())?;
    println!("ImageNet top-5:");
    for (rank, p) in classes.top_k(&logits, 5)?.iter().enumerate() {
        println!("  {}. {:>5.1}%  {} (class {})", rank + 1, p.probability * 100.0, p.name, p.class);
    }
    println!(
        "forward pass: {:.1} ms per image at {r}x{r} (mean of {TIMED_RUNS} after a warm-up)",
        total * 1e3 / f64::from(TIMED_RUNS),
        r = variant.resolution
    );
    Ok(())
}
