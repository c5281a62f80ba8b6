//! The Arrow schema of feature shards (version 1) and of their error tables, and conversion to and from
//! [`FeatureSet`]s. One row per image; the per-feature columns are lists, descriptors are fixed-size lists.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `image_id` | utf8 | id from the image list |
//! | `uri` | utf8 | where the image was read |
//! | `width`, `height` | uint32 | size of the (EXIF-oriented) original image |
//! | `locations` | list<fixed_size_list<float32, 2>> | keypoint `(x, y)` in original-image pixels |
//! | `scales` | list<float32> | `1 / s` of the pyramid scale each feature came from |
//! | `scores` | list<float32> | attention score, features sorted by decreasing score |
//! | `descriptors` | list<fixed_size_list<float32, D>> | L2-normalised descriptors (D = 40 after the reference PCA) |
//!
//! Schema metadata (also in the Parquet footer): `delf.schema_version`, `delf.fingerprint` (model + PCA),
//! `delf.dim`, and the job's `delf.job` / `delf.unit`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type};
use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, ListArray, RecordBatch, StringArray, UInt32Array};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use delf_core::{FeatureSet, Fingerprint, Keypoint};

use crate::error::StoreError;

/// Version of the feature-shard schema written by this build; readers reject other versions.
pub const SCHEMA_VERSION: u32 = 1;
/// Schema metadata key: schema version.
pub const META_SCHEMA_VERSION: &str = "delf.schema_version";
/// Schema metadata key: descriptor fingerprint (model + PCA).
pub const META_FINGERPRINT: &str = "delf.fingerprint";
/// Schema metadata key: descriptor dimension.
pub const META_DIM: &str = "delf.dim";
/// Schema metadata key: job id.
pub const META_JOB: &str = "delf.job";
/// Schema metadata key: work unit.
pub const META_UNIT: &str = "delf.unit";

/// The image a row came from and its features.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    /// Id from the image list.
    pub image_id: String,
    /// Where the image was read.
    pub uri: String,
    /// The features (their fingerprint is the file's).
    pub features: FeatureSet,
}

/// Why an image has no row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The object does not exist (HTTP 404, missing file).
    NotFound,
    /// The object could not be read (network, permissions).
    ReadFailed,
    /// The file or its declared pixel size exceeds the decode limits.
    TooLarge,
    /// The bytes are damaged or truncated.
    Corrupt,
    /// Not an image format we decode.
    Unsupported,
    /// The network failed on this image.
    ExtractFailed,
}

impl FailureKind {
    /// The kind as stored in the error table.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::NotFound => "not_found",
            FailureKind::ReadFailed => "read_failed",
            FailureKind::TooLarge => "too_large",
            FailureKind::Corrupt => "corrupt",
            FailureKind::Unsupported => "unsupported",
            FailureKind::ExtractFailed => "extract_failed",
        }
    }

    /// The kind of a decoding error.
    pub fn of_image_error(e: &delf_image::ImageError) -> Self {
        use delf_image::ImageError as E;
        match e {
            E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => FailureKind::NotFound,
            E::Io { .. } => FailureKind::ReadFailed,
            E::UnsupportedFormat => FailureKind::Unsupported,
            E::TooLarge { .. } | E::FileTooLarge { .. } => FailureKind::TooLarge,
            E::Empty { .. } | E::Corrupt(_) => FailureKind::Corrupt,
        }
    }
}

/// One image that could not be extracted: a row of a unit's error table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRow {
    /// Id from the image list.
    pub image_id: String,
    /// Where it was to be read.
    pub uri: String,
    /// Why, as a category.
    pub kind: FailureKind,
    /// Why, in words.
    pub message: String,
}

fn float_list_item(dim: i32) -> Arc<Field> {
    Arc::new(Field::new(
        "item",
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim),
        false,
    ))
}

/// The feature-shard schema for `dim`-d descriptors, with its metadata.
pub fn feature_schema(dim: usize, fingerprint: &Fingerprint, extra: &[(&str, String)]) -> SchemaRef {
    let list = |item: Arc<Field>| DataType::List(item);
    let mut metadata: HashMap<String, String> = HashMap::from([
        (META_SCHEMA_VERSION.to_string(), SCHEMA_VERSION.to_string()),
        (META_FINGERPRINT.to_string(), fingerprint.to_string()),
        (META_DIM.to_string(), dim.to_string()),
    ]);
    metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("image_id", DataType::Utf8, false),
            Field::new("uri", DataType::Utf8, false),
            Field::new("width", DataType::UInt32, false),
            Field::new("height", DataType::UInt32, false),
            Field::new("locations", list(float_list_item(2)), false),
            Field::new("scales", list(Arc::new(Field::new("item", DataType::Float32, false))), false),
            Field::new("scores", list(Arc::new(Field::new("item", DataType::Float32, false))), false),
            Field::new("descriptors", list(float_list_item(dim as i32)), false),
        ],
        metadata,
    ))
}

