//! The size budget of the protocol, measured on messages shaped like real traffic: a query image's 1000 40-d
//! descriptors, a shard's answer with K = 60 neighbours each, and the features of one image. The figures are
//! printed (`cargo test -p delf-proto -- --nocapture`) and must stay well inside `MAX_MESSAGE_BYTES`.
#![allow(clippy::unwrap_used)]

use delf_core::rng::SplitMix64;
use delf_proto::MAX_MESSAGE_BYTES;
use delf_proto::v1::{
    CompactNeighbors, Features, ImageRef, Keypoint, Neighbor, NeighborList, ShardSearchRequest, ShardSearchResponse,
};
use prost::Message;

const QUERY: usize = 1000;
const DIM: usize = 40;
const K: usize = 60;

fn floats(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32 * 0.15).collect()
}

#[test]
fn real_shaped_messages_fit_the_budget_and_round_trip() {
    let mut rng = SplitMix64(7);
    let request = ShardSearchRequest {
        request_id: "0123456789abcdef".into(),
        shard_id: 3,
        descriptor_fingerprint: "delf/0123456789abcdef".into(),
        dim: DIM as u32,
        descriptors: floats(&mut rng, QUERY * DIM),
        k: K as u32,
        nprobe: 16,
        max_distance: None,
        version: "2026-11-27".into(),
        probes: (0..QUERY * 16).map(|_| rng.below(65_536) as u32).collect(),
        without_keypoints: true,
        compact: true,
    };
    // Neighbours in a million-image shard: image numbers up to 1e6, feature indices up to 1000, real-valued rest.
    let lists: Vec<NeighborList> = (0..QUERY)
        .map(|_| NeighborList {
            neighbors: (0..K)
                .map(|j| Neighbor {
                    image: rng.below(1_000_000) as u32,
                    feature: rng.below(1000) as u32,
                    distance: 0.3 + j as f32 * 0.01 + rng.uniform() as f32 * 0.01,
                    x: rng.uniform() as f32 * 1024.0,
                    y: rng.uniform() as f32 * 768.0,
                })
                .collect(),
        })
        .collect();
    let images: Vec<ImageRef> = (0..QUERY * K / 10)
        .map(|i| ImageRef { image: i as u32 * 17, id: format!("s3://corpus/photos/{i:08}.jpg") })
        .collect();
    let response = ShardSearchResponse { shard_id: 3, lists, images, compact: None };
    // What the coordinator now asks for: the same neighbours without their keypoints (x, y unset).
    let mut bare = response.clone();
    bare.lists.iter_mut().flat_map(|l| &mut l.neighbors).for_each(|n| (n.x, n.y) = (0.0, 0.0));
    let features = Features {
        width: 1024,
        height: 768,
        dim: DIM as u32,
        keypoints: (0..QUERY)
            .map(|i| Keypoint { x: i as f32 * 1.3, y: i as f32 * 0.7, scale: 0.5, score: 100.0 - i as f32 * 0.01 })
            .collect(),
        descriptors: floats(&mut rng, QUERY * DIM),
        fingerprint: "delf/0123456789abcdef".into(),
    };
    // What the coordinator asks for now: K' neighbours per descriptor as packed columns, no keypoints, no ids.
    let compact = |k: usize, rng: &mut SplitMix64| {
        let mut images: Vec<u32> = (0..QUERY * k).map(|_| rng.below(1_000_000) as u32).collect();
        let slots_of = images.clone();
        images.sort_unstable();
        images.dedup();
        let mut previous = 0;
        let image_deltas = images
            .iter()
            .map(|&i| {
                let d = i - previous;
                previous = i;
                d
            })
            .collect();
        let slots = slots_of.iter().map(|i| images.binary_search(i).unwrap() as u32).collect();
        let neighbors = CompactNeighbors {
            lengths: vec![k as u32; QUERY],
            image_deltas,
            slots,
            features: (0..QUERY * k).map(|_| rng.below(1000) as u32).collect(),
            distances: (0..QUERY * k).map(|j| 0.3 + (j % k) as f32 * 0.01).collect(),
        };
        ShardSearchResponse { shard_id: 3, compact: Some(neighbors), ..Default::default() }
    };
    let (compact60, compact4) = (compact(K, &mut rng), compact(4, &mut rng));
    let sizes = [
        ("ShardSearchRequest (1000 x 40, 16 cells each of 65536)", request.encoded_len()),
        ("ShardSearchResponse (1000 x 60 neighbours, 6000 image ids)", response.encoded_len()),
        ("the same, without_keypoints", bare.encoded_len()),
        ("Features (1000 x 40)", features.encoded_len()),
        ("the same neighbours, compact, no ids", compact60.encoded_len()),
        ("compact, K' = 4 (K 60 over 64 shards)", compact4.encoded_len()),
    ];
    for (what, bytes) in sizes {
        println!("{what}: {bytes} bytes ({:.2} MiB)", bytes as f64 / (1 << 20) as f64);
        assert!(bytes * 8 < MAX_MESSAGE_BYTES, "{what} is {bytes} bytes");
    }
    assert!(sizes[2].1 + QUERY * K * 10 <= sizes[1].1, "a keypoint is two 5-byte fields of every neighbour");
    let cells = ShardSearchRequest { probes: Vec::new(), ..request.clone() }.encoded_len();
    assert_eq!(cells / 1000, 160, "packed floats: 4 bytes each plus framing");
    assert!(sizes[0].1 - cells <= QUERY * 16 * 3 + 8, "packed cell numbers: at most 3 bytes each below 2^21");
    assert_eq!(ShardSearchRequest::decode(request.encode_to_vec().as_slice()).unwrap(), request);
    assert_eq!(ShardSearchResponse::decode(response.encode_to_vec().as_slice()).unwrap(), response);
    assert_eq!(ShardSearchResponse::decode(compact4.encode_to_vec().as_slice()).unwrap(), compact4);
    // Per neighbour: a slot (2-3 bytes), a feature (2), a distance (4); the image table is shared.
    for (bytes, k) in [(sizes[4].1, K), (sizes[5].1, 4)] {
        let per = bytes as f64 / (QUERY * k) as f64;
        println!("compact, K {k}: {per:.1} bytes per neighbour");
        assert!(per < 10.0, "{per} bytes per neighbour");
    }
    assert!(sizes[4].1 * 3 < sizes[2].1 * 2, "compact columns are a third smaller than Neighbor messages");
    assert_eq!(Features::decode(features.encode_to_vec().as_slice()).unwrap(), features);
}
