//! The `delf` configuration: built-in defaults, then a TOML file, then `DELF_*` environment variables.
//!
//! Environment keys are `DELF_` + the key, with `__` between section and key: `DELF_HOME`, `DELF_DEVICE`,
//! `DELF_LOG__FORMAT=json`, `DELF_MODEL__WEIGHTS=/path`. Unknown keys in the file are an error, so a typo
//! cannot silently fall back to a default.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folder with models and data installed by `scripts/setup.sh` (env `DELF_HOME`).
    pub home: PathBuf,
    /// Compute device: `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// CPU threads for libtorch and our own kernels (0 = all cores).
    pub threads: usize,
    /// A folder where extracted features are kept by pixels, settings and build (env `DELF_FEATURE_CACHE`;
    /// empty = none): the same image is then run through the network once, whichever command or process asks
    /// again. `make test` gives each test run one, shared by all tests. Benchmarks never use it.
    pub feature_cache: Option<PathBuf>,
    /// Logging.
    pub log: LogConfig,
    /// The network.
    pub model: ModelConfig,
    /// Extraction settings.
    pub extract: ExtractSettings,
    /// Matching and geometric verification.
    pub verify: delf_verify::VerifySettings,
    /// Index structure of new indexes.
    pub index: IndexSettings,
    /// Retrieval defaults of `delf search` (and of the cluster coordinator).
    pub search: SearchSettings,
    /// The cluster (docs/cluster.md): where the index is, who serves which shard, workers, deadlines, token.
    pub cluster: delf_cluster::ClusterConfig,
    /// Raft-managed cluster metadata (docs/cluster-metadata.md); empty `coordinators` = static membership.
    pub meta: delf_meta::MetaConfig,
}

/// `[index]` section (docs/index.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexSettings {
    /// Structure of indexes that `delf index build` (and `delf eval`) make when `--spec` is not given, e.g.
    /// `IVF4096,PQ20x4fsr` (env `DELF_INDEX__SPEC`); empty = chosen from the descriptor count
    /// (`IndexSpec::auto`, `PQ20x8r`).
    pub spec: Option<String>,
    /// Descriptor dimensions after the PCA of new indexes when `--dim` is not given (env `DELF_INDEX__PCA_DIM`);
    /// unset = 40, the reference's.
    pub pca_dim: Option<i64>,
}

/// `[search]` section (docs/search.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSettings {
    /// Inliers a result needs; higher than `verify.min_inliers` because a search verifies many candidates and the
    /// best chance match grows with their number (measured in docs/search.md).
    pub min_inliers: usize,
    /// Best-voted candidates verified geometrically (reference: 100).
    pub candidates: usize,
    /// In-plane rotations a query is searched at, evenly spaced over the circle (1 = upright only; 8 = every 45
    /// degrees): the features are not rotation invariant, so a turned copy of a photo is found only through a
    /// rotation close to its own (docs/search.md).
    pub rotations: u32,
    /// The upright query is searched first; the other rotations only when its best result has fewer inliers than
    /// this (0 = always all rotations).
    pub rotations_below: usize,
    /// Longest side of the query image in each rotated pass (0 = as extracted upright).
    pub rotation_max_side: u32,
    /// Largest pyramid scale of each rotated pass.
    pub rotation_max_scale: f64,
}

impl SearchSettings {
    /// Default [`SearchSettings::rotations`]: every 45 degrees, so no turn is more than 22.5 degrees from one
    /// searched (measured tolerance and cost: docs/search.md).
    pub const DEFAULT_ROTATIONS: u32 = 8;
    /// Default [`SearchSettings::rotations_below`]: above the best distractor scores measured (19 on the quick
    /// robustness benchmark with every rotation, 15 on the quickstart split), so an upright query that found its
    /// photo stops there.
    pub const DEFAULT_ROTATIONS_BELOW: usize = 30;

    /// What each rotated pass may cost.
    pub fn rotated_pass(&self) -> delf_model::RotatedPass {
        delf_model::RotatedPass {
            max_side: if self.rotation_max_side == 0 { u32::MAX } else { self.rotation_max_side },
            max_scale: self.rotation_max_scale,
        }
    }

