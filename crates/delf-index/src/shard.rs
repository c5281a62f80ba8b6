//! One index shard: inverted lists of PQ codes with compact ids, the image table and keypoint locations, so a
//! neighbour can go straight to geometric verification. Supports adding images, tombstoning deletions and
//! compaction without retraining.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::codebooks::Codebooks;
use crate::codes::CodeLayout;
use crate::error::{IndexError, Result};
use crate::ids::PackedIds;
use crate::storage::Storage;

/// Most features one image can have in an index (feature numbers are `u16`).
pub const MAX_FEATURES_PER_IMAGE: usize = u16::MAX as usize;

/// Keypoints are stored as `u16` in half pixels, so coordinates up to this value are representable.
pub const MAX_KEYPOINT_COORD: f32 = (u16::MAX as f32) / 2.0;

/// Identity of a shard within its index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Shard number, `0..shard_count`.
    pub shard_id: u32,
    /// Shards in the index; image `n` lives in shard `n % shard_count`.
    pub shard_count: u32,
    /// Fingerprint of the model + PCA that produced the descriptors.
    pub descriptor_fingerprint: String,
}

/// One image of a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEntry {
    /// Global image number.
    pub number: u32,
    /// External id (path, URI or caller-chosen name).
    pub name: String,
    /// Number of indexed features.
    pub features: u32,
    /// Offset of its first keypoint in the keypoint array.
    pub keypoint_offset: u64,
    /// Tombstone: deleted, awaiting compaction.
    pub deleted: bool,
}

/// An image to add: its descriptors (`features x dim`), keypoint `(x, y)` locations and keypoint scales.
#[derive(Debug, Clone, Copy)]
pub struct NewImage<'a> {
    /// Global image number (unique in the index).
    pub number: u32,
    /// External id.
    pub name: &'a str,
    /// Descriptors, flattened.
    pub descriptors: &'a [f32],
    /// Keypoint `(x, y)` per descriptor.
    pub keypoints: &'a [[f32; 2]],
    /// Keypoint scale per descriptor (`Keypoint::scale`: `1 / s` of its pyramid level), which verification
    /// checks against the geometry; empty where unknown. Stored to a quarter octave ([`scale_code`]).
    pub scales: &'a [f32],
}

/// Stored code of a keypoint scale: `round(4 log2 scale) + 128`, clamped to 1..=255 (a quarter octave apart, from
/// 2^-31.75 to 2^31.75); 0 = unknown (NaN, zero or negative).
pub fn scale_code(scale: f32) -> u8 {
    if scale.is_nan() || scale <= 0.0 {
        return 0;
    }
    (f64::from(scale).log2() * 4.0 + 128.0).round().clamp(1.0, 255.0) as u8
}

/// The scale a [`scale_code`] stands for; NaN for 0 (unknown).
pub fn scale_of_code(code: u8) -> f32 {
    if code == 0 { f32::NAN } else { ((f64::from(code) - 128.0) / 4.0).exp2() as f32 }
}

/// One inverted list.
#[derive(Debug, Clone, Default)]
pub(crate) struct InvList {
    pub(crate) len: usize,
    pub(crate) codes: Storage<u8>,
    pub(crate) images: PackedIds,
    pub(crate) features: Storage<u16>,
}

/// One PQ shard.
#[derive(Debug, Clone)]
pub struct Shard {
    pub(crate) codebooks: Arc<Codebooks>,
    pub(crate) info: ShardInfo,
    pub(crate) lists: Vec<InvList>,
    pub(crate) images: Vec<ImageEntry>,
    pub(crate) keypoints: Storage<u16>,
    /// One [`scale_code`] per keypoint; empty for shards written before scales were stored (all unknown).
    pub(crate) scales: Storage<u8>,
    by_number: FxHashMap<u32, usize>,
    by_name: HashMap<String, usize>,
    /// Numbers of tombstoned images, checked by the scan for every code that enters a top-k list.
    pub(crate) deleted: FxHashSet<u32>,
}

