//! Files that are either wholly there or not at all, after a kill or a power loss: written to a temporary sibling,
//! fsynced, renamed into place, then the folder fsynced so that the rename itself is on disk. Every file delf-rs
//! writes in place (manifests, shards, PCA and model files, Raft state) goes through here.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary sibling `path` is written to before [`commit`]: `NAME.PID.tmp` in the same folder (same file
/// system, so the rename is atomic; the process id keeps two processes writing the same file apart).
pub fn temporary_for(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary_for(path);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    commit(&tmp, path)
}

/// Renames a written and fsynced `tmp` onto `path`, then fsyncs the folder.
pub fn commit(tmp: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(tmp, path)?;
    sync_parent(path)
}

/// Fsyncs the folder holding `path`, so that a rename or creation in it survives a power loss.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(folder)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("delf-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("manifest.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        assert!(!temporary_for(&path).exists());
        assert_eq!(temporary_for(&path), dir.join(format!("manifest.json.{}.tmp", std::process::id())));
        // A folder that does not exist is an error, not a panic.
        assert!(write_atomic(&dir.join("missing/x"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