    /// The query rotations, degrees: 0 first, then every `360 / rotations`.
    pub fn rotation_angles(&self) -> Vec<f64> {
        let n = self.rotations.max(1);
        (0..n).map(|i| f64::from(i) * 360.0 / f64::from(n)).collect()
    }
}

impl Default for SearchSettings {
    fn default() -> Self {
        let d = delf_search::RetrievalConfig::default();
        Self {
            min_inliers: d.verify.policy.min_inliers,
            candidates: d.candidates,
            rotations: Self::DEFAULT_ROTATIONS,
            rotations_below: Self::DEFAULT_ROTATIONS_BELOW,
            rotation_max_side: 640,
            rotation_max_scale: 1.4143,
        }
    }
}

/// `[extract]` section; defaults are the reference's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractSettings {
    /// Image pyramid scales.
    pub scales: Vec<f64>,
    /// Longest side before the pyramid (0 = no limit).
    pub max_side: u32,
    /// Features kept per image.
    pub max_features: usize,
    /// Minimum attention score (unset = keep all; the feature-norm default has no calibrated threshold).
    pub score_threshold: Option<f32>,
    /// Arithmetic of the network: `fp32`, `fp16` (CUDA autocast; CUDA only) or `bf16` (any device). A choice of
    /// the machine that runs the network, not of the index: stored settings never impose it (see
    /// [`ExtractSettings::from_stored`]).
    pub precision: delf_model::Precision,
    /// The older spelling of `precision = "fp16"` (`true`), still read from configurations and from index
    /// manifests and jobs written before bf16 existed; never written.
    #[serde(skip_serializing)]
    pub half_precision: Option<bool>,
    /// Cells whose core is padding, fill or a blank area give no keypoint: the smallest grey-level standard
    /// deviation of a kept cell's core (0-255 units); unset keeps every cell (docs/extraction.md). Index
    /// manifests written before this setting existed read as unset, so their fingerprints still match.
    #[serde(default = "ExtractSettings::unset_min_texture")]
    pub min_texture: Option<f32>,
}

impl Default for ExtractSettings {
    fn default() -> Self {
        let d = delf_model::ExtractConfig::default();
        Self {
            scales: d.scales,
            max_side: d.max_side.unwrap_or(0),
            max_features: d.max_features,
            score_threshold: d.score_threshold,
            precision: d.precision,
            half_precision: None,
            min_texture: d.min_texture,
        }
    }
}

impl ExtractSettings {
    fn unset_min_texture() -> Option<f32> {
        None
    }

    /// The settings an index manifest or extraction job recorded (`what` names it in the error), with the
    /// arithmetic of this machine's configuration: an index built with fp16 on a GPU is searched in fp32 on a CPU.
    pub fn from_stored(stored: &serde_json::Value, what: &str, config: &Config) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut settings: Self = serde_json::from_value(stored.clone())
            .with_context(|| format!("the {what}'s extraction settings are not readable by this build"))?;
        settings.precision = config.extract.precision();
        settings.half_precision = None;
        Ok(settings)
    }

    /// The numeric precision these settings ask for (`half_precision = true` of older files reads as fp16).
    pub fn precision(&self) -> delf_model::Precision {
        match (self.precision, self.half_precision) {
            (delf_model::Precision::Fp32, Some(true)) => delf_model::Precision::Fp16,
            (p, _) => p,
        }
    }

    /// The settings of a model-crate configuration (the inverse of [`ExtractSettings::to_config`]).
    pub fn from_config(c: &delf_model::ExtractConfig) -> Self {
        Self {
            scales: c.scales.clone(),
            max_side: c.max_side.unwrap_or(0),
            max_features: c.max_features,
            score_threshold: c.score_threshold,
            precision: c.precision,
            half_precision: None,
            min_texture: c.min_texture,
        }
    }

    /// As the model crate's configuration.
    pub fn to_config(&self) -> delf_model::ExtractConfig {
        delf_model::ExtractConfig {
            scales: self.scales.clone(),
            max_side: (self.max_side > 0).then_some(self.max_side),
            max_features: self.max_features,
            score_threshold: self.score_threshold,
            precision: self.precision(),
            min_texture: self.min_texture,
            ..delf_model::ExtractConfig::default()
        }
    }
}

