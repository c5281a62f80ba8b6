//! Command-line syntax of `delf`. Every subcommand of the mission exists here with its real flags; those whose
//! implementation has not landed yet say so and exit with code 2 (see [`crate::exit`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use delf_build::options::DEFAULT_PCA_SAMPLE;
use delf_engine::LogFormat;
use delf_index::DEFAULT_NPROBE;

const AFTER_HELP: &str = "\
Configuration: defaults < config file (--config / DELF_CONFIG) < environment (DELF_HOME, DELF_DEVICE,
DELF_LOG__FORMAT, ...: DELF_ + key, sections joined by __) < flags. `delf config` prints the result.

Exit codes: 0 success; 1 runtime failure; 2 usage error;
3 bad input (unreadable or corrupt image, missing file, invalid index); 4 configuration error; 5 model or weights unavailable;
6 a coordinator's Raft data is damaged (bring it back under a new id, docs/cluster-metadata.md).";

/// delf: large-scale image retrieval with attentive deep local features (DELF).
#[derive(Debug, Parser)]
#[command(name = "delf", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "DELF_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only warnings and errors in the log.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the installation: libtorch, device, default backbone and weights, on a real photo.
    Doctor(DoctorArgs),
    /// Print the effective configuration (defaults, file and environment merged) as TOML.
    Config(ConfigArgs),
    /// Ask a server's `grpc.health.v1` service whether it serves (exit 0) or not (exit 1): container health
    /// checks and Kubernetes exec probes, with the configuration's TLS.
    Health(HealthArgs),
    /// Extract DELF features (keypoints, scales, attention, 40-d descriptors) from images.
    Extract(ExtractArgs),
    /// Inspect Parquet feature shards written by `delf extract --list`.
    #[command(subcommand)]
    Features(FeaturesCommand),
    /// Fit the descriptor PCA on sample images.
    #[command(subcommand)]
    Pca(PcaCommand),
    /// Build and inspect ANN indexes (IVF + product quantization) over DELF features.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Search an index with query photos: ANN votes, geometric verification, ranked matches or "no match".
    Search(SearchArgs),
    /// Match two images: putative matches, RANSAC verification, inlier count, and a picture of the inliers.
    Match(MatchArgs),
    /// Run a cluster role (coordinator, index node or worker) as configured in `[cluster]` (docs/cluster.md).
    Serve(ServeArgs),
    /// Search through a running cluster's coordinator.
    Query(QueryArgs),
    /// Inspect a running cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Evaluate retrieval: Revisited Oxford/Paris, Google Landmarks v2, or our own pairs format.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Train the descriptor (stage 1) or the attention head (stage 2) from image-level labels.
    #[command(subcommand)]
    Train(TrainCommand),
    /// Benchmarks that print a table (speed targets live here, never in tests).
    #[command(subcommand)]
    Bench(delf_bench::BenchCommand),
}

/// `delf doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Photo to classify (default: opencv-doc's squirrel photo in the data folder).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<PathBuf>,
    /// Device to run on: cpu, cuda, cuda:N or auto (overrides the config).
    #[arg(long)]
    pub device: Option<String>,
}

/// `delf extract`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Images to extract.
    #[arg(required_unless_present = "list")]
    pub images: Vec<PathBuf>,
    /// An image list to extract in batch into Parquet feature shards: a path or URI (s3://, gs://, az://) of a
    /// text (one path/URI per line), CSV or Parquet (image_id,uri columns) list.
    #[arg(long, value_name = "URI", requires = "out", conflicts_with = "images")]
    pub list: Option<String>,
    /// With --list: the output prefix (path or URI) of the job. Without: a JSON-lines file of the features.
    #[arg(long, value_name = "PREFIX")]
    pub out: Option<String>,
    /// Print features as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// This worker's share of the units (Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX). Without it, workers claim
    /// free units dynamically.
    #[arg(long, env = "JOB_COMPLETION_INDEX", requires = "num_shards")]
    pub shard_index: Option<u32>,
    /// Number of workers the units are shared among (with --shard-index).
    #[arg(long)]
    pub num_shards: Option<u32>,
    #[command(flatten)]
    pub batch: BatchJobArgs,
    /// Device to run on: cpu, cuda, cuda:N or auto.
    #[arg(long)]
    pub device: Option<String>,
    /// PCA file (from `delf pca fit`); overrides `model.pca`. Without one, descriptors keep the backbone's width.
    #[arg(long, value_name = "FILE")]
    pub pca: Option<PathBuf>,
    /// Features kept per image (overrides `extract.max_features`).
    #[arg(long)]
    pub max_features: Option<usize>,
    /// Longest image side before the pyramid (overrides `extract.max_side`).
    #[arg(long)]
    pub max_side: Option<u32>,
}

