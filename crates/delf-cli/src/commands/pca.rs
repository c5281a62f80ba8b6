//! `delf pca fit IMAGE... --out FILE`: fits the descriptor PCA on the raw top-N descriptors of sample images.

use anyhow::{Result, bail};
use delf_engine::Config;
use delf_engine::model;
use delf_model::Pca;

use crate::cli::PcaCommand;

/// Runs `delf pca fit`.
pub fn run(command: &PcaCommand, config: &Config) -> Result<()> {
    let PcaCommand::Fit { images, out, dim, whiten, device } = command;
    let device = model::device(device.as_deref(), config)?;
    let extractor = model::extractor(config, config.extract.to_config(), None, device)?;
    if extractor.dim() != extractor.backbone().channels() as usize {
        bail!("model.pca is set: a PCA is fitted on raw descriptors, so unset it (or DELF_MODEL__PCA) to fit one");
    }
    let mut samples = Vec::new();
    for path in images {
        let img = model::read_image(path)?;
        samples.push(extractor.raw_descriptors(&img.rgb)?);
    }
    let samples = tch::Tensor::cat(&samples, 0);
    let n = samples.size()[0];
    let pca = Pca::fit(&samples, *dim, *whiten, &extractor.backbone().name())?;
    pca.save(out)?;
    println!(
        "PCA {} -> {} dims{} fitted on {n} descriptors from {} images of {}: {}",
        pca.dim_in(),
        pca.dim_out(),
        if *whiten { " (whitened)" } else { "" },
        images.len(),
        extractor.backbone().name(),
        out.display()
    );
    Ok(())
}
