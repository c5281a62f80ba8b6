//! The Python client (clients/python) against a real cluster: `delf serve` processes (a coordinator, an index node,
//! a worker) with mutual TLS and a bearer token, queried by clients/python/example.py through the generated stubs.
//! Its answers must be those of `delf query` for the same photos; a wrong token is refused with UNAUTHENTICATED.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Role, TOKEN, answers, delf, free_port, json_lines, ok, python, repo, text, wait_until_ready};
use delf_testkit::photos_dir as photos;

#[test]
fn the_python_client_answers_like_delf_query() {
    let py = python();
    assert!(py.is_file(), "{} missing: run scripts/setup.sh", py.display());
    // The stubs of this checkout's proto/ (setup generates them too; regenerating costs a second).
    ok(Command::new(&py).arg(repo().join("clients/python/generate.py")).output().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let p = photos();
    let list = dir.path().join("db.txt");
    let database: Vec<PathBuf> =
        ["graf1.png", "leuvenA.jpg", "box.png", "fruits.jpg"].iter().map(|f| p.join(f)).collect();
    assert!(database.iter().all(|f| f.is_file()), "opencv-doc photos missing: {database:?}");
    std::fs::write(&list, database.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join("\n")).unwrap();
    let index = dir.path().join("index");
    let config = dir.path().join("delf.toml");
    std::fs::write(&config, "").unwrap();
    ok(delf(&config)
        .args(["index", "build", list.to_str().unwrap(), "--out", index.to_str().unwrap()])
        .args(["--spec", "IVF16,PQ20x8r", "--device", "cpu"])
        .output()
        .unwrap());

    let port = || format!("127.0.0.1:{}", free_port());
    let (coordinator, node, worker) = (port(), port(), port());
    let certs = delf_testkit::tls::TestCa::new("python client test CA").issue(dir.path(), "node");
    let toml = format!(
        "device = \"cpu\"\n[cluster]\nindex = {:?}\ncoordinator = {coordinator:?}\nworkers = [{worker:?}]\n\
         deadline_ms = 120000\nworker_timeout_ms = 60000\n[cluster.tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n\
         require_client_cert = true\n[[cluster.shards]]\nid = 0\nreplicas = [{node:?}]\n",
        index.display().to_string(),
        certs.cert.display().to_string(),
        certs.key.display().to_string(),
        certs.ca.display().to_string(),
    );
    std::fs::write(&config, toml).unwrap();
    let logs = dir.path();
    let _node = Role::start(&config, logs, "node", &["index-node", "--listen", &node, "--shard", "0"]);
    let _worker = Role::start(&config, logs, "worker", &["worker", "--listen", &worker]);
    let _coordinator = Role::start(&config, logs, "coordinator", &["coordinator"]);
    wait_until_ready(&config, Duration::from_secs(120));

    let queries: Vec<String> =
        ["graf3.png", "leuvenB.jpg", "squirrel_cls.jpg"].iter().map(|q| p.join(q).display().to_string()).collect();
    let expected = answers(&ok(delf(&config).args(["query", "--json"]).args(&queries).output().unwrap()));
    assert!(expected[0].first().is_some_and(|r| r.0.ends_with("graf1.png")), "{expected:?}");
    assert!(expected[2].is_empty(), "the distractor matched: {expected:?}");

    let client = |token: &str| {
        let mut c = Command::new(&py);
        c.arg(repo().join("clients/python/example.py"))
            .args(["--coordinator", &coordinator, "--token", token, "--status", "--timeout", "600"])
            .args(["--ca", certs.ca.to_str().unwrap(), "--cert", certs.cert.to_str().unwrap()])
            .args(["--key", certs.key.to_str().unwrap()])
            .args(&queries);
        c.output().unwrap()
    };
    let stdout = ok(client(TOKEN));
    let lines = json_lines(&stdout);
    assert_eq!((lines[0]["shard_count"].as_u64(), lines[0]["images"].as_u64()), (Some(1), Some(4)), "{stdout}");
    let body: String = stdout.lines().skip(1).map(|l| format!("{l}\n")).collect();
    assert_eq!(answers(&body), expected, "the Python client and `delf query` disagree:\n{stdout}");
    for line in &lines[1..] {
        assert!(!line["request_id"].as_str().unwrap().is_empty() && line["timing_ms"]["total"].as_f64().unwrap() > 0.0);
    }

    let refused = client("not-the-token");
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused.stderr));
    assert!(text(&refused.stdout).contains("UNAUTHENTICATED") || text(&refused.stderr).contains("UNAUTHENTICATED"));
}
