//! Raft-replicated cluster metadata with real `delf serve coordinator` processes on loopback (docs/cluster-metadata.md):
//! leader loss under continuous writes, restart from disk, catch-up by snapshot, adding and removing a
//! coordinator, and a partitioned minority (the `meta::partition` fail point of test builds stops delivering its
//! messages) that cannot commit.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Role, TOKEN, answers, delf, free_port, ok, scrape};
use delf_meta::client::Coordinators;
use delf_meta::{Command, MetaState};

/// Coordinators of one test cluster.
struct Group {
    dir: PathBuf,
    config: PathBuf,
    addrs: BTreeMap<u64, String>,
    procs: BTreeMap<u64, Role>,
    /// Prometheus endpoint of each coordinator.
    metrics: BTreeMap<u64, String>,
    rt: tokio::runtime::Runtime,
}

/// The configuration of a test cluster: `cluster` is added to `[cluster]`. Queries get 15 s, and a retired version
/// stays loaded as long (queries that started on it must be able to finish on it, however loaded the machine is).
/// Queries are searched upright only: version switches are what these tests are about; the cluster's query
/// rotations are tested by `cluster.rs`.
/// The Raft timing is the shipped default (100 ms ticks, elections after 1-2 s): with 50 ms ticks a vote's round trip
/// (two fsyncs and two gRPC hops) outlasted the election timeout on a loaded 2-core CI machine, and the two
/// coordinators left after the leader was killed never elected one.
fn write_config(path: &Path, addrs: &BTreeMap<u64, String>, cluster: &str) {
    let peers: Vec<String> = addrs.iter().map(|(id, a)| format!("{{ id = {id}, address = {a:?} }}")).collect();
    let toml = format!(
        "[search]\nrotations = 1\n[cluster]\ndeadline_ms = 15000\n{cluster}[meta]\ntick_ms = 100\nelection_ticks = 10\nheartbeat_ticks = 2\nsnapshot_every = 20\nheartbeat_ms = 300\nnode_timeout_ms = 3000\nretire_grace_ms = 15000\ncoordinators = [{}]\n",
        peers.join(", ")
    );
    std::fs::write(path, toml).unwrap();
}

impl Group {
    fn new(dir: &Path, n: u64, extra: &str) -> Self {
        let addrs: BTreeMap<u64, String> = (1..=n).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
        let config = dir.join("delf.toml");
        write_config(&config, &addrs, extra);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut g =
            Self { dir: dir.to_path_buf(), config, addrs, procs: BTreeMap::new(), metrics: BTreeMap::new(), rt };
        for id in 1..=n {
            g.start(id, false);
        }
        g
    }

    fn start(&mut self, id: u64, join: bool) {
        let addr = self.addrs[&id].clone();
        let mut c = delf(&self.config);
        c.env("DELF_META__ID", id.to_string())
            .env("DELF_META__JOIN", join.to_string())
            .env("DELF_LOG__LEVEL", "info")
            .env("DELF_HOME", self.dir.join("home"));
        let metrics = self.metrics.entry(id).or_insert_with(|| format!("127.0.0.1:{}", free_port())).clone();
        let args = ["coordinator", "--listen", &addr, "--metrics-listen", &metrics];
        let role = Role::start_with(c, &self.dir, &format!("coordinator{id}"), &args);
        self.procs.insert(id, role);
    }

    fn kill(&mut self, id: u64) {
        self.procs.get_mut(&id).unwrap().kill();
        self.procs.remove(&id);
    }

    fn client(&self, ids: &[u64], timeout: Duration) -> Coordinators {
        let _in = self.rt.enter();
        let addrs: Vec<String> = ids.iter().map(|id| self.addrs[id].clone()).collect();
        let security = delf_rpc::Security::new(Some(TOKEN.into()), None).unwrap();
        Coordinators::new(&addrs, &security, timeout).unwrap()
    }

    fn running(&self) -> Vec<u64> {
        self.procs.keys().copied().collect()
    }