impl ExtractArgs {
    /// Extraction settings with this command line's overrides (`--max-features`, `--max-side`) applied.
    pub fn overrides(&self, mut settings: delf_model::ExtractConfig) -> delf_model::ExtractConfig {
        if let Some(n) = self.max_features {
            settings.max_features = n;
        }
        if let Some(m) = self.max_side {
            settings.max_side = (m > 0).then_some(m);
        }
        settings
    }
}

/// Settings of a batch extraction job (`delf extract --list`).
#[derive(Debug, Clone, Args)]
pub struct BatchJobArgs {
    /// Images per work unit (one Parquet feature shard each). Fixed when the job is created.
    #[arg(long, default_value_t = 1000)]
    pub unit_size: usize,
    /// Images per forward pass (images of one size are batched; default: 8 on CUDA, 1 on CPU).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Image reads in flight.
    #[arg(long, default_value_t = delf_features::DEFAULT_FETCH_CONCURRENCY)]
    pub fetch_concurrency: usize,
    /// CPU threads decoding images (default: all cores).
    #[arg(long)]
    pub decode_threads: Option<usize>,
    /// Images per Parquet row group.
    #[arg(long, default_value_t = delf_features::ShardOptions::DEFAULT_ROW_GROUP_IMAGES)]
    pub row_group: usize,
    /// Name of this worker in commit records and leases (default: host name and process id). A restarted worker
    /// with the same name takes its leases back at once (give pods their pod name).
    #[arg(long, env = "DELFRS_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Seconds a dynamic worker's lease on a unit lasts unless renewed (it is renewed every third of that while
    /// the worker is alive); a dead worker's units are taken over after it.
    #[arg(long, default_value_t = delf_features::DEFAULT_LEASE_S)]
    pub lease_s: u64,
}

impl BatchJobArgs {
    /// The worker settings these flags ask for.
    pub fn settings(&self) -> delf_build::JobSettings {
        delf_build::JobSettings {
            unit_size: self.unit_size,
            batch: self.batch,
            fetch_concurrency: self.fetch_concurrency,
            decode_threads: self.decode_threads,
            row_group: self.row_group,
            worker_id: self.worker_id.clone(),
            lease_s: self.lease_s,
        }
    }
}

/// `delf features ...`.
#[derive(Debug, Subcommand)]
pub enum FeaturesCommand {
    /// Counts, schema and failures of a batch extraction job's output.
    Inspect(FeaturesInspectArgs),
}

/// `delf features inspect`.
#[derive(Debug, Args)]
pub struct FeaturesInspectArgs {
    /// The job's output prefix (path or URI).
    pub prefix: String,
    /// Print the manifest (job and commit records) as JSON.
    #[arg(long)]
    pub json: bool,
    /// List every image that failed, with the reason.
    #[arg(long)]
    pub errors: bool,
    /// Re-read every committed file: checksums, row counts, schema (exit code 3 on a mismatch).
    #[arg(long)]
    pub verify: bool,
}

/// `delf pca ...`.
#[derive(Debug, Subcommand)]
pub enum PcaCommand {
    /// Fit a PCA on the raw descriptors of sample images and write it as safetensors.
    Fit {
        /// Sample images (their raw top-N descriptors are pooled).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Output dimensions (reference: 40).
        #[arg(long, default_value_t = 40)]
        dim: usize,
        /// Whiten the projected components.
        #[arg(long)]
        whiten: bool,
        /// Device to run on: cpu, cuda, cuda:N or auto.
        #[arg(long)]
        device: Option<String>,
    },
}

