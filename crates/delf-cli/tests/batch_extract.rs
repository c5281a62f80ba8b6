//! Batch extraction as platform teams run it: real `delf extract --list` processes on real photos, killed and
//! restarted, racing each other, reading from and writing to a real S3-compatible server. Whatever happens, every
//! listed image ends up exactly once in a committed feature row or error row, and no partial file is ever visible.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use delf_features::job::{COMMITS_DIR, FEATURES_DIR};
use delf_features::shard_file::read_errors;
use delf_features::{FailureKind, FeatureFileReader, FeatureStore};
use delf_storage::Stores;
use delf_testkit::S3Server;

use delf_testkit::photos_dir as photos;

/// The `n` first opencv-doc JPEGs by name.
fn jpegs(n: usize) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(photos())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    all.sort();
    all.truncate(n);
    assert_eq!(all.len(), n);
    all
}

/// A decompression bomb's shape: a PNG header declaring 100000 x 100000 pixels, a tiny deflate stream, the end
/// chunk. Refused from the header, before any pixel buffer exists.
fn bomb_png() -> Vec<u8> {
    fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        png.extend((data.len() as u32).to_be_bytes());
        let body = [kind.as_slice(), data].concat();
        png.extend(&body);
        png.extend(crc32fast::hash(&body).to_be_bytes());
    }
    let ihdr = [100_000u32.to_be_bytes(), 100_000u32.to_be_bytes()].concat();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &[ihdr.as_slice(), &[8, 2, 0, 0, 0]].concat());
    chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// A list of `n` real photos plus a missing, a corrupt and an oversized image (in `dir`).
fn list_with_failures(dir: &Path, n: usize) -> PathBuf {
    std::fs::write(dir.join("corrupt.jpg"), &std::fs::read(&jpegs(1)[0]).unwrap()[..2000]).unwrap();
    std::fs::write(dir.join("bomb.png"), bomb_png()).unwrap();
    let mut lines: Vec<String> = jpegs(n).iter().map(|p| p.display().to_string()).collect();
    lines.insert(2, "missing.jpg".into());
    lines.insert(5, "corrupt.jpg".into());
    lines.push("bomb.png".into());
    let list = dir.join("list.txt");
    std::fs::write(&list, lines.join("\n")).unwrap();
    list
}

fn delf() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_delf"));
    c.env("DELF_LOG__LEVEL", "warn");
    c
}

/// `delf` that runs every image through the network even when the test run shares a feature cache: what a test
/// interrupts mid-way must take real time.
fn delf_uncached() -> Command {
    let mut c = delf();
    c.env_remove("DELF_FEATURE_CACHE");
    c
}

fn extract_args<'a>(list: &'a str, out: &'a str, unit_size: &'a str) -> Vec<&'a str> {
    vec!["extract", "--list", list, "--out", out, "--unit-size", unit_size, "--max-side", "256", "--device", "cpu"]
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// `worker done: N units committed, M already committed, L lost ...`: (N, M, L).
fn counts(stdout: &str) -> (usize, usize, usize) {
    let line = stdout.lines().find(|l| l.starts_with("worker done:")).unwrap_or_else(|| panic!("{stdout}"));
    let n: Vec<usize> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).take(3).collect();
    (n[0], n[1], n[2])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Every list entry exactly once in the committed rows and error tables; only committed files listed; returns