impl Shard {
    /// An empty shard.
    pub fn new(codebooks: Arc<Codebooks>, info: ShardInfo) -> Self {
        let lists = (0..codebooks.spec.nlist).map(|_| InvList::default()).collect();
        Self::from_parts(codebooks, info, lists, Vec::new(), Storage::default(), Storage::default())
    }

    pub(crate) fn from_parts(
        codebooks: Arc<Codebooks>,
        info: ShardInfo,
        lists: Vec<InvList>,
        images: Vec<ImageEntry>,
        keypoints: Storage<u16>,
        scales: Storage<u8>,
    ) -> Self {
        let by_number = images.iter().enumerate().map(|(i, e)| (e.number, i)).collect();
        let by_name = images.iter().enumerate().map(|(i, e)| (e.name.clone(), i)).collect();
        let deleted = images.iter().filter(|e| e.deleted).map(|e| e.number).collect();
        Self { codebooks, info, lists, images, keypoints, scales, by_number, by_name, deleted }
    }

    /// Checks that `other` belongs to the same index: same codebooks and same descriptor fingerprint, so their
    /// distances are comparable and their answers can be merged.
    pub fn check_same_index(&self, other: &Shard) -> Result<()> {
        if self.codebooks.fingerprint() != other.codebooks.fingerprint() {
            return Err(IndexError::FingerprintMismatch {
                what: "codebooks",
                expected: self.codebooks.fingerprint().to_string(),
                found: other.codebooks.fingerprint().to_string(),
            });
        }
        if self.info.descriptor_fingerprint != other.info.descriptor_fingerprint {
            return Err(IndexError::FingerprintMismatch {
                what: "descriptor (model + PCA)",
                expected: self.info.descriptor_fingerprint.clone(),
                found: other.info.descriptor_fingerprint.clone(),
            });
        }
        Ok(())
    }

    /// The codebooks.
    pub fn codebooks(&self) -> &Arc<Codebooks> {
        &self.codebooks
    }

    /// Shard identity.
    pub fn info(&self) -> &ShardInfo {
        &self.info
    }

    /// Images, including tombstoned ones.
    pub fn images(&self) -> &[ImageEntry] {
        &self.images
    }

    /// The image with this global number.
    pub fn image(&self, number: u32) -> Option<&ImageEntry> {
        self.by_number.get(&number).map(|&i| &self.images[i])
    }

    /// The image with this external id.
    pub fn image_by_name(&self, name: &str) -> Option<&ImageEntry> {
        self.by_name.get(name).map(|&i| &self.images[i])
    }

    /// Live (not deleted) images.
    pub fn live_images(&self) -> usize {
        self.images.len() - self.deleted.len()
    }

    /// Stored descriptors, including those of deleted images not yet compacted.
    pub fn stored_vectors(&self) -> usize {
        self.lists.iter().map(|l| l.len).sum()
    }

    /// Entries stored in inverted list `l` (0 for a list number out of range).
    pub fn list_len(&self, l: usize) -> usize {
        self.lists.get(l).map_or(0, |list| list.len)
    }

    /// Descriptors of live images.
    pub fn live_vectors(&self) -> usize {
        self.images.iter().filter(|e| !e.deleted).map(|e| e.features as usize).sum()
    }

    /// `(x, y, scale)` of feature `feature` of image `number` (scale NaN where the shard stores none), or `None`
    /// if there is no such feature.
    pub fn keypoint(&self, number: u32, feature: u16) -> Option<[f32; 3]> {
        let e = self.image(number)?;
        if u32::from(feature) >= e.features {
            return None;
        }
        let at = e.keypoint_offset as usize + feature as usize;
        let kp = self.keypoints.as_slice().get(at * 2..at * 2 + 2)?;
        let scale = self.scales.as_slice().get(at).map_or(f32::NAN, |&c| scale_of_code(c));
        Some([f32::from(kp[0]) / 2.0, f32::from(kp[1]) / 2.0, scale])
    }

