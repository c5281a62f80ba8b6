//! An index split into `S` shards by image number (`image % S`), all sharing one set of codebooks. In one process
//! the shards are searched together; in the cluster each index node holds one of them and the coordinator merges
//! with [`crate::merge_neighbor_lists`]. Either way the answer equals that of a single unsharded index.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codebooks::Codebooks;
use crate::error::{IndexError, Result};
use crate::scan::ScanKernel;
use crate::shard::{ImageEntry, NewImage, Shard, ShardInfo};
use crate::spec::SearchParams;
use crate::topk::Neighbor;

/// File name of shard `id` of `count` inside an index folder.
pub fn shard_file_name(id: u32, count: u32) -> String {
    format!("shard-{id:04}-of-{count:04}.dshard")
}

/// Shards of one index.
#[derive(Debug, Clone)]
pub struct ShardedIndex {
    shards: Vec<Shard>,
}

impl ShardedIndex {
    /// An empty index of `count` shards.
    pub fn new(codebooks: Arc<Codebooks>, descriptor_fingerprint: &str, count: u32) -> Result<Self> {
        if count == 0 {
            return Err(IndexError::invalid("shards", count, "need at least one shard"));
        }
        let shards = (0..count)
            .map(|shard_id| {
                Shard::new(
                    Arc::clone(&codebooks),
                    ShardInfo { shard_id, shard_count: count, descriptor_fingerprint: descriptor_fingerprint.into() },
                )
            })
            .collect();
        Ok(Self { shards })
    }

    /// The shards.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Shard that holds (or will hold) image `number`.
    pub fn shard_of(&self, number: u32) -> usize {
        (number % self.shards.len() as u32) as usize
    }

    /// Adds images, each to its shard.
    pub fn add_images(&mut self, batch: &[NewImage<'_>], dim: usize) -> Result<()> {
        let s = self.shards.len();
        let mut parts: Vec<Vec<NewImage<'_>>> = vec![Vec::new(); s];
        for im in batch {
            parts[self.shard_of(im.number)].push(*im);
        }
        for (shard, part) in self.shards.iter_mut().zip(parts) {
            if !part.is_empty() {
                shard.add_images(&part, dim)?;
            }
        }
        Ok(())
    }

    /// Tombstones an image by external id.
    pub fn delete_image(&mut self, name: &str) -> Result<()> {
        let shard = self
            .shards
            .iter_mut()
            .find(|s| s.image_by_name(name).is_some_and(|e| !e.deleted))
            .ok_or_else(|| IndexError::UnknownImage(name.to_string()))?;
        shard.delete_image(name)
    }

    /// Compacts every shard.
    pub fn compact(&mut self) {
        self.shards.iter_mut().for_each(Shard::compact);
    }

    /// Image `number`, wherever it lives.
    pub fn image(&self, number: u32) -> Option<&ImageEntry> {
        self.shards[self.shard_of(number)].image(number)
    }

    /// Keypoints of image `number`: `(x, y, scale)`, scale NaN where unknown.
    pub fn keypoints_of(&self, number: u32) -> Option<Vec<[f32; 3]>> {
        self.shards[self.shard_of(number)].keypoints_of(number)
    }

    /// Live descriptors in all shards.
    pub fn live_vectors(&self) -> usize {
        self.shards.iter().map(Shard::live_vectors).sum()
    }

    /// Live images in all shards.
    pub fn live_images(&self) -> usize {
        self.shards.iter().map(Shard::live_images).sum()
    }

    /// Searches every shard as one batch.
    pub fn search(
        &self,
        queries: &[f32],
        dim: usize,
        params: &SearchParams,
        kernel: ScanKernel,
    ) -> Result<Vec<Vec<Neighbor>>> {
        let refs: Vec<&Shard> = self.shards.iter().collect();
        crate::search::search(&refs, queries, dim, params, kernel)
    }

    /// Writes every shard into `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        let count = self.shards.len() as u32;
        let mut paths = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let path = dir.join(shard_file_name(i as u32, count));
            crate::file::save(shard, &path)?;
            paths.push(path);
        }
        Ok(paths)
    }

    /// Loads `count` shards from `dir` and checks that they belong together.
    pub fn load(dir: &Path, count: u32) -> Result<Self> {
        let mut shards = Vec::new();
        for i in 0..count {
            let path = dir.join(shard_file_name(i, count));
            let shard = crate::file::load(&path)?;
            if shard.info.shard_id != i || shard.info.shard_count != count {
                return Err(IndexError::Corrupt {
                    path,
                    section: "meta".into(),
                    reason: format!(
                        "holds shard {} of {}, expected {i} of {count}",
                        shard.info.shard_id, shard.info.shard_count
                    ),
                });
            }
            if let Some(first) = shards.first() {
                Shard::check_same_index(first, &shard)?;
            }
            shards.push(shard);
        }
        if shards.is_empty() {
            return Err(IndexError::invalid("shards", count, "need at least one shard"));
        }
        Ok(Self { shards })
    }
}
