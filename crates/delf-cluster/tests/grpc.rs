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
use delf_cluster::convert;
use delf_cluster::coordinator::CoordinatorService;
use delf_cluster::index_node::IndexNodeOptions;
use delf_core::FeatureSet;
use delf_index::{ScanKernel, ShardedIndex};
use delf_proto::v1 as pb;
use delf_rpc::{Security, TlsSettings, client};
use delf_search::synthetic::{SYNTHETIC_FINGERPRINT, SyntheticIndex};
use delf_search::{IndexManifest, RetrievalConfig};
use delf_storage::Stores;
use delf_testkit::tls::{CertFiles, TestCa};
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

/// One index node per shard of the 2-shard index in `index_dir`, serving on free ports; their addresses.
fn spawn_index_nodes(index_dir: &Path, cache_dir: &Path, security: &Security) -> Vec<String> {
    let stores = Arc::new(Stores::new());
    (0..2)
        .map(|shard_id| {
            let addr = free_addr();
            let opts = IndexNodeOptions {
                index: index_dir.display().to_string(),
                cache_dir: cache_dir.to_path_buf(),
                shard_id,
                stores: Arc::clone(&stores),
            };
            let (a, security) = (addr.clone(), security.clone());
            tokio::spawn(async move { delf_cluster::index_node::serve(&a, opts, &security).await.unwrap() });
            addr
        })
        .collect()
}

/// Shard `i` served by `nodes[i]` alone.
fn one_replica_each(nodes: &[String]) -> Vec<ShardReplicas> {
    nodes.iter().enumerate().map(|(i, a)| ShardReplicas { id: i as u32, replicas: vec![a.clone()] }).collect()
}

fn token_only() -> Security {
    Security::new(Some(TOKEN.into()), None).unwrap()
}