/// The error-table schema.
pub fn error_schema() -> SchemaRef {
    Arc::new(Schema::new(["image_id", "uri", "kind", "message"].map(|n| Field::new(n, DataType::Utf8, false)).to_vec()))
}

fn arrow_err(uri: &str) -> impl Fn(arrow_schema::ArrowError) -> StoreError + '_ {
    move |source| StoreError::Arrow { uri: uri.to_string(), source }
}

/// Feature rows as one record batch of `schema` (whose `delf.dim` they must match).
pub fn rows_to_batch(schema: &SchemaRef, rows: &[FeatureRow], uri: &str) -> Result<RecordBatch, StoreError> {
    let dim: usize = schema.metadata().get(META_DIM).and_then(|d| d.parse().ok()).unwrap_or(0);
    for r in rows {
        r.features.validate().map_err(|e| StoreError::Schema { uri: uri.into(), reason: e.to_string() })?;
        if r.features.dim != dim {
            return Err(StoreError::Schema {
                uri: uri.into(),
                reason: format!("image {} has {}-d descriptors, the file holds {dim}-d", r.image_id, r.features.dim),
            });
        }
    }
    let offsets = OffsetBuffer::<i32>::from_lengths(rows.iter().map(|r| r.features.len()));
    let kp = |f: fn(&Keypoint) -> f32| -> Float32Array {
        rows.iter().flat_map(|r| r.features.keypoints.iter().map(f)).collect()
    };
    let xy: Float32Array = rows.iter().flat_map(|r| r.features.keypoints.iter().flat_map(|k| [k.x, k.y])).collect();
    let desc: Float32Array = rows.iter().flat_map(|r| r.features.descriptors.iter().copied()).collect();
    let err = arrow_err(uri);
    let plain_item = || Arc::new(Field::new("item", DataType::Float32, false));
    let fixed = |dim: i32, values: Float32Array| -> Result<ArrayRef, StoreError> {
        Ok(Arc::new(FixedSizeListArray::try_new(plain_item(), dim, Arc::new(values), None).map_err(&err)?))
    };
    let list = |item: Arc<Field>, values: ArrayRef| -> Result<ArrayRef, StoreError> {
        Ok(Arc::new(ListArray::try_new(item, offsets.clone(), values, None).map_err(&err)?))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(rows.iter().map(|r| Some(r.image_id.as_str())).collect::<StringArray>()),
        Arc::new(rows.iter().map(|r| Some(r.uri.as_str())).collect::<StringArray>()),
        Arc::new(rows.iter().map(|r| r.features.width).collect::<UInt32Array>()),
        Arc::new(rows.iter().map(|r| r.features.height).collect::<UInt32Array>()),
        list(float_list_item(2), fixed(2, xy)?)?,
        list(plain_item(), Arc::new(kp(|k| k.scale)))?,
        list(plain_item(), Arc::new(kp(|k| k.score)))?,
        list(float_list_item(dim as i32), fixed(dim as i32, desc)?)?,
    ];
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(err)
}

/// What a feature file's schema declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// Descriptor fingerprint.
    pub fingerprint: Fingerprint,
    /// Descriptor dimension.
    pub dim: usize,
    /// Every schema metadata entry.
    pub metadata: BTreeMap<String, String>,
}

