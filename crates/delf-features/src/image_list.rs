//! Image lists: what a batch job extracts, in a fixed order.
//!
//! Three formats, chosen by the list's extension:
//! - **text** (anything else): one path or URI per line; blank lines and `#` comments are skipped; the image id is
//!   the line as written.
//! - **CSV** (`.csv`): a header naming `image_id` and `uri` columns (others are ignored), RFC 4180 quoting.
//! - **Parquet** (`.parquet`): string columns `image_id` and `uri`.
//!
//! Relative paths are resolved against the list's own folder (a list in `s3://b/lists/` naming `img/1.jpg` means
//! `s3://b/lists/img/1.jpg`). Image ids must be unique: a duplicate is an error, since the job's output would
//! otherwise hold one image twice.

use std::collections::HashSet;

use arrow_array::{Array, StringArray, cast::AsArray};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use url::Url;

use crate::error::StoreError;
use delf_storage::{Stores, to_url};

/// One image of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Stable id, unique in the list.
    pub image_id: String,
    /// Absolute URI of the image (`file:///...`, `s3://...`).
    pub uri: String,
}

/// A parsed image list.
#[derive(Debug, Clone)]
pub struct ImageList {
    /// Where the list was read from.
    pub uri: String,
    /// The images, in list order.
    pub entries: Vec<ListEntry>,
    /// CRC-32 of the list's bytes, as 8 hex digits: a resumed job checks it is reading the same list.
    pub checksum: String,
}

impl ImageList {
    /// Reads and parses the list at `uri`.
    pub async fn load(stores: &Stores, uri: &str) -> Result<Self, StoreError> {
        Self::parse(uri, stores.read(uri).await?)
    }

    /// Parses list bytes; `uri` picks the format and resolves relative entries.
    pub fn parse(uri: &str, bytes: Bytes) -> Result<Self, StoreError> {
        let base = to_url(uri)?;
        let checksum = format!("{:08x}", crc32fast::hash(&bytes));
        let lower = uri.to_ascii_lowercase();
        let raw: Vec<(usize, String, String)> = if lower.ends_with(".parquet") {
            parse_parquet(uri, bytes)?
        } else {
            let text = std::str::from_utf8(&bytes).map_err(|e| StoreError::BadList {
                uri: uri.into(),
                line: 0,
                reason: format!("not UTF-8: {e}"),
            })?;
            if lower.ends_with(".csv") { parse_csv(uri, text)? } else { parse_text(text) }
        };
        let mut seen = HashSet::with_capacity(raw.len());
        let mut entries = Vec::with_capacity(raw.len());
        for (line, image_id, target) in raw {
            let bad = |reason: String| StoreError::BadList { uri: uri.into(), line, reason };
            if image_id.is_empty() || target.is_empty() {
                return Err(bad("empty image id or uri".into()));
            }
            if !seen.insert(image_id.clone()) {
                return Err(bad(format!("image id {image_id:?} is listed twice")));
            }
            let resolved = resolve(&base, &target).map_err(bad)?;
            entries.push(ListEntry { image_id, uri: resolved });
        }
        if entries.is_empty() {
            return Err(StoreError::BadList { uri: uri.into(), line: 0, reason: "the list names no images".into() });
        }
        Ok(Self { uri: uri.to_string(), entries, checksum })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list is empty (a parsed list never is).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An entry made absolute: URIs with a scheme and absolute paths stay, relative paths join the list's folder.
pub fn resolve(base: &Url, target: &str) -> Result<String, String> {
    if target.contains("://") {
        return Ok(Url::parse(target).map_err(|e| format!("bad uri {target:?}: {e}"))?.to_string());
    }
    if target.starts_with('/') && base.scheme() == "file" {
        return Url::from_file_path(target).map(|u| u.to_string()).map_err(|()| format!("bad path {target:?}"));
    }
    base.join(target).map(|u| u.to_string()).map_err(|e| format!("cannot resolve {target:?}: {e}"))
}

fn parse_text(text: &str) -> Vec<(usize, String, String)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i, l.to_string(), l.to_string()))
        .collect()
}

/// Splits one CSV record (RFC 4180: quoted fields, doubled quotes); records do not span lines here.
pub fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        let field = fields.last_mut().ok_or("empty record")?;
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(String::new()),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    Ok(fields.into_iter().map(|f| f.trim().to_string()).collect())
}

fn parse_csv(uri: &str, text: &str) -> Result<Vec<(usize, String, String)>, StoreError> {
    let bad = |line: usize, reason: String| StoreError::BadList { uri: uri.into(), line, reason };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| bad(1, "empty CSV".into()))?;
    let header = csv_fields(header.trim_start_matches('\u{feff}')).map_err(|e| bad(1, e))?;
    let col = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| bad(1, format!("no {name:?} column in {header:?}")))
    };
    let (id_col, uri_col) = (col("image_id")?, col("uri")?);
    let mut out = Vec::new();
    for (i, line) in lines {
        let fields = csv_fields(line).map_err(|e| bad(i + 1, e))?;
        let get = |c: usize| fields.get(c).cloned().ok_or_else(|| bad(i + 1, format!("only {} fields", fields.len())));
        out.push((i + 1, get(id_col)?, get(uri_col)?));
    }
    Ok(out)
}

