//! `delf index build SOURCE --out DIR` (or `--features PREFIX`): the flags become build options, the pipeline is
//! delf-engine's ([`delf_engine::index_build`]), and the summary is printed.

use std::path::PathBuf;

use anyhow::{Result, bail};
use delf_build::BuildOptions;
use delf_engine::Config;
use delf_engine::index_build::{BuildInput, build_index};

use crate::cli::{IndexBuildArgs, IndexParamsArgs};
use crate::progress::StageBars;

impl IndexParamsArgs {
    /// The build options these flags ask for, writing to `out` (`--spec` falls back to `index.spec`, `--pca` to
    /// `model.pca`).
    pub(crate) fn options(&self, out: PathBuf, config: &Config) -> Result<BuildOptions> {
        config.build_options(BuildOptions {
            out,
            shards: self.shards,
            spec: self.spec.as_deref().map(str::parse).transpose()?,
            pca: self.pca.clone(),
            pca_sample: self.pca_sample,
            dim: config.pca_dim(self.dim),
            nprobe: self.nprobe,
        })
    }
}

/// Runs the build, its summary on stdout.
pub fn run(opts: &IndexBuildArgs, config: &Config) -> Result<()> {
    let input = match (&opts.source, &opts.features) {
        (_, Some(prefix)) => BuildInput::Features(prefix.clone()),
        (Some(source), None) => BuildInput::Images(source.clone()),
        (None, None) => bail!("give a SOURCE folder or list, or --features PREFIX"),
    };
    let options = opts.params.options(opts.out.clone(), config)?;
    let (device, mut bars) = (opts.params.device.as_deref(), StageBars::default());
    build_index(&input, &options, device, config, &mut bars, &mut std::io::stdout())?;
    Ok(())
}
