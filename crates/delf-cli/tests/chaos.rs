//! The bounded chaos run (`delf bench chaos`, docs/operations.md "Chaos run"), short: real processes (3 Raft
//! coordinators, 4 index nodes for 2 shards x 2 replicas, 2 workers) answer queries on real photos while a seeded
//! schedule kills, stops and restarts them, a version switch and a rebalance happen, and a writer commits labels.
//! No answer may differ from one-process search on the version it names, no acknowledged write may be lost, and
//! no query may fail (the schedule never takes every replica of a shard, every worker or a Raft majority).

#![allow(clippy::unwrap_used)]

mod common;

use common::{ok, text};

#[test]
fn a_short_chaos_run_answers_every_query_right_and_loses_no_write() {
    let photos = delf_testkit::photos_dir();
    assert!(photos.join("graf1.png").is_file(), "opencv-doc photos missing: run scripts/setup.sh");
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_delf"))
        .env("DELF_LOG__LEVEL", "warn")
        .args(["bench", "chaos", "--seconds", "30", "--seed", "7", "--json", "--work"])
        .arg(work.path())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    let stdout = ok(out);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {r}\n{stderr}"));
    assert_eq!(n("wrong"), 0, "{r}\n{stderr}");
    assert_eq!(n("writes_lost"), 0, "{r}\n{stderr}");
    assert_eq!(n("failed"), 0, "{r}\n{stderr}");
    assert_eq!(n("answered"), n("queries"));
    // The run did what it says: faults of several kinds, both versions answered and told apart, the writer kept
    // committing (twice a second, less while there is no leader), the switch and the rebalance went through.
    assert!(n("faults") >= 8, "{r}");
    assert!(r["faults_by_kind"].as_object().unwrap().len() >= 4, "{r}");
    assert!(n("queries") >= 20 && n("writes_committed") >= 20, "{r}");
    assert!(n("queries_telling_versions_apart") >= 1, "{r}");
    assert!(r["versions"]["v1"].as_u64().unwrap_or(0) > 0 && r["versions"]["v2"].as_u64().unwrap_or(0) > 0, "{r}");
    let events: Vec<&str> = r["events"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(events.iter().any(|e| e.contains("version v2 serves")), "{events:?}");
    assert!(events.iter().any(|e| e.starts_with("rebalance: moving")), "{events:?}");
}
