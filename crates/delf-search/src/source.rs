//! Images to index: every JPEG/PNG/WebP/TIFF/BMP/GIF file under a folder (recursively, sorted by relative path), or
//! the paths listed in a text file (one per line, `#` comments; relative paths are relative to the list's folder).
//! Image ids are the relative paths (or the lines as written), so an index built on one machine reads the same on
//! another. Object-store prefixes (`s3://...`) come with the feature store (issue 7).

use std::path::{Path, PathBuf};

use crate::error::SearchError;

/// One image to index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceImage {
    /// Stable id (relative path or list line).
    pub id: String,
    /// Where to read it.
    pub path: PathBuf,
}

/// A listed source.
#[derive(Debug, Clone)]
pub struct ImageSource {
    /// Folder ids are relative to.
    pub root: PathBuf,
    /// The images, in index order.
    pub images: Vec<SourceImage>,
}

const EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "gif"];

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl ImageSource {
    /// Lists a local `source`: a folder or a list file. Object-store lists (`s3://...`) are read by
    /// `delf_features::ImageList`, which `delf index build` uses for them.
    pub fn list(source: &str) -> Result<Self, SearchError> {
        let bad = |reason: String| SearchError::BadSource { path: source.to_string(), reason };
        if source.contains("://") {
            return Err(bad("an object-store list is read by the batch extraction job (`delf index build URI` or \
                            `delf extract --list URI`), not listed here"
                .into()));
        }
        let path = Path::new(source);
        let abs = std::path::absolute(path).map_err(|source| SearchError::Io { path: path.to_path_buf(), source })?;
        let (root, images) = if path.is_dir() {
            let mut files = Vec::new();
            walk(&abs, &mut files).map_err(|source| SearchError::Io { path: abs.clone(), source })?;
            let mut images: Vec<SourceImage> = files
                .into_iter()
                .filter(|p| is_image(p))
                .filter_map(|p| {
                    let id = p.strip_prefix(&abs).ok()?.to_string_lossy().replace('\\', "/");
                    Some(SourceImage { id, path: p })
                })
                .collect();
            images.sort_by(|a, b| a.id.cmp(&b.id));
            (abs, images)
        } else if path.is_file() {
            let text = std::fs::read_to_string(path).map_err(|source| SearchError::Io { path: abs.clone(), source })?;
            let root = abs.parent().map(Path::to_path_buf).unwrap_or_default();
            let mut seen = std::collections::HashSet::new();
            let mut images = Vec::new();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                if !seen.insert(line.to_string()) {
                    return Err(bad(format!("{line:?} is listed twice")));
                }
                let p = Path::new(line);
                images.push(SourceImage {
                    id: line.to_string(),
                    path: if p.is_absolute() { p.to_path_buf() } else { root.join(p) },
                });
            }
            (root, images)
        } else {
            return Err(bad("no such folder or list file".into()));
        };
        if images.is_empty() {
            return Err(bad("no images found (looked for jpg, jpeg, png, webp, tif, tiff, bmp, gif)".into()));
        }
        if images.len() > u32::MAX as usize {
            return Err(bad("more images than one index can number".into()));
        }
        Ok(Self { root, images })
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // Follow symbolic links to files and folders (a folder of links is a cheap way to assemble a corpus).
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_lists_give_stable_ids_and_bad_sources_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for f in ["b.jpg", "a.PNG", "notes.txt", "sub/c.webp"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let s = ImageSource::list(dir.path().to_str().unwrap()).unwrap();
        let ids: Vec<&str> = s.images.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a.PNG", "b.jpg", "sub/c.webp"]);
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "# corpus\nb.jpg\n\nsub/c.webp\n").unwrap();
        let s = ImageSource::list(list.to_str().unwrap()).unwrap();
        assert_eq!(s.images[1].path, dir.path().join("sub/c.webp"));
        std::fs::write(&list, "b.jpg\nb.jpg\n").unwrap();
        assert!(ImageSource::list(list.to_str().unwrap()).is_err());
        assert!(ImageSource::list("s3://bucket/prefix").is_err());
        assert!(ImageSource::list(dir.path().join("missing").to_str().unwrap()).is_err());
        let empty = tempfile::tempdir().unwrap();
        assert!(ImageSource::list(empty.path().to_str().unwrap()).is_err());
    }
}