/// Checks a feature file's schema (version, columns) and returns what its metadata declares.
pub fn check_schema(schema: &Schema, uri: &str) -> Result<FileHeader, StoreError> {
    let bad = |reason: String| StoreError::Schema { uri: uri.into(), reason };
    let meta = schema.metadata();
    let version =
        meta.get(META_SCHEMA_VERSION).ok_or_else(|| bad("no delf.schema_version: not a feature shard".into()))?;
    if version != &SCHEMA_VERSION.to_string() {
        return Err(bad(format!("schema version {version}, this build reads version {SCHEMA_VERSION}")));
    }
    let fingerprint = Fingerprint(meta.get(META_FINGERPRINT).ok_or_else(|| bad("no delf.fingerprint".into()))?.clone());
    let dim: usize = meta.get(META_DIM).and_then(|d| d.parse().ok()).ok_or_else(|| bad("no valid delf.dim".into()))?;
    let expected = feature_schema(dim, &fingerprint, &[]);
    for field in expected.fields() {
        match schema.field_with_name(field.name()) {
            Ok(f) if f.data_type() == field.data_type() => {}
            Ok(f) => {
                return Err(bad(format!("column {} is {}, expected {}", f.name(), f.data_type(), field.data_type())));
            }
            Err(_) => return Err(bad(format!("no column {}", field.name()))),
        }
    }
    let metadata = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(FileHeader { fingerprint, dim, metadata })
}

/// The rows of a record batch of a checked feature file.
pub fn batch_to_rows(batch: &RecordBatch, header: &FileHeader, uri: &str) -> Result<Vec<FeatureRow>, StoreError> {
    let bad = |reason: String| StoreError::Schema { uri: uri.into(), reason };
    let col = |name: &str| batch.column_by_name(name).ok_or_else(|| bad(format!("no column {name}")));
    let ids = col("image_id")?.as_string::<i32>();
    let uris = col("uri")?.as_string::<i32>();
    let widths = col("width")?.as_primitive::<UInt32Type>();
    let heights = col("height")?.as_primitive::<UInt32Type>();
    let locations = col("locations")?.as_list::<i32>();
    let scales = col("scales")?.as_list::<i32>();
    let scores = col("scores")?.as_list::<i32>();
    let descriptors = col("descriptors")?.as_list::<i32>();
    let dim = header.dim;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let id = ids.value(r).to_string();
        let loc = locations.value(r);
        let loc = loc.as_fixed_size_list().values().as_primitive::<Float32Type>().clone();
        let sc = scales.value(r);
        let sc = sc.as_primitive::<Float32Type>();
        let at = scores.value(r);
        let at = at.as_primitive::<Float32Type>();
        let d = descriptors.value(r);
        let d = d.as_fixed_size_list().values().as_primitive::<Float32Type>().clone();
        let n = sc.len();
        if loc.len() != 2 * n || at.len() != n || d.len() != n * dim {
            return Err(bad(format!(
                "image {id}: {} locations, {n} scales, {} scores, {} descriptor values",
                loc.len() / 2,
                at.len(),
                d.len()
            )));
        }
        let keypoints = (0..n)
            .map(|i| Keypoint { x: loc.value(2 * i), y: loc.value(2 * i + 1), scale: sc.value(i), score: at.value(i) })
            .collect();
        rows.push(FeatureRow {
            image_id: id,
            uri: uris.value(r).to_string(),
            features: FeatureSet {
                width: widths.value(r),
                height: heights.value(r),
                dim,
                keypoints,
                descriptors: d.values().to_vec(),
                fingerprint: header.fingerprint.clone(),
            },
        });
    }
    Ok(rows)
}

/// Error rows as one record batch.
pub fn errors_to_batch(rows: &[ErrorRow], uri: &str) -> Result<RecordBatch, StoreError> {
    let col =
        |f: fn(&ErrorRow) -> &str| -> ArrayRef { Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>()) };
    RecordBatch::try_new(
        error_schema(),
        vec![col(|r| &r.image_id), col(|r| &r.uri), col(|r| r.kind.as_str()), col(|r| &r.message)],
    )
    .map_err(arrow_err(uri))
}

/// The rows of an error-table batch.
pub fn batch_to_errors(batch: &RecordBatch, uri: &str) -> Result<Vec<ErrorRow>, StoreError> {
    let bad = |reason: String| StoreError::Schema { uri: uri.into(), reason };
    let col = |name: &str| -> Result<&StringArray, StoreError> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| bad(format!("no string column {name}")))
    };
    let (ids, uris, kinds, messages) = (col("image_id")?, col("uri")?, col("kind")?, col("message")?);
    (0..batch.num_rows())
        .map(|r| {
            let kind = serde_json::from_value(serde_json::Value::String(kinds.value(r).to_string()))
                .map_err(|_| bad(format!("unknown failure kind {:?}", kinds.value(r))))?;
            Ok(ErrorRow {
                image_id: ids.value(r).to_string(),
                uri: uris.value(r).to_string(),
                kind,
                message: messages.value(r).to_string(),
            })
        })
        .collect()
}