/// `delf index ...`.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Build an index from a folder or an image list (extract, resumable; fit the PCA; train; shard; manifest), or
    /// from the Parquet feature shards of a batch extraction job (--features).
    Build(IndexBuildArgs),
    /// Distributed build, step 1 of 3: train the PCA (if needed) and codebooks on a completed extraction job's
    /// features and write them, with the build plan, under an index prefix (docs/operations.md, "Re-indexing").
    Train(IndexTrainArgs),
    /// Distributed build, step 2 of 3: one encode worker of an Indexed Job builds its shards from their own
    /// feature units and uploads and commits each once; a rerun skips committed shards.
    Encode(IndexEncodeArgs),
    /// Distributed build, step 3 of 3: write the index manifest once every shard is committed.
    Finalize {
        /// The index prefix (path or URI).
        index: String,
        /// Seconds to wait for the train step's plan and every shard's commit before giving up (0: do not wait),
        /// so that all three steps can be started at once (the Helm chart does).
        #[arg(long, default_value_t = 0)]
        wait_s: u64,
    },
    /// Print an index's manifest, parameters and sizes.
    Inspect {
        /// Index directory.
        index: PathBuf,
    },
    /// Copy an index (manifest, PCA, shard files; not the extraction job) to object storage, where index nodes
    /// and `delf cluster register` read it. The manifest goes last, so a reader never sees a half-copied index.
    Push {
        /// Index directory.
        index: PathBuf,
        /// Destination prefix: s3://bucket/prefix, gs://, az://, or a local folder.
        uri: String,
    },
}

/// `delf index build`.
#[derive(Debug, Clone, Args)]
pub struct IndexBuildArgs {
    /// Folder (searched recursively) or list of images to extract and index: a local text list of paths, or an
    /// object-store list (s3://, gs://, az://; text, CSV or Parquet).
    #[arg(required_unless_present = "features", conflicts_with = "features")]
    pub source: Option<String>,
    /// Instead of SOURCE: the output prefix (path or URI) of a completed `delf extract --list` job, indexed from
    /// its Parquet feature shards without extracting again.
    #[arg(long, value_name = "PREFIX")]
    pub features: Option<String>,
    /// Index directory to write (also holds the extraction job, so a rerun resumes).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub params: IndexParamsArgs,
}

/// What an index is built with: the flags `delf index build` and `delf index train` share.
#[derive(Debug, Clone, Args)]
pub struct IndexParamsArgs {
    /// Number of shards (whole extraction units per shard: unit u goes to shard u % shards).
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Index structure, e.g. IVF256,PQ20x8r (default: chosen from the number of descriptors).
    #[arg(long)]
    pub spec: Option<String>,
    /// Use this fitted PCA instead of fitting one (default: model.pca, else fit on a sample).
    #[arg(long, value_name = "FILE")]
    pub pca: Option<PathBuf>,
    /// Images sampled evenly to fit the PCA.
    #[arg(long, default_value_t = DEFAULT_PCA_SAMPLE)]
    pub pca_sample: usize,
    /// Descriptor dimensions after PCA (default: index.pca_dim, else 40).
    #[arg(long)]
    pub dim: Option<i64>,
    /// Cells probed per query descriptor, stored as the index's default.
    #[arg(long, default_value_t = DEFAULT_NPROBE)]
    pub nprobe: usize,
    /// Device to run on: cpu, cuda, cuda:N or auto.
    #[arg(long)]
    pub device: Option<String>,
}

/// `delf index train`.
#[derive(Debug, Clone, Args)]
pub struct IndexTrainArgs {
    /// The output prefix (path or URI) of a completed `delf extract --list` job.
    #[arg(long, value_name = "PREFIX")]
    pub features: String,
    /// The index prefix to write (path or URI: s3://, gs://, az://).
    #[arg(long, value_name = "PREFIX")]
    pub index: String,
    #[command(flatten)]
    pub params: IndexParamsArgs,
}

/// `delf index encode`.
#[derive(Debug, Clone, Args)]
pub struct IndexEncodeArgs {
    /// The index prefix the train step wrote (path or URI).
    #[arg(long, value_name = "PREFIX")]
    pub index: String,
    /// This worker's index (Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX); it builds shards i, i + workers, ...
    #[arg(long, env = "JOB_COMPLETION_INDEX", default_value_t = 0)]
    pub worker: u32,
    /// Number of encode workers (the Job's completions).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Name of this worker in commit records (default: host name and process id).
    #[arg(long, env = "DELFRS_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Seconds to wait for the train step's plan before giving up (0: do not wait).
    #[arg(long, default_value_t = 0)]
    pub wait_s: u64,
    /// Device to run on (a job of raw descriptors is reduced by the model): cpu, cuda, cuda:N or auto.
    #[arg(long)]
    pub device: Option<String>,
}

