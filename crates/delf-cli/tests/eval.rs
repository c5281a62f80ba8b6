//! `delf eval` as users call it: Kaggle CSVs for GLDv2, JSON lines of `delf search --json` for the pairs format,
//! and clear errors (exit code 3) for malformed files.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn delf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_delf")).env("DELF_LOG__LEVEL", "warn").args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn gldv2_retrieval_and_recognition_from_kaggle_csvs() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.display().to_string()
    };
    let solution = p("rs.csv", "id,images,Usage\nq1,a b,Public\nq2,c,Private\nq3,d,Ignored\n");
    let predictions = p("rp.csv", "id,images\nq1,a x b\nq2,x c\n");
    let out = delf(&["eval", "gldv2", "--solution", &solution, "--predictions", &predictions, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    // q1: (1/1 + 2/3) / 2; q2: 1/2; q3 ignored.
    let q1 = (1.0 + 2.0 / 3.0) / 2.0;
    assert!((v["all"].as_f64().unwrap() - (q1 + 0.5) / 2.0).abs() < 1e-12, "{v}");
    assert!((v["public"].as_f64().unwrap() - q1).abs() < 1e-12, "{v}");
    assert_eq!(v["metric"], "map@100");

    let solution = p("gs.csv", "id,landmarks,Usage\nq1,7,Public\nq2,8,Public\nn1,,Private\n");
    let predictions = p("gp.csv", "id,landmarks\nq1,7 0.9\nn1,7 0.8\nq2,8 0.5\n");
    let out = delf(&["eval", "gldv2", "--solution", &solution, "--predictions", &predictions, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert!((v["all"].as_f64().unwrap() - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12, "{v}");
    assert_eq!(v["metric"], "gap");

    let bad = p("bad.csv", "id,images,Usage\nq1,a,Sometimes\n");
    let out = delf(&["eval", "gldv2", "--solution", &bad, "--predictions", &predictions]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("line 2: Usage \"Sometimes\""), "{}", text(&out.stderr));
}

#[test]
fn pairs_from_search_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("gt.json");
    std::fs::write(
        &gt,
        r#"{"queries": [{"query": "graf3.png", "positives": ["graf1.png"]},
                        {"query": "box_in_scene.png", "positives": ["box.png"]},
                        {"query": "baboon.jpg", "positives": []}]}"#,
    )
    .unwrap();
    let answers = dir.path().join("answers.jsonl");
    std::fs::write(
        &answers,
        [
            r#"{"query": "/q/graf3.png", "results": [{"image_id": "graf1.png", "score": 98, "votes": 900, "rank": 1}]}"#,
            r#"{"query": "/q/box_in_scene.png", "results": [{"image_id": "lena.jpg", "score": 30, "votes": 10, "rank": 1}, {"image_id": "box.png", "score": 26, "votes": 9, "rank": 2}]}"#,
            r#"{"query": "/q/baboon.jpg", "results": [{"image_id": "fruits.jpg", "score": 27, "votes": 5, "rank": 1}]}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let (gt_s, answers_s) = (gt.to_str().unwrap(), answers.to_str().unwrap());
    let out = delf(&["eval", "pairs", "--gt", gt_s, "--results", answers_s, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert!((v["map"].as_f64().unwrap() - 0.75).abs() < 1e-12, "{v}");
    assert_eq!(v["recall_at"], serde_json::json!([[1, 0.5], [5, 1.0]]));
    // The baboon distractor scored 27: the lowest clean threshold is the next best score, 30.
    assert_eq!(v["chosen"]["threshold"], 30.0);
    let html = dir.path().join("pairs.html");
    let table = delf(&["eval", "pairs", "--gt", gt_s, "--results", answers_s, "--html", html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<td>baboon.jpg</td><td class=bad>distractor</td><td>fruits.jpg</td>"), "{page}");
    assert!(
        text(&table.stdout).contains("lowest threshold with no distractor above it: 30"),
        "{}",
        text(&table.stdout)
    );

    // A query without an answer, or a failed one, is an error.
    std::fs::write(&answers, r#"{"query": "/q/graf3.png", "error": "unreadable"}"#).unwrap();
    let out = delf(&["eval", "pairs", "--gt", gt_s, "--results", answers_s]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the query failed"), "{}", text(&out.stderr));
}

/// A Revisited-Oxford-shaped dataset made of opencv-doc photos (the real one cannot be downloaded here): a gnd
/// pickle written by Python in the original layout, queries cropped to their box, searched in a real index. The
/// same index answers the pairs format.
#[test]
fn revisitop_and_pairs_search_a_real_index() {
    let photos = delf_testkit::photos_dir();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jpg");
    std::fs::create_dir(&db).unwrap();
    let database = ["graf1.png", "leuvenA.jpg", "box.png", "aloeL.jpg", "apple.jpg", "board.jpg", "pic1.png"];
    for f in database {
        std::fs::copy(photos.join(f), db.join(f)).unwrap();
    }
    // No index yet: `delf eval revisitop` builds it from the pickle's imlist (fruits.jpg is in the folder but not in
    // the dataset, and stays out).
    std::fs::copy(photos.join("fruits.jpg"), db.join("fruits.jpg")).unwrap();
    let index = dir.path().join("index");
    // Queries: held-out views next to the database folder; graf3 with a box around its left half.
    let queries = ["graf3.png", "leuvenB.jpg", "aloeR.jpg"];
    for q in queries {
        std::fs::copy(photos.join(q), dir.path().join(q)).unwrap();
    }
    let python = std::env::var("DELFRS_PYTHON")
        .unwrap_or_else(|_| delf_testkit::repo_root().join(".cache/venv/bin/python").display().to_string());
    let script = r#"
import pickle, sys
imlist = ['graf1.png', 'leuvenA.jpg', 'box.png', 'aloeL.jpg', 'apple.jpg', 'board.jpg', 'pic1.png'] + sys.argv[2:]
gnd = [
    {'easy': [0], 'hard': [], 'junk': [], 'bbx': [0.0, 0.0, 400.0, 640.0]},
    {'easy': [], 'hard': [1], 'junk': [2], 'bbx': [0.0, 0.0, 900.0, 600.0]},
    {'easy': [3], 'hard': [], 'junk': [6], 'bbx': [0.0, 0.0, 5000.0, 5000.0]},
]
pickle.dump({'imlist': imlist, 'qimlist': ['graf3.png', 'leuvenB.jpg', 'aloeR.jpg'], 'gnd': gnd},
            open(sys.argv[1], 'wb'))
"#;
    let gnd = dir.path().join("gnd_test.pkl");
    let revisitop = |gnd: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_delf"))
            .env("DELF_LOG__LEVEL", "warn")
            .env("DELF_EXTRACT__MAX_SIDE", "640")
            .args(["eval", "revisitop", "--gnd", gnd.to_str().unwrap(), "--images", dir.path().to_str().unwrap()])
            .args(["--index", index.to_str().unwrap(), "--device", "cpu", "--json", "--html"])
            .arg(dir.path().join("r.html"))
            .output()
            .unwrap()
    };
    // A database image missing from the folder: a clear error before anything is extracted.
    let incomplete = dir.path().join("gnd_incomplete.pkl");
    let out =
        Command::new(&python).arg("-c").arg(script).arg(&incomplete).arg("radcliffe_camera_000519").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = revisitop(&incomplete);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("1 of its 8 database images are not in"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("radcliffe_camera_000519"), "{}", text(&out.stderr));
    assert!(!index.join("manifest.json").exists());

    let out = Command::new(&python).arg("-c").arg(script).arg(&gnd).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = revisitop(&gnd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("building the index of 7 database images"), "{}", text(&out.stderr));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(index.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["images"], 7, "{manifest}");
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    // Every query's partner is found first: mAP 100 in every setup that has positives; Easy skips the leuven
    // query (hard only), Hard skips the other two.
    for (setup, evaluated) in [(0, 2), (1, 3), (2, 1)] {
        assert_eq!(v[setup]["map"], 1.0, "{v}");
        assert_eq!(v[setup]["aps"].as_array().unwrap().iter().filter(|a| !a.is_null()).count(), evaluated, "{v}");
    }

    let page = std::fs::read_to_string(dir.path().join("r.html")).unwrap();
    assert!(page.contains("<span class='easy'>graf1.png</span>"), "{page}");
    let gt = dir.path().join("pairs.json");
    std::fs::write(
        &gt,
        r#"{"queries": [{"query": "graf3.png", "positives": ["graf1.png"]},
                        {"query": "aloeR.jpg", "positives": ["aloeL.jpg"]}]}"#,
    )
    .unwrap();
    let out = delf(&[
        "eval",
        "pairs",
        "--gt",
        gt.to_str().unwrap(),
        "--index",
        index.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["map"], 1.0, "{v}");
}
