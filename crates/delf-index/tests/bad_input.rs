//! Every bad input gives a typed error: wrong dimensions, non-finite values, parameters out of range, empty
//! indexes, foreign codebooks or descriptors, and damaged shard files (truncation and a flipped byte in every
//! section).
#![allow(clippy::unwrap_used)]

mod common;

use common::{DIM, Db, clustered, train};
use delf_index::file::{self, MAGIC};
use delf_index::{IndexError, NewImage, ScanKernel, SearchParams, ShardedIndex};

#[test]
fn wrong_dimensions_and_values_are_rejected() {
    let db = Db::new(40, 20, 1);
    let cb = train(&db.vectors, "IVF4,PQ20x8r");
    let mut index = db.index(&cb, 1);
    let p = SearchParams::default();
    let k = ScanKernel::detect();
    let q = clustered(2, 1);
    assert!(matches!(index.search(&q[..79], DIM, &p, k), Err(IndexError::RaggedBuffer { .. })));
    assert!(matches!(index.search(&q[..78], 39, &p, k), Err(IndexError::DimensionMismatch { expected: 40, got: 39 })));
    let mut nan = q.clone();
    nan[3] = f32::NAN;
    assert!(matches!(index.search(&nan, DIM, &p, k), Err(IndexError::InvalidParameter { .. })));
    for bad in [SearchParams { k: 0, ..p }, SearchParams { nprobe: 0, ..p }, SearchParams { nprobe: 5, ..p }] {
        assert!(matches!(index.search(&q, DIM, &bad, k), Err(IndexError::InvalidParameter { .. })), "{bad}");
    }
    // Cells given by a caller: a wrong count, a cell out of range, a cell twice for one descriptor.
    let shard = &index.shards()[0];
    let two = SearchParams { nprobe: 2, ..p };
    for bad in [vec![0u32; 3], vec![0, 1, 4, 0], vec![0, 1, 2, 2]] {
        let r = delf_index::search_probed(&[shard], &q, DIM, Some(&bad), &two, k);
        assert!(matches!(r, Err(IndexError::InvalidParameter { name: "probes", .. })), "{bad:?}");
    }
    assert!(delf_index::search_probed(&[shard], &q, DIM, Some(&[0, 1, 3, 2]), &two, k).is_ok());
    let kp = vec![[0.0, 0.0]; 2];
    let add = |index: &mut ShardedIndex, number, name: &str, d: &[f32], kp: &[[f32; 2]]| {
        index.add_images(&[NewImage { number, name, descriptors: d, keypoints: kp, scales: &[] }], DIM)
    };
    assert!(matches!(add(&mut index, 0, "img00000.jpg", &q, &kp), Err(IndexError::DuplicateImage(_))));
    assert!(matches!(add(&mut index, 500, "x", &q, &kp[..1]), Err(IndexError::InvalidParameter { .. })));
    assert!(matches!(
        add(&mut index, 500, "x", &q, &[[-1.0, 0.0], [0.0, 0.0]]),
        Err(IndexError::InvalidParameter { .. })
    ));
    assert!(matches!(add(&mut index, 500, "x", &nan, &kp), Err(IndexError::InvalidParameter { .. })));
    let big = vec![0.1f32; 70_000 * DIM];
    let kps = vec![[0.0, 0.0]; 70_000];
    assert!(matches!(add(&mut index, 500, "x", &big, &kps), Err(IndexError::TooManyFeatures { .. })));
    assert_eq!(index.live_images(), 40, "failed additions add nothing");
}

#[test]
fn empty_index_and_foreign_shards_are_rejected() {
    let db = Db::new(40, 20, 2);
    let cb = train(&db.vectors, "IVF4,PQ20x8r");
    let empty = ShardedIndex::new(cb.clone(), "delf/test", 2).unwrap();
    let q = clustered(2, 1);
    let p = SearchParams { nprobe: 2, ..SearchParams::default() };
    assert!(matches!(empty.search(&q, DIM, &p, ScanKernel::Scalar), Err(IndexError::EmptyIndex)));
    let other_cb = train(&clustered(2000, 77), "IVF4,PQ20x8r");
    let a = db.index(&cb, 1);
    let b = db.index(&other_cb, 1);
    let r = delf_index::search(&[&a.shards()[0], &b.shards()[0]], &q, DIM, &p, ScanKernel::Scalar);
    assert!(matches!(r, Err(IndexError::FingerprintMismatch { what: "codebooks", .. })));
    // Shards of different descriptor fingerprints cannot be loaded together.
    let dir = tempfile::tempdir().unwrap();
    let two = db.index(&cb, 2);
    two.save(dir.path()).unwrap();
    let mut other = ShardedIndex::new(cb.clone(), "delf/another-model", 2).unwrap();
    let kp = db.keypoints(1);
    other
        .add_images(
            &[NewImage { number: 1, name: "b", descriptors: db.image_vectors(1), keypoints: &kp, scales: &[] }],
            DIM,
        )
        .unwrap();
    file::save(&other.shards()[1], &dir.path().join(delf_index::sharded::shard_file_name(1, 2))).unwrap();
    assert!(matches!(ShardedIndex::load(dir.path(), 2), Err(IndexError::FingerprintMismatch { .. })));
    assert!(matches!(ShardedIndex::load(dir.path(), 3), Err(IndexError::Io { .. })));
    assert!(training_with_too_few_vectors_fails());
}