/// rows and failure kinds by image id.
fn check_job(stores: &Stores, out: &str) -> (BTreeMap<String, usize>, BTreeMap<String, FailureKind>) {
    let rt = runtime();
    let store = FeatureStore::new(stores.location(out).unwrap());
    let loc = store.location().clone();
    let manifest = rt.block_on(store.manifest()).unwrap();
    assert!(manifest.complete, "{manifest:?}");
    let (mut rows, mut errors) = (BTreeMap::new(), BTreeMap::new());
    for unit in &manifest.units {
        let got = rt
            .block_on(async { FeatureFileReader::open(&loc, &loc.child(&unit.features_file)).await?.read_all().await })
            .unwrap();
        assert_eq!(got.len(), unit.rows);
        for r in got {
            assert_eq!(r.features.dim, manifest.job.dim);
            assert!(rows.insert(r.image_id.clone(), r.features.len()).is_none(), "{} twice", r.image_id);
        }
        if let Some(e) = &unit.errors_file {
            for e in rt.block_on(read_errors(&loc, &loc.child(e))).unwrap() {
                assert!(errors.insert(e.image_id.clone(), e.kind).is_none(), "{} twice", e.image_id);
            }
        }
    }
    assert_eq!(rows.len() + errors.len(), manifest.job.images);
    let named: Vec<&str> = manifest.units.iter().map(|u| u.features_file.as_str()).collect();
    for meta in rt.block_on(loc.list(FEATURES_DIR)).unwrap() {
        let rel = format!("{FEATURES_DIR}/{}", meta.location.filename().unwrap());
        assert!(named.contains(&rel.as_str()), "uncommitted {rel} left behind");
    }
    (rows, errors)
}

/// Units committed so far under `out` (commit records, as a reader lists them).
fn committed(stores: &Stores, rt: &tokio::runtime::Runtime, out: &str) -> usize {
    let loc = stores.location(out).unwrap();
    rt.block_on(loc.list(COMMITS_DIR)).map_or(0, |l| l.len())
}