fn parse_parquet(uri: &str, bytes: Bytes) -> Result<Vec<(usize, String, String)>, StoreError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|source| StoreError::Parquet { uri: uri.into(), source })?;
    let bad = |line: usize, reason: String| StoreError::BadList { uri: uri.into(), line, reason };
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|source| StoreError::Arrow { uri: uri.into(), source })?;
        let column = |name: &str| -> Result<StringArray, StoreError> {
            let c = batch.column_by_name(name).ok_or_else(|| bad(0, format!("no {name:?} column")))?;
            let c = arrow_cast_utf8(c.as_ref()).ok_or_else(|| bad(0, format!("column {name:?} is not a string")))?;
            Ok(c)
        };
        let (ids, uris) = (column("image_id")?, column("uri")?);
        for r in 0..batch.num_rows() {
            let row = out.len() + 1;
            if ids.is_null(r) || uris.is_null(r) {
                return Err(bad(row, "null image_id or uri".into()));
            }
            out.push((row, ids.value(r).to_string(), uris.value(r).to_string()));
        }
    }
    Ok(out)
}

/// A string column as `Utf8` (large strings and string views converted).
fn arrow_cast_utf8(array: &dyn Array) -> Option<StringArray> {
    use arrow_schema::DataType;
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().clone()),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().iter().collect()),
        DataType::Utf8View => Some(array.as_string_view().iter().collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn text_lists_resolve_relative_entries_against_the_list_folder() {
        let list = ImageList::parse(
            "s3://bucket/lists/day1.txt",
            Bytes::from_static(b"# header\nimg/a.jpg\n\n  s3://other/b.jpg \n../c.png\n"),
        )
        .unwrap();
        let uris: Vec<&str> = list.entries.iter().map(|e| e.uri.as_str()).collect();
        assert_eq!(uris, ["s3://bucket/lists/img/a.jpg", "s3://other/b.jpg", "s3://bucket/c.png"]);
        assert_eq!(list.entries[0].image_id, "img/a.jpg");
        let local = ImageList::parse("/data/list.txt", Bytes::from_static(b"a.jpg\n/abs/b.jpg\n")).unwrap();
        assert_eq!(local.entries[0].uri, "file:///data/a.jpg");
        assert_eq!(local.entries[1].uri, "file:///abs/b.jpg");
        assert_eq!(local.checksum.len(), 8);
    }

    #[test]
    fn csv_lists_take_named_columns_with_quoting() {
        let csv = "uri,image_id,label\n\"photos/a, b.jpg\",id-1,x\nphotos/c.jpg,\"id \"\"2\"\"\",y\n";
        let list = ImageList::parse("/data/l.csv", Bytes::from(csv)).unwrap();
        assert_eq!(
            list.entries[0],
            ListEntry { image_id: "id-1".into(), uri: "file:///data/photos/a,%20b.jpg".into() }
        );
        assert_eq!(list.entries[1].image_id, "id \"2\"");
        for (bad, line) in [("image_id\nx\n", 1), ("image_id,uri\na\n", 2), ("image_id,uri\n\"a,b\n", 2)] {
            match ImageList::parse("/d/l.csv", Bytes::from(bad)) {
                Err(StoreError::BadList { line: l, .. }) => assert_eq!(l, line, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn parquet_lists_read_image_id_and_uri_columns() {
        use arrow_array::RecordBatch;
        let ids: Arc<dyn Array> = Arc::new(StringArray::from(vec!["a", "b"]));
        let uris: Arc<dyn Array> = Arc::new(StringArray::from(vec!["x/a.jpg", "gs://g/b.jpg"]));
        let batch = RecordBatch::try_from_iter([("image_id", ids), ("uri", uris)]).unwrap();
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let list = ImageList::parse("/d/list.parquet", Bytes::from(buf.clone())).unwrap();
        assert_eq!(list.entries[1].uri, "gs://g/b.jpg");
        assert_eq!(list.entries[0].uri, "file:///d/x/a.jpg");
        buf.truncate(buf.len() - 10);
        assert!(matches!(ImageList::parse("/d/list.parquet", Bytes::from(buf)), Err(StoreError::Parquet { .. })));
    }

    #[test]
    fn duplicates_and_empty_lists_are_errors() {
        assert!(matches!(
            ImageList::parse("/d/l.txt", Bytes::from_static(b"a.jpg\nb.jpg\na.jpg\n")),
            Err(StoreError::BadList { line: 3, .. })
        ));
        assert!(matches!(
            ImageList::parse("/d/l.txt", Bytes::from_static(b"# nothing\n")),
            Err(StoreError::BadList { .. })
        ));
        assert!(ImageList::parse("/d/l.txt", Bytes::from_static(b"\xff\xfe")).is_err());
    }
}
