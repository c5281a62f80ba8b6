//! Where things live: local folders and S3 / S3-compatible, GCS and Azure buckets behind one [`ObjectStore`] code
//! path, chosen by URI scheme.
//!
//! - A plain path (`out/features`, `/data/list.txt`) or `file://` URI is the local file system, with every write
//!   fsynced (the file, and its folder after the rename into place) before it returns: a feature shard or commit
//!   record acknowledged on local disk survives a power loss as it would on S3.
//! - `s3://bucket/prefix` (also `s3a://`), `gs://bucket/prefix`, `az://container/prefix` (also `abfs://`,
//!   `azure://`) are cloud buckets, configured from the usual environment variables: `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` (S3-compatible servers), `AWS_ALLOW_HTTP`,
//!   `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ... (every key `object_store` knows, upper-case).
//! - `memory://` is a process-local store (tests).
//!
//! One client is built per bucket and shared ([`Stores`]), so listing a million images does not build a million
//! HTTP clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use crate::error::StorageError;

/// Environment variable prefixes handed to the cloud store builders.
const ENV_PREFIXES: [&str; 3] = ["AWS_", "GOOGLE_", "AZURE_"];

/// Turns a user-given location into a URL: URIs with a scheme stay, anything else is a local path made absolute.
pub fn to_url(uri: &str) -> Result<Url, StorageError> {
    let bad = |reason: String| StorageError::BadLocation { uri: uri.to_string(), reason };
    if uri.trim().is_empty() {
        return Err(bad("empty location".into()));
    }
    if uri.contains("://") {
        return Url::parse(uri).map_err(|e| bad(e.to_string()));
    }
    let abs = std::path::absolute(uri).map_err(|e| bad(e.to_string()))?;
    Url::from_file_path(&abs).map_err(|()| bad("not an absolute local path".into()))
}

/// The object stores of one process, one per bucket (scheme + authority), built on first use.
#[derive(Default)]
pub struct Stores {
    by_root: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    options: Vec<(String, String)>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roots: Vec<String> = self.by_root.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        f.debug_struct("Stores").field("roots", &roots).finish()
    }
}

impl Stores {
    /// An empty set; stores are built as locations name them.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set whose cloud stores take these settings (keys as the environment variables above) over the
    /// environment's.
    pub fn with_options(options: Vec<(String, String)>) -> Self {
        Self { by_root: Mutex::default(), options }
    }

    /// The store holding `uri` and the object path inside it.
    pub fn resolve(&self, uri: &str) -> Result<(Arc<dyn ObjectStore>, Path, String), StorageError> {
        let url = to_url(uri)?;
        let root = format!("{}://{}", url.scheme(), url.authority());
        let bad = |reason: String| StorageError::BadLocation { uri: uri.to_string(), reason };
        let (scheme, path) = object_store::ObjectStoreScheme::parse(&url).map_err(|e| bad(e.to_string()))?;
        if matches!(scheme, object_store::ObjectStoreScheme::Http) {
            return Err(bad("plain http(s) locations are not supported; use s3://, gs://, az:// or a path".into()));
        }
        let mut map = self.by_root.lock().map_err(|_| bad("store registry poisoned".into()))?;
        let store = match map.get(&root) {
            Some(s) => Arc::clone(s),
            None => {
                let env = std::env::vars().filter(|(k, _)| ENV_PREFIXES.iter().any(|p| k.starts_with(p)));
                let options = env.chain(self.options.iter().cloned());
                let store: Arc<dyn ObjectStore> = match scheme {
                    object_store::ObjectStoreScheme::Local => Arc::new(durable_local()),
                    _ => Arc::from(object_store::parse_url_opts(&url, options).map_err(|e| bad(e.to_string()))?.0),
                };
                map.insert(root.clone(), Arc::clone(&store));
                store
            }
        };
        Ok((store, path, root))
    }

    /// Reads the whole object at `uri` (a path or a URI).
    pub async fn read(&self, uri: &str) -> Result<Bytes, StorageError> {
        let (store, path, _) = self.resolve(uri)?;
        let got = store.get(&path).await.map_err(|e| StorageError::store(uri, e))?;
        got.bytes().await.map_err(|e| StorageError::store(uri, e))
    }

    /// A [`Location`] (a folder-like prefix) at `uri`.
    pub fn location(&self, uri: &str) -> Result<Location, StorageError> {
        let (store, prefix, root) = self.resolve(uri)?;
        Ok(Location { store, prefix, root })
    }
}

