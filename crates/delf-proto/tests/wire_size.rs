//! The size budget of the protocol, measured on messages shaped like real traffic: a query image's 1000 40-d
//! descriptors, a shard's answer with K = 60 neighbours each, and the features of one image. The figures are
//! printed (`cargo test -p delf-proto -- --nocapture`) and must stay well inside `MAX_MESSAGE_BYTES`.
#![allow(clippy::unwrap_used)]

use delf_core::rng::SplitMix64;
use delf_proto::MAX_MESSAGE_BYTES;
use delf_proto::v1::{Features, ImageRef, Keypoint, Neighbor, NeighborList, ShardSearchRequest, ShardSearchResponse};
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
    let response = ShardSearchResponse { shard_id: 3, lists, images };
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
    let sizes = [
        ("ShardSearchRequest (1000 x 40, 16 cells each of 65536)", request.encoded_len()),
        ("ShardSearchResponse (1000 x 60 neighbours, 6000 image ids)", response.encoded_len()),
        ("the same, without_keypoints", bare.encoded_len()),
        ("Features (1000 x 40)", features.encoded_len()),
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
    assert_eq!(Features::decode(features.encode_to_vec().as_slice()).unwrap(), features);
}