    /// (leader id, term) once the running coordinators agree on one.
    fn leader(&self, within: Duration) -> (u64, u64) {
        let ids = self.running();
        let c = self.client(&ids, Duration::from_secs(2));
        let started = Instant::now();
        loop {
            let statuses = self.rt.block_on(c.raft_statuses());
            let views: Vec<_> = statuses.into_iter().filter_map(|(_, r)| r.ok()).collect();
            if let Some(l) = views.iter().find(|v| v.role == "leader")
                && views.iter().filter(|v| v.leader == l.id && v.term == l.term).count() * 2 > views.len()
            {
                return (l.id, l.term);
            }
            assert!(started.elapsed() < within, "no leader within {within:?}: {views:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What coordinator `id` has applied (no read index: its own view).
    fn local_state(&self, id: u64) -> Option<(MetaState, u64)> {
        self.rt.block_on(self.client(&[id], Duration::from_secs(1)).state(true)).ok()
    }

    /// Waits until coordinator `id` has applied the same state as `expected`.
    fn converges(&self, id: u64, expected: &MetaState, within: Duration) {
        let started = Instant::now();
        loop {
            if self.local_state(id).is_some_and(|(s, _)| s == *expected) {
                return;
            }
            if started.elapsed() > within {
                let log = self.log(id);
                let tail = &log[log.len().saturating_sub(4000)..];
                panic!("coordinator {id} did not catch up: {:?}\n{tail}", self.local_state(id));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.join(format!("coordinator{id}.log"))).unwrap_or_default()
    }
}

fn write(name: &str) -> Command {
    Command::RegisterVersion {
        version: name.into(),
        index_name: "writes".into(),
        uri: format!("/nowhere/{name}"),
        shards: 1,
        descriptor_fingerprint: "test".into(),
        replicas: 1,
    }
}

#[test]
fn metadata_survives_leader_loss_restarts_membership_changes_and_partitions() {
    let tmp = tempfile::tempdir().unwrap();
    let mut g = Group::new(tmp.path(), 3, "");
    let (leader, term) = g.leader(Duration::from_secs(20));

    // 1. Continuous writes through any coordinator; the leader is killed meanwhile. Every write is acknowledged
    //    (the client retries while there is no leader), and a new leader is elected within a few election
    //    timeouts (10 ticks of 50 ms, randomised up to twice that).
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let writer = {
        let c = g.client(&[1, 2, 3], Duration::from_secs(20));
        let (stop, count) = (Arc::clone(&stop), Arc::clone(&count));
        let handle = g.rt.handle().clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut failed = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{i}");
                match handle.block_on(c.propose(&write(&name))) {
                    Ok(_) => acked.push(name),
                    Err(s) => failed.push(format!("{name}: {s:?}")),
                }
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            (acked, failed)
        })
    };
    wait_for("20 writes", Duration::from_secs(60), || count.load(Ordering::Relaxed) >= 20);
    let killed_at = Instant::now();
    g.kill(leader);
    let at_kill = count.load(Ordering::Relaxed);
    let (new_leader, new_term) = g.leader(Duration::from_secs(10));
    let election = killed_at.elapsed();
    assert!(new_leader != leader && new_term > term);
    assert!(election < Duration::from_secs(5), "new leader after {election:?}");
    // Enough writes after the loss (snapshot_every = 20) that the log the killed coordinator lacks is compacted
    // into a snapshot.
    wait_for("50 writes after the loss", Duration::from_secs(60), || count.load(Ordering::Relaxed) >= at_kill + 50);
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.join().unwrap();
    assert!(failed.is_empty(), "failed writes: {failed:?}");
    let everyone = g.client(&g.running(), Duration::from_secs(10));
    let (state, _) = g.rt.block_on(everyone.state(false)).unwrap();
    let missing: Vec<&String> = acked.iter().filter(|w| !state.versions.contains_key(*w)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");

    // 2. The killed coordinator restarts from its disk state and catches up by snapshot (its log is behind the
    //    leader's first index).
    g.start(leader, false);
    g.converges(leader, &state, Duration::from_secs(20));
    assert!(g.log(leader).contains("installed a snapshot from the leader"), "{}", g.log(leader));

    // 3. A fourth coordinator joins (started empty, then added), and one of the first three is removed.
    g.addrs.insert(4, format!("127.0.0.1:{}", free_port()));
    g.start(4, true);
    let out = ok(delf(&g.config)
        .env("DELF_META__ID", "1")
        .args(["cluster", "members", "add", "4", &g.addrs[&4]])
        .output()
        .unwrap());
    assert_eq!(out.trim(), "voters: [1, 2, 3, 4]");
    let (state, _) = g.rt.block_on(everyone.state(false)).unwrap();
    assert_eq!(state.coordinators.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    g.converges(4, &state, Duration::from_secs(20));
    let (leader, _) = g.leader(Duration::from_secs(10));
    let removed = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
    let out = ok(delf(&g.config).args(["cluster", "members", "remove", &removed.to_string()]).output().unwrap());
    g.kill(removed);
    let voters = g.running();
    assert_eq!(out.trim(), format!("voters: {voters:?}"));
    assert_eq!(voters.len(), 3);
    for id in &voters {
        let (_, view) = g.rt.block_on(g.client(&[*id], Duration::from_secs(5)).raft_statuses()).remove(0);
        let mut v = view.unwrap().voters;
        v.sort_unstable();
        assert_eq!(v, voters, "coordinator {id}");
    }
    let everyone = g.client(&voters, Duration::from_secs(10));
    g.rt.block_on(everyone.propose(&write("after-membership-changes"))).unwrap();
    // Admin calls need the cluster's token.
    let out = delf(&g.config).env("DELF_CLUSTER__TOKEN", "wrong").args(["cluster", "retire", "w1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(common::text(&out.stderr).contains("Unauthenticated"), "{}", common::text(&out.stderr));

    // 4. The leader is cut off from the others: it cannot commit (a write sent to it fails), the majority elects
    //    a new leader and commits; healed, the old leader drops its uncommitted write and converges.
    let (cut, _) = g.leader(Duration::from_secs(10));
    let majority: Vec<u64> = voters.iter().copied().filter(|&id| id != cut).collect();
    g.rt.block_on(everyone.set_fail_point(&g.addrs[&cut], delf_meta::fault::PARTITION, "return")).unwrap();
    let minority = g.client(&[cut], Duration::from_secs(4));
    let refused = g.rt.block_on(minority.propose(&write("minority-write")));
    assert!(refused.is_err(), "a partitioned coordinator committed: {refused:?}");
    let majority_client = g.client(&majority, Duration::from_secs(15));
    g.rt.block_on(majority_client.propose(&write("majority-write"))).unwrap();
    let (state, _) = g.rt.block_on(majority_client.state(false)).unwrap();
    assert!(!state.versions.contains_key("minority-write"));
    g.rt.block_on(everyone.set_fail_point(&g.addrs[&cut], delf_meta::fault::PARTITION, "")).unwrap();
    g.converges(cut, &state, Duration::from_secs(20));
    let (state, _) = g.rt.block_on(everyone.state(false)).unwrap();
    assert!(state.versions.contains_key("majority-write") && !state.versions.contains_key("minority-write"));
}

fn build_index(g: &Group, name: &str, photos: &[PathBuf], shards: u32, pca: Option<&Path>) -> PathBuf {
    let list = g.dir.join(format!("{name}.txt"));
    std::fs::write(&list, photos.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join("\n")).unwrap();
    let out = g.dir.join(name);
    let mut c = delf(&g.config);
    c.env("DELF_EXTRACT__MAX_SIDE", "640")
        .args(["index", "build", list.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--shards", &shards.to_string(), "--spec", "IVF16,PQ20x8r", "--device", "cpu"]);
    if let Some(pca) = pca {
        c.args(["--pca", pca.to_str().unwrap()]);
    }
    ok(c.output().unwrap());
    out
}

/// The replicated state as `delf cluster meta --json` prints it.
fn meta_state(g: &Group) -> MetaState {
    let out = ok(delf(&g.config).args(["cluster", "meta", "--json"]).output().unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    serde_json::from_value(v["state"].clone()).unwrap()
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `query` again and again on a thread until `stop` is set; the outputs in order.
fn keep_querying(
    stop: &Arc<AtomicBool>,
    query: impl Fn() -> std::process::Output + Send + 'static,
) -> std::thread::JoinHandle<Vec<std::process::Output>> {
    let stop = Arc::clone(stop);
    std::thread::spawn(move || {
        let mut outputs = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            outputs.push(query());
        }
        outputs
    })
}

#[test]
fn index_versions_switch_under_load_while_a_coordinator_and_an_index_node_die() {
    let tmp = tempfile::tempdir().unwrap();
    let p = delf_testkit::photos_dir();
    let database =
        ["graf1.png", "leuvenA.jpg", "box.png", "aloeL.jpg", "fruits.jpg", "home.jpg", "lena.jpg", "board.jpg"];
    let v1_photos: Vec<PathBuf> = database.iter().map(|f| p.join(f)).filter(|f| f.is_file()).collect();
    assert!(v1_photos.len() >= 7, "opencv-doc photos missing: {v1_photos:?}");
    // Version 2 is re-indexed without leuvenA: its answers differ, so every answer tells which version made it.
    let v2_photos: Vec<PathBuf> = v1_photos.iter().filter(|f| !f.ends_with("leuvenA.jpg")).cloned().collect();

    let worker_addr = format!("127.0.0.1:{}", free_port());
    let mut g = Group::new(tmp.path(), 3, "");
    let v1 = build_index(&g, "v1", &v1_photos, 2, None);
    let v2 = build_index(&g, "v2", &v2_photos, 3, Some(&v1.join("pca.safetensors")));
    // Workers load the extraction settings and PCA of `cluster.index` (both versions share them).
    let cluster = format!("index = {:?}\nshard_timeout_ms = 1500\n", v1.display().to_string());
    write_config(&g.config, &g.addrs, &cluster);
    let (leader, _) = g.leader(Duration::from_secs(20));

    let mut nodes: Vec<Role> = (1..=3)
        .map(|i| {
            let addr = format!("127.0.0.1:{}", free_port());
            let name = format!("node{i}");
            Role::start(&g.config, &g.dir, &name, &["index-node", "--listen", &addr, "--node", &name])
        })
        .collect();
    let _worker = Role::start(&g.config, &g.dir, "worker", &["worker", "--listen", &worker_addr]);

    let queries: Vec<String> =
        ["graf3.png", "leuvenB.jpg", "squirrel_cls.jpg"].iter().map(|q| p.join(q).display().to_string()).collect();
    let expected = |index: &Path| {
        answers(&ok(delf(&g.config)
            .args(["search", "--json", "--index", index.to_str().unwrap()])
            .args(&queries)
            .output()
            .unwrap()))
    };
    let (expected_v1, expected_v2) = (expected(&v1), expected(&v2));
    assert!(expected_v1[1].first().is_some_and(|r| r.0.ends_with("leuvenA.jpg")), "{expected_v1:?}");
    assert!(expected_v2[1].is_empty(), "{expected_v2:?}");

    // Version 1: registered, loaded by the index nodes (2 replicas per shard), activated.
    let out =
        ok(delf(&g.config).args(["cluster", "register", "v1", "--index", v1.to_str().unwrap()]).output().unwrap());
    assert!(out.contains("version v1 registered"), "{out}");
    let out = delf(&g.config).args(["cluster", "activate", "v2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "activating an unknown version is refused");
    ok(delf(&g.config).args(["cluster", "activate", "v1", "--wait-secs", "120"]).output().unwrap());

    // Queries go to a coordinator that is not the leader (the leader is killed below).
    let follower = g.addrs[&g.running().into_iter().find(|&id| id != leader).unwrap()].clone();
    let query = {
        let (config, follower, queries) = (g.config.clone(), follower.clone(), queries.clone());
        move || delf(&config).args(["query", "--json", "--coordinator", &follower]).args(&queries).output().unwrap()
    };
    wait_for("version 1 served with every worker", Duration::from_secs(120), || query().status.success());
    assert_eq!(answers(&ok(query())), expected_v1);

    // Under continuous queries: the leader dies, version 2 is registered and activated, then an index node dies.
    let stop = Arc::new(AtomicBool::new(false));
    let load = keep_querying(&stop, query.clone());
    std::thread::sleep(Duration::from_millis(1500));
    g.kill(leader);
    ok(delf(&g.config).args(["cluster", "register", "v2", "--index", v2.to_str().unwrap()]).output().unwrap());
    let out = ok(delf(&g.config).args(["cluster", "activate", "v2", "--wait-secs", "120"]).output().unwrap());
    assert!(out.contains("version v2 serves index default"), "{out}");
    std::thread::sleep(Duration::from_millis(2000));
    nodes[0].kill();
    // The dead node's shards move to the others (after meta.node_timeout_ms) and are loaded there.
    wait_for("every shard of v2 back to 2 ready replicas", Duration::from_secs(60), || {
        let s = meta_state(&g);
        !s.nodes["node1"].up && (0..3).all(|shard| s.ready_replicas("v2", shard).len() == 2)
    });
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let outputs = load.join().unwrap();

    // No query failed, every answer is exactly one version's, and the switch happened once. Each photo is its
    // own request (`delf query` sends them one after another), so the switch may fall between two lines of one
    // run: versions are told apart per answer, in the order they were answered.
    let mut versions: Vec<u8> = Vec::new();
    for out in outputs {
        let stdout = ok(out);
        for (q, a) in answers(&stdout).into_iter().enumerate() {
            match (a == expected_v1[q], a == expected_v2[q]) {
                (true, true) => {}
                (true, false) => versions.push(1),
                (false, true) => versions.push(2),
                (false, false) => panic!("answer {q} of neither version: {a:?}\n{stdout}"),
            }
        }
    }
    assert!(versions.first() == Some(&1) && versions.last() == Some(&2), "{versions:?}");
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "answers went back to version 1: {versions:?}");
    assert_eq!(answers(&ok(query())), expected_v2);
    let status =
        ok(delf(&g.config).args(["cluster", "status", "--json", "--coordinator", &follower]).output().unwrap());
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!((&status["version"], &status["shard_count"]), (&serde_json::json!("v2"), &serde_json::json!(3)));

    // Version 1 is retired and, after meta.retire_grace_ms (15 s), unloaded everywhere.
    wait_for("version 1 unloaded", Duration::from_secs(60), || {
        let s = meta_state(&g);
        s.versions["v1"].state == delf_meta::VersionState::Retired
            && s.nodes.values().all(|n| n.loaded.iter().all(|(v, _)| v == "v2"))
    });

    // Scaling out: a new index node gets nothing until `cluster rebalance`, which moves replicas to it while
    // queries run (each loaded there before the old node lets go): no failed query, same answers, 2/2/2 shards.
    let addr = format!("127.0.0.1:{}", free_port());
    nodes.push(Role::start(&g.config, &g.dir, "node4", &["index-node", "--listen", &addr, "--node", "node4"]));
    wait_for("node4 registered", Duration::from_secs(60), || meta_state(&g).nodes.get("node4").is_some_and(|n| n.up));
    assert!(meta_state(&g).assignments_of("node4").is_empty());
    stop.store(false, Ordering::Relaxed);
    let load = keep_querying(&stop, query.clone());
    let out = ok(delf(&g.config).args(["cluster", "rebalance", "--wait-secs", "120"]).output().unwrap());
    assert!(out.contains("moving 2 replicas") && out.contains("every move finished"), "{out}");
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    for out in load.join().unwrap() {
        assert_eq!(answers(&ok(out)), expected_v2);
    }
    let s = meta_state(&g);
    let held: Vec<usize> = ["node2", "node3", "node4"].iter().map(|n| s.assignments_of(n).len()).collect();
    assert_eq!(held, vec![2, 2, 2], "{:?}", s.versions["v2"]);
    assert!((0..3).all(|shard| s.ready_replicas("v2", shard).len() == 2), "{:?}", s.versions["v2"]);
    // A coordinator's gauges say the same: no move pending, one node down (node1), one leader among them.
    let follower_id = *g.addrs.iter().find(|(_, a)| **a == follower).unwrap().0;
    let gauge = |id: u64, series: &str, value: f64| common::metric(&scrape(&g.metrics[&id]), series) == Some(value);
    wait_for("the metadata gauges", Duration::from_secs(10), || {
        gauge(follower_id, "delf_meta_moves_pending", 0.0) && gauge(follower_id, "delf_meta_nodes_down", 1.0)
    });
    let leaders = g.running().into_iter().filter(|&id| gauge(id, "delf_raft_leader", 1.0)).count();
    assert_eq!(leaders, 1);
}