/// `delf search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Index directory.
    #[arg(long)]
    pub index: PathBuf,
    /// Query images.
    #[arg(required = true)]
    pub queries: Vec<PathBuf>,
    /// How much to retrieve and verify.
    #[command(flatten)]
    pub retrieval: RetrievalArgs,
    /// One JSON object per query on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write an HTML report with thumbnails and inlier lines.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Device to run on: cpu, cuda, cuda:N or auto.
    #[arg(long)]
    pub device: Option<String>,
}

/// The retrieval flags of `delf search` (one process) and `delf query` (through a cluster), the same knobs on both.
#[derive(Debug, Clone, Args)]
pub struct RetrievalArgs {
    /// Results per query at most.
    #[arg(long, default_value_t = 10)]
    pub top: u32,
    /// Best-voted candidates verified geometrically (default: search.candidates, 100 as in the reference; for
    /// `delf query`, the coordinator's).
    #[arg(long)]
    pub candidates: Option<u32>,
    /// Cells (inverted lists) probed per query descriptor (default: the index's).
    #[arg(long)]
    pub nprobe: Option<u32>,
    /// Inliers a result needs (default: search.min_inliers; for `delf query`, the coordinator's).
    #[arg(long)]
    pub min_inliers: Option<u32>,
}

/// `delf match`.
#[derive(Debug, Args)]
pub struct MatchArgs {
    /// First image (the query).
    pub a: PathBuf,
    /// Second image (the database image).
    pub b: PathBuf,
    /// Draw both images side by side with the inlier correspondences (PNG).
    #[arg(long, value_name = "PNG")]
    pub out: Option<PathBuf>,
    /// Print the result, with every correspondence, as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Geometric model (overrides `verify.model`).
    #[arg(long, value_enum)]
    pub model: Option<ModelArg>,
    /// Leave outlier correspondences out of the picture.
    #[arg(long)]
    pub no_outliers: bool,
    /// PCA file (overrides `model.pca`).
    #[arg(long, value_name = "FILE")]
    pub pca: Option<PathBuf>,
    /// Device to run on: cpu, cuda, cuda:N or auto.
    #[arg(long)]
    pub device: Option<String>,
}

/// A geometric model on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// 6 DoF (the reference).
    Affine,
    /// 8 DoF.
    Homography,
}

/// `delf config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Instead of printing the configuration, check that `delf COMMAND...` parses (flags and values) and that the
    /// configuration loads (unknown keys are errors): for deployment manifests. Exit 0, or 2 with the reason.
    #[arg(long)]
    pub check: bool,
    /// The command line to check (without `delf`), with `--check`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, requires = "check")]
    pub command: Vec<String>,
}

/// `delf health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// `host:port` of any delf server.
    pub addr: String,
    /// The service asked about (default: the server as a whole); e.g. `delf.v1.IndexNode`.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Milliseconds to wait for the answer.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

/// `delf serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The role to run.
    #[arg(value_enum)]
    pub role: Role,
    /// `host:port` to listen on (default for the coordinator: `cluster.coordinator`; required for the others).
    #[arg(long)]
    pub listen: Option<String>,
    /// The shard an index node of a static cluster serves (under Raft-managed metadata, `[meta]`, shards are
    /// assigned by the coordinators instead).
    #[arg(long)]
    pub shard: Option<u32>,
    /// Node name under Raft-managed metadata (stable across restarts; default: the advertised address).
    #[arg(long)]
    pub node: Option<String>,
    /// `host:port` the coordinators reach this node at (default: `--listen`).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Device of a worker's extraction (`cpu`, `cuda`, `cuda:N`; default: the `device` setting).
    #[arg(long)]
    pub device: Option<String>,
    /// A worker that only verifies (no model loaded; extraction requests get UNIMPLEMENTED).
    #[arg(long)]
    pub no_extract: bool,
    /// Serve Prometheus metrics on `http://HOST:PORT/metrics`.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
}

