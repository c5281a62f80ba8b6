//! Recall against brute force, kernel equivalence, sharding, persistence and updates of the IVF-PQ index.
#![allow(clippy::unwrap_used)]

mod common;

use common::{DIM, Db, clustered, train};
use delf_index::{Neighbor, ScanKernel, SearchParams, ShardedIndex, exact_search, merge_neighbor_lists};

fn recall_at(found: &[Vec<Neighbor>], exact: &[Vec<Neighbor>], r: usize) -> f64 {
    let hits = found
        .iter()
        .zip(exact)
        .filter(|(f, e)| {
            let nn = (e[0].image, e[0].feature);
            f.iter().take(r).any(|n| (n.image, n.feature) == nn)
        })
        .count();
    hits as f64 / found.len() as f64
}

#[test]
fn recall_against_exact_search_on_clustered_vectors() {
    let db = Db::new(400, 100, 1);
    let cb = train(&db.vectors, "IVF64,PQ20x8r");
    let index = db.index(&cb, 1);
    assert_eq!(index.live_vectors(), 40_000);
    let queries = clustered(300, 99);
    let exact = exact_search(&db.vectors, &db.labels(), &queries, DIM, 60);
    let params = SearchParams { k: 60, nprobe: 8, max_distance: None };
    let found = index.search(&queries, DIM, &params, ScanKernel::detect()).unwrap();
    let (r1, r10, r60) = (recall_at(&found, &exact, 1), recall_at(&found, &exact, 10), recall_at(&found, &exact, 60));
    println!("IVF64,PQ20x8r nprobe 8: recall@1 {r1:.3} @10 {r10:.3} @60 {r60:.3}");
    assert!(r1 >= 0.5 && r10 >= 0.85 && r60 >= 0.95, "recall too low: {r1} {r10} {r60}");
    // More probes never lose recall.
    let wide = index.search(&queries, DIM, &SearchParams { nprobe: 32, ..params }, ScanKernel::detect()).unwrap();
    assert!(recall_at(&wide, &exact, 10) >= r10);
    // Distances are estimates of the squared distance and come sorted.
    for list in &found {
        assert!(list.windows(2).all(|w| w[0].distance <= w[1].distance));
    }
}

#[test]
fn simd_and_scalar_kernels_give_identical_results() {
    let db = Db::new(120, 50, 2);
    let cb = train(&db.vectors, "IVF16,PQ10x8r");
    let index = db.index(&cb, 1);
    let queries = clustered(200, 7);
    let params = SearchParams { k: 60, nprobe: 4, max_distance: Some(1.0) };
    let a = index.search(&queries, DIM, &params, ScanKernel::Scalar).unwrap();
    let b = index.search(&queries, DIM, &params, ScanKernel::detect()).unwrap();
    assert_eq!(a, b, "kernel {} differs from scalar", ScanKernel::detect().name());
    assert!(a.iter().flatten().all(|n| n.distance <= 1.0));
}

#[test]
fn sharded_search_equals_unsharded_and_merging_per_shard_answers_does_too() {
    let db = Db::new(150, 40, 3);
    let cb = train(&db.vectors, "IVF16,PQ20x8r");
    let one = db.index(&cb, 1);
    let three = db.index(&cb, 3);
    let queries = clustered(100, 5);
    let params = SearchParams { k: 30, nprobe: 6, max_distance: None };
    let kernel = ScanKernel::detect();
    let a = one.search(&queries, DIM, &params, kernel).unwrap();
    let b = three.search(&queries, DIM, &params, kernel).unwrap();
    assert_eq!(a, b);
    let parts =
        three.shards().iter().map(|s| delf_index::search(&[s], &queries, DIM, &params, kernel).unwrap()).collect();
    assert_eq!(merge_neighbor_lists(parts, params.k), a);
    // Image i lives in shard i % 3 and its keypoints come back from there.
    assert!(three.shards()[2].image(5).is_some() && three.shards()[0].image(5).is_none());
    assert_eq!(three.keypoints_of(5).unwrap(), db.keypoints(5));
}