/// A dynamic worker extracting `list` into `out` (a folder or an S3 prefix; `envs` reach the store) is SIGKILLed
/// after its second commit and restarted under the same name, as a restarted pod is: no partial file is visible
/// in between, the rerun redoes no committed unit, and every image ends up exactly once (12 photos, 3 failures).
fn a_killed_worker_resumes(list: &str, out: &str, stores: &Stores, envs: &[(String, String)]) {
    let mut args = extract_args(list, out, "1");
    args.extend(["--worker-id", "pod-0"]);
    let rt = runtime();
    let mut child =
        delf_uncached().args(&args).envs(envs.to_vec()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while committed(stores, &rt, out) < 2 {
        assert!(started.elapsed() < Duration::from_secs(300), "no unit committed in 5 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the worker finished before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup runs
    child.wait().unwrap();
    let before = committed(stores, &rt, out);
    assert!(before < 15, "the job was not interrupted mid-way ({before} of 15 units)");

    // What a reader sees of the killed job: whole, valid files only (committed or not).
    let loc = stores.location(out).unwrap();
    for meta in rt.block_on(loc.list(FEATURES_DIR)).unwrap() {
        let read = rt.block_on(async { FeatureFileReader::open(&loc, &meta.location).await?.read_all().await });
        assert!(read.is_ok(), "partial file {} visible: {:?}", meta.location, read.err());
    }

    let stdout = ok(delf_uncached().args(&args).envs(envs.to_vec()).output().unwrap());
    let (done, skipped, lost) = counts(&stdout);
    assert_eq!((done + skipped, lost), (15, 0), "{stdout}");
    assert!(skipped >= before, "committed units were redone: {stdout}");
    let (rows, errors) = check_job(stores, out);
    assert_eq!(rows.len(), 12);
    assert!(rows.values().all(|&n| n > 0));
    let kinds: Vec<(&str, FailureKind)> = errors.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        kinds,
        [
            ("bomb.png", FailureKind::TooLarge),
            ("corrupt.jpg", FailureKind::Corrupt),
            ("missing.jpg", FailureKind::NotFound)
        ]
    );

    // A third run has nothing to do; inspect verifies the files against their records.
    let (done, skipped, _) = counts(&ok(delf_uncached().args(&args).envs(envs.to_vec()).output().unwrap()));
    assert_eq!((done, skipped), (0, 15));
    let mut inspect = delf_uncached();
    inspect.args(["features", "inspect", out, "--errors", "--verify"]).envs(envs.to_vec());
    let report = ok(inspect.output().unwrap());
    assert!(report.contains("15 of 15 committed") && report.contains("12 images"), "{report}");
    assert!(report.contains("failed missing.jpg") && report.contains("verified 15 committed units"), "{report}");
}

#[test]
fn a_killed_worker_resumes_and_every_image_appears_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let list = list_with_failures(dir.path(), 12);
    let out = dir.path().join("out");
    let (list_s, out_s) = (list.to_str().unwrap(), out.to_str().unwrap());
    let stores = Stores::new();
    a_killed_worker_resumes(list_s, out_s, &stores, &[]);

    // A damaged committed file is caught by --verify (bad input, exit code 3).
    let loc = stores.location(out_s).unwrap();
    let manifest = runtime().block_on(FeatureStore::new(loc).manifest()).unwrap();
    let victim = out.join(&manifest.units[0].features_file);
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let bad = delf_uncached().args(["features", "inspect", out_s, "--verify"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(3), "{}", text(&bad.stderr));
    // A rerun with other settings on the same prefix is refused, not mixed in.
    let other = delf_uncached().args(extract_args(list_s, out_s, "4")).output().unwrap();
    assert_eq!(other.status.code(), Some(3), "{}", text(&other.stderr));
    assert!(text(&other.stderr).contains("unit size"), "{}", text(&other.stderr));
}

/// The same kill and resume with the feature shards and commit records on the S3-compatible server: its
/// put-if-absent commits and multipart uploads, not the local disk's renames, keep every image exactly once.
#[test]
fn a_worker_killed_while_writing_to_s3_resumes_and_every_image_appears_exactly_once() {
    let server = S3Server::start().expect("S3-compatible test server");
    server.create_bucket("features").unwrap();
    let stores = Stores::with_options(server.options());
    let dir = tempfile::tempdir().unwrap();
    let list = list_with_failures(dir.path(), 12);
    a_killed_worker_resumes(list.to_str().unwrap(), "s3://features/killed", &stores, &server.options());
}

/// Two workers told they own every unit race on each one over `out`: each unit is committed once.
fn racing_workers(out: &str, stores: &Stores, envs: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    let lines: Vec<String> = jpegs(8).iter().map(|p| p.display().to_string()).collect();
    std::fs::write(&list, lines.join("\n")).unwrap();
    let mut args = extract_args(list.to_str().unwrap(), out, "2");
    args.extend(["--shard-index", "0", "--num-shards", "1"]);
    let spawn = || {
        delf_uncached().args(&args).envs(envs.to_vec()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (ok(a.wait_with_output().unwrap()), ok(b.wait_with_output().unwrap()));
    let (ca, sa, la) = counts(&a);
    let (cb, sb, lb) = counts(&b);
    assert_eq!(ca + cb, 4, "each unit committed once:\n{a}\n{b}");
    assert_eq!(ca + sa + la + cb + sb + lb, 8, "{a}\n{b}");
    let (rows, errors) = check_job(stores, out);
    assert_eq!((rows.len(), errors.len()), (8, 0));
}

#[test]
fn racing_workers_leave_one_result_per_unit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    racing_workers(out.to_str().unwrap(), &Stores::new(), &[]);
}

#[test]
fn racing_workers_on_s3_leave_one_result_per_unit() {
    let server = S3Server::start().expect("S3-compatible test server");
    server.create_bucket("features").unwrap();
    racing_workers("s3://features/raced", &Stores::with_options(server.options()), &server.options());
}

#[test]
fn a_worker_reads_lists_and_photos_from_s3_and_writes_shards_there() {
    let server = S3Server::start().expect("S3-compatible test server");
    server.create_bucket("photos").unwrap();
    let stores = Arc::new(Stores::with_options(server.options()));
    let rt = runtime();
    let bucket = stores.location("s3://photos/corpus").unwrap();
    let mut lines = Vec::new();
    for p in jpegs(3) {
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        rt.block_on(bucket.put(&bucket.child(&format!("img/{name}")), Bytes::from(std::fs::read(&p).unwrap())))
            .unwrap();
        lines.push(format!("img/{name}"));
    }
    lines.push("img/not-uploaded.jpg".into());
    let csv = format!("image_id,uri\n{}", lines.iter().map(|l| format!("{l},{l}")).collect::<Vec<_>>().join("\n"));
    rt.block_on(bucket.put(&bucket.child("list.csv"), Bytes::from(csv))).unwrap();

    let out = "s3://photos/features/run-1";
    let mut cmd = delf();
    cmd.args(extract_args("s3://photos/corpus/list.csv", out, "2")).envs(server.options());
    let stdout = ok(cmd.output().unwrap());
    assert!(stdout.contains("job complete"), "{stdout}");
    let (rows, errors) = check_job(&stores, out);
    assert_eq!(rows.len(), 3);
    assert_eq!(errors.into_iter().collect::<Vec<_>>(), [("img/not-uploaded.jpg".to_string(), FailureKind::NotFound)]);
    let mut inspect = delf();
    inspect.args(["features", "inspect", out, "--verify"]).envs(server.options());
    let report = ok(inspect.output().unwrap());
    assert!(report.contains("2 of 2 committed") && report.contains("verified 2"), "{report}");
}

#[test]
fn an_index_built_from_feature_shards_finds_held_out_views() {
    let dir = tempfile::tempdir().unwrap();
    let p = photos();
    let database = [
        "graf1.png",
        "leuvenA.jpg",
        "box.png",
        "aloeL.jpg",
        "aero1.jpg",
        "fruits.jpg",
        "home.jpg",
        "lena.jpg",
        "board.jpg",
        "building.jpg",
        "pic1.png",
        "smarties.png",
    ];
    let present: Vec<&str> = database.iter().copied().filter(|f| p.join(f).is_file()).collect();
    assert!(present.len() >= 10, "opencv-doc photos missing: {present:?}");
    let list = dir.path().join("db.txt");
    std::fs::write(&list, present.iter().map(|f| p.join(f).display().to_string()).collect::<Vec<_>>().join("\n"))
        .unwrap();
    let pca = dir.path().join("pca.safetensors");
    let fit: Vec<String> = present[..5].iter().map(|f| p.join(f).display().to_string()).collect();
    let mut cmd = delf();
    cmd.args(["pca", "fit", "--device", "cpu", "--out", pca.to_str().unwrap()]).args(&fit);
    ok(cmd.output().unwrap());

    let (list_s, out_s, pca_s) = (list.to_str().unwrap(), dir.path().join("job"), pca.to_str().unwrap());
    let out_s = out_s.to_str().unwrap();
    ok(delf()
        .args(["extract", "--list", list_s, "--out", out_s, "--unit-size", "5", "--pca", pca_s, "--device", "cpu"])
        .output()
        .unwrap());
    let index = dir.path().join("index");
    let built = ok(delf()
        .args(["index", "build", "--features", out_s, "--out", index.to_str().unwrap(), "--spec", "IVF16,PQ20x8r"])
        .output()
        .unwrap());
    assert!(
        built.contains(&format!("indexed {} images", present.len())) && built.contains("from 3 feature shards"),
        "{built}"
    );

    let queries = [
        ("graf3.png", "graf1.png"),
        ("leuvenB.jpg", "leuvenA.jpg"),
        ("box_in_scene.png", "box.png"),
        ("aloeR.jpg", "aloeL.jpg"),
    ];
    let mut args: Vec<String> = ["search", "--json", "--device", "cpu", "--index"].map(String::from).to_vec();
    args.push(index.display().to_string());
    args.extend(queries.iter().map(|(q, _)| p.join(q).display().to_string()));
    args.push(p.join("squirrel_cls.jpg").display().to_string());
    let stdout = ok(delf().args(&args).output().unwrap());
    let answers: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), queries.len() + 1);
    for ((q, partner), a) in queries.iter().zip(&answers) {
        let top = a["results"][0]["image_id"].as_str().unwrap_or("no match");
        assert!(top.ends_with(partner), "{q}: top result {top}, expected {partner}: {a}");
    }
    assert!(
        answers[queries.len()]["results"].as_array().unwrap().is_empty(),
        "distractor matched: {}",
        answers[queries.len()]
    );
}