/// `delf query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Coordinator `host:port` (default: `cluster.coordinator`).
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Query photos, sent as they are (extracted on a worker).
    #[arg(required = true)]
    pub queries: Vec<PathBuf>,
    /// How much to retrieve and verify.
    #[command(flatten)]
    pub retrieval: RetrievalArgs,
    /// When some shard has no answering replica: `partial` (degraded answer) or `fail` (default: the coordinator's).
    #[arg(long, value_enum)]
    pub on_shard_failure: Option<FailurePolicyArg>,
    /// Milliseconds for each query (default: the coordinator's).
    #[arg(long)]
    pub deadline_ms: Option<u32>,
    /// One JSON object per query on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `--on-shard-failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailurePolicyArg {
    /// Answer from the shards that answered, flagged as degraded.
    Partial,
    /// Fail the query.
    Fail,
}

/// `delf cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Shards, replicas and workers as the coordinator sees them (each replica and worker is asked now).
    Status {
        /// Coordinator `host:port` (default: `cluster.coordinator`).
        #[arg(long)]
        coordinator: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Raft-managed clusters: every coordinator's Raft view, the index versions, the nodes and the assignment.
    Meta {
        /// The replicated state as JSON (read linearizably) instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Registers a new index version (its shards are assigned to index nodes, which load it next to the active
    /// version).
    Register {
        /// Version name (unique).
        version: String,
        /// The index folder or object-store URI (`delf index build --out`).
        #[arg(long)]
        index: String,
        /// Index name it will serve (default: `meta.index_name`).
        #[arg(long)]
        name: Option<String>,
        /// Replicas per shard.
        #[arg(long, default_value_t = 2)]
        replicas: u32,
    },
    /// Switches queries to a registered version once every shard has a ready replica (atomically: a query runs
    /// on one version from start to end); the previously active version is retired.
    Activate {
        /// Version name.
        version: String,
        /// Keep trying for up to this many seconds while some shard is not ready yet.
        #[arg(long, default_value_t = 0)]
        wait_secs: u64,
    },
    /// Retires a version that is not active (its shards are unloaded).
    Retire {
        /// Version name.
        version: String,
    },
    /// Sets an operator's label kept with the cluster's metadata (`delf cluster meta --json` shows them); an empty
    /// value removes it.
    Label {
        /// Label key.
        key: String,
        /// Value (empty removes the label).
        value: String,
    },
    /// Evens out shards per index node (e.g. after adding nodes): replicas move from the most to the least loaded
    /// nodes, each loaded on its new node before the old one lets it go.
    Rebalance {
        /// Wait up to this many seconds for the moves to finish (0: return once they are started).
        #[arg(long, default_value_t = 0)]
        wait_secs: u64,
    },
    /// Adds or removes a coordinator (Raft voter), one change at a time.
    Members {
        #[command(subcommand)]
        change: MembersCommand,
    },
}

/// `delf cluster members ...`.
#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Adds coordinator ID at ADDRESS (start it first with `meta.join = true` and `DELF_META__ID=ID`).
    Add {
        /// Raft id (new, never used before).
        id: u64,
        /// `host:port` of its gRPC port.
        address: String,
    },
    /// Removes coordinator ID (stop it afterwards).
    Remove {
        /// Raft id.
        id: u64,
    },
}

/// A cluster role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Fans queries out to index nodes, merges, aggregates votes, assigns verification to workers.
    Coordinator,
    /// Holds one PQ shard and answers batched descriptor searches.
    IndexNode,
    /// Extracts features and verifies candidates.
    Worker,
}