#[test]
fn cells_assigned_once_by_the_coarse_quantizer_give_every_shard_the_same_answers() {
    let db = Db::new(150, 40, 7);
    let cb = train(&db.vectors, "IVF16,PQ20x8r");
    let three = db.index(&cb, 3);
    let queries = clustered(100, 8);
    let params = SearchParams { k: 30, nprobe: 6, max_distance: None };
    let kernel = ScanKernel::detect();
    // What a coordinator keeps: the centroids, checked against the fingerprint the manifest names.
    let rebuilt = delf_index::CoarseQuantizer::from_parts(
        cb.spec,
        DIM,
        cb.coarse.clone(),
        &cb.pq.centroids,
        cb.fingerprint().as_str(),
    )
    .unwrap();
    let probes = rebuilt.probe(&queries, DIM, params.nprobe).unwrap();
    assert_eq!(probes, cb.probe(&queries, params.nprobe).0);
    for shard in three.shards() {
        let own = delf_index::search(&[shard], &queries, DIM, &params, kernel).unwrap();
        let given = delf_index::search_probed(&[shard], &queries, DIM, Some(&probes), &params, kernel).unwrap();
        assert_eq!(own, given);
    }
    // Centroids that do not make the manifest's fingerprint are refused.
    let mut moved = cb.coarse.clone();
    moved[0] += 1e-3;
    let wrong =
        delf_index::CoarseQuantizer::from_parts(cb.spec, DIM, moved, &cb.pq.centroids, cb.fingerprint().as_str());
    assert!(matches!(wrong, Err(delf_index::IndexError::InvalidParameter { name: "codebooks", .. })));
}

#[test]
fn save_and_load_give_identical_results() {
    let db = Db::new(100, 30, 4);
    let cb = train(&db.vectors, "IVF8,PQ20x8r");
    let index = db.index(&cb, 2);
    let dir = tempfile::tempdir().unwrap();
    index.save(dir.path()).unwrap();
    let loaded = ShardedIndex::load(dir.path(), 2).unwrap();
    let queries = clustered(50, 8);
    let params = SearchParams { nprobe: 8, ..SearchParams::default() };
    let k = ScanKernel::detect();
    assert_eq!(index.search(&queries, DIM, &params, k).unwrap(), loaded.search(&queries, DIM, &params, k).unwrap());
    assert_eq!(loaded.image(7).unwrap().name, "img00007.jpg");
    assert_eq!(loaded.keypoints_of(7).unwrap(), db.keypoints(7));
    // A loaded (memory-mapped) shard accepts additions.
    let mut loaded = loaded;
    let extra = clustered(30, 9);
    let kp = vec![[1.0, 2.0]; 30];
    loaded
        .add_images(&[delf_index::NewImage { number: 1000, name: "new.jpg", descriptors: &extra, keypoints: &kp }], DIM)
        .unwrap();
    assert_eq!(loaded.live_images(), 101);
}

#[test]
fn deleted_images_vanish_at_once_and_compaction_reclaims_them() {
    let db = Db::new(60, 20, 5);
    let cb = train(&db.vectors, "IVF8,PQ10x8r");
    let mut index = db.index(&cb, 1);
    let queries = db.image_vectors(10).to_vec();
    let params = SearchParams { k: 5, nprobe: 8, max_distance: None };
    let k = ScanKernel::detect();
    let before = index.search(&queries, DIM, &params, k).unwrap();
    assert!(before.iter().filter(|l| l[0].image == 10).count() >= 15, "an image should find itself");
    index.delete_image("img00010.jpg").unwrap();
    let after = index.search(&queries, DIM, &params, k).unwrap();
    assert!(after.iter().flatten().all(|n| n.image != 10));
    assert!(matches!(index.delete_image("img00010.jpg"), Err(delf_index::IndexError::UnknownImage(_))));
    let stored = index.shards()[0].stored_vectors();
    index.compact();
    assert_eq!(index.shards()[0].stored_vectors(), stored - 20);
    assert_eq!(index.search(&queries, DIM, &params, k).unwrap(), after);
    assert_eq!(index.keypoints_of(11).unwrap(), db.keypoints(11));
    assert!(index.image(10).is_none());
}

#[test]
fn bytes_per_descriptor_are_code_plus_ids_plus_keypoint() {
    let db = Db::new(50, 80, 6);
    let cb = train(&db.vectors, "IVF4,PQ20x8r");
    let index = db.index(&cb, 1);
    let b = index.shards()[0].bytes_per_descriptor();
    // 20 code bytes + 4 image + 2 feature + 4 keypoint, plus block padding (< 8 codes per list).
    assert!((30.0..31.0).contains(&b), "{b}");
}
