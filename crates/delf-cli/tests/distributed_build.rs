//! The index build as parallel jobs, as a re-index runs it: real `delf index train | encode | finalize` processes
//! against a real S3-compatible server, one encode worker killed between a shard's upload and its commit and
//! restarted, two workers racing on the same shards. Every shard is committed exactly once, nothing is left that
//! no record names, the manifest appears only at the end, and the shard files are byte for byte those of the
//! one-process `delf index build --features`.
//!
//! The features are a job written from synthetic descriptors (`delf_build::vectors_job`): these tests are about
//! the build's steps and storage, not extraction (`batch_extract.rs` runs the network on real photos).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use delf_build::distributed::{BEFORE_COMMIT, COMMITS_DIR};
use delf_build::vectors_job::{VectorsJob, pseudo_images, write_vectors_job};
use delf_core::FeatureSet;
use delf_index::SyntheticDescriptors;
use delf_storage::{Location, Stores};
use delf_testkit::S3Server;

const DIM: usize = 40;
const SPEC: &str = "IVF16,PQ20x8r";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// 48 pseudo-images of 150 synthetic 40-d descriptors each.
fn images() -> Vec<(String, FeatureSet)> {
    pseudo_images(&SyntheticDescriptors::new(DIM, 64, 0.3, 7).sample(48 * 150, 100), DIM, 150, "test/vectors")
}

/// A PCA file, as a job that applied one records it (fitted on random 64-d data to 40-d).
fn pca_bytes(dir: &Path) -> Bytes {
    let x = tch::Tensor::randn([500, 64], (tch::Kind::Float, tch::Device::Cpu));
    let path = dir.join("pca.safetensors");
    delf_model::Pca::fit(&x, DIM, false, "test").unwrap().save(&path).unwrap();
    Bytes::from(std::fs::read(path).unwrap())
}

struct Env {
    server: S3Server,
    home: tempfile::TempDir,
}

impl Env {
    fn delf(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_delf"));
        c.env("DELF_LOG__LEVEL", "warn").env("DELF_HOME", self.home.path()).envs(self.server.options());
        c
    }

    fn encode(&self, index: &str, worker: u32, workers: u32, name: &str) -> Command {
        let mut c = self.delf();
        let (w, n) = (worker.to_string(), workers.to_string());
        c.args(["index", "encode", "--index", index, "--worker", &w, "--workers", &n, "--worker-id", name]);
        c
    }
}

fn commits(rt: &tokio::runtime::Runtime, loc: &Location) -> BTreeSet<String> {
    rt.block_on(loc.list(COMMITS_DIR))
        .unwrap()
        .into_iter()
        .map(|m| m.location.filename().unwrap().to_string())
        .collect()
}

