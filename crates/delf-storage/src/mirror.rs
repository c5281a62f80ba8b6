//! Named files of a folder-like location, from a local path or from object storage (an index's files, for a
//! node that serves it). Remote files are streamed into a local cache folder (one per location URI) and written
//! atomically, so a restarted process reuses what it fetched; a cached file whose size differs from the object's is
//! fetched again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::io::AsyncWriteExt;

use crate::error::StorageError;
use crate::location::Stores;

/// Fetches so far in this process (part of each temporary file's name).
static FETCHES: AtomicU64 = AtomicU64::new(0);

/// A local folder holding (at least) `files` of the location `uri`: the folder itself when `uri` is local, else
/// a cache folder under `cache_root`.
pub async fn local_folder(
    stores: &Stores,
    uri: &str,
    cache_root: &Path,
    files: &[String],
) -> Result<PathBuf, StorageError> {
    if !uri.contains("://") || uri.starts_with("file://") {
        let dir = PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri));
        return Ok(dir);
    }
    let location = stores.location(uri)?;
    let fingerprint = delf_core::Fingerprint::of("index-cache", &[uri.as_bytes()]);
    let dir = cache_root.join(fingerprint.as_str().replace(['/', ':'], "-"));
    tokio::fs::create_dir_all(&dir).await.map_err(|source| StorageError::Io { path: dir.clone(), source })?;
    for name in files {
        let path = location.child(name);
        let uri = location.uri_of(&path);
        let store_err = |source: object_store::Error| StorageError::store(uri.clone(), source);
        let meta = location.head(&path).await?.ok_or_else(|| StorageError::NotFound { uri: uri.clone() })?;
        let target = dir.join(name);
        if tokio::fs::metadata(&target).await.is_ok_and(|m| m.len() == meta.size) {
            tracing::info!(%uri, "index file already cached");
            continue;
        }
        // Named by process and call: processes sharing a cache folder (encode workers on one machine) fetch the
        // same file at once, and each must rename only its own copy into place.
        let tmp = dir.join(format!("{name}.{}-{}.part", std::process::id(), FETCHES.fetch_add(1, Ordering::Relaxed)));
        let io = |source| StorageError::Io { path: tmp.clone(), source };
        let mut out = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut stream = location.store().get(&path).await.map_err(store_err)?.into_stream();
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk.map_err(store_err)?).await.map_err(io)?;
        }
        out.sync_all().await.map_err(io)?;
        drop(out);
        tokio::fs::rename(&tmp, &target).await.map_err(io)?;
        tracing::info!(%uri, bytes = meta.size, "fetched index file");
    }
    // The renames survive a power loss only once the folder is synced.
    let sync = |source| StorageError::Io { path: dir.clone(), source };
    tokio::fs::File::open(&dir).await.map_err(sync)?.sync_all().await.map_err(sync)?;
    Ok(dir)
}
