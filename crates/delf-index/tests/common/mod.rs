//! Synthetic descriptor sets shaped like DELF's (unit-norm 40-d vectors around cluster centres), and a small
//! index built from them.
#![allow(dead_code)]

use std::sync::Arc;

use delf_index::{Codebooks, IndexSpec, NewImage, ShardedIndex, SyntheticDescriptors, TrainConfig};

pub const DIM: usize = 40;

/// `n` unit vectors from a fixed mixture of 64 blobs (the same centres for every `seed`).
pub fn clustered(n: usize, seed: u64) -> Vec<f32> {
    SyntheticDescriptors::new(DIM, 64, 0.35, 0xC1A5).sample(n, seed)
}

/// Image layout of a database: image `i` holds features `offsets[i]..offsets[i + 1]`.
pub struct Db {
    pub vectors: Vec<f32>,
    pub features_per_image: usize,
    pub names: Vec<String>,
}

impl Db {
    pub fn new(images: usize, features_per_image: usize, seed: u64) -> Self {
        let vectors = clustered(images * features_per_image, seed);
        let names = (0..images).map(|i| format!("img{i:05}.jpg")).collect();
        Self { vectors, features_per_image, names }
    }

    pub fn images(&self) -> usize {
        self.names.len()
    }

    pub fn keypoints(&self, i: usize) -> Vec<[f32; 2]> {
        (0..self.features_per_image).map(|f| [(i % 97) as f32 + 0.5, f as f32 * 1.5]).collect()
    }

    pub fn image_vectors(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.features_per_image * DIM..][..self.features_per_image * DIM]
    }

    /// `(image, feature)` of every row.
    pub fn labels(&self) -> Vec<(u32, u16)> {
        (0..self.images()).flat_map(|i| (0..self.features_per_image).map(move |f| (i as u32, f as u16))).collect()
    }

    pub fn index(&self, codebooks: &Arc<Codebooks>, shards: u32) -> ShardedIndex {
        let mut index = ShardedIndex::new(Arc::clone(codebooks), "delf/test", shards).unwrap();
        let kps: Vec<Vec<[f32; 2]>> = (0..self.images()).map(|i| self.keypoints(i)).collect();
        let batch: Vec<NewImage<'_>> = (0..self.images())
            .map(|i| NewImage {
                number: i as u32,
                name: &self.names[i],
                descriptors: self.image_vectors(i),
                keypoints: &kps[i],
                scales: &[],
            })
            .collect();
        index.add_images(&batch, DIM).unwrap();
        index
    }
}

pub fn train(vectors: &[f32], spec: &str) -> Arc<Codebooks> {
    let spec: IndexSpec = spec.parse().unwrap();
    Arc::new(Codebooks::train(vectors, DIM, spec, &TrainConfig::default()).unwrap())
}
