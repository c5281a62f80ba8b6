//! The deployment files (deploy/, helm/) against the binary they deploy: every `delf` command line the Helm chart,
//! docker compose and the images run must parse, with the configuration they mount (`delf config --check`); the
//! chart passes `helm lint` and renders (Helm's own Go SDK, scripts/python/deploy_manifests.py). And
//! deploy/local-cluster/run.sh, the compose topology as plain processes (S3 store, 3 Raft coordinators, 4 index
//! nodes, 2 workers), runs and answers queries.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{ok, python, repo, text};

#[test]
fn deployment_manifests_use_only_flags_and_keys_the_binary_accepts() {
    let py = python();
    assert!(py.is_file(), "{} missing: run scripts/setup.sh", py.display());
    let out =
        ok(Command::new(&py).arg(repo().join("scripts/python/deploy_manifests.py")).arg(repo()).output().unwrap());
    let m: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = m["kinds"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    for kind in
        ["ConfigMap", "Secret", "Service", "StatefulSet", "Deployment", "Job", "PodDisruptionBudget", "PodMonitor"]
    {
        assert!(kinds.contains(&kind), "the chart renders no {kind}: {kinds:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let configs: std::collections::BTreeMap<String, PathBuf> = m["configs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, toml)| {
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, toml.as_str().unwrap()).unwrap();
            (name.clone(), path)
        })
        .collect();
    let invocations = m["invocations"].as_array().unwrap();
    let mut failures = Vec::new();
    let mut commands = std::collections::BTreeSet::new();
    for inv in invocations {
        let args: Vec<&str> = inv["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let mut c = Command::new(env!("CARGO_BIN_EXE_delf"));
        c.env("DELF_CONFIG", &configs[inv["config"].as_str().unwrap()]);
        for (k, v) in inv["env"].as_object().unwrap() {
            c.env(k, v.as_str().unwrap());
        }
        let out = c.args(["config", "--check"]).args(&args).output().unwrap();
        if !out.status.success() {
            failures.push(format!("{}: delf {}: {}", inv["source"], args.join(" "), text(&out.stderr).trim()));
        }
        let first_words: Vec<&str> = args.iter().copied().filter(|a| !a.starts_with('-')).take(2).collect();
        commands.insert(first_words.join(" "));
    }
    assert!(failures.is_empty(), "{} command lines do not parse:\n{}", failures.len(), failures.join("\n"));
    for expected in [
        "serve coordinator",
        "serve index-node",
        "serve worker",
        "health 127.0.0.1:7700",
        "extract",
        "index train",
        "index encode",
        "index finalize",
        "cluster register",
        "cluster activate",
    ] {
        assert!(commands.iter().any(|c| c.starts_with(expected)), "no `delf {expected}` in {commands:?}");
    }
}

#[test]
fn the_local_cluster_script_runs_the_compose_topology_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let photos = delf_testkit::photos_dir();
    let list = dir.path().join("photos.txt");
    let db = ["graf1.png", "leuvenA.jpg", "box.png", "aloeL.jpg", "fruits.jpg", "home.jpg"];
    std::fs::write(&list, db.iter().map(|f| photos.join(f).display().to_string()).collect::<Vec<_>>().join("\n"))
        .unwrap();
    let queries: Vec<String> =
        ["graf3.png", "leuvenB.jpg", "squirrel_cls.jpg"].iter().map(|q| photos.join(q).display().to_string()).collect();
    // Ports BASE..BASE+43 must be free, and below the kernel's ephemeral range (32768 and up): there, another
    // test's outgoing connection or `bind(0)` can take one before the script's process binds it (a CI run lost
    // coordinator 1 that way at BASE 38900).
    let base = free_port_block(44);
    let out = Command::new("bash")
        .arg(repo().join("deploy/local-cluster/run.sh"))
        .arg(env!("CARGO_BIN_EXE_delf"))
        .env("PHOTO_LIST", &list)
        .env("QUERIES", queries.join(" "))
        .env("BASE_PORT", base.to_string())
        .env("WORK", dir.path().join("work"))
        .env("DELF_EXTRACT__MAX_SIDE", "640")
        .env("DELF_LOG__LEVEL", "warn")
        .output()
        .unwrap();
    let stdout = ok(out);
    assert!(stdout.contains("== mutual TLS") && stdout.contains("a plaintext client is refused"), "{stdout}");
    assert!(stdout.contains("version v1: Active (serving) index default (2 shards x 2 replicas)"), "{stdout}");
    assert!(stdout.contains("2/2 ready"), "{stdout}");
    let answers: Vec<serde_json::Value> =
        stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 3, "{stdout}");
    let top = |a: &serde_json::Value| a["results"][0]["image_id"].as_str().map(str::to_string);
    assert!(top(&answers[0]).is_some_and(|id| id.ends_with("graf1.png")), "{stdout}");
    assert!(top(&answers[1]).is_some_and(|id| id.ends_with("leuvenA.jpg")), "{stdout}");
    assert_eq!(top(&answers[2]), None, "the distractor matched: {stdout}");
    assert!(answers.iter().all(|a| a["degraded"] == false), "{stdout}");
}

/// The first of `n` consecutive loopback ports, all free now, between 20000 and 32767; searched from a start that
/// depends on the process id, so that concurrent runs look in different places.
fn free_port_block(n: u16) -> u16 {
    let slots = (32_768 - 20_000) / n;
    let first = (std::process::id() % u32::from(slots)) as u16;
    (0..slots)
        .map(|i| 20_000 + ((first + i) % slots) * n)
        .find(|&base| (base..base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .expect("no block of free ports below 32768")
}