#[test]
fn killed_and_racing_encode_workers_commit_every_shard_once_and_match_the_one_process_build() {
    let server = S3Server::start().expect("S3-compatible test server");
    server.create_bucket("features").unwrap();
    server.create_bucket("index").unwrap();
    let env = Env { server, home: tempfile::tempdir().unwrap() };
    let stores = Stores::with_options(env.server.options());
    let rt = runtime();
    let job = VectorsJob {
        prefix: "s3://features/job",
        fingerprint: "test/vectors",
        dim: DIM,
        unit_size: 6,
        pca: pca_bytes(env.home.path()),
    };
    let written = write_vectors_job(&rt, &stores, &job, &images()).unwrap();
    assert_eq!((written.units.len(), written.rows), (8, 48));

    let index = "s3://index/v1";
    let loc = stores.location(index).unwrap();
    let train = || {
        let mut c = env.delf();
        c.args(["index", "train", "--features", job.prefix, "--index", index, "--shards", "4", "--spec", SPEC]);
        c
    };
    let trained = ok(train().output().unwrap());
    assert!(trained.contains("4 shard(s)"), "{trained}");
    // Training again is a no-op; with another shard count it is refused.
    ok(train().output().unwrap());
    let other = env
        .delf()
        .args(["index", "train", "--features", job.prefix, "--index", index, "--shards", "3", "--spec", SPEC])
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(3), "{}", text(&other.stderr));

    // Nothing committed: finalize refuses and writes no manifest.
    let early = env.delf().args(["index", "finalize", index]).output().unwrap();
    assert_eq!(early.status.code(), Some(3), "{}", text(&early.stderr));
    assert!(text(&early.stderr).contains("4 of 4 shards are not committed"), "{}", text(&early.stderr));

    // Worker 0 of 2 (shards 0 and 2) stops after uploading its second shard, before committing it, and is killed.
    let mut killed = env
        .encode(index, 0, 2, "pod-0")
        .env("FAILPOINTS", format!("{BEFORE_COMMIT}=1*off->sleep(120000)"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let shard2 = loc.child("shard-0002-of-0004.dshard");
    while !(commits(&rt, &loc).contains("shard-0000.json") && rt.block_on(loc.head(&shard2)).unwrap().is_some()) {
        assert!(started.elapsed() < Duration::from_secs(120), "worker 0 did not reach its second shard");
        assert!(killed.try_wait().unwrap().is_none(), "worker 0 ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    killed.kill().unwrap(); // SIGKILL: no cleanup runs
    killed.wait().unwrap();
    assert_eq!(commits(&rt, &loc), BTreeSet::from(["shard-0000.json".to_string()]));

    // Two workers both told they are worker 1 of 2 race on shards 1 and 3: each shard is committed once.
    let (a, b) = (env.encode(index, 1, 2, "pod-1a").output().unwrap(), env.encode(index, 1, 2, "pod-1b").output());
    let (a, b) = (ok(a), ok(b.unwrap()));
    let committed = |out: &str| out.split("committed ").nth(1).unwrap().split(' ').next().unwrap().parse::<usize>();
    assert_eq!(committed(&a).unwrap() + committed(&b).unwrap(), 2, "{a}\n{b}");

    // Shard 2 is uploaded but not committed: finalize still refuses, naming it.
    let partial = env.delf().args(["index", "finalize", index]).output().unwrap();
    assert_eq!(partial.status.code(), Some(3));
    assert!(text(&partial.stderr).contains("1 of 4 shards are not committed yet (2)"), "{}", text(&partial.stderr));
    assert!(rt.block_on(loc.head(&loc.child("manifest.json"))).unwrap().is_none());

    // The restarted worker 0 skips its committed shard and commits the other.
    let resumed = ok(env.encode(index, 0, 2, "pod-0").output().unwrap());
    assert!(resumed.contains("committed 1 shard(s) [2], skipped 1 already committed [0]"), "{resumed}");
    let done = ok(env.delf().args(["index", "finalize", index]).output().unwrap());
    assert!(done.contains("48 images, 7200 descriptors"), "{done}");

    // Exactly the files the index needs, each named by a record or the plan; nothing orphaned.
    let names: BTreeSet<String> =
        rt.block_on(loc.list("")).unwrap().into_iter().map(|m| m.location.as_ref().to_string()).collect();
    let mut expected: BTreeSet<String> =
        ["build.json", "codebooks.dshard", "pca.safetensors", "manifest.json"].map(|n| format!("v1/{n}")).into();
    for s in 0..4 {
        expected.insert(format!("v1/shard-{s:04}-of-0004.dshard"));
        expected.insert(format!("v1/commits/shard-{s:04}.json"));
    }
    assert_eq!(names, expected);

    // The one-process build of the same features writes the same shard bytes, and its records' CRCs hold.
    let local = env.home.path().join("one-process");
    ok(env
        .delf()
        .args(["index", "build", "--features", job.prefix, "--out", local.to_str().unwrap(), "--shards", "4"])
        .args(["--spec", SPEC])
        .output()
        .unwrap());
    for s in 0..4 {
        let name = format!("shard-{s:04}-of-0004.dshard");
        let remote = rt.block_on(loc.get(&loc.child(&name))).unwrap();
        assert!(remote == std::fs::read(local.join(&name)).unwrap(), "{name} differs from the one-process build");
        let record: serde_json::Value =
            serde_json::from_slice(&rt.block_on(loc.get(&loc.child(&format!("commits/shard-{s:04}.json")))).unwrap())
                .unwrap();
        assert_eq!(record["crc32"], format!("{:08x}", crc32fast::hash(&remote)));
    }
    // Each shard got two whole units (12 images) and the index loads and searches as one.
    let pulled = env.home.path().join("pulled");
    std::fs::create_dir_all(&pulled).unwrap();
    for m in rt.block_on(loc.list("")).unwrap() {
        let name = m.location.filename().unwrap().to_string();
        std::fs::write(pulled.join(&name), rt.block_on(loc.get(&m.location)).unwrap()).unwrap();
    }
    let manifest = delf_search::IndexManifest::load(&pulled).unwrap();
    let opened = manifest.open_index(&pulled).unwrap();
    assert!(opened.shards().iter().all(|s| s.live_images() == 12));
    assert_eq!(opened.live_images(), 48);
}
