//! Writing and reading one Parquet feature shard (and a unit's error table) in an object store.
//!
//! Files are ZSTD-compressed; float columns use `BYTE_STREAM_SPLIT` encoding (descriptor bytes compress far better
//! split by byte position than as a stream of floats). Row groups hold [`ShardOptions::row_group_images`] images.
//! The writer streams through a multipart upload and checksums what it sends, so a unit never sits in memory whole.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use delf_core::Fingerprint;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::arrow::{ArrowSchemaConverter, AsyncArrowWriter, ParquetRecordBatchStreamBuilder};
use parquet::basic::{Compression, Encoding, Type as PhysicalType, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;

use crate::error::StoreError;
use crate::schema::{self, ErrorRow, FeatureRow, FileHeader};
use delf_storage::{Location, StorageError};

/// How shards are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardOptions {
    /// Images per Parquet row group (about 0.2 MB of descriptors per image at 1000 features).
    pub row_group_images: usize,
    /// ZSTD level.
    pub zstd_level: i32,
    /// `BYTE_STREAM_SPLIT` for float columns.
    pub byte_stream_split: bool,
}

impl ShardOptions {
    /// Default images per row group.
    pub const DEFAULT_ROW_GROUP_IMAGES: usize = 128;
}

impl Default for ShardOptions {
    fn default() -> Self {
        Self { row_group_images: Self::DEFAULT_ROW_GROUP_IMAGES, zstd_level: 1, byte_stream_split: true }
    }
}

/// Writer properties for `schema`: compression, and the encoding of every float leaf column.
fn properties(schema: &SchemaRef, opts: &ShardOptions) -> Result<WriterProperties, StoreError> {
    let level = ZstdLevel::try_new(opts.zstd_level)
        .map_err(|e| StoreError::BadAssignment(format!("zstd level {}: {e}", opts.zstd_level)))?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(opts.row_group_images.max(1)));
    if opts.byte_stream_split {
        let parquet_schema = ArrowSchemaConverter::new()
            .convert(schema)
            .map_err(|source| StoreError::Parquet { uri: "(schema)".into(), source })?;
        for column in parquet_schema.columns() {
            if column.physical_type() == PhysicalType::FLOAT {
                props = props
                    .set_column_dictionary_enabled(column.path().clone(), false)
                    .set_column_encoding(column.path().clone(), Encoding::BYTE_STREAM_SPLIT);
            }
        }
    }
    Ok(props.build())
}

/// An upload that checksums (CRC-32) and counts the bytes it forwards.
struct Checksummed {
    inner: BufWriter,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl AsyncFileWriter for Checksummed {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        self.crc.update(&bs);
        self.bytes += bs.len() as u64;
        AsyncFileWriter::write(&mut self.inner, bs)
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        AsyncFileWriter::complete(&mut self.inner)
    }
}

/// A finished file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Its size.
    pub bytes: u64,
    /// CRC-32 of its bytes, 8 hex digits.
    pub crc32: String,
}

/// Streams feature rows into one Parquet file. Nothing is visible at the key until [`ShardWriter::finish`]
/// completes the upload.
pub struct ShardWriter {
    writer: AsyncArrowWriter<Checksummed>,
    schema: SchemaRef,
    uri: String,
}

impl ShardWriter {
    /// Starts a file at `path` of `loc` for `dim`-d descriptors of `fingerprint`; `extra` goes into the metadata.
    pub fn create(
        loc: &Location,
        path: &Path,
        dim: usize,
        fingerprint: &Fingerprint,
        extra: &[(&str, String)],
        opts: &ShardOptions,
    ) -> Result<Self, StoreError> {
        let uri = loc.uri_of(path);
        let schema = schema::feature_schema(dim, fingerprint, extra);
        let sink = Checksummed {
            inner: BufWriter::new(Arc::clone(loc.store()), path.clone()),
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        };
        let writer = AsyncArrowWriter::try_new(sink, Arc::clone(&schema), Some(properties(&schema, opts)?))
            .map_err(|source| StoreError::Parquet { uri: uri.clone(), source })?;
        Ok(Self { writer, schema, uri })
    }

