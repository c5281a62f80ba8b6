//! A blocking, forward-only writer into an object: a multipart upload (a local file for local locations) that
//! appears at its key, whole, only when [`Upload::finish`] completes it. It checksums what it sends, so the caller
//! can record the object's CRC-32 without reading it back. For synchronous producers (an index shard serialised
//! section by section) that run outside the runtime.

use std::io::Write;
use std::sync::Arc;

use object_store::buffered::BufWriter;
use object_store::path::Path;
use tokio::io::AsyncWriteExt;

use crate::error::StorageError;
use crate::location::Location;

/// Bytes gathered before each hand-over to the upload (the object store splits them into parts).
const CHUNK: usize = 8 << 20;

/// What a finished upload wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    /// Bytes in the object.
    pub bytes: u64,
    /// CRC-32 of those bytes.
    pub crc32: u32,
}

/// A multipart upload driven from synchronous code (see the module documentation).
pub struct Upload<'a> {
    rt: &'a tokio::runtime::Handle,
    inner: BufWriter,
    uri: String,
    chunk: Vec<u8>,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<'a> Upload<'a> {
    /// Starts an upload to `path` of `loc`; `rt` drives it (call from outside the runtime's threads).
    pub fn start(rt: &'a tokio::runtime::Handle, loc: &Location, path: &Path) -> Self {
        Self {
            rt,
            inner: BufWriter::new(Arc::clone(loc.store()), path.clone()),
            uri: loc.uri_of(path),
            chunk: Vec::with_capacity(CHUNK),
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if !self.chunk.is_empty() {
            self.rt.block_on(self.inner.write_all(&self.chunk))?;
            self.chunk.clear();
        }
        Ok(())
    }

    /// Sends what is left and completes the upload: the object appears at its key.
    pub fn finish(mut self) -> Result<Uploaded, StorageError> {
        let uri = self.uri.clone();
        let io = |e: std::io::Error| StorageError::ObjectStore {
            uri: uri.clone(),
            source: object_store::Error::Generic { store: "upload", source: Box::new(e) },
        };
        if let Err(e) = self.send() {
            self.abort();
            return Err(io(e));
        }
        let rt = self.rt;
        rt.block_on(self.inner.shutdown()).map_err(io)?;
        Ok(Uploaded { bytes: self.bytes, crc32: self.crc.finalize() })
    }

    /// Gives the upload up: nothing appears at the key (parts already sent are discarded by the store).
    pub fn abort(mut self) {
        let (rt, uri) = (self.rt, self.uri.clone());
        if let Err(e) = rt.block_on(self.inner.abort()) {
            tracing::warn!(%uri, error = %e, "could not abort the upload (its parts expire with the bucket's rules)");
        }
    }
}

impl Write for Upload<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.crc.update(buf);
        self.bytes += buf.len() as u64;
        self.chunk.extend_from_slice(buf);
        if self.chunk.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Stores;

    #[test]
    fn an_upload_appears_whole_on_finish_and_not_at_all_when_aborted() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let loc = Stores::new().location(dir.path().to_str().unwrap()).unwrap();
        let data: Vec<u8> = (0..(CHUNK * 2 + 12345)).map(|i| (i * 7 % 251) as u8).collect();

        let path = loc.child("whole.bin");
        let mut up = Upload::start(rt.handle(), &loc, &path);
        for piece in data.chunks(1000) {
            up.write_all(piece).unwrap();
        }
        let done = up.finish().unwrap();
        assert_eq!(done, Uploaded { bytes: data.len() as u64, crc32: crc32fast::hash(&data) });
        assert_eq!(std::fs::read(dir.path().join("whole.bin")).unwrap(), data);

        let path = loc.child("dropped.bin");
        let mut up = Upload::start(rt.handle(), &loc, &path);
        up.write_all(&data).unwrap();
        up.abort();
        assert!(rt.block_on(loc.head(&path)).unwrap().is_none());
    }
}
