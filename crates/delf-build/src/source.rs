//! The images of a build's source as an extraction job's list.

use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use delf_features::{ImageList, ListEntry};
use delf_search::ImageSource;
use delf_storage::Stores;

use crate::error::BuildError;

/// The images of `source` as a list, and the folder relative ids resolve against. A local folder or list is listed
/// with each file's size and modification time in the list checksum, so a changed corpus is extracted afresh; an
/// object-store list (`s3://...`) is read as it is.
pub fn source_list(
    source: &str,
    stores: &Stores,
    rt: &tokio::runtime::Runtime,
) -> Result<(ImageList, Option<PathBuf>), BuildError> {
    if source.contains("://") {
        return Ok((rt.block_on(ImageList::load(stores, source))?, None));
    }
    let listed = ImageSource::list(source)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut entries = Vec::with_capacity(listed.images.len());
    for im in &listed.images {
        let meta = std::fs::metadata(&im.path).ok();
        let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
        let mtime = meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        hasher.update(format!("{}\t{}\t{len}\t{mtime}\n", im.id, im.path.display()).as_bytes());
        let uri = url::Url::from_file_path(&im.path)
            .map_err(|()| BuildError::Input(format!("{} is not an absolute path", im.path.display())))?;
        entries.push(ListEntry { image_id: im.id.clone(), uri: uri.to_string() });
    }
    let list = ImageList { uri: source.to_string(), entries, checksum: format!("{:08x}", hasher.finalize()) };
    Ok((list, Some(listed.root)))
}