    /// Appends rows (buffered up to a row group, then uploaded).
    pub async fn write(&mut self, rows: &[FeatureRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = schema::rows_to_batch(&self.schema, rows, &self.uri)?;
        self.writer.write(&batch).await.map_err(|source| StoreError::Parquet { uri: self.uri.clone(), source })
    }

    /// Writes the footer and completes the upload: the file appears at its key, whole.
    pub async fn finish(mut self) -> Result<WrittenFile, StoreError> {
        let parquet = |source| StoreError::Parquet { uri: self.uri.clone(), source };
        self.writer.finish().await.map_err(parquet)?;
        let sink = self.writer.into_inner();
        Ok(WrittenFile { bytes: sink.bytes, crc32: format!("{:08x}", sink.crc.finalize()) })
    }
}

/// Writes an error table (small: written in one request).
pub async fn write_errors(loc: &Location, path: &Path, rows: &[ErrorRow]) -> Result<WrittenFile, StoreError> {
    let uri = loc.uri_of(path);
    let batch = schema::errors_to_batch(rows, &uri)?;
    let mut buf = Vec::new();
    let parquet = |source| StoreError::Parquet { uri: uri.clone(), source };
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(parquet)?;
    w.write(&batch).map_err(parquet)?;
    w.close().map_err(parquet)?;
    let written = WrittenFile { bytes: buf.len() as u64, crc32: crc32_hex(&buf) };
    loc.put(path, Bytes::from(buf)).await?;
    Ok(written)
}

/// Ranged reads of one object of known size, for the Parquet decoder (footer first, then the column chunks).
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(external) }.boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(external) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata =
                ParquetMetaDataReader::new().with_arrow_reader_options(options).load_and_finish(self, size).await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

type BatchStream = ParquetRecordBatchStream<ObjectReader>;

async fn open_batches(loc: &Location, path: &Path) -> Result<(SchemaRef, BatchStream), StoreError> {
    let uri = loc.uri_of(path);
    let meta = loc.head(path).await?.ok_or_else(|| StorageError::NotFound { uri: uri.clone() })?;
    let reader = ObjectReader { store: Arc::clone(loc.store()), path: path.clone(), size: meta.size };
    let parquet = |source| StoreError::Parquet { uri: uri.clone(), source };
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await.map_err(parquet)?;
    let schema = Arc::clone(builder.schema());
    Ok((schema, builder.build().map_err(parquet)?))
}

/// Reads a feature file row group by row group, so a consumer holds one row group at a time.
pub struct FeatureFileReader {
    /// What the file declares.
    pub header: FileHeader,
    uri: String,
    stream: BatchStream,
}

impl FeatureFileReader {
    /// Opens and checks a feature file (schema version, columns, metadata).
    pub async fn open(loc: &Location, path: &Path) -> Result<Self, StoreError> {
        let uri = loc.uri_of(path);
        let (schema, stream) = open_batches(loc, path).await?;
        let header = schema::check_schema(&schema, &uri)?;
        Ok(Self { header, uri, stream })
    }

    /// The next batch of rows, or `None` at the end.
    pub async fn next_rows(&mut self) -> Result<Option<Vec<FeatureRow>>, StoreError> {
        match self.stream.next().await {
            None => Ok(None),
            Some(Err(source)) => Err(StoreError::Parquet { uri: self.uri.clone(), source }),
            Some(Ok(batch)) => Ok(Some(schema::batch_to_rows(&batch, &self.header, &self.uri)?)),
        }
    }

    /// Every remaining row.
    pub async fn read_all(mut self) -> Result<Vec<FeatureRow>, StoreError> {
        let mut all = Vec::new();
        while let Some(rows) = self.next_rows().await? {
            all.extend(rows);
        }
        Ok(all)
    }
}

/// The checksum commit records give a file: CRC-32 of its bytes, as 8 lower-case hex digits.
pub fn crc32_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// Decodes a whole feature file already in memory (for checks that also need its bytes, such as a checksum): the
/// same schema checks as [`FeatureFileReader`], without reading the object again.
pub fn decode_features(uri: &str, bytes: Bytes) -> Result<(FileHeader, Vec<FeatureRow>), StoreError> {
    let parquet = |source| StoreError::Parquet { uri: uri.to_string(), source };
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(parquet)?;
    let header = schema::check_schema(builder.schema(), uri)?;
    let mut rows = Vec::new();
    for batch in builder.build().map_err(parquet)? {
        let batch = batch.map_err(|source| StoreError::Arrow { uri: uri.to_string(), source })?;
        rows.extend(schema::batch_to_rows(&batch, &header, uri)?);
    }
    Ok((header, rows))
}

