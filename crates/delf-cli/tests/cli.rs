//! The `delf` binary as a user runs it: real process, real weights, real photo, documented exit codes.

use std::process::{Command, Output};

fn delf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_delf")).args(args).output().expect("run delf")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run as a user would after `make demo` or `make install`: a copy of the binary, from another folder, with no
/// `DELF_HOME` and a home folder without models: the setup's models and photos are found anyway.
#[test]
fn doctor_classifies_the_squirrel_photo_from_an_installed_copy_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin/delf");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_delf"), &bin).unwrap();
    let out = Command::new(&bin)
        .args(["doctor", "--device", "cpu"])
        .current_dir(dir.path())
        .env_remove("DELF_HOME")
        .env("HOME", dir.path())
        .output()
        .expect("run delf");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    assert!(stdout.contains("libtorch 2.11.0"), "{stdout}");
    let first = stdout.lines().find(|l| l.trim_start().starts_with("1.")).expect("a top-5 table");
    assert!(first.contains("fox squirrel") && first.contains("class 335"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.trim_start().starts_with(char::is_numeric)).count(), 5);
}

#[test]
fn bad_label_files_are_bad_input_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("a.jpg");
    std::fs::write(&photo, b"x").unwrap();
    let cases = [
        ("path\na.jpg\n", "no landmark_id or label column"),
        ("path,label\na.jpg,1\n", "at least two classes"),
        ("path,label\na.jpg,1\nmissing.jpg,2\n", "do not exist"),
        ("id,landmark_id\nabc123,1\ndef456,2\n", "--images DIR"),
    ];
    for (k, (csv, expected)) in cases.iter().enumerate() {
        let labels = dir.path().join(format!("labels{k}.csv"));
        std::fs::write(&labels, csv).unwrap();
        let out_dir = dir.path().join(format!("out{k}"));
        let out =
            delf(&["train", "attention", "--labels", labels.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{csv:?}: {err}");
        assert!(err.contains(expected), "{csv:?}: {err}");
        assert!(!out_dir.join("checkpoint.safetensors").exists());
    }
}

#[test]
fn a_training_run_killed_mid_way_resumes_to_the_same_head() {
    let dir = tempfile::tempdir().unwrap();
    let photos = delf_testkit::train_photos_dir();
    let labels = dir.path().join("labels.csv");
    let csv: String = ["chelsea.png,cat", "coffee.png,coffee", "motorcycle_left.png,bike", "motorcycle_right.png,bike"]
        .iter()
        .fold("path,label\n".to_string(), |acc, row| acc + &format!("{}/skimage/{row}\n", photos.display()));
    std::fs::write(&labels, csv).unwrap();
    let args = |out: &std::path::Path| -> Vec<String> {
        let flags = "--recipe instance --epochs 3 --repeats 2 --batch-size 4 --input-size 128 --lr 0.5 \
                     --warmup-steps 1 --checkpoint-every 1 --device cpu --json";
        let mut v = vec!["train".into(), "attention".into(), "--labels".into(), labels.display().to_string()];
        v.extend(["--out".into(), out.display().to_string()]);
        v.extend(flags.split_whitespace().map(String::from));
        v
    };
    let run = |out: &std::path::Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_delf")).args(args(out)).output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let straight = dir.path().join("straight");
    assert_eq!(run(&straight)["steps"], 6);

    // SIGKILL once at least two steps are logged, then run the same command again.
    let killed = dir.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_delf"))
        .args(args(&killed))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let steps = || std::fs::read_to_string(killed.join("metrics.jsonl")).map_or(0, |m| m.matches("\"step\"").count());
    while steps() < 2 && started.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before_kill = steps();
    assert!((2..6).contains(&done_before_kill), "killed after {done_before_kill} steps");
    let resumed = run(&killed);
    assert!(resumed["resumed_from"].as_u64().unwrap() >= 1, "{resumed}");
    assert_eq!(resumed["steps"], 6);
    let head = |d: &std::path::Path| delf_model::TensorFile::load(&d.join("attention.safetensors")).unwrap();
    let (a, b) = (head(&straight), head(&killed));
    assert_eq!(a.meta, b.meta);
    for ((name, x), (_, y)) in a.tensors.iter().zip(&b.tensors) {
        assert!(x.equal(y), "{name} differs after the resume from step {}", resumed["resumed_from"]);
    }
    // And the files are the same bytes: a head is identified by its bytes (feature fingerprints).
    let bytes = |d: &std::path::Path| std::fs::read(d.join("attention.safetensors")).unwrap();
    assert!(bytes(&straight) == bytes(&killed));
}

#[test]
fn a_cluster_role_without_a_cluster_configuration_is_a_configuration_error() {
    let out = delf(&["serve", "coordinator"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cluster.index is not set"), "{}", text(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_delf"))
        .env("DELF_CLUSTER__INDEX", "/nowhere")
        .args(["serve", "index-node", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--shard is required: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--shard is required"), "{}", text(&out.stderr));
}

#[test]
fn config_check_validates_deployment_command_lines() {
    let out = delf(&["config", "--check", "serve", "index-node", "--listen", "0.0.0.0:7001", "--node", "n-0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ok: delf serve index-node --listen 0.0.0.0:7001 --node n-0");
    let out = delf(&["config", "--check", "serve", "index-node", "--shards", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unexpected argument '--shards'"), "{}", text(&out.stderr));
    // The configuration is loaded too: an unknown key is exit code 4.
    let out = Command::new(env!("CARGO_BIN_EXE_delf"))
        .env("DELF_META__ELECTION_TIMEOUT", "3")
        .args(["config", "--check", "serve", "coordinator"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
}

#[test]
fn health_reports_a_serving_role_and_fails_otherwise() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_delf"))
        .env("DELF_CLUSTER__INDEX", "/nowhere")
        .args(["serve", "worker", "--no-extract", "--listen", &addr])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let out = loop {
        let out = delf(&["health", &addr]);
        if out.status.success() || started.elapsed() > std::time::Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(text(&out.stdout).contains("SERVING"), "{}{}", text(&out.stdout), text(&out.stderr));
    let out = delf(&["health", &addr, "--service", "delf.v1.Worker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = delf(&["health", &addr, "--service", "delf.v1.Coordinator"]);
    assert_eq!(out.status.code(), Some(3), "an unknown service is NOT_FOUND: {}", text(&out.stderr));
    worker.kill().unwrap();
    worker.wait().unwrap();
    let out = delf(&["health", &addr, "--timeout-ms", "500"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn every_subcommand_has_help() {
    for cmd in [
        "doctor", "config", "extract", "features", "pca", "index", "search", "match", "serve", "query", "cluster",
        "eval", "train", "bench", "health",
    ] {
        let out = delf(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd}");
        assert!(text(&out.stdout).contains("Usage: delf"), "{cmd}");
    }
    let top = text(&delf(&["--help"]).stdout);
    assert!(top.contains("Exit codes"), "{top}");
}

#[test]
fn unreadable_image_is_bad_input() {
    let out = delf(&["doctor", "--device", "cpu", "--image", "/etc/hostname"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("/etc/hostname"));
    let out = delf(&["doctor", "--device", "cpu", "--image", "/no/such/photo.jpg"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn missing_weights_and_absent_devices_are_model_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_delf"))
        .args(["doctor", "--device", "cpu"])
        .env("DELF_HOME", "/nonexistent/delf-home")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(text(&out.stderr).contains("scripts/setup.sh"), "{}", text(&out.stderr));
    let out = delf(&["doctor", "--device", "tpu"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}

#[test]
fn bad_configuration_exits_4() {
    let dir = std::env::temp_dir().join(format!("delf-cli-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "devcie = \"cpu\"\n").unwrap();
    let out = delf(&["--config", bad.to_str().unwrap(), "config"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("devcie"));
    let good = dir.join("good.toml");
    std::fs::write(&good, "device = \"cpu\"\nthreads = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_delf"))
        .args(["--config", good.to_str().unwrap(), "config"])
        .env("DELF_LOG__LEVEL", "warn")
        .output()
        .unwrap();
    assert!(out.status.success());
    let shown: toml::Value = toml::from_str(&text(&out.stdout)).expect("config prints TOML");
    assert_eq!(shown["device"].as_str(), Some("cpu"));
    assert_eq!(shown["threads"].as_integer(), Some(1));
    assert_eq!(shown["log"]["level"].as_str(), Some("warn"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn json_logs_are_one_object_per_line() {
    let out = delf(&["--log-format", "json", "doctor", "--device", "cpu"]);
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some() && v.get("message").is_some(), "{line}");
    }
}

fn photo(name: &str) -> String {
    let home = std::env::var("DELF_HOME").expect("DELF_HOME is set by .cargo/config.toml");
    format!("{home}/data/opencv-doc/{name}")
}

#[test]
fn pca_fit_then_extract_json_with_40_dims() {
    let dir = std::env::temp_dir().join(format!("delf-cli-extract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pca = dir.join("pca.safetensors");
    let out = delf(&[
        "pca",
        "fit",
        "--device",
        "cpu",
        "--out",
        pca.to_str().unwrap(),
        "--dim",
        "40",
        &photo("messi5.jpg"),
        &photo("baboon.jpg"),
        &photo("fruits.jpg"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("-> 40 dims"), "{}", text(&out.stdout));

    let out = Command::new(env!("CARGO_BIN_EXE_delf"))
        .args(["extract", "--json", "--device", "cpu", "--max-side", "320", "--max-features", "200"])
        .args(["--pca", pca.to_str().unwrap(), &photo("graf1.png"), &photo("box.png")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(lines.len(), 2);
    for v in &lines {
        let f = &v["features"];
        assert_eq!(f["dim"], 40);
        assert_eq!(f["keypoints"].as_array().unwrap().len(), 200);
        assert_eq!(f["descriptors"].as_array().unwrap().len(), 200 * 40);
        assert!(f["fingerprint"].as_str().unwrap().starts_with("delf/"));
    }
    assert_eq!(lines[0]["features"]["fingerprint"], lines[1]["features"]["fingerprint"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn extract_reports_bad_images_and_keeps_the_good_ones() {
    let out = delf(&["extract", "--device", "cpu", "--max-side", "256", &photo("box.png"), "/etc/hostname"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("box.png") && stdout.contains("fingerprint: delf/"), "{stdout}");
    assert!(text(&out.stderr).contains("/etc/hostname"));
}

#[test]
fn match_draws_the_picture_and_reports_json() {
    let dir = std::env::temp_dir().join(format!("delf-cli-match-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("graf.png");
    let out = delf(&[
        "match",
        "--device",
        "cpu",
        "--json",
        "--out",
        png.to_str().unwrap(),
        &photo("graf1.png"),
        &photo("graf3.png"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["is_match"], true, "{v}");
    assert_eq!(v["model"]["kind"], "affine");
    let inliers = v["inliers"].as_u64().unwrap() as usize;
    let listed = v["correspondences"].as_array().unwrap().iter().filter(|c| c["inlier"] == true).count();
    assert_eq!(inliers, listed);
    let picture = image::open(&png).unwrap();
    assert!(picture.width() > picture.height() && picture.height() == 600);

    let out = delf(&["match", "--device", "cpu", &photo("squirrel_cls.jpg"), &photo("graf3.png")]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("-> no match"), "{}", text(&out.stdout));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_verify_prints_a_table_beside_opencv() {
    let out = delf(&["bench", "verify", "--scenes", "3", "--runs", "1", "--matches", "300"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("| delf-verify, LO-RANSAC (default) |"), "{stdout}");
    assert!(stdout.contains("estimateAffine2D"), "the OpenCV baseline ran: {stdout}");
    let out = delf(&["bench", "verify", "--outliers", "1.5"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn resnet50_needs_user_weights_and_extracts_1024_d_with_them() {
    let out = Command::new(env!("CARGO_BIN_EXE_delf"))
        .args(["extract", "--device", "cpu", &photo("box.png")])
        .env("DELF_MODEL__BACKBONE", "resnet50")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("docs/models.md"));

    let weights = std::env::temp_dir().join(format!("delf-cli-r50-{}.safetensors", std::process::id()));
    delf_model::ResNet::untrained(tch::Device::Cpu).var_store().save(&weights).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_delf"))
        .args(["extract", "--json", "--device", "cpu", "--max-side", "256", "--max-features", "50", &photo("box.png")])
        .env("DELF_MODEL__BACKBONE", "resnet50")
        .env("DELF_MODEL__WEIGHTS", &weights)
        .output()
        .unwrap();
    std::fs::remove_file(&weights).ok();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["features"]["dim"], 1024);
    assert_eq!(v["features"]["keypoints"].as_array().unwrap().len(), 50);
}

/// A DELG release converted by `scripts/python/convert_tf_delf.py` (built in TensorFlow with the release's names
/// and random weights by `tf_delf_reference.py`; parity with TensorFlow is `delf-model`'s `tf_parity` test) runs
/// in `delf extract`: 128-d local descriptors from its autoencoder, its own attention head, and a 2048-d global
/// descriptor; naming another architecture for the file is a clear error.
#[test]
fn converted_delg_release_extracts_local_and_global_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.safetensors");
    let image = tch::Tensor::zeros([1, 3, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
    delf_model::TensorFile::save(&input, &[("image".into(), image)], Default::default()).unwrap();
    let python = std::env::var("DELFRS_PYTHON").expect("DELFRS_PYTHON is set by .cargo/config.toml");
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/python");
    let release = dir.path().join("r50delg_test");
    let weights = dir.path().join("delg.safetensors");
    for (script, args) in [
        (
            "tf_delf_reference.py",
            vec![
                "--arch".into(),
                "resnet50-delg".into(),
                "--input".into(),
                input.clone(),
                "--out".into(),
                release.clone(),
            ],
        ),
        ("convert_tf_delf.py", vec![release.clone(), "--out".into(), weights.clone()]),
    ] {
        let out = Command::new(&python).arg(scripts.join(script)).args(&args).output().unwrap();
        assert!(out.status.success(), "{script}: {}", text(&out.stderr));
    }
    let extract = |backbone: &str| {
        Command::new(env!("CARGO_BIN_EXE_delf"))
            .args([
                "extract",
                "--json",
                "--device",
                "cpu",
                "--max-side",
                "320",
                "--max-features",
                "60",
                &photo("box.png"),
            ])
            .env("DELF_MODEL__BACKBONE", backbone)
            .env("DELF_MODEL__WEIGHTS", &weights)
            .output()
            .unwrap()
    };
    let out = extract("resnet50-delg");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["features"]["dim"], 128);
    assert_eq!(v["features"]["keypoints"].as_array().unwrap().len(), 60);
    let global: Vec<f64> = v["global_descriptor"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(global.len(), 2048);
    assert!((global.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-4, "unit norm");

    let out = extract("resnet50-delf");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("resnet50-delg"), "{}", text(&out.stderr));
}

#[test]
fn bench_extract_prints_speed_and_memory() {
    let out = delf(&["bench", "extract", "--device", "cpu", "--sizes", "128", &photo("box.png")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let row = stdout.lines().find(|l| l.starts_with("| 128 |")).unwrap_or_else(|| panic!("{stdout}"));
    // max side | images | images/s | ms/image | images/s from files | peak RSS
    let cells: Vec<&str> = row.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cells.len(), 6, "{row}");
    for c in &cells[..5] {
        assert!(c.parse::<f64>().is_ok_and(|v| v > 0.0), "{row}");
    }
}