/// `delf eval ...`.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Revisited Oxford/Paris: mAP and mP@1/5/10 for Easy, Medium and Hard, exactly as the protocol computes them.
    Revisitop {
        /// Ground-truth pickle (gnd_roxford5k.pkl, gnd_rparis6k.pkl).
        #[arg(long)]
        gnd: PathBuf,
        /// Folder with the dataset's images (`NAME.jpg`, or in a `jpg/` subfolder).
        #[arg(long)]
        images: PathBuf,
        /// Index of the database images. Built there from the ground truth's `imlist` when it holds no index yet
        /// (an interrupted build resumes); default `DELF_HOME/eval/GND_STEM`.
        #[arg(long)]
        index: Option<PathBuf>,
        /// Device for extraction (queries, and the database when the index is built).
        #[arg(long)]
        device: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write an HTML page with every query's APs and first results.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Google Landmarks v2: retrieval mAP@100 or recognition GAP from Kaggle CSVs (task read from the header).
    Gldv2 {
        /// Solution CSV (`id,images,Usage` or `id,landmarks,Usage`).
        #[arg(long)]
        solution: PathBuf,
        /// Predictions CSV (`id,images` or `id,landmarks` with "LABEL SCORE").
        #[arg(long)]
        predictions: PathBuf,
        /// GAP: skip predictions for queries without a landmark (default: they count as wrong, as on Kaggle).
        #[arg(long)]
        ignore_non_landmark_queries: bool,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Our own pairs format: mAP, recall@1/5 and the distractor false-positive rate across score thresholds.
    Pairs {
        /// Ground truth JSON: {"queries": [{"query": "a.jpg", "positives": ["b.jpg"]}, ...]} (no positives =
        /// a distractor).
        #[arg(long)]
        gt: PathBuf,
        /// Search this index with the queries (paths relative to --queries-dir).
        #[arg(long, conflicts_with = "results", required_unless_present = "results")]
        index: Option<PathBuf>,
        /// Folder of the query images (default: the ground truth's folder).
        #[arg(long)]
        queries_dir: Option<PathBuf>,
        /// Instead of --index: answers already computed, as the JSON lines of `delf search --json` or
        /// `delf query --json`.
        #[arg(long)]
        results: Option<PathBuf>,
        /// Device for query extraction.
        #[arg(long)]
        device: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write an HTML page with the threshold curve and every query's outcome.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// The robustness benchmark: hard views (rotation over the whole circle, scale, perspective, blur, JPEG, tone,
    /// noise, occlusion) of real photos, other real views and unrelated distractors, searched in an index of the
    /// originals and unrelated photos; R@1, mAP and TPR at FPR 0 per transformation, beside RootSIFT + RANSAC.
    Views(delf_bench::views::EvalViewsArgs),
}

/// `delf train ...`.
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Stage 1: fine-tune the backbone with a softmax classifier on image-level labels; writes
    /// OUT/backbone.safetensors (use it as model.weights).
    Descriptor(TrainArgs),
    /// Stage 2: train the attention head on the frozen backbone; writes OUT/attention.safetensors (use it as
    /// model.attention).
    Attention(TrainArgs),
}

/// Options shared by both training stages. A run resumes from OUT/checkpoint.safetensors when it exists.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Labels CSV, local or object storage: a `landmark_id` or `label` column and a `path`/`uri`/`image` column
    /// (or `id` with --images, GLDv2 layout).
    #[arg(long)]
    pub labels: String,
    /// Output folder: checkpoint, metrics.jsonl and the result.
    #[arg(long)]
    pub out: PathBuf,
    /// Images root for label files that name images by GLDv2 id only.
    #[arg(long, value_name = "DIR")]
    pub images: Option<String>,
    /// Starting recipe: `paper` (section 4.2 crops) or `instance` (each photo its own class: strong crops,
    /// rotations, colour and blur).
    #[arg(long, default_value = "paper")]
    pub recipe: String,
    /// Backbone weights to start from (default: model.weights, i.e. the ImageNet weights; for stage 2, a stage-1
    /// OUT/backbone.safetensors).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Passes over the training split.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Images per step.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Views of every image per epoch.
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Input side in pixels.
    #[arg(long)]
    pub input_size: Option<u32>,
    /// Smallest per-batch downscale factor of the input (1 = fixed size).
    #[arg(long)]
    pub min_input_scale: Option<f64>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Warm-up steps.
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Share of each class's images held out for validation.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Cut every photo into an N x N grid whose cells are classes of their own (instance-level training).
    #[arg(long)]
    pub regions: Option<u32>,
    /// Seed of split, order, views and initial weights.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Steps between checkpoints.
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Stop with a checkpoint after this many steps in total (resume later with the same command).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Device: cpu, cuda, cuda:N or auto.
    #[arg(long)]
    pub device: Option<String>,
    /// CPU threads decoding and rendering views (default: all cores).
    #[arg(long)]
    pub loader_threads: Option<usize>,
    /// Steps between log lines.
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}