/// The local file system as every `file://` location reaches it: writes are fsynced before they return
/// (`object_store` leaves that off by default).
fn durable_local() -> object_store::local::LocalFileSystem {
    object_store::local::LocalFileSystem::new().with_fsync(true)
}

/// A prefix in an object store: the output folder of a job, a folder of images.
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    root: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

impl Location {
    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The location as a URI.
    pub fn uri(&self) -> String {
        self.uri_of(&self.prefix)
    }

    /// The URI of an object of this store.
    pub fn uri_of(&self, path: &Path) -> String {
        format!("{}/{}", self.root, path)
    }

    /// The object `rel` (slash-separated) under the prefix.
    pub fn child(&self, rel: &str) -> Path {
        rel.split('/').filter(|p| !p.is_empty()).fold(self.prefix.clone(), |p, part| p.join(part))
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &Path) -> Result<Bytes, StorageError> {
        let uri = self.uri_of(path);
        let got = self.store.get(path).await.map_err(|e| StorageError::store(&uri, e))?;
        got.bytes().await.map_err(|e| StorageError::store(uri, e))
    }

    /// Metadata of an object, or `None` when it does not exist.
    pub async fn head(&self, path: &Path) -> Result<Option<ObjectMeta>, StorageError> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StorageError::store(self.uri_of(path), e)),
        }
    }

    /// Writes an object, replacing any previous version (atomic: readers see the old or the new object).
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        self.store.put(path, PutPayload::from(bytes)).await.map_err(|e| StorageError::store(self.uri_of(path), e))?;
        Ok(())
    }

    /// Creates an object only if none exists at `path` (S3 `If-None-Match: *`, an exclusive create on local
    /// disks). Returns whether this call created it.
    pub async fn put_if_absent(&self, path: &Path, bytes: Bytes) -> Result<bool, StorageError> {
        let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.store.put_opts(path, PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(StorageError::store(self.uri_of(path), e)),
        }
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, path: &Path) -> Result<(), StorageError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::store(self.uri_of(path), e)),
        }
    }

    /// Every object under `rel` (recursively), sorted by path.
    pub async fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let dir = self.child(rel);
        let mut all: Vec<ObjectMeta> = match self.store.list(Some(&dir)).try_collect().await {
            Ok(v) => v,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(StorageError::store(self.uri_of(&dir), e)),
        };
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_paths_and_uris_reach_the_same_objects() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::new();
        let by_path = stores.location(dir.path().join("out").to_str().unwrap()).unwrap();
        let url = Url::from_file_path(dir.path().join("out")).unwrap();
        let by_uri = stores.location(url.as_str()).unwrap();
        let key = by_path.child("a/b.json");
        assert!(by_path.put_if_absent(&key, Bytes::from_static(b"1")).await.unwrap());
        assert!(!by_uri.put_if_absent(&by_uri.child("a/b.json"), Bytes::from_static(b"2")).await.unwrap());
        assert_eq!(by_uri.get(&key).await.unwrap().as_ref(), b"1");
        assert!(dir.path().join("out/a/b.json").is_file());
        assert_eq!(by_uri.list("a").await.unwrap().len(), 1);
        assert!(by_uri.list("nothing-here").await.unwrap().is_empty());
        assert!(matches!(by_uri.get(&by_uri.child("missing")).await, Err(StorageError::NotFound { .. })));
        by_uri.delete(&key).await.unwrap();
        by_uri.delete(&key).await.unwrap();
        assert!(by_uri.head(&key).await.unwrap().is_none());
    }

    /// Local writes go through a store that fsyncs them: the flag is private to `object_store`, so its debug form
    /// is what shows it.
    #[test]
    fn local_locations_fsync_their_writes() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Stores::new().location(dir.path().to_str().unwrap()).unwrap();
        let shown = format!("{:?}", loc.store());
        assert!(shown.contains("LocalFileSystem") && shown.contains("fsync: true"), "{shown}");
    }

    #[test]
    fn bad_locations_are_typed_errors() {
        let stores = Stores::new();
        for uri in ["", "ftp://host/x", "https://example.com/x"] {
            assert!(matches!(stores.location(uri), Err(StorageError::BadLocation { .. })), "{uri}");
        }
        assert!(stores.location("memory:///x").is_ok());
        assert_eq!(stores.location("memory:///x/y").unwrap().uri(), "memory:///x/y");
    }
}