    /// Every keypoint of image `number`: `(x, y, scale)` as [`Shard::keypoint`] gives them.
    pub fn keypoints_of(&self, number: u32) -> Option<Vec<[f32; 3]>> {
        let e = self.image(number)?;
        let (start, n) = (e.keypoint_offset as usize, e.features as usize);
        let kp = self.keypoints.as_slice().get(start * 2..(start + n) * 2)?;
        let scales = self.scales.as_slice().get(start..start + n);
        let scale = |i: usize| scales.map_or(f32::NAN, |s| scale_of_code(s[i]));
        Some(
            kp.chunks_exact(2)
                .enumerate()
                .map(|(i, p)| [f32::from(p[0]) / 2.0, f32::from(p[1]) / 2.0, scale(i)])
                .collect(),
        )
    }

    /// Memory of the searchable data divided by stored descriptors: [`Shard::resident_bytes_per_descriptor`] plus
    /// the keypoint (4 bytes) and its scale byte where scales are stored.
    pub fn bytes_per_descriptor(&self) -> f64 {
        let bytes = self.resident_bytes() + self.keypoints.len() * 2 + self.scales.len();
        bytes as f64 / self.stored_vectors().max(1) as f64
    }

    /// What the ANN path reads for arbitrary queries, divided by stored descriptors: codes (with block padding),
    /// packed image numbers and feature numbers. Keypoints are read only for the neighbours that are returned.
    pub fn resident_bytes_per_descriptor(&self) -> f64 {
        self.resident_bytes() as f64 / self.stored_vectors().max(1) as f64
    }

    fn resident_bytes(&self) -> usize {
        let layout = CodeLayout::of(&self.codebooks.spec);
        self.lists.iter().map(|l| layout.blocked_len(l.len) + l.images.bytes() + l.len * 2).sum()
    }

    /// Adds one image.
    pub fn add_image(&mut self, image: NewImage<'_>, dim: usize) -> Result<()> {
        self.add_images(&[image], dim)
    }

