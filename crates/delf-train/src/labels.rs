//! Label files: which image belongs to which class (image-level labels only, as in the paper).
//!
//! A CSV with a header (RFC 4180 quoting), in the Google-Landmarks v2 style:
//! - the label column is `landmark_id` or `label` (any string; classes are numbered in sorted order);
//! - the image is named by a `path`, `uri` or `image` column (local path or URI; relative entries resolve against
//!   the label file's folder), or by an `id` column plus an images root given separately, laid out as GLDv2's
//!   download is: `ROOT/a/b/c/abc123....jpg` for id `abc123...`.
//!
//! Other columns (GLDv2's `url`) are ignored. Duplicated images, empty fields and fewer than two classes are errors.

use std::collections::{BTreeMap, HashSet};

use delf_features::image_list::{csv_fields, resolve};
use delf_storage::to_url;

use crate::TrainError;

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The image's id (the `id` column, else the image column as written).
    pub image_id: String,
    /// Absolute URI of the image.
    pub uri: String,
    /// Class index into [`LabelSet::classes`].
    pub class: usize,
}

/// A parsed label file.
#[derive(Debug, Clone)]
pub struct LabelSet {
    /// Where it was read from.
    pub uri: String,
    /// The images, in file order.
    pub samples: Vec<Sample>,
    /// Class names (the label column's values), sorted; a sample's class indexes this.
    pub classes: Vec<String>,
    /// CRC-32 of the file's bytes: a resumed run checks it trains on the same labels.
    pub checksum: String,
}

impl LabelSet {
    /// Parses the bytes of the label file at `uri`; `images_root` resolves an `id`-only file.
    pub fn parse(uri: &str, bytes: &[u8], images_root: Option<&str>) -> Result<Self, TrainError> {
        let bad = |line: usize, reason: String| TrainError::Labels { uri: uri.into(), line, reason };
        let text = std::str::from_utf8(bytes).map_err(|e| bad(0, format!("not UTF-8: {e}")))?;
        let base = to_url(uri)?;
        let root = images_root
            .map(|r| {
                to_url(r).map(|mut u| {
                    if !u.path().ends_with('/') {
                        u.set_path(&format!("{}/", u.path()));
                    }
                    u
                })
            })
            .transpose()?;
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or_else(|| bad(1, "empty file".into()))?;
        let header = csv_fields(header.trim_start_matches('\u{feff}')).map_err(|e| bad(1, e))?;
        let find = |names: &[&str]| names.iter().find_map(|n| header.iter().position(|h| h == n));
        let label_col = find(&["landmark_id", "label"])
            .ok_or_else(|| bad(1, format!("no landmark_id or label column in {header:?}")))?;
        let image_col = find(&["path", "uri", "image"]);
        let id_col = find(&["id", "image_id"]);
        if image_col.is_none() && (id_col.is_none() || root.is_none()) {
            let reason = match id_col {
                Some(_) => "images are named by id only: give the images folder (--images DIR, GLDv2 layout)".into(),
                None => format!("no path, uri, image or id column in {header:?}"),
            };
            return Err(bad(1, reason));
        }
        let mut rows = Vec::new();
        let mut seen = HashSet::new();
        for (i, line) in lines {
            let line_no = i + 1;
            let fields = csv_fields(line).map_err(|e| bad(line_no, e))?;
            let get = |c: usize| -> Result<&str, TrainError> {
                match fields.get(c).map(String::as_str) {
                    Some(v) if !v.is_empty() => Ok(v),
                    _ => Err(bad(line_no, format!("empty or missing field {:?}", header[c]))),
                }
            };
            let label = get(label_col)?.to_string();
            let (image_id, target) = match (image_col, id_col, &root) {
                (Some(c), id, _) => {
                    let target = get(c)?;
                    let id = match id {
                        Some(id) => get(id)?.to_string(),
                        None => target.to_string(),
                    };
                    (id, resolve(&base, target).map_err(|e| bad(line_no, e))?)
                }
                (None, Some(c), Some(root)) => {
                    let id = get(c)?;
                    let rel =
                        gldv2_path(id).ok_or_else(|| bad(line_no, format!("id {id:?} is not a GLDv2 image id")))?;
                    (id.to_string(), resolve(root, &rel).map_err(|e| bad(line_no, e))?)
                }
                _ => unreachable!("checked above"),
            };
            if !seen.insert(image_id.clone()) {
                return Err(bad(line_no, format!("image {image_id:?} is listed twice")));
            }
            rows.push((image_id, target, label));
        }
        let class_names: BTreeMap<String, usize> = rows.iter().map(|(_, _, l)| (l.clone(), 0)).collect();
        if class_names.len() < 2 {
            return Err(bad(
                0,
                format!(
                    "{} image(s) in {} class(es): a classifier needs at least two classes",
                    rows.len(),
                    class_names.len()
                ),
            ));
        }
        let classes: Vec<String> = class_names.into_keys().collect();
        let samples = rows
            .into_iter()
            .map(|(image_id, uri, label)| {
                let class = classes.binary_search(&label).unwrap_or_default();
                Sample { image_id, uri, class }
            })
            .collect();
        Ok(Self { uri: uri.to_string(), samples, classes, checksum: format!("{:08x}", crc32fast::hash(bytes)) })
    }