async fn wait_ready(addr: &str) {
    let channel = client::channel(addr, Duration::from_secs(1), &Security::none()).unwrap();
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

    let nodes = spawn_index_nodes(&index_dir, &dir.path().join("cache"), &token_only());
    let worker = free_addr();
    let coordinator = free_addr();
    let w = worker.clone();
    tokio::spawn(async move { delf_cluster::worker::serve(&w, None, &token_only()).await.unwrap() });
    let config = ClusterConfig {
        index: index_dir.display().to_string(),
        coordinator: coordinator.clone(),
        shards: one_replica_each(&nodes),
        workers: vec![worker.clone()],
        verify_batch: 7,
        token: Some(TOKEN.into()),
        ..ClusterConfig::default()
    };
    let rc = retrieval(&manifest);
    let service = CoordinatorService::new(&config, manifest.clone(), rc.clone()).unwrap();
    let c = coordinator.clone();
    tokio::spawn(async move { delf_cluster::coordinator::serve(&c, service, Default::default()).await.unwrap() });
    for n in &nodes {
        wait_ready(n).await;
    }
    let channel = |a: &str| client::channel(a, Duration::from_secs(1), &Security::none()).unwrap();
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
    // min_inliers 0 is a request of its own (proto3 optional): every verified candidate, ranked, as one process.
    // Its tail (no inliers, ranked by votes) shows every vote, so it goes through a coordinator whose shards answer
    // all K neighbours (`shard_answer_loss` 0); the default one's cut answers may drop a far vote.
    let exact = free_addr();
    let service = CoordinatorService::new(
        &ClusterConfig { coordinator: exact.clone(), shard_answer_loss: 0.0, ..config.clone() },
        manifest.clone(),
        rc.clone(),
    )
    .unwrap();
    let e = exact.clone();
    tokio::spawn(async move { delf_cluster::coordinator::serve(&e, service, Default::default()).await.unwrap() });
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&exact).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let everything = pb::SearchRequest { min_inliers: Some(0), top: 1000, ..search(convert::features_to_pb(&query)) };
    let answer = client::coordinator(channel(&exact)).search(authed(everything)).await.unwrap().into_inner();
    let mut open = rc.clone();
    (open.verify.policy.min_inliers, open.top) = (0, 1000);
    let expected = delf_search::retrieve(&local, &query, &open, ScanKernel::detect()).unwrap();
    assert!(expected.results.len() > want.len(), "{} results", expected.results.len());
    let got: Vec<(String, u32)> = answer.results.iter().map(|m| (m.image_id.clone(), m.score)).collect();
    let all: Vec<(String, u32)> = expected.results.iter().map(|r| (r.id.clone(), r.score as u32)).collect();
    assert_eq!(got, all);

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

    // The centroids a coordinator assigns cells with, checked against the node's fingerprint; cells sent with a
    // search give the node's own answer; cells out of range are refused.
    let info = node.info(authed(pb::ShardInfoRequest {})).await.unwrap().into_inner();
    let cb = pb::CodebooksRequest { version: String::new(), shard_id: 1 };
    let cb = node.codebooks(authed(cb)).await.unwrap().into_inner();
    assert_eq!(cb.fingerprint, info.codebooks_fingerprint);
    let coarse = delf_index::CoarseQuantizer::from_parts(
        cb.spec.parse().unwrap(),
        cb.dim as usize,
        cb.coarse,
        &cb.pq_centroids,
        &info.codebooks_fingerprint,
    )
    .unwrap();
    let probes = coarse.probe(&query.descriptors[..DIM * 3], DIM, 4).unwrap();
    let probed = |probes| pb::ShardSearchRequest { nprobe: 4, probes, ..shard_search(1, 40, 10) };
    let own = node.search(authed(probed(Vec::new()))).await.unwrap().into_inner();
    let given = node.search(authed(probed(probes))).await.unwrap().into_inner();
    assert_eq!(own.lists, given.lists);
    let status = node.search(authed(probed(vec![999; 12]))).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let other = pb::CodebooksRequest { version: String::new(), shard_id: 0 };
    assert_eq!(node.codebooks(authed(other)).await.unwrap_err().code(), Code::NotFound);

    // The second round: neighbours without keypoints, then the keypoints of chosen features, as the search gave
    // them; NaN for a feature the shard does not hold; the two lists must pair up.
    let bare = pb::ShardSearchRequest { without_keypoints: true, ..shard_search(1, 40, 10) };
    let bare = node.search(authed(bare)).await.unwrap().into_inner();
    let neighbors: Vec<&pb::Neighbor> = ok.lists.iter().flat_map(|l| &l.neighbors).collect();
    let stripped: Vec<&pb::Neighbor> = bare.lists.iter().flat_map(|l| &l.neighbors).collect();
    assert_eq!(neighbors.len(), stripped.len());
    for (a, b) in neighbors.iter().zip(&stripped) {
        assert_eq!((a.image, a.feature, a.distance, b.x, b.y), (b.image, b.feature, b.distance, 0.0, 0.0));
    }
    let keypoints = |images: Vec<u32>, features: Vec<u32>| pb::KeypointsRequest {
        shard_id: 1,
        images,
        features,
        ..Default::default()
    };
    let mut images: Vec<u32> = neighbors.iter().map(|n| n.image).collect();
    let mut features: Vec<u32> = neighbors.iter().map(|n| n.feature).collect();
    images.push(0); // an image of the other shard
    features.push(0);
    let answer = node.keypoints(authed(keypoints(images, features))).await.unwrap().into_inner();
    let (got, scales) = (answer.xy, answer.scales);
    let expected: Vec<f32> = neighbors.iter().flat_map(|n| [n.x, n.y]).collect();
    assert_eq!(got[..expected.len()], expected[..]);
    assert!(got[expected.len()..].iter().all(|v| v.is_nan()));
    // One scale per requested feature: this synthetic index was built without scales (NaN: unknown).
    assert_eq!(scales.len() * 2, got.len());
    assert!(scales.iter().all(|s| s.is_nan()));
    let ragged = node.keypoints(authed(keypoints(vec![1, 3], vec![0]))).await.unwrap_err();
    assert_eq!(ragged.code(), Code::InvalidArgument, "{ragged:?}");

    // A worker: settings are required, coordinates must pair up.
    let mut wk = client::worker(channel(&worker));
    let candidate =
        pb::Candidate { image: 1, query_xy: vec![1.0, 2.0, 3.0, 4.0], db_xy: vec![1.0, 2.0], scale_ratios: vec![] };
    let no_settings = pb::VerifyRequest { candidates: vec![candidate.clone()], ..Default::default() };
    assert_eq!(wk.verify(authed(no_settings)).await.unwrap_err().code(), Code::InvalidArgument);
    let settings = Some(convert::verify_settings_to_pb(&rc.verify));
    let ragged = pb::VerifyRequest { candidates: vec![candidate], settings: settings.clone(), ..Default::default() };
    assert_eq!(wk.verify(authed(ragged)).await.unwrap_err().code(), Code::InvalidArgument);
    // Scale ratios: none, or one per correspondence.
    let (query_xy, db_xy) = (vec![1.0, 2.0, 3.0, 4.0], vec![1.0, 2.0, 3.0, 4.0]);
    let scales = |scale_ratios: Vec<f32>| pb::Candidate {
        image: 1,
        query_xy: query_xy.clone(),
        db_xy: db_xy.clone(),
        scale_ratios,
    };
    let request = |c| pb::VerifyRequest { candidates: vec![c], settings: settings.clone(), ..Default::default() };
    assert_eq!(wk.verify(authed(request(scales(vec![1.0])))).await.unwrap_err().code(), Code::InvalidArgument);
    assert!(wk.verify(authed(request(scales(vec![1.0, f32::NAN])))).await.is_ok());
    assert!(wk.verify(authed(request(scales(vec![])))).await.is_ok());
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
    tokio::spawn(async move { delf_cluster::index_node::serve(&a, opts, &Security::none()).await.unwrap() });
    wait_ready(&addr).await;
    let mut node = client::index_node(client::channel(&addr, Duration::from_secs(1), &Security::none()).unwrap());
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

