//! The batch worker end to end on real object stores (local disk and a real S3-compatible server): every image of
//! the list ends up in exactly one committed row or error-table row, whatever workers race or die.
//!
//! The network is replaced by a small deterministic function of the pixels here ([`PixelFeatures`]): these tests
//! are about storage, commits and failures; `crates/delf-cli/tests/batch_extract.rs` runs the real model in real
//! processes.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use delf_core::{FeatureSet, Fingerprint, Keypoint};
use delf_features::job::{COMMITS_DIR, FEATURES_DIR, JOB_FORMAT, MANIFEST_FILE};
use delf_features::{
    Assignment, BatchExtractor, FailureKind, FeatureFileReader, FeatureRow, FeatureStore, ImageList, JobSpec,
    ShardOptions, ShardWriter, StoreError, WorkPlan, Worker, WorkerOptions, WorkerSummary,
};
use delf_image::RgbImage;
use delf_storage::{Location, StorageError, Stores};
use delf_testkit::S3Server;

/// Features computed from pixel values: a few keypoints per image, descriptors from the pixels under them.
struct PixelFeatures {
    fingerprint: Fingerprint,
}

const DIM: usize = 6;

impl PixelFeatures {
    fn new() -> Self {
        Self { fingerprint: Fingerprint("test/pixels".into()) }
    }

    fn features(&self, img: &RgbImage) -> FeatureSet {
        let (w, h) = img.dimensions();
        let n = 1 + ((w + h) % 5) as usize;
        let keypoints: Vec<Keypoint> = (0..n)
            .map(|i| Keypoint { x: (i as u32 % w) as f32, y: (i as u32 % h) as f32, scale: 1.0, score: (n - i) as f32 })
            .collect();
        let descriptors = keypoints
            .iter()
            .flat_map(|k| {
                let p = img.get_pixel(k.x as u32, k.y as u32).0;
                [p[0], p[1], p[2], p[0] ^ p[1], p[1] ^ p[2], 7].map(|v| f32::from(v) / 255.0)
            })
            .collect();
        FeatureSet { width: w, height: h, dim: DIM, keypoints, descriptors, fingerprint: self.fingerprint.clone() }
    }
}

impl BatchExtractor for PixelFeatures {
    fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }
    fn dim(&self) -> usize {
        DIM
    }
    fn batch_size(&self) -> usize {
        3
    }
    fn extract(&mut self, images: &[&RgbImage]) -> Vec<Result<FeatureSet, String>> {
        images.iter().map(|im| Ok(self.features(im))).collect()
    }
}