/// `[log]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `delf=debug,tower=warn` (`RUST_LOG` overrides it).
    pub level: String,
}

/// `[model]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Backbone name; the embedded default is `efficientnet-lite0`.
    pub backbone: String,
    /// Backbone weights (safetensors); empty = `<home>/models/<backbone>.safetensors`.
    pub weights: Option<PathBuf>,
    /// Feature layer of the backbone (`blockN`, `blockN.expand`, `head`); empty = the backbone's default.
    pub layer: Option<String>,
    /// Descriptor PCA (from `delf pca fit`); empty = no reduction.
    pub pca: Option<PathBuf>,
    /// Trained attention head (safetensors), or `feature-norm`; empty = the head that ships for the default
    /// backbone (docs/training.md), feature norms for other backbones.
    pub attention: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            home: default_home(std::env::var_os("HOME").map(PathBuf::from)),
            device: "auto".into(),
            threads: 0,
            feature_cache: None,
            log: LogConfig::default(),
            model: ModelConfig::default(),
            extract: ExtractSettings::default(),
            verify: delf_verify::VerifySettings::default(),
            index: IndexSettings::default(),
            search: SearchSettings::default(),
            cluster: delf_cluster::ClusterConfig::default(),
            meta: delf_meta::MetaConfig::default(),
        }
    }
}

/// The installation that `scripts/setup.sh` made in the checkout this binary was built from.
const CHECKOUT_HOME: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/delf");

/// Where models and data are found when neither `home` nor `DELF_HOME` says: `~/.cache/delf` when models are
/// installed there, else the checkout's `.cache/delf` when `scripts/setup.sh` installed them there (so the binary,
/// `target/release/delf` or a `make install` copy, works from any folder), else `~/.cache/delf`.
pub fn default_home(user_home: Option<PathBuf>) -> PathBuf {
    let user = user_home.map_or_else(|| PathBuf::from(".delf"), |h| h.join(".cache/delf"));
    let checkout = Path::new(CHECKOUT_HOME);
    if !user.join("models").is_dir() && checkout.join("models").is_dir() {
        return std::path::absolute(checkout).unwrap_or_else(|_| checkout.to_path_buf());
    }
    user
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Human, level: "info".into() }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self { backbone: "efficientnet-lite0".into(), weights: None, layer: None, pca: None, attention: None }
    }
}

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named file does not exist.
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    /// Parsing or merging failed.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// A `[verify]` value out of its range.
    #[error("invalid configuration: verify.{0}")]
    OutOfRange(String),
}

impl Config {
    /// The retrieval settings of `[search]` and `[verify]` (the ANN parameters come from each index:
    /// [`delf_search::RetrievalConfig::for_index`]).
    pub fn retrieval(&self) -> delf_search::RetrievalConfig {
        let mut rc = delf_search::RetrievalConfig { candidates: self.search.candidates.max(1), ..Default::default() };
        rc.verify = self.verify.to_config();
        rc.verify.policy.min_inliers = self.search.min_inliers;
        rc.rotations = self.search.rotation_angles().split_off(1);
        rc.rotations_below = self.search.rotations_below;
        rc
    }

    /// Merges defaults, the optional file, and `DELF_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // `DELF_FEATURE_CACHE_BUILD` is read by the feature cache itself (delf-model `cache`), not a setting.
        figment = figment.merge(Env::prefixed("DELF_").split("__").ignore(&["config", "feature_cache_build"]));
        let config: Self = figment.extract().map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        config.verify.check().map_err(ConfigError::OutOfRange)?;
        Ok(config)
    }

    /// The weights file of the configured backbone.
    pub fn weights_path(&self) -> PathBuf {
        self.model
            .weights
            .clone()
            .unwrap_or_else(|| self.home.join("models").join(format!("{}.safetensors", self.model.backbone)))
    }

    /// The folder of test and demo photos installed by `scripts/setup.sh`.
    pub fn photos_dir(&self) -> PathBuf {
        self.home.join("data/opencv-doc")
    }

    /// The ImageNet class-name list installed by `scripts/setup.sh`.
    pub fn imagenet_classes_path(&self) -> PathBuf {
        self.home.join("data/imagenet_classes.txt")
    }

    /// As TOML, for `delf config`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.cluster.token.is_some() {
            shown.cluster.token = Some("(set, not shown)".into());
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature is fixed by figment.
mod tests {
    use super::*;