    /// Adds images; descriptors of the whole batch are encoded in parallel. Nothing is added when any image is
    /// invalid.
    pub fn add_images(&mut self, batch: &[NewImage<'_>], dim: usize) -> Result<()> {
        let (mut seen, mut seen_names) = (HashSet::new(), HashSet::new());
        let mut all = Vec::new();
        for im in batch {
            let n = self.codebooks.check_dim(im.descriptors, dim)?;
            if n > MAX_FEATURES_PER_IMAGE {
                return Err(IndexError::TooManyFeatures {
                    image: im.name.to_string(),
                    count: n,
                    max: MAX_FEATURES_PER_IMAGE,
                });
            }
            if im.keypoints.len() != n {
                return Err(IndexError::invalid(
                    "keypoints",
                    im.keypoints.len(),
                    format!("image {:?} has {n} descriptors but {} keypoints", im.name, im.keypoints.len()),
                ));
            }
            if !im.scales.is_empty() && im.scales.len() != n {
                return Err(IndexError::invalid(
                    "scales",
                    im.scales.len(),
                    format!("image {:?} has {n} descriptors but {} keypoint scales", im.name, im.scales.len()),
                ));
            }
            if let Some(bad) = im.keypoints.iter().flatten().find(|v| !(0.0..=MAX_KEYPOINT_COORD).contains(*v)) {
                return Err(IndexError::invalid(
                    "keypoint",
                    bad,
                    format!("coordinates must lie in 0..={MAX_KEYPOINT_COORD} pixels"),
                ));
            }
            if im.descriptors.iter().any(|v| !v.is_finite()) {
                return Err(IndexError::invalid("descriptor", im.name, "contains NaN or infinity"));
            }
            if self.by_number.contains_key(&im.number)
                || self.by_name.contains_key(im.name)
                || !seen.insert(im.number)
                || !seen_names.insert(im.name)
            {
                return Err(IndexError::DuplicateImage(im.name.to_string()));
            }
            if self.info.shard_count > 1 && im.number % self.info.shard_count != self.info.shard_id {
                return Err(IndexError::invalid(
                    "image number",
                    im.number,
                    format!("belongs to shard {} of {}", im.number % self.info.shard_count, self.info.shard_count),
                ));
            }
            all.extend_from_slice(im.descriptors);
        }
        let (lists, codes) = self.codebooks.encode(&all);
        let layout = CodeLayout::of(&self.codebooks.spec);
        let m = layout.m();
        let mut at = 0;
        for im in batch {
            let n = im.keypoints.len();
            let kp = self.keypoints.make_mut();
            let keypoint_offset = (kp.len() / 2) as u64;
            for p in im.keypoints {
                kp.push((p[0] * 2.0).round() as u16);
                kp.push((p[1] * 2.0).round() as u16);
            }
            // No scale array until an image brings scales; from then on one code per keypoint, "unknown" (0) for
            // the images without.
            if !im.scales.is_empty() || !self.scales.as_slice().is_empty() {
                let scales = self.scales.make_mut();
                scales.resize(keypoint_offset as usize, 0);
                match im.scales.is_empty() {
                    true => scales.resize(keypoint_offset as usize + n, 0),
                    false => scales.extend(im.scales.iter().map(|&s| scale_code(s))),
                }
            }
            for f in 0..n {
                let list = &mut self.lists[lists[at + f] as usize];
                layout.put(list.codes.make_mut(), list.len, &codes[(at + f) * m..][..m]);
                list.images.push(list.len, im.number);
                list.features.make_mut().push(f as u16);
                list.len += 1;
            }
            at += n;
            self.by_number.insert(im.number, self.images.len());
            self.by_name.insert(im.name.to_string(), self.images.len());
            self.images.push(ImageEntry {
                number: im.number,
                name: im.name.to_string(),
                features: n as u32,
                keypoint_offset,
                deleted: false,
            });
        }
        Ok(())
    }

    /// Tombstones an image: it stops appearing in results at once; its space is reclaimed by [`Shard::compact`].
    pub fn delete_image(&mut self, name: &str) -> Result<()> {
        let &i = self.by_name.get(name).ok_or_else(|| IndexError::UnknownImage(name.to_string()))?;
        let e = &mut self.images[i];
        if e.deleted {
            return Err(IndexError::UnknownImage(name.to_string()));
        }
        e.deleted = true;
        self.deleted.insert(e.number);
        Ok(())
    }

    /// Rewrites lists, image table and keypoints without deleted images.
    pub fn compact(&mut self) {
        if self.deleted.is_empty() {
            return;
        }
        let layout = CodeLayout::of(&self.codebooks.spec);
        let mut code = vec![0u8; layout.m()];
        for list in &mut self.lists {
            let mut fresh = InvList::default();
            let imgs = list.images.unpack(list.len);
            let (feats, codes) = (list.features.as_slice(), list.codes.as_slice());
            for i in 0..list.len {
                if self.deleted.contains(&imgs[i]) {
                    continue;
                }
                layout.get(codes, i, list.len, &mut code);
                layout.put(fresh.codes.make_mut(), fresh.len, &code);
                fresh.images.push(fresh.len, imgs[i]);
                fresh.features.make_mut().push(feats[i]);
                fresh.len += 1;
            }
            *list = fresh;
        }
        let old_kp = self.keypoints.as_slice().to_vec();
        let old_scales = self.scales.as_slice().to_vec();
        let (mut kp, mut scales) = (Vec::new(), Vec::new());
        let mut images = Vec::new();
        for mut e in std::mem::take(&mut self.images) {
            if e.deleted {
                continue;
            }
            let (start, n) = (e.keypoint_offset as usize, e.features as usize);
            e.keypoint_offset = (kp.len() / 2) as u64;
            kp.extend_from_slice(&old_kp[start * 2..(start + n) * 2]);
            if !old_scales.is_empty() {
                scales.extend_from_slice(&old_scales[start..start + n]);
            }
            images.push(e);
        }
        *self = Self::from_parts(
            Arc::clone(&self.codebooks),
            self.info.clone(),
            std::mem::take(&mut self.lists),
            images,
            Storage::Owned(kp),
            Storage::Owned(scales),
        );
    }
}