/// A small PNG whose size and colours depend on `i`.
fn png(i: u32) -> Vec<u8> {
    let img =
        RgbImage::from_fn(20 + i, 15 + 2 * i, |x, y| image::Rgb([(x * 9 + i) as u8, (y * 7) as u8, (i * 31) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Writes `good` PNGs, one corrupt file and one file above `max_file_bytes`, and a list naming them plus one
/// missing image; returns the list's URI.
async fn corpus(loc: &Location, good: u32) -> String {
    let mut lines = Vec::new();
    for i in 0..good {
        loc.put(&loc.child(&format!("img/{i}.png")), Bytes::from(png(i))).await.unwrap();
        lines.push(format!("img/{i}.png"));
        if i == 2 {
            lines.push("img/missing.png".into());
        }
    }
    loc.put(&loc.child("img/corrupt.jpg"), Bytes::from_static(b"\xff\xd8\xff\xe0 not really a jpeg")).await.unwrap();
    loc.put(&loc.child("img/huge.png"), Bytes::from(vec![0u8; 300_000])).await.unwrap();
    lines.insert(4, "img/corrupt.jpg".into());
    lines.push("img/huge.png".into());
    loc.put(&loc.child("list.txt"), Bytes::from(lines.join("\n"))).await.unwrap();
    format!("{}/list.txt", loc.uri())
}

struct Job {
    stores: Arc<Stores>,
    list: Arc<ImageList>,
    store: FeatureStore,
    plan: WorkPlan,
    spec: JobSpec,
}

fn open_job(
    rt: &tokio::runtime::Runtime,
    stores: Arc<Stores>,
    list_uri: &str,
    out: &str,
    unit_size: usize,
) -> Result<Job, StoreError> {
    let list = Arc::new(rt.block_on(ImageList::load(&stores, list_uri))?);
    let plan = WorkPlan::new(list.len(), unit_size)?;
    let fp = "test/pixels";
    let spec = JobSpec {
        format: JOB_FORMAT,
        job_id: JobSpec::id_of(&list.checksum, unit_size, fp),
        list: list_uri.into(),
        list_checksum: list.checksum.clone(),
        images: list.len(),
        unit_size,
        units: plan.units(),
        fingerprint: fp.into(),
        dim: DIM,
        schema_version: delf_features::schema::SCHEMA_VERSION,
        backbone: "pixels".into(),
        model: "pixels".into(),
        extract: serde_json::Value::Null,
        pca: false,
        delf_version: "test".into(),
        created_unix_s: 0,
    };
    let store = FeatureStore::new(stores.location(out)?);
    let spec = rt.block_on(store.open_or_create(&spec))?;
    Ok(Job { stores, list, store, plan, spec })
}

fn options(worker: &str) -> WorkerOptions {
    let mut o = WorkerOptions {
        worker_id: worker.into(),
        fetch_concurrency: 4,
        decode_threads: 2,
        queue: 4,
        ..WorkerOptions::default()
    };
    o.limits.max_file_bytes = 100_000;
    o.shard = ShardOptions { row_group_images: 2, ..ShardOptions::default() };
    o
}

fn run(rt: &tokio::runtime::Runtime, job: &Job, worker: &str, assignment: Assignment) -> WorkerSummary {
    let w = Worker::new(
        job.store.clone(),
        Arc::clone(&job.stores),
        Arc::clone(&job.list),
        job.plan,
        job.spec.job_id.clone(),
        options(worker),
        rt.handle().clone(),
    );
    w.run(assignment, &mut PixelFeatures::new(), &mut || {}).unwrap()
}

/// Reads every committed row and error through the manifest; checks each list entry appears exactly once and
/// that rows hold what the extractor computes for that image.
fn check_exactly_once(
    rt: &tokio::runtime::Runtime,
    job: &Job,
) -> (BTreeMap<String, FeatureRow>, BTreeMap<String, FailureKind>) {
    let loc = job.store.location();
    let manifest = rt.block_on(job.store.manifest()).unwrap();
    assert!(manifest.complete, "{manifest:?}");
    let (mut rows, mut errors) = (BTreeMap::new(), BTreeMap::new());
    for unit in &manifest.units {
        let path = loc.child(&unit.features_file);
        let bytes = rt.block_on(loc.get(&path)).unwrap();
        assert_eq!(format!("{:08x}", crc32fast::hash(&bytes)), unit.features_crc32, "checksum of unit {}", unit.unit);
        let got = rt.block_on(async { FeatureFileReader::open(loc, &path).await?.read_all().await }).unwrap();
        assert_eq!(got.len(), unit.rows);
        for r in got {
            assert!(rows.insert(r.image_id.clone(), r).is_none(), "a row appears twice");
        }
        if let Some(e) = &unit.errors_file {
            for e in rt.block_on(delf_features::shard_file::read_errors(loc, &loc.child(e))).unwrap() {
                assert!(errors.insert(e.image_id, e.kind).is_none(), "an error appears twice");
            }
        }
    }
    assert_eq!(rows.len() + errors.len(), job.list.len());
    for entry in &job.list.entries {
        assert!(rows.contains_key(&entry.image_id) ^ errors.contains_key(&entry.image_id), "{}", entry.image_id);
    }
    let extractor = PixelFeatures::new();
    for r in rows.values() {
        let bytes = rt.block_on(async {
            let (store, path, _) = job.stores.resolve(&r.uri).unwrap();
            object_store::ObjectStoreExt::get(&store, &path).await.unwrap().bytes().await.unwrap()
        });
        let img = delf_image::decode_bytes(&bytes, &Default::default()).unwrap();
        assert_eq!(r.features, extractor.features(&img.rgb), "{}", r.image_id);
    }
    // Only committed files are left under features/.
    let named: Vec<String> = manifest.units.iter().map(|u| u.features_file.clone()).collect();
    for meta in rt.block_on(loc.list(FEATURES_DIR)).unwrap() {
        let rel = format!("{FEATURES_DIR}/{}", meta.location.filename().unwrap());
        assert!(named.contains(&rel), "uncommitted file {rel} is visible");
    }
    assert!(rt.block_on(loc.head(&loc.child(MANIFEST_FILE))).unwrap().is_some());
    (rows, errors)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A runtime, a corpus of `good` photos (plus the failing ones) on local disk, and a job over it with `unit_size`.
fn local_job(good: u32, unit_size: usize) -> (tokio::runtime::Runtime, tempfile::TempDir, Job) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let stores = Arc::new(Stores::new());
    let data = stores.location(dir.path().join("data").to_str().unwrap()).unwrap();
    let list = rt.block_on(corpus(&data, good));
    let job = open_job(&rt, stores, &list, dir.path().join("out").to_str().unwrap(), unit_size).unwrap();
    (rt, dir, job)
}

#[test]
fn a_job_extracts_every_image_once_records_failures_and_resumes() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let stores = Arc::new(Stores::new());
    let data = stores.location(dir.path().join("data").to_str().unwrap()).unwrap();
    let list = rt.block_on(corpus(&data, 9));
    let out = dir.path().join("out");
    let job = open_job(&rt, Arc::clone(&stores), &list, out.to_str().unwrap(), 4).unwrap();
    assert_eq!(job.plan.units(), 3);

    // Worker 1 of 2 first: a partial job, no manifest yet.
    let s = run(&rt, &job, "w1", Assignment::Static { index: 1, count: 2 });
    assert_eq!((s.committed, s.skipped, s.job_complete), (1, 0, false));
    assert!(rt.block_on(job.store.location().head(&job.store.location().child(MANIFEST_FILE))).unwrap().is_none());
    // A dynamic worker finishes the rest and skips what is committed.
    let s = run(&rt, &job, "w2", Assignment::Dynamic);
    assert_eq!((s.committed, s.skipped, s.job_complete), (2, 1, true));
    let (rows, errors) = check_exactly_once(&rt, &job);
    assert_eq!(rows.len(), 9);
    let kinds: Vec<(&str, FailureKind)> = errors.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        kinds,
        [
            ("img/corrupt.jpg", FailureKind::Corrupt),
            ("img/huge.png", FailureKind::TooLarge),
            ("img/missing.png", FailureKind::NotFound)
        ]
    );
    // A rerun does nothing; a different unit size or list is refused.
    let s = run(&rt, &job, "w3", Assignment::Dynamic);
    assert_eq!((s.committed, s.skipped), (0, 3));
    assert!(matches!(
        open_job(&rt, Arc::clone(&stores), &list, out.to_str().unwrap(), 5),
        Err(StoreError::JobMismatch { .. })
    ));
}

#[test]
fn racing_workers_commit_each_unit_once_and_leave_no_loser_files() {
    let (rt, _dir, job) = local_job(12, 2);
    // Two workers given the same share race for every unit.
    let summaries: Vec<WorkerSummary> = std::thread::scope(|s| {
        let a = s.spawn(|| run(&rt, &job, "a", Assignment::Static { index: 0, count: 1 }));
        let b = s.spawn(|| run(&rt, &job, "b", Assignment::Static { index: 0, count: 1 }));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    let units = job.plan.units();
    let committed: usize = summaries.iter().map(|s| s.committed).sum();
    assert_eq!(committed, units, "{summaries:?}");
    let handled: usize = summaries.iter().map(|s| s.committed + s.skipped + s.lost_races).sum();
    assert_eq!(handled, 2 * units);
    check_exactly_once(&rt, &job);
    let records = rt.block_on(job.store.location().list(COMMITS_DIR)).unwrap();
    assert_eq!(records.len(), units);
}

#[test]
fn a_dead_attempt_stays_invisible_and_is_cleaned_up_by_the_winner() {
    let (rt, _dir, job) = local_job(5, 4);
    let loc = job.store.location().clone();
    // A worker that uploaded unit 1 whole and died before committing, and one that died holding unit 0's lease.
    let dead = loc.child(&FeatureStore::features_key(1, "deadbeefdeadbeef"));
    let fp = Fingerprint("test/pixels".into());
    let w = ShardWriter::create(&loc, &dead, DIM, &fp, &[], &ShardOptions::default()).unwrap();
    rt.block_on(w.finish()).unwrap();
    assert!(rt.block_on(job.store.try_claim(0, "ghost", 0)).unwrap());
    assert!(rt.block_on(job.store.manifest()).unwrap().units.is_empty(), "an uncommitted file is not in the job");

    let s = run(&rt, &job, "w", Assignment::Dynamic);
    assert_eq!(s.committed, 2, "the expired lease was taken over: {s:?}");
    assert!(rt.block_on(loc.head(&dead)).unwrap().is_none(), "the dead attempt's file was removed");
    check_exactly_once(&rt, &job);
    assert!(rt.block_on(loc.list(delf_features::job::CLAIMS_DIR)).unwrap().is_empty(), "leases are released");
}

#[test]
fn a_live_lease_of_another_worker_is_respected() {
    let (rt, _dir, job) = local_job(5, 4);
    assert!(rt.block_on(job.store.try_claim(1, "other", 3600)).unwrap());
    let s = run(&rt, &job, "w", Assignment::Dynamic);
    assert_eq!((s.committed, s.held_by_others, s.job_complete), (1, 1, false));
}

#[test]
fn s3_round_trip_against_a_real_s3_compatible_server() {
    let server = S3Server::start().expect("S3-compatible test server");
    server.create_bucket("corpus").unwrap();
    server.create_bucket("features").unwrap();
    let rt = runtime();
    let stores = Arc::new(Stores::with_options(server.options()));
    let data = stores.location("s3://corpus/photos").unwrap();
    let list = rt.block_on(corpus(&data, 6));
    assert!(list.starts_with("s3://corpus/photos/"), "{list}");
    let job = open_job(&rt, Arc::clone(&stores), &list, "s3://features/run-1", 3).unwrap();
    let s = run(&rt, &job, "s3-worker", Assignment::Dynamic);
    assert!(s.job_complete && s.committed == job.plan.units(), "{s:?}");
    let (rows, errors) = check_exactly_once(&rt, &job);
    assert_eq!((rows.len(), errors.len()), (6, 3));
    assert!(rows.values().all(|r| r.uri.starts_with("s3://corpus/photos/img/")));
    // Put-if-absent is honoured by the server: a second commit of a unit loses.
    let record = rt.block_on(job.store.commit_record(0)).unwrap().unwrap();
    let again = rt.block_on(job.store.commit(&record)).unwrap();
    assert!(matches!(again, delf_features::job::CommitOutcome::AlreadyCommitted(_)));
    // A missing bucket is a typed error, not a panic.
    let missing = open_job(&rt, Arc::clone(&stores), "s3://no-such-bucket/list.txt", "s3://features/x", 3);
    assert!(
        matches!(missing, Err(StoreError::Storage(StorageError::NotFound { .. } | StorageError::ObjectStore { .. }))),
        "{:?}",
        missing.err()
    );
}
