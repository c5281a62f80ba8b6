//! The files of an index folder, from a local path or from object storage. Remote files are streamed into a local
//! cache folder (one per index URI) and written atomically, so a restarted node reuses what it fetched; a cached
//! file whose size differs from the object's is fetched again.

use std::path::{Path, PathBuf};

use delf_features::{StoreError, Stores};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::io::AsyncWriteExt;

use crate::error::ClusterError;

/// A local folder holding (at least) the requested files of the index at `index`.
pub async fn local_folder(
    stores: &Stores,
    index: &str,
    cache_root: &Path,
    files: &[String],
) -> Result<PathBuf, ClusterError> {
    if !index.contains("://") || index.starts_with("file://") {
        let dir = PathBuf::from(index.strip_prefix("file://").unwrap_or(index));
        return Ok(dir);
    }
    let location = stores.location(index)?;
    let fingerprint = delf_core::Fingerprint::of("index-cache", &[index.as_bytes()]);
    let dir = cache_root.join(fingerprint.as_str().replace(['/', ':'], "-"));
    tokio::fs::create_dir_all(&dir).await.map_err(|source| ClusterError::Io { path: dir.clone(), source })?;
    for name in files {
        let path = location.child(name);
        let uri = location.uri_of(&path);
        let store_err = |source: object_store::Error| match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound { uri: uri.clone() },
            source => StoreError::ObjectStore { uri: uri.clone(), source },
        };
        let meta = location.head(&path).await?.ok_or_else(|| StoreError::NotFound { uri: uri.clone() })?;
        let target = dir.join(name);
        if tokio::fs::metadata(&target).await.is_ok_and(|m| m.len() == meta.size) {
            tracing::info!(%uri, "index file already cached");
            continue;
        }
        let tmp = dir.join(format!("{name}.part"));
        let io = |source| ClusterError::Io { path: tmp.clone(), source };
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
    Ok(dir)
}
