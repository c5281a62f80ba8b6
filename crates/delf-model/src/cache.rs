//! Features kept on disk by what decides them, so that the same pixels are never run through the network twice:
//! a search repeated over the same query photos, indexes rebuilt from overlapping folders, a cluster worker asked
//! again for a query, or a test suite whose tests share photos (`make test` gives every test one cache per run).
//!
//! The key is a SHA-256 over everything the candidates depend on: this build of the program (the executable's size
//! and modification time, so that a rebuilt extractor never reads what an older one wrote), the extractor's raw
//! fingerprint (backbone, weights, attention head, pyramid), its whole configuration, the device, the pyramid
//! levels used, the image's size and pixels and which pixels show the scene. An entry holds the candidates before
//! the PCA, so that one entry serves any PCA. A missing, foreign or damaged entry is a miss (and is written again);
//! a failed write is logged and costs nothing but the next extraction of that image.
//!
//! `DELF_FEATURE_CACHE_BUILD`, when set, names the build in place of the executable's size and time: for comparing
//! builds whose extraction is known to be the same (a change to search or verification benchmarked on the same
//! photos). It is the caller's promise; a wrong one serves stale features.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use delf_core::Keypoint;
use sha2::{Digest, Sha256};

use crate::ModelError;
use crate::cells::Candidate as Entry;

/// First bytes of every entry (the format's version).
const MAGIC: &[u8; 8] = b"DELFFC01";

/// A folder of extracted candidates (see the module documentation).
#[derive(Debug, Clone)]
pub struct FeatureCache {
    dir: PathBuf,
    build: Vec<u8>,
}

impl FeatureCache {
    /// A cache in `dir` (created when missing).
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ModelError::Config(format!("feature cache {}: {e}", dir.display())))?;
        Ok(Self { dir: dir.to_path_buf(), build: this_build() })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of an extraction: `context` names the extractor and its settings, `pixels` and `coverage` the input.
    pub(crate) fn key(&self, context: &[u8], size: (u32, u32), pixels: &[u8], coverage: Option<&[bool]>) -> String {
        let mut h = Sha256::new();
        for part in [&self.build[..], context, &size.0.to_le_bytes(), &size.1.to_le_bytes(), pixels] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        match coverage {
            None => h.update([0u8]),
            Some(c) => {
                h.update([1u8]);
                h.update(c.iter().map(|&b| u8::from(b)).collect::<Vec<u8>>());
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.bin"))
    }

    /// The candidates stored under `key` with descriptors of `dim` values, if a whole entry is there.
    pub(crate) fn get(&self, key: &str, dim: usize) -> Option<Vec<Entry>> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let parsed = parse(&bytes, dim);
        if parsed.is_none() {
            tracing::warn!(entry = %self.path(key).display(), "damaged feature cache entry ignored");
        }
        parsed
    }

    /// Stores `entries` under `key` (written aside, then renamed into place: readers see a whole entry or none).
    pub(crate) fn put(&self, key: &str, entries: &[Entry], dim: usize) {
        let path = self.path(key);
        let mut bytes = Vec::with_capacity(16 + entries.len() * 4 * (4 + dim));
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(dim as u32).to_le_bytes());
        for e in entries {
            let k = &e.keypoint;
            for v in [k.x, k.y, k.scale, k.score].iter().chain(&e.descriptor) {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        let written = (|| -> std::io::Result<()> {
            let folder = path.parent().unwrap_or(&self.dir);
            std::fs::create_dir_all(folder)?;
            let mut tmp = tempfile_in(folder)?;
            tmp.1.write_all(&bytes)?;
            drop(tmp.1);
            std::fs::rename(&tmp.0, &path)
        })();
        if let Err(error) = written {
            tracing::warn!(entry = %path.display(), %error, "feature cache entry not written");
        }
    }
}

/// A new file next to the entries, named so that concurrent writers never share one.
fn tempfile_in(folder: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = folder.join(format!(".tmp-{}-{n}", std::process::id()));
    let file = std::fs::File::create(&path)?;
    Ok((path, file))
}

fn parse(bytes: &[u8], dim: usize) -> Option<Vec<Entry>> {
    let head = bytes.get(..16)?;
    if &head[..8] != MAGIC {
        return None;
    }
    let n = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
    let stored_dim = u32::from_le_bytes(head[12..16].try_into().ok()?) as usize;
    let row = 4 + dim;
    if stored_dim != dim || bytes.len() != 16 + n * row * 4 {
        return None;
    }
    let values: Vec<f32> = bytes[16..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Some(
        values
            .chunks_exact(row)
            .map(|r| Entry {
                keypoint: Keypoint { x: r[0], y: r[1], scale: r[2], score: r[3] },
                descriptor: r[4..].to_vec(),
            })
            .collect(),
    )
}

/// What tells this build of the program from another: `DELF_FEATURE_CACHE_BUILD` when set, else the running
/// executable's size and modification time.
fn this_build() -> Vec<u8> {
    if let Some(name) = std::env::var_os("DELF_FEATURE_CACHE_BUILD").filter(|n| !n.is_empty()) {
        return format!("named:{}", name.to_string_lossy()).into_bytes();
    }
    let exe = std::env::current_exe().ok();
    let meta = exe.as_ref().and_then(|e| std::fs::metadata(e).ok());
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut id = format!("{}:{}", env!("CARGO_PKG_VERSION"), exe.map(|e| e.display().to_string()).unwrap_or_default());
    id.push_str(&format!(":{}:{modified}", meta.map_or(0, |m| m.len())));
    id.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: f32) -> Entry {
        Entry {
            keypoint: Keypoint { x: i, y: -i, scale: 0.5, score: f32::MIN_POSITIVE },
            descriptor: vec![i, 1.0 / 3.0],
        }
    }

    #[test]
    fn entries_round_trip_exactly_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::open(dir.path()).unwrap();
        let key = cache.key(b"extractor", (2, 1), &[1, 2, 3, 4, 5, 6], None);
        assert!(cache.get(&key, 2).is_none());
        cache.put(&key, &[entry(1.5), entry(-7.25)], 2);
        let back = cache.get(&key, 2).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[1].keypoint, back[1].descriptor.clone()), (entry(-7.25).keypoint, entry(-7.25).descriptor));
        assert!(cache.get(&key, 3).is_none(), "another descriptor size is a miss");
        let path = cache.path(&key);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(cache.get(&key, 2).is_none(), "a truncated entry is a miss");
        cache.put(&key, &[], 2);
        assert_eq!(cache.get(&key, 2).unwrap().len(), 0, "no keypoints is an answer too");
    }

    #[test]
    fn keys_depend_on_every_input() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::open(dir.path()).unwrap();
        let base = cache.key(b"a", (2, 1), &[1; 6], None);
        assert_eq!(base, cache.key(b"a", (2, 1), &[1; 6], None));
        assert_ne!(base, cache.key(b"b", (2, 1), &[1; 6], None));
        assert_ne!(base, cache.key(b"a", (1, 2), &[1; 6], None));
        assert_ne!(base, cache.key(b"a", (2, 1), &[2; 6], None));
        assert_ne!(base, cache.key(b"a", (2, 1), &[1; 6], Some(&[true, true])));
        assert_ne!(
            cache.key(b"a", (2, 1), &[1; 6], Some(&[true, false])),
            cache.key(b"a", (2, 1), &[1; 6], Some(&[false, true]))
        );
    }
}
