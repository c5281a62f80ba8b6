//! The roles in one process over real gRPC on loopback sockets, on a synthetic index: the coordinator's answer
//! equals one-process retrieval, every role serves health and reflection, and malformed, oversized and
//! unauthenticated requests get the right status codes. An index node also loads its shard from a real
//! S3-compatible server. (Real processes, real photos and failures: `crates/delf-cli/tests/cluster.rs`.)

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use delf_cluster::config::{ClusterConfig, ShardReplicas};
use delf_cluster::coordinator::CoordinatorService;
use delf_cluster::index_node::IndexNodeOptions;
use delf_cluster::{client, convert};
use delf_core::FeatureSet;
use delf_features::Stores;
use delf_index::{ScanKernel, ShardedIndex};
use delf_proto::v1 as pb;
use delf_search::synthetic::{SYNTHETIC_FINGERPRINT, SyntheticIndex};
use delf_search::{IndexManifest, RetrievalConfig};
use tonic::Code;

const DIM: usize = 40;
const IMAGES: u32 = 40;
const PER_IMAGE: usize = 150;
const FINGERPRINT: &str = SYNTHETIC_FINGERPRINT;
const TOKEN: &str = "t0ken";

fn free_addr() -> String {
    format!("127.0.0.1:{}", TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
}

/// A 2-shard synthetic index in `dir`, and a query showing image 0 through an affine change.
fn build_index(dir: &Path) -> FeatureSet {
    let spec = SyntheticIndex {
        images: IMAGES,
        per_image: PER_IMAGE,
        dim: DIM,
        shards: 2,
        spec: "IVF16,PQ20x8r".parse().unwrap(),
        search: delf_index::SearchParams { k: 20, nprobe: 4, max_distance: None },
        train_sample: 10_000,
        seed: 1,
    };
    spec.build(dir, 1).unwrap().1.remove(0)
}

async fn wait_ready(addr: &str) {
    let channel = client::channel(addr, Duration::from_secs(1)).unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let started = Instant::now();
    loop {
        let req = tonic_health::pb::HealthCheckRequest { service: "delf.v1.IndexNode".into() };
        if let Ok(r) = health.check(req).await
            && r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{addr} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn retrieval(manifest: &IndexManifest) -> RetrievalConfig {
    let mut rc = RetrievalConfig { search: manifest.search, ..RetrievalConfig::default() };
    rc.verify.policy.min_inliers = 10;
    rc
}

fn authed<T>(message: T) -> tonic::Request<T> {
    client::request(message, "test-request", Some(TOKEN), Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roles_over_grpc_answer_like_one_process_and_refuse_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("index");
    let query = build_index(&index_dir);
    let manifest = IndexManifest::load(&index_dir).unwrap();

    let nodes: Vec<String> = (0..2).map(|_| free_addr()).collect();
    let worker = free_addr();
    let coordinator = free_addr();
    let stores = Arc::new(Stores::new());
    for (shard_id, addr) in nodes.iter().enumerate() {
        let opts = IndexNodeOptions {
            index: index_dir.display().to_string(),
            cache_dir: dir.path().join("cache"),
            shard_id: shard_id as u32,
            stores: Arc::clone(&stores),
        };
        let addr = addr.clone();
        tokio::spawn(async move { delf_cluster::index_node::serve(&addr, opts, Some(TOKEN)).await.unwrap() });
    }
    let w = worker.clone();
    tokio::spawn(async move { delf_cluster::worker::serve(&w, None, Some(TOKEN)).await.unwrap() });
    let config = ClusterConfig {
        index: index_dir.display().to_string(),
        coordinator: coordinator.clone(),
        shards: nodes
            .iter()
            .enumerate()
            .map(|(i, a)| ShardReplicas { id: i as u32, replicas: vec![a.clone()] })
            .collect(),
        workers: vec![worker.clone()],
        verify_batch: 7,
        token: Some(TOKEN.into()),
        ..ClusterConfig::default()
    };
    let rc = retrieval(&manifest);
    let service = CoordinatorService::new(&config, manifest.clone(), rc.clone()).unwrap();
    let c = coordinator.clone();
    tokio::spawn(async move { delf_cluster::coordinator::serve(&c, service, Some(TOKEN)).await.unwrap() });
    for n in &nodes {
        wait_ready(n).await;
    }
    let channel = |a: &str| client::channel(a, Duration::from_secs(1)).unwrap();
    let mut coord = client::coordinator(channel(&coordinator));

    // The same answer as one process on the same index.
    let local = ShardedIndex::load(&index_dir, 2).unwrap();
    let expected = delf_search::retrieve(&local, &query, &rc, ScanKernel::detect()).unwrap();
    assert_eq!(
        expected.results.first().map(|r| r.id.as_str()),
        Some("synthetic/00000000.jpg"),
        "{:?}",
        expected.results
    );
    assert!(expected.results[0].score >= 50, "{}", expected.results[0].score);
    let search = |features: pb::Features| pb::SearchRequest {
        query: Some(pb::search_request::Query::Features(features)),
        ..Default::default()
    };
    let answer = coord.search(authed(search(convert::features_to_pb(&query)))).await.unwrap().into_inner();
    let got: Vec<(String, u32, u32)> = answer.results.iter().map(|m| (m.image_id.clone(), m.score, m.votes)).collect();
    let want: Vec<(String, u32, u32)> =
        expected.results.iter().map(|r| (r.id.clone(), r.score as u32, r.votes as u32)).collect();
    assert_eq!(got, want);
    assert_eq!(answer.verified as usize, expected.verified);
    assert!(!answer.degraded && !answer.request_id.is_empty());

    // Health and reflection on every role.
    for addr in [&coordinator, &worker, &nodes[0]] {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(addr));
        let status = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
        assert_eq!(status.get_ref().status, 1, "{addr}");
        let mut reflection =
            tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel(addr));
        let ask = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut answers = reflection.server_reflection_info(tokio_stream::iter([ask])).await.unwrap().into_inner();
        let listed = format!("{:?}", answers.message().await.unwrap().unwrap());
        for service in ["delf.v1.Coordinator", "delf.v1.IndexNode", "delf.v1.Worker", "grpc.health.v1.Health"] {
            assert!(listed.contains(service), "{addr}: {service} not listed: {listed}");
        }
    }

    // No token, or a wrong one.
    let status = coord.search(tonic::Request::new(search(convert::features_to_pb(&query)))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let wrong = client::request(search(convert::features_to_pb(&query)), "x", Some("nope"), Duration::from_secs(5));
    assert_eq!(coord.search(wrong).await.unwrap_err().code(), Code::Unauthenticated);

    // Malformed queries.
    let mut nan = convert::features_to_pb(&query);
    nan.descriptors[3] = f32::NAN;
    assert_eq!(coord.search(authed(search(nan))).await.unwrap_err().code(), Code::InvalidArgument);
    let mut ragged = convert::features_to_pb(&query);
    ragged.descriptors.pop();
    assert_eq!(coord.search(authed(search(ragged))).await.unwrap_err().code(), Code::InvalidArgument);
    let mut other = convert::features_to_pb(&query);
    other.fingerprint = "delf/another-model".into();
    assert_eq!(coord.search(authed(search(other))).await.unwrap_err().code(), Code::FailedPrecondition);
    let empty = pb::SearchRequest::default();
    assert_eq!(coord.search(authed(empty)).await.unwrap_err().code(), Code::InvalidArgument);
    // This worker has no extractor: extraction fails on every worker.
    let photo =
        pb::SearchRequest { query: Some(pb::search_request::Query::Image(vec![1, 2, 3])), ..Default::default() };
    let status = coord.search(authed(photo)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("Unimplemented"), "{status:?}");

    // Oversized: a 81 MiB message is refused before it is buffered.
    let mut big_client = pb::coordinator_client::CoordinatorClient::new(channel(&coordinator))
        .max_encoding_message_size(200 << 20)
        .max_decoding_message_size(200 << 20);
    let huge =
        pb::SearchRequest { query: Some(pb::search_request::Query::Image(vec![0u8; 81 << 20])), ..Default::default() };
    let status = big_client.search(authed(huge)).await.unwrap_err();
    assert!(matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted), "{status:?}");

    // An index node: wrong shard, wrong dimension, bad K.
    let mut node = client::index_node(channel(&nodes[1]));
    let shard_search = |shard_id, dim, k| pb::ShardSearchRequest {
        shard_id,
        descriptor_fingerprint: FINGERPRINT.into(),
        dim,
        descriptors: query.descriptors[..DIM * 3].to_vec(),
        k,
        ..Default::default()
    };
    assert_eq!(node.search(authed(shard_search(0, 40, 10))).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(node.search(authed(shard_search(1, 12, 10))).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(node.search(authed(shard_search(1, 40, 0))).await.unwrap_err().code(), Code::InvalidArgument);
    let ok = node.search(authed(shard_search(1, 40, 10))).await.unwrap().into_inner();
    assert_eq!(ok.lists.len(), 3);
    assert!(ok.lists.iter().flat_map(|l| &l.neighbors).all(|n| n.image % 2 == 1 && n.x.is_finite()));

    // A worker: settings are required, coordinates must pair up.
    let mut wk = client::worker(channel(&worker));
    let candidate = pb::Candidate { image: 1, query_xy: vec![1.0, 2.0, 3.0, 4.0], db_xy: vec![1.0, 2.0] };
    let no_settings = pb::VerifyRequest { candidates: vec![candidate.clone()], ..Default::default() };
    assert_eq!(wk.verify(authed(no_settings)).await.unwrap_err().code(), Code::InvalidArgument);
    let settings = Some(convert::verify_settings_to_pb(&rc.verify));
    let ragged = pb::VerifyRequest { candidates: vec![candidate], settings, ..Default::default() };
    assert_eq!(wk.verify(authed(ragged)).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_node_loads_its_shard_from_s3() {
    let server = delf_testkit::S3Server::start().unwrap();
    server.create_bucket("indexes").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("index");
    build_index(&index_dir);
    let stores = Arc::new(Stores::with_options(server.options()));
    let location = stores.location("s3://indexes/v1").unwrap();
    for entry in std::fs::read_dir(&index_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        location.put(&location.child(&name), bytes::Bytes::from(std::fs::read(&path).unwrap())).await.unwrap();
    }
    let addr = free_addr();
    let opts = IndexNodeOptions {
        index: "s3://indexes/v1".into(),
        cache_dir: dir.path().join("cache"),
        shard_id: 1,
        stores: Arc::clone(&stores),
    };
    let a = addr.clone();
    tokio::spawn(async move { delf_cluster::index_node::serve(&a, opts, None).await.unwrap() });
    wait_ready(&addr).await;
    let mut node = client::index_node(client::channel(&addr, Duration::from_secs(1)).unwrap());
    let info = node.info(tonic::Request::new(pb::ShardInfoRequest {})).await.unwrap().into_inner();
    assert!(info.ready);
    assert_eq!((info.shard_id, info.shard_count, info.live_images), (1, 2, u64::from(IMAGES / 2)));
    assert_eq!(info.spec, "IVF16,PQ20x8r");
    let cached: Vec<String> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(cached.contains(&"shard-0001-of-0002.dshard".to_string()), "{cached:?}");
    assert!(!cached.iter().any(|f| f.ends_with(".part") || f.starts_with("shard-0000")), "{cached:?}");
}