    /// Every local (`file://`) image must exist; remote ones are checked when read.
    pub fn check_local_files(&self) -> Result<(), TrainError> {
        let missing: Vec<String> = self
            .samples
            .iter()
            .filter(|s| url::Url::parse(&s.uri).ok().and_then(|u| u.to_file_path().ok()).is_some_and(|p| !p.is_file()))
            .map(|s| s.uri.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(TrainError::MissingImages {
            uri: self.uri.clone(),
            count: missing.len(),
            examples: missing.into_iter().take(3).collect(),
        })
    }

    /// Splits sample indices into (train, validation): about `fraction` of the images of every class with two or
    /// more images go to validation, chosen by a hash of the image id and `seed`; every class keeps at least one
    /// training image. Classes of one image (instance-level training) stay whole in training.
    pub fn split(&self, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
        let mut by_class: BTreeMap<usize, Vec<(u64, usize)>> = BTreeMap::new();
        for (i, s) in self.samples.iter().enumerate() {
            let h = delf_core::Fingerprint::of("split", &[&seed.to_le_bytes(), s.image_id.as_bytes()]);
            by_class.entry(s.class).or_default().push((hash_of(&h.0), i));
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for mut members in by_class.into_values() {
            members.sort_unstable();
            let n_val = ((members.len() as f64 * fraction).floor() as usize).min(members.len() - 1);
            for (k, (_, i)) in members.into_iter().enumerate() {
                if k < n_val { val.push(i) } else { train.push(i) }
            }
        }
        train.sort_unstable();
        val.sort_unstable();
        (train, val)
    }
}

/// GLDv2 keeps image `abc...` at `a/b/c/abc....jpg`.
fn gldv2_path(id: &str) -> Option<String> {
    let c: Vec<char> = id.chars().take(3).collect();
    (c.len() == 3 && id.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| format!("{}/{}/{}/{id}.jpg", c[0], c[1], c[2]))
}

fn hash_of(fingerprint: &str) -> u64 {
    u64::from_str_radix(fingerprint.rsplit('/').next().unwrap_or_default(), 16).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "file:///data/labels.csv";

    fn err(text: &str) -> String {
        LabelSet::parse(URI, text.as_bytes(), None).unwrap_err().to_string()
    }

    #[test]
    fn paths_ids_and_classes() {
        let set = LabelSet::parse(URI, b"path,landmark_id\nimg/a.jpg,7\n/abs/b.jpg,3\n\"c,1.jpg\",7\n", None).unwrap();
        assert_eq!(set.classes, ["3", "7"]);
        assert_eq!(set.samples[0].uri, "file:///data/img/a.jpg");
        assert_eq!(set.samples[1].uri, "file:///abs/b.jpg");
        assert_eq!(set.samples[2].image_id, "c,1.jpg");
        assert_eq!(set.samples.iter().map(|s| s.class).collect::<Vec<_>>(), [1, 0, 1]);
        let gld =
            LabelSet::parse(URI, b"id,url,landmark_id\nabc123,http://x,1\ndef456,http://y,2\n", Some("/gld/train"))
                .unwrap();
        assert_eq!(gld.samples[0].uri, "file:///gld/train/a/b/c/abc123.jpg");
        assert_eq!(gld.samples[0].image_id, "abc123");
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(err("path\na.jpg\n").contains("no landmark_id or label column"));
        assert!(err("name,label\na.jpg,1\n").contains("no path, uri, image or id column"));
        assert!(err("id,landmark_id\nabc,1\n").contains("--images DIR"));
        assert!(err("path,label\na.jpg,1\nb.jpg,1\n").contains("at least two classes"));
        assert!(err("path,label\na.jpg,1\na.jpg,2\n").contains("listed twice"));
        assert!(err("path,label\na.jpg,\nb.jpg,2\n").contains("line 2"));
        assert!(err("").contains("empty file"));
    }

    #[test]
    fn split_keeps_one_training_image_per_class_and_is_seeded() {
        let mut text = String::from("path,label\n");
        for i in 0..40 {
            text.push_str(&format!("{i}.jpg,{}\n", i % 4));
        }
        text.push_str("solo.jpg,single\n");
        let set = LabelSet::parse(URI, text.as_bytes(), None).unwrap();
        let (train, val) = set.split(0.25, 1);
        assert_eq!(train.len() + val.len(), 41);
        assert_eq!(val.len(), 8);
        let solo = set.samples.iter().position(|s| s.image_id == "solo.jpg").unwrap();
        assert!(train.contains(&solo));
        assert_eq!(set.split(0.25, 1), (train.clone(), val.clone()));
        assert_ne!(set.split(0.25, 2).1, val);
    }

    #[test]
    fn missing_local_images_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jpg"), b"x").unwrap();
        let uri = format!("file://{}/labels.csv", dir.path().display());
        let set = LabelSet::parse(&uri, b"path,label\na.jpg,1\nb.jpg,2\n", None).unwrap();
        let e = set.check_local_files().unwrap_err();
        assert!(matches!(&e, TrainError::MissingImages { count: 1, examples, .. } if examples[0].ends_with("/b.jpg")));
    }
}