fn training_with_too_few_vectors_fails() -> bool {
    let spec = "IVF64,PQ20x8r".parse().unwrap();
    matches!(
        delf_index::Codebooks::train(&clustered(100, 1), DIM, spec, &Default::default()),
        Err(IndexError::NotEnoughTrainingData { .. })
    )
}

fn section_table(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let count = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| {
            let e = 16 + i * 32;
            let tag = String::from_utf8_lossy(&bytes[e..e + 8]).trim_end_matches('\0').to_string();
            let off = u64::from_le_bytes(bytes[e + 8..e + 16].try_into().unwrap()) as usize;
            let len = u64::from_le_bytes(bytes[e + 16..e + 24].try_into().unwrap()) as usize;
            (tag, off, len)
        })
        .collect()
}

#[test]
fn a_flipped_byte_in_every_section_and_truncation_are_detected() {
    let db = Db::new(30, 20, 3);
    let cb = train(&db.vectors, "IVF4,PQ20x8r");
    let mut index = db.index(&cb, 1);
    index.delete_image("img00003.jpg").unwrap();
    // One image with keypoint scales, so that the `kpscale` section is not empty.
    let (kp, scales) = (db.keypoints(0), vec![1.0; 20]);
    let scaled =
        NewImage { number: 1000, name: "scaled", descriptors: db.image_vectors(0), keypoints: &kp, scales: &scales };
    index.add_images(&[scaled], DIM).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.dshard");
    file::save(&index.shards()[0], &path).unwrap();
    let good = std::fs::read(&path).unwrap();
    assert_eq!(&good[..8], MAGIC);
    let loaded = file::load(&path).unwrap();
    assert!(loaded.image(3).unwrap().deleted);
    let table = section_table(&good);
    assert_eq!(table.len(), 13);
    let damaged = dir.path().join("bad.dshard");
    for (tag, off, len) in &table {
        assert!(*len > 0, "section {tag} is empty in this fixture");
        for at in [*off, off + len / 2, off + len - 1] {
            let mut bytes = good.clone();
            bytes[at] ^= 0x40;
            std::fs::write(&damaged, &bytes).unwrap();
            match file::load(&damaged) {
                Err(IndexError::Corrupt { section, .. }) => assert_eq!(&section, tag, "byte {at}"),
                other => panic!("flipped byte {at} in {tag}: {other:?}"),
            }
        }
    }
    // The header and section table, padding, and the file's length.
    for at in [9usize, 20, 16 + 32 * 3 + 10, table[0].1 - 1] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&damaged, &bytes).unwrap();
        assert!(
            matches!(file::load(&damaged), Err(IndexError::Corrupt { .. } | IndexError::NotAShard { .. })),
            "byte {at}"
        );
    }
    for cut in [0usize, 5, 100, good.len() / 2, good.len() - 1] {
        std::fs::write(&damaged, &good[..cut]).unwrap();
        assert!(
            matches!(file::load(&damaged), Err(IndexError::Corrupt { .. } | IndexError::NotAShard { .. })),
            "truncated to {cut}"
        );
    }
    let mut magic = good.clone();
    magic[0] = b'X';
    std::fs::write(&damaged, &magic).unwrap();
    assert!(matches!(file::load(&damaged), Err(IndexError::NotAShard { .. })));
    assert!(matches!(file::load(&dir.path().join("missing")), Err(IndexError::Io { .. })));
}

/// Files of earlier format versions still load: version 1 (ten sections, no `kpscale`: scales unknown) and
/// version 2 (plain u32 image numbers), with the same search results; unknown versions are refused.
#[test]
fn version_1_and_2_shard_files_still_load() {
    let db = Db::new(30, 20, 4);
    let cb = train(&db.vectors, "IVF4,PQ20x8r");
    let index = db.index(&cb, 1);
    let dir = tempfile::tempdir().unwrap();
    let queries = db.image_vectors(2).to_vec();
    let params = delf_index::SearchParams { nprobe: 4, ..Default::default() };
    let kernel = delf_index::ScanKernel::detect();
    let want = delf_index::search(&[&index.shards()[0]], &queries, DIM, &params, kernel).unwrap();
    for version in [1, 2] {
        let old = dir.path().join(format!("v{version}.dshard"));
        file::save_as_version(&index.shards()[0], &old, version).unwrap();
        let bytes = std::fs::read(&old).unwrap();
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), version);
        assert_eq!(section_table(&bytes).len(), if version == 1 { 10 } else { 11 });
        let loaded = file::load(&old).unwrap();
        assert_eq!(loaded.live_images(), 30);
        let kp = loaded.keypoint(2, 3).unwrap();
        assert_eq!([kp[0], kp[1]], db.keypoints(2)[3]);
        assert_eq!(delf_index::search(&[&loaded], &queries, DIM, &params, kernel).unwrap(), want, "version {version}");
    }
    let mut v1 = std::fs::read(dir.path().join("v1.dshard")).unwrap();
    v1[8..12].copy_from_slice(&4u32.to_le_bytes());
    let old = dir.path().join("v4.dshard");
    std::fs::write(&old, &v1).unwrap();
    assert!(matches!(file::load(&old), Err(IndexError::NotAShard { .. })), "an unknown version is refused");
}