fn tls(files: CertFiles) -> TlsSettings {
    TlsSettings { cert: files.cert, key: files.key, ca: files.ca, require_client_cert: true, domain: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster CA");
    let server_tls = tls(ca.issue(dir.path(), "worker"));
    let client_tls = tls(ca.issue(dir.path(), "coordinator"));
    let stranger_tls = tls(TestCa::new("another CA").issue(dir.path(), "stranger"));

    let addr = free_addr();
    let server = Security::new(Some(TOKEN.into()), Some(&server_tls)).unwrap();
    let a = addr.clone();
    tokio::spawn(async move { delf_cluster::worker::serve(&a, None, &server).await.unwrap() });

    let settings = Some(convert::verify_settings_to_pb(&delf_verify::VerifyConfig::robust()));
    let request = pb::VerifyRequest { candidates: Vec::new(), settings, ..Default::default() };
    let call = |security: Security| {
        let request = request.clone();
        let addr = addr.clone();
        async move {
            let channel = client::channel(&addr, Duration::from_secs(2), &security).unwrap();
            client::worker(channel).verify(authed(request)).await
        }
    };
    // Wait for the server: a trusted client with a certificate gets through.
    let trusted = Security::new(Some(TOKEN.into()), Some(&client_tls)).unwrap();
    let started = Instant::now();
    loop {
        match call(trusted.clone()).await {
            Ok(r) => {
                assert!(r.into_inner().results.is_empty());
                break;
            }
            Err(e) => assert!(started.elapsed() < Duration::from_secs(20), "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Plaintext, a certificate from another CA, and TLS without a client certificate are refused by the transport
    // (the connection is closed before any call reaches the service).
    let refused = |r: Result<tonic::Response<pb::VerifyResponse>, tonic::Status>, what: &str| {
        let code = r.err().unwrap_or_else(|| panic!("{what}: accepted")).code();
        // The client sees the closed connection as whatever its HTTP/2 layer made of it; what matters is that the
        // service never answered (it would say OK or UNAUTHENTICATED).
        assert!(
            matches!(code, Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal),
            "{what}: {code:?}"
        );
    };
    refused(call(Security::none()).await, "plaintext");
    refused(call(Security::new(Some(TOKEN.into()), Some(&stranger_tls)).unwrap()).await, "another CA");
    let ca_only = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(&client_tls.ca).unwrap()))
        .domain_name("127.0.0.1");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(ca_only)
        .unwrap()
        .connect_lazy();
    refused(client::worker(channel).verify(authed(request.clone())).await, "no client certificate");
    let mut missing = client_tls.clone();
    missing.cert = dir.path().join("missing.pem");
    assert!(matches!(Security::new(None, Some(&missing)), Err(delf_rpc::RpcError::Io { .. })));
    // TLS is not a substitute for the token.
    let tls_without_token = Security::new(None, Some(&client_tls)).unwrap();
    let channel = client::channel(&addr, Duration::from_secs(2), &tls_without_token).unwrap();
    let status = client::worker(channel).verify(tonic::Request::new(request.clone())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hedging_answers_from_the_second_replica_while_the_first_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("index");
    let query = build_index(&index_dir);
    let manifest = IndexManifest::load(&index_dir).unwrap();
    let nodes: Vec<String> = (0..2).map(|_| free_addr()).collect();
    for (shard_id, addr) in nodes.iter().enumerate() {
        let opts = IndexNodeOptions {
            index: index_dir.display().to_string(),
            cache_dir: dir.path().join("cache"),
            shard_id: shard_id as u32,
            stores: Arc::new(Stores::new()),
        };
        let addr = addr.clone();
        tokio::spawn(async move { delf_cluster::index_node::serve(&addr, opts, &Security::none()).await.unwrap() });
    }
    // A replica that accepts connections and never answers: a hung process, as seen from the network.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    let worker = free_addr();
    let w = worker.clone();
    tokio::spawn(async move { delf_cluster::worker::serve(&w, None, &Security::none()).await.unwrap() });
    let config = ClusterConfig {
        index: index_dir.display().to_string(),
        coordinator: free_addr(),
        shards: vec![
            ShardReplicas { id: 0, replicas: vec![hung_addr, nodes[0].clone()] },
            ShardReplicas { id: 1, replicas: vec![nodes[1].clone()] },
        ],
        workers: vec![worker],
        shard_timeout_ms: 20_000,
        hedge_after_ms: Some(100),
        ..ClusterConfig::default()
    };
    let rc = retrieval(&manifest);
    let service = CoordinatorService::new(&config, manifest, rc).unwrap();
    let c = config.coordinator.clone();
    tokio::spawn(async move { delf_cluster::coordinator::serve(&c, service, Default::default()).await.unwrap() });
    for n in &nodes {
        wait_ready(n).await;
    }
    let mut coord =
        client::coordinator(client::channel(&config.coordinator, Duration::from_secs(1), &Security::none()).unwrap());
    let request = pb::SearchRequest {
        query: Some(pb::search_request::Query::Features(convert::features_to_pb(&query))),
        ..Default::default()
    };
    // Two queries: the first replica tried rotates, so one of them starts with the hung replica.
    let started = Instant::now();
    for _ in 0..2 {
        let r = coord.search(tonic::Request::new(request.clone())).await.unwrap().into_inner();
        assert!(!r.degraded);
        assert_eq!(r.results.first().map(|m| m.image_id.as_str()), Some("synthetic/00000000.jpg"));
    }
    // Without hedging one query would wait the 20 s shard timeout.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // Each query makes two rounds (search, then keypoints) that each start at the next replica in rotation: the
    // hung one was first for at least one of them, and the other replica was asked after 100 ms.
    let metrics = delf_rpc::metrics::render();
    let hedged = metrics
        .lines()
        .find_map(|l| l.strip_prefix("delf_hedged_requests_total{shard=\"0\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(hedged.is_some_and(|n| n >= 1.0), "{metrics}");
}

/// A worker's extractor for a photo that shows image 0 only when turned: upright it gives unrelated descriptors,
/// its rotated passes give the real query.
struct TurnedPhoto {
    upright: FeatureSet,
    turned: FeatureSet,
}

impl delf_cluster::worker::QueryExtractor for TurnedPhoto {
    fn fingerprint(&self) -> String {
        FINGERPRINT.to_string()
    }

    fn extract(&self, _bytes: Vec<u8>) -> Result<FeatureSet, delf_cluster::worker::ExtractFailure> {
        Ok(self.upright.clone())
    }

    fn extract_rotations(
        &self,
        _bytes: Vec<u8>,
        degrees: &[f64],
    ) -> Result<Vec<FeatureSet>, delf_cluster::worker::ExtractFailure> {
        assert_eq!(degrees, [90.0, 180.0, 270.0]);
        // The photo shows at 90 degrees; the other passes find nothing.
        let none = FeatureSet { keypoints: Vec::new(), descriptors: Vec::new(), ..self.turned.clone() };
        Ok(vec![self.turned.clone(), none.clone(), none])
    }
}

/// The coordinator's query rotations equal one-process search's (`retrieve_extending` twice, as `delf search`
/// runs it): a photo whose upright search finds nothing is found through its rotated passes, with the same scores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turned_photo_is_found_through_rotated_passes_like_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("index");
    let turned = build_index(&index_dir);
    let manifest = IndexManifest::load(&index_dir).unwrap();
    // Unrelated descriptors where the upright photo's would be: unit vectors from a fixed seed.
    let mut rng = delf_core::rng::SplitMix64(7);
    let mut upright = turned.clone();
    for d in upright.descriptors.chunks_mut(DIM) {
        d.iter_mut().for_each(|v| *v = (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0);
        let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
        d.iter_mut().for_each(|v| *v /= norm);
    }
    let mut rc = retrieval(&manifest);
    rc.rotations = vec![90.0, 180.0, 270.0];
    rc.rotations_below = 30;

    let local = ShardedIndex::load(&index_dir, 2).unwrap();
    let k = ScanKernel::detect();
    let (first, known) = delf_search::retrieve_extending(&local, &upright, &[], Vec::new(), &rc, k).unwrap();
    assert!(rc.wants_rotations(first.results.first().map(|r| r.score)), "{:?}", first.results);
    let mut all = upright.clone();
    all.extend(turned.clone()).unwrap();
    let passes = [upright.len(), turned.len(), 0, 0];
    let (expected, _) = delf_search::retrieve_extending(&local, &all, &passes, known, &rc, k).unwrap();
    assert_eq!(expected.results.first().map(|r| r.id.as_str()), Some("synthetic/00000000.jpg"));

    let nodes = spawn_index_nodes(&index_dir, &dir.path().join("cache"), &Security::none());
    let (worker, coordinator) = (free_addr(), free_addr());
    let w = worker.clone();
    let extractor: Arc<dyn delf_cluster::worker::QueryExtractor> = Arc::new(TurnedPhoto { upright, turned });
    tokio::spawn(async move { delf_cluster::worker::serve(&w, Some(extractor), &Security::none()).await.unwrap() });
    let config = ClusterConfig {
        index: index_dir.display().to_string(),
        coordinator: coordinator.clone(),
        shards: one_replica_each(&nodes),
        workers: vec![worker.clone()],
        ..ClusterConfig::default()
    };
    let service = CoordinatorService::new(&config, manifest, rc).unwrap();
    let c = coordinator.clone();
    tokio::spawn(async move { delf_cluster::coordinator::serve(&c, service, Default::default()).await.unwrap() });
    for n in &nodes {
        wait_ready(n).await;
    }
    let mut coord =
        client::coordinator(client::channel(&coordinator, Duration::from_secs(1), &Security::none()).unwrap());
    let request = pb::SearchRequest {
        query: Some(pb::search_request::Query::Image(b"a turned photo".to_vec())),
        ..Default::default()
    };
    let r = client::request(request, "turned", None, Duration::from_secs(30));
    let answer = coord.search(r).await.unwrap().into_inner();
    let got: Vec<(String, u32, u32)> = answer.results.iter().map(|m| (m.image_id.clone(), m.score, m.votes)).collect();
    let want: Vec<(String, u32, u32)> =
        expected.results.iter().map(|r| (r.id.clone(), r.score as u32, r.votes as u32)).collect();
    assert_eq!(got, want);
    assert_eq!(answer.verified as usize, expected.verified);

    // Rotations a worker refuses: not finite, or too many.
    let mut w = client::worker(client::channel(&worker, Duration::from_secs(1), &Security::none()).unwrap());
    for rotations in [vec![f64::NAN], vec![10.0; delf_cluster::worker::MAX_ROTATIONS + 1]] {
        let ask = pb::ExtractRequest { image: b"x".to_vec(), rotations, ..Default::default() };
        let status = w.extract(client::request(ask, "bad", None, Duration::from_secs(5))).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
}