    #[test]
    fn file_and_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "delf.toml",
                "device = \"cpu\"\n[log]\nformat = \"json\"\n[model]\nweights = \"/w.safetensors\"\n",
            )?;
            jail.set_env("DELF_HOME", "/data/delf");
            jail.set_env("DELF_LOG__LEVEL", "debug");
            let c = Config::load(Some(Path::new("delf.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.device, "cpu");
            assert_eq!(c.home, PathBuf::from("/data/delf"));
            assert_eq!(c.log.format, LogFormat::Json);
            assert_eq!(c.log.level, "debug");
            assert_eq!(c.weights_path(), PathBuf::from("/w.safetensors"));
            jail.set_env("DELF_DEVICE", "cuda:1");
            let c = Config::load(Some(Path::new("delf.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.device, "cuda:1");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "devcie = \"cpu\"\n")?;
            let err = Config::load(Some(Path::new("typo.toml"))).unwrap_err().to_string();
            assert!(err.contains("devcie"), "{err}");
            let err = Config::load(Some(Path::new("nope.toml"))).unwrap_err();
            assert!(matches!(err, ConfigError::Missing(_)));
            Ok(())
        });
    }

    #[test]
    fn the_home_is_the_users_when_models_are_there_else_the_checkouts() {
        let user = tempfile::tempdir().unwrap();
        let checkout_has_models = Path::new(CHECKOUT_HOME).join("models").is_dir();
        let found = default_home(Some(user.path().to_path_buf()));
        if checkout_has_models {
            assert!(found.ends_with(".cache/delf") && found.join("models").is_dir(), "{}", found.display());
        } else {
            assert_eq!(found, user.path().join(".cache/delf"));
        }
        std::fs::create_dir_all(user.path().join(".cache/delf/models")).unwrap();
        assert_eq!(default_home(Some(user.path().to_path_buf())), user.path().join(".cache/delf"));
    }

    #[test]
    fn default_weights_live_under_home() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("DELF_HOME", "/h");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.weights_path(), PathBuf::from("/h/models/efficientnet-lite0.safetensors"));
            Ok(())
        });
    }

    /// The arithmetic is this machine's: a manifest of an index built with fp16 on a GPU (the older
    /// `half_precision` key) is searched in the configured precision; the older key still works in configurations.
    #[test]
    fn stored_settings_take_the_configured_precision() {
        figment::Jail::expect_with(|jail| {
            let stored = serde_json::json!({"scales": [1.0], "max_side": 512, "max_features": 10,
                                            "score_threshold": null, "half_precision": true});
            let c = Config::load(None).map_err(|e| e.to_string())?;
            let s = ExtractSettings::from_stored(&stored, "manifest", &c).map_err(|e| e.to_string())?;
            assert_eq!(s.to_config().precision, delf_model::Precision::Fp32);
            assert_eq!(s.to_config().max_side, Some(512));
            jail.set_env("DELF_EXTRACT__PRECISION", "bf16");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            let s = ExtractSettings::from_stored(&stored, "manifest", &c).map_err(|e| e.to_string())?;
            assert_eq!(s.to_config().precision, delf_model::Precision::Bf16);
            jail.set_env("DELF_EXTRACT__PRECISION", "fp32");
            jail.set_env("DELF_EXTRACT__HALF_PRECISION", "true");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.extract.to_config().precision, delf_model::Precision::Fp16);
            jail.set_env("DELF_EXTRACT__PRECISION", "fp8");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("fp8"), "{err}");
            let bad = serde_json::json!({"scales": "all"});
            let err = ExtractSettings::from_stored(&bad, "manifest", &c).unwrap_err().to_string();
            assert!(err.contains("manifest's extraction settings"), "{err}");
            Ok(())
        });
    }
}