/// Reads a whole error table.
pub async fn read_errors(loc: &Location, path: &Path) -> Result<Vec<ErrorRow>, StoreError> {
    let uri = loc.uri_of(path);
    let (_, mut stream) = open_batches(loc, path).await?;
    let mut out = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch: RecordBatch = batch.map_err(|source| StoreError::Parquet { uri: uri.clone(), source })?;
        out.extend(schema::batch_to_errors(&batch, &uri)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use delf_core::{FeatureSet, Keypoint};

    use super::*;
    use crate::schema::FailureKind;
    use delf_storage::Stores;

    fn row(i: usize, n: usize, dim: usize, fp: &Fingerprint) -> FeatureRow {
        let keypoints = (0..n)
            .map(|k| Keypoint {
                x: k as f32 + 0.5,
                y: i as f32,
                scale: 1.0 / (1 + k % 3) as f32,
                score: (n - k) as f32,
            })
            .collect();
        FeatureRow {
            image_id: format!("img-{i}"),
            uri: format!("s3://b/img-{i}.jpg"),
            features: FeatureSet {
                width: 640 + i as u32,
                height: 480,
                dim,
                keypoints,
                descriptors: (0..n * dim).map(|v| ((v * 7 + i) % 13) as f32 / 13.0 - 0.5).collect(),
                fingerprint: fp.clone(),
            },
        }
    }

    #[tokio::test]
    async fn rows_round_trip_through_parquet_with_metadata_and_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Stores::new().location(dir.path().to_str().unwrap()).unwrap();
        let fp = Fingerprint("delf/0123456789abcdef".into());
        let rows: Vec<FeatureRow> = (0..7).map(|i| row(i, [0, 1, 5, 300][i % 4], 40, &fp)).collect();
        let path = loc.child("features/unit-000000.parquet");
        let opts = ShardOptions { row_group_images: 3, ..ShardOptions::default() };
        let mut w = ShardWriter::create(&loc, &path, 40, &fp, &[(schema::META_UNIT, "0".into())], &opts).unwrap();
        w.write(&rows[..4]).await.unwrap();
        assert!(loc.head(&path).await.unwrap().is_none(), "nothing is visible before finish");
        w.write(&rows[4..]).await.unwrap();
        let written = w.finish().await.unwrap();
        let on_disk = std::fs::read(dir.path().join("features/unit-000000.parquet")).unwrap();
        assert_eq!(written.bytes, on_disk.len() as u64);
        assert_eq!(written.crc32, crc32_hex(&on_disk));

        let reader = FeatureFileReader::open(&loc, &path).await.unwrap();
        assert_eq!(reader.header.fingerprint, fp);
        assert_eq!(reader.header.dim, 40);
        assert_eq!(reader.header.metadata[schema::META_UNIT], "0");
        assert_eq!(reader.read_all().await.unwrap(), rows);
        let (header, decoded) = decode_features("mem", Bytes::from(on_disk)).unwrap();
        assert_eq!((header.dim, decoded), (40, rows.clone()));

        let mut wrong = rows[0].clone();
        wrong.features.dim = 8;
        wrong.features.descriptors.truncate(wrong.features.len() * 8);
        let mut w = ShardWriter::create(&loc, &loc.child("x.parquet"), 40, &fp, &[], &opts).unwrap();
        assert!(matches!(w.write(&[wrong]).await, Err(StoreError::Schema { .. })));
    }

    #[tokio::test]
    async fn truncated_and_foreign_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Stores::new().location(dir.path().to_str().unwrap()).unwrap();
        let fp = Fingerprint("delf/x".into());
        let path = loc.child("a.parquet");
        let mut w = ShardWriter::create(&loc, &path, 4, &fp, &[], &ShardOptions::default()).unwrap();
        w.write(&[row(0, 10, 4, &fp)]).await.unwrap();
        w.finish().await.unwrap();
        let file = dir.path().join("a.parquet");
        let bytes = std::fs::read(&file).unwrap();
        for cut in [bytes.len() - 3, bytes.len() / 2, 4] {
            std::fs::write(&file, &bytes[..cut]).unwrap();
            assert!(matches!(FeatureFileReader::open(&loc, &path).await, Err(StoreError::Parquet { .. })), "cut {cut}");
        }
        assert!(matches!(
            FeatureFileReader::open(&loc, &loc.child("none.parquet")).await,
            Err(e) if e.is_not_found()
        ));
        // An error table is valid Parquet but not a feature shard.
        let errors = loc.child("e.parquet");
        let rows =
            vec![ErrorRow { image_id: "a".into(), uri: "u".into(), kind: FailureKind::Corrupt, message: "m".into() }];
        write_errors(&loc, &errors, &rows).await.unwrap();
        assert_eq!(read_errors(&loc, &errors).await.unwrap(), rows);
        assert!(matches!(FeatureFileReader::open(&loc, &errors).await, Err(StoreError::Schema { .. })));
    }
}
