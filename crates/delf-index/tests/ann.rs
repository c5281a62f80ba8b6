//! Recall against brute force, kernel equivalence, sharding, persistence and updates of the IVF-PQ index.
#![allow(clippy::unwrap_used)]

mod common;

use common::{DIM, Db, clustered, train};
use std::sync::Arc;

use delf_index::{Neighbor, NewImage, ScanKernel, SearchParams, ShardedIndex, exact_search, merge_neighbor_lists};

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
    for spec in ["IVF16,PQ10x8r", "IVF16,PQ10x4fsr", "IVF16,PQ5x4fs"] {
        let cb = train(&db.vectors, spec);
        let index = db.index(&cb, 1);
        let queries = clustered(200, 7);
        let params = SearchParams { k: 60, nprobe: 4, max_distance: Some(1.0) };
        let a = index.search(&queries, DIM, &params, ScanKernel::Scalar).unwrap();
        let b = index.search(&queries, DIM, &params, ScanKernel::detect()).unwrap();
        assert_eq!(a, b, "{spec}: kernel {} differs from scalar", ScanKernel::detect().name());
        assert!(a.iter().flatten().all(|n| n.distance <= 1.0));
        assert!(a.iter().any(|l| l.len() == 60), "{spec}");
    }
}

#[test]
fn sharded_search_equals_unsharded_and_merging_per_shard_answers_does_too() {
    let db = Db::new(150, 40, 3);
    for spec in ["IVF16,PQ20x8r", "IVF16,PQ20x4fsr"] {
        sharded_equals_unsharded(&db, spec);
    }
}

fn sharded_equals_unsharded(db: &Db, spec: &str) {
    let cb = train(&db.vectors, spec);
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
    assert_eq!(xy(three.keypoints_of(5).unwrap()), db.keypoints(5));
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
    for spec in ["IVF8,PQ20x8r", "IVF8,PQ20x4fsr"] {
        save_and_load(&db, spec);
    }
}

fn save_and_load(db: &Db, spec: &str) {
    let cb = train(&db.vectors, spec);
    let index = db.index(&cb, 2);
    assert_eq!(index.shards()[0].codebooks().spec.to_string(), spec);
    let dir = tempfile::tempdir().unwrap();
    index.save(dir.path()).unwrap();
    let loaded = ShardedIndex::load(dir.path(), 2).unwrap();
    let queries = clustered(50, 8);
    let params = SearchParams { nprobe: 8, ..SearchParams::default() };
    let k = ScanKernel::detect();
    assert_eq!(index.search(&queries, DIM, &params, k).unwrap(), loaded.search(&queries, DIM, &params, k).unwrap());
    assert_eq!(loaded.image(7).unwrap().name, "img00007.jpg");
    assert_eq!(xy(loaded.keypoints_of(7).unwrap()), db.keypoints(7));
    // A loaded (memory-mapped) shard accepts additions.
    let mut loaded = loaded;
    let extra = clustered(30, 9);
    let kp = vec![[1.0, 2.0]; 30];
    loaded
        .add_images(
            &[delf_index::NewImage { number: 1000, name: "new.jpg", descriptors: &extra, keypoints: &kp, scales: &[] }],
            DIM,
        )
        .unwrap();
    assert_eq!(loaded.live_images(), 101);
}

#[test]
fn deleted_images_vanish_at_once_and_compaction_reclaims_them() {
    let db = Db::new(60, 20, 5);
    for spec in ["IVF8,PQ10x8r", "IVF8,PQ10x4fsr"] {
        delete_and_compact(&db, spec);
    }
}

fn delete_and_compact(db: &Db, spec: &str) {
    let cb = train(&db.vectors, spec);
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
    assert_eq!(xy(index.keypoints_of(11).unwrap()), db.keypoints(11));
    assert!(index.image(10).is_none());
}

#[test]
fn bytes_per_descriptor_are_code_plus_ids_plus_keypoint() {
    let db = Db::new(50, 80, 6);
    let cb = train(&db.vectors, "IVF4,PQ20x8r");
    let index = db.index(&cb, 1);
    let b = index.shards()[0].bytes_per_descriptor();
    // 20 code bytes + 1.25 image (1 byte per entry + 8 per block of 32) + 2 feature + 4 keypoint, plus block
    // padding (< 8 codes per list).
    assert!((27.25..28.0).contains(&b), "{b}");
    let resident = index.shards()[0].resident_bytes_per_descriptor();
    assert!((b - resident - 4.0).abs() < 1e-9, "{resident}");
    let cb = train(&db.vectors, "IVF4,PQ20x4fsr");
    let b = db.index(&cb, 1).shards()[0].bytes_per_descriptor();
    // 10 code bytes + the same 7.25, plus block padding (< 32 codes per list).
    assert!((17.25..18.0).contains(&b), "{b}");
}

/// The `(x, y)` of keypoints as the index returns them (`(x, y, scale)`).
fn xy(points: Vec<[f32; 3]>) -> Vec<[f32; 2]> {
    points.into_iter().map(|[x, y, _]| [x, y]).collect()
}

#[test]
fn keypoint_scales_survive_save_load_and_compaction() {
    let db = Db::new(20, 30, 4);
    let cb = train(&db.vectors, "IVF8,PQ20x8r");
    let mut index = ShardedIndex::new(Arc::clone(&cb), "delf/test", 1).unwrap();
    let (kp, scales) = (db.keypoints(0), [0.5, 1.0, 2.0, 4.0].repeat(8)[..30].to_vec());
    let gone = db.keypoints(1);
    let with = NewImage { number: 0, name: "a", descriptors: db.image_vectors(0), keypoints: &kp, scales: &scales };
    let without = NewImage { number: 1, name: "b", descriptors: db.image_vectors(1), keypoints: &gone, scales: &[] };
    let mut bad = with;
    bad.scales = &scales[..3];
    assert!(index.add_images(&[bad], DIM).is_err(), "one scale per keypoint or none");
    index.add_images(&[without, with], DIM).unwrap();
    let dir = tempfile::tempdir().unwrap();
    index.save(dir.path()).unwrap();
    let mut loaded = ShardedIndex::load(dir.path(), 1).unwrap();
    let got: Vec<f32> = loaded.keypoints_of(0).unwrap().iter().map(|p| p[2]).collect();
    assert_eq!(got, scales, "pyramid scales are powers of sqrt(2): stored exactly");
    assert!(loaded.keypoints_of(1).unwrap().iter().all(|p| p[2].is_nan()), "an image added without scales");
    loaded.delete_image("b").unwrap();
    loaded.compact();
    assert_eq!(loaded.keypoints_of(0).unwrap().iter().map(|p| p[2]).collect::<Vec<_>>(), scales);
    assert_eq!(delf_index::scale_code(f32::NAN), 0);
    assert_eq!(delf_index::scale_code(1.0), 128);
    let half_octave = std::f32::consts::FRAC_1_SQRT_2;
    assert!((delf_index::scale_of_code(delf_index::scale_code(half_octave)) - half_octave).abs() < 1e-3);
}
