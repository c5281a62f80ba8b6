//! The shard file: a versioned, checksummed container that is memory-mapped at load. Layout (little-endian; see
//! `docs/index.md`):
//!
//! ```text
//! 0      magic  b"DELFSHRD"
//! 8      format version (u32) = 3 (versions 1 and 2, with plain u32 image numbers, still load)
//! 12     section count (u32)
//! 16     section table: per section  tag [u8; 8] | offset u64 | length u64 | crc32 u32 | reserved u32
//! ...    crc32 of bytes 0..here (u32), zero padding to 64
//! ...    sections, each starting at a multiple of 64, zero padding between them; the file ends with the last one
//! ```
//!
//! Sections: `meta` (JSON: spec, dim, shard identity, fingerprints, counts), `coarse` (f32, nlist x dim), `pq`
//! (f32, m x ksub x dsub), `lists` (u64 entries per list), `codes` (per list, blocked codes), the packed image
//! numbers of [`crate::ids`] (since version 3: `idbase` u32 per block, `idoffs` u32 per block + 1 per non-empty
//! list, `iddelta` bytes; versions 1 and 2 have `imgids`, u32 per entry), `featids` (u16 per entry), `images`
//! (24-byte records), `names` (UTF-8), `keypts` (u16 x, y in half pixels), `kpscale` (since version 2: one
//! `scale_code` byte per keypoint, or empty where the scales are unknown).
//! Every section's CRC-32 is checked at load, padding must be zero, and every length must agree with the others.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::codebooks::Codebooks;
use crate::codes::CodeLayout;
use crate::error::{IndexError, Result};
use crate::ids::{self, PackedIds};
use crate::pq::ProductQuantizer;
use crate::shard::{ImageEntry, InvList, Shard, ShardInfo};
use crate::spec::IndexSpec;
use crate::storage::Storage;

/// First eight bytes of every shard file.
pub const MAGIC: &[u8; 8] = b"DELFSHRD";
/// Format version written by this build; it also loads versions 1 (no keypoint scales) and 2 (u32 image numbers)
/// and refuses others.
pub const FORMAT_VERSION: u32 = 3;
const ALIGN: usize = 64;
const ENTRY: usize = 32;
const IMAGE_RECORD: usize = 24;
const TAGS: [&str; 13] = [
    "meta", "coarse", "pq", "lists", "codes", "idbase", "idoffs", "iddelta", "featids", "images", "names", "keypts",
    "kpscale",
];
/// Sections of a version-2 file; version 1 has the first ten.
const TAGS_V2: [&str; 11] =
    ["meta", "coarse", "pq", "lists", "codes", "imgids", "featids", "images", "names", "keypts", "kpscale"];

/// The sections of a format version this build reads.
fn tags_of(version: u32) -> Option<&'static [&'static str]> {
    match version {
        1 => Some(&TAGS_V2[..10]),
        2 => Some(&TAGS_V2[..]),
        FORMAT_VERSION => Some(&TAGS[..]),
        _ => None,
    }
}

/// The `meta` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    format: u32,
    spec: String,
    dim: usize,
    info: ShardInfo,
    codebooks_fingerprint: String,
    images: usize,
    entries: usize,
    keypoints: usize,
    names_bytes: usize,
}

fn tag_bytes(tag: &str) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..tag.len()].copy_from_slice(tag.as_bytes());
    t
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Zero bytes that bring `pos` to the next multiple of [`ALIGN`].
fn padding(pos: u64) -> usize {
    ((ALIGN as u64 - pos % ALIGN as u64) % ALIGN as u64) as usize
}

/// Writes a shard to `path` atomically and durably: a temporary file, fsynced, renamed into place, then the folder
/// fsynced so that the rename itself survives a power loss.
pub fn save(shard: &Shard, path: &Path) -> Result<()> {
    save_as_version(shard, path, FORMAT_VERSION)
}

/// Writes `shard` in an earlier format `version` (1 or 2) as the builds of that time did, or the current one: what
/// the tests of backward compatibility load. Keypoint scales are lost in version 1.
#[doc(hidden)]
pub fn save_as_version(shard: &Shard, path: &Path, version: u32) -> Result<()> {
    let tags = tags_of(version).ok_or_else(|| IndexError::invalid("format version", version, "1, 2 or 3"))?;
    let tmp = delf_core::durable::temporary_for(path);
    let write = || -> std::io::Result<()> {
        let mut file = BufWriter::new(File::create(&tmp)?);
        write_sections(shard, &mut file, version, tags)?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    write().map_err(|e| IndexError::io(&tmp, e))?;
    delf_core::durable::commit(&tmp, path).map_err(|e| IndexError::io(path, e))
}

/// Writes `shard` as a shard file (the current format) to `out` in one forward pass, header first: what a
/// multipart upload to object storage needs, since it cannot seek back. The bytes equal those [`save`] writes.
/// Returns the number of bytes written.
pub fn write(shard: &Shard, out: &mut impl Write) -> std::io::Result<u64> {
    write_sections(shard, out, FORMAT_VERSION, &TAGS)
}

/// One section's bytes, streamed to `w`.
fn write_section(shard: &Shard, meta_json: &[u8], tag: &str, w: &mut impl Write) -> std::io::Result<()> {
    let cb = &shard.codebooks;
    match tag {
        "meta" => w.write_all(meta_json)?,
        "coarse" => w.write_all(bytemuck::cast_slice(&cb.coarse))?,
        "pq" => w.write_all(bytemuck::cast_slice(&cb.pq.centroids))?,
        "lists" => {
            for l in &shard.lists {
                w.write_all(&(l.len as u64).to_le_bytes())?;
            }
        }
        "codes" => {
            for l in &shard.lists {
                w.write_all(l.codes.as_slice())?;
            }
        }
        "imgids" => {
            for l in &shard.lists {
                w.write_all(bytemuck::cast_slice(&l.images.unpack(l.len)))?;
            }
        }
        "idbase" => {
            for l in &shard.lists {
                w.write_all(bytemuck::cast_slice(l.images.bases.as_slice()))?;
            }
        }
        "idoffs" => {
            for l in &shard.lists {
                w.write_all(bytemuck::cast_slice(l.images.offsets.as_slice()))?;
            }
        }
        "iddelta" => {
            for l in &shard.lists {
                w.write_all(l.images.deltas.as_slice())?;
            }
        }
        "featids" => {
            for l in &shard.lists {
                w.write_all(bytemuck::cast_slice(l.features.as_slice()))?;
            }
        }
        "images" => {
            for e in &shard.images {
                w.write_all(&e.number.to_le_bytes())?;
                w.write_all(&u32::from(e.deleted).to_le_bytes())?;
                w.write_all(&e.features.to_le_bytes())?;
                w.write_all(&(e.name.len() as u32).to_le_bytes())?;
                w.write_all(&e.keypoint_offset.to_le_bytes())?;
            }
        }
        "names" => {
            for e in &shard.images {
                w.write_all(e.name.as_bytes())?;
            }
        }
        "keypts" => w.write_all(bytemuck::cast_slice(shard.keypoints.as_slice()))?,
        "kpscale" => w.write_all(shard.scales.as_slice())?,
        _ => unreachable!("every tag is handled"),
    }
    Ok(())
}

/// Writes the file in two passes over the shard in memory: the first only checksums each section (its length and
/// CRC-32 go into the header), the second writes the header and then the sections, so the output only moves
/// forward.
fn write_sections(shard: &Shard, out: &mut impl Write, version: u32, tags: &[&str]) -> std::io::Result<u64> {
    let cb = &shard.codebooks;
    let meta = Meta {
        format: version,
        spec: cb.spec.to_string(),
        dim: cb.dim,
        info: shard.info.clone(),
        codebooks_fingerprint: cb.fingerprint().to_string(),
        images: shard.images.len(),
        entries: shard.stored_vectors(),
        keypoints: shard.keypoints.len() / 2,
        names_bytes: shard.images.iter().map(|e| e.name.len()).sum(),
    };
    let meta_json = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
    let table_end = 16 + tags.len() * ENTRY;
    let mut pos = (table_end + 4) as u64;
    pos += padding(pos) as u64;
    let mut table = Vec::with_capacity(tags.len());
    for &tag in tags {
        let mut w = CrcWriter { inner: std::io::sink(), crc: crc32fast::Hasher::new(), written: 0 };
        write_section(shard, &meta_json, tag, &mut w)?;
        let (len, crc) = (w.written, w.crc.finalize());
        table.push((tag, pos, len, crc));
        pos += len;
        if table.len() < tags.len() {
            pos += padding(pos) as u64;
        }
    }
    let mut head = Vec::with_capacity(table_end + 4 + ALIGN);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&version.to_le_bytes());
    head.extend_from_slice(&(tags.len() as u32).to_le_bytes());
    for (tag, off, len, crc) in &table {
        head.extend_from_slice(&tag_bytes(tag));
        head.extend_from_slice(&off.to_le_bytes());
        head.extend_from_slice(&len.to_le_bytes());
        head.extend_from_slice(&crc.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
    }
    let crc = crc32fast::hash(&head);
    head.extend_from_slice(&crc.to_le_bytes());
    head.resize(head.len() + padding(head.len() as u64), 0);
    out.write_all(&head)?;
    let mut at = head.len() as u64;
    for (i, &(tag, off, len, _)) in table.iter().enumerate() {
        debug_assert_eq!(at, off);
        write_section(shard, &meta_json, tag, out)?;
        at += len;
        if i + 1 < table.len() {
            let pad = padding(at);
            out.write_all(&[0u8; ALIGN][..pad])?;
            at += pad as u64;
        }
    }
    Ok(at)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Loads a shard file, memory-mapping the large arrays after checking every checksum and length.
pub fn load(path: &Path) -> Result<Shard> {
    let file = File::open(path).map_err(|e| IndexError::io(path, e))?;
    // SAFETY: the file is opened read-only and shard files are written once and renamed into place; a concurrent
    // writer truncating it would be outside the documented contract.
    #[allow(unsafe_code)]
    let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| IndexError::io(path, e))?);
    let bytes: &[u8] = &map;
    let corrupt = |section: &str, reason: String| IndexError::Corrupt {
        path: path.to_path_buf(),
        section: section.to_string(),
        reason,
    };
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(IndexError::NotAShard { path: path.to_path_buf(), reason: "bad magic bytes".into() });
    }
    let version = u32_at(bytes, 8);
    let Some(tags) = tags_of(version) else {
        return Err(IndexError::NotAShard {
            path: path.to_path_buf(),
            reason: format!("format version {version}, this build reads 1 to {FORMAT_VERSION}"),
        });
    };
    let count = u32_at(bytes, 12) as usize;
    if count != tags.len() {
        return Err(corrupt("header", format!("{count} sections, expected {}", tags.len())));
    }
    let table_end = 16 + count * ENTRY;
    if bytes.len() < table_end + 4 {
        return Err(corrupt("header", "file ends inside the section table".into()));
    }
    if crc32fast::hash(&bytes[..table_end]) != u32_at(bytes, table_end) {
        return Err(corrupt("header", "header checksum mismatch".into()));
    }
    let mut sections = Vec::with_capacity(count);
    let mut expect_pos = (table_end + 4).next_multiple_of(ALIGN);
    let mut prev_end = table_end + 4;
    for (i, tag) in tags.iter().enumerate() {
        let e = 16 + i * ENTRY;
        if bytes[e..e + 8] != tag_bytes(tag) {
            return Err(corrupt("header", format!("section {i} is not {tag:?}")));
        }
        let (off, len, crc) = (u64_at(bytes, e + 8) as usize, u64_at(bytes, e + 16) as usize, u32_at(bytes, e + 24));
        if off != expect_pos || off.checked_add(len).is_none_or(|end| end > bytes.len()) {
            return Err(corrupt(tag, format!("offset {off} length {len} outside the file ({} bytes)", bytes.len())));
        }
        if bytes[prev_end..off].iter().any(|&b| b != 0) {
            return Err(corrupt(tag, "non-zero padding before the section".into()));
        }
        let body = &bytes[off..off + len];
        if crc32fast::hash(body) != crc {
            return Err(corrupt(tag, "checksum mismatch".into()));
        }
        sections.push((off, len));
        prev_end = off + len;
        expect_pos = prev_end.next_multiple_of(ALIGN);
    }
    if bytes.len() != prev_end {
        let last = tags[tags.len() - 1];
        return Err(corrupt(last, "the file does not end where the last section ends".into()));
    }
    let sec = |name: &str| -> (usize, usize) { tags.iter().position(|t| *t == name).map_or((0, 0), |i| sections[i]) };
    let slice = |name: &str| -> &[u8] {
        let (o, l) = sec(name);
        &bytes[o..o + l]
    };
    let meta: Meta = serde_json::from_slice(slice("meta")).map_err(|e| corrupt("meta", e.to_string()))?;
    let spec: IndexSpec = meta.spec.parse().map_err(|e: IndexError| corrupt("meta", e.to_string()))?;
    spec.validate(meta.dim).map_err(|e| corrupt("meta", e.to_string()))?;
    let (dim, layout, ksub) = (meta.dim, CodeLayout::of(&spec), spec.ksub());
    let floats = |name: &str, n: usize| -> Result<Vec<f32>> {
        let b = slice(name);
        if b.len() != n * 4 {
            return Err(corrupt(name, format!("{} bytes, expected {}", b.len(), n * 4)));
        }
        Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    };
    let coarse = floats("coarse", spec.nlist * dim)?;
    let pq_centroids = floats("pq", ksub * dim)?;
    let pq = ProductQuantizer { dim, m: spec.m, ksub, centroids: pq_centroids };
    let codebooks = Codebooks::from_parts(spec, dim, coarse, pq);
    if codebooks.fingerprint().as_str() != meta.codebooks_fingerprint {
        return Err(corrupt("meta", "codebooks fingerprint does not match the stored centroids".into()));
    }
    let list_bytes = slice("lists");
    if list_bytes.len() != spec.nlist * 8 {
        return Err(corrupt("lists", format!("{} bytes for {} lists", list_bytes.len(), spec.nlist)));
    }
    let lens: Vec<usize> = list_bytes.chunks_exact(8).map(|c| u64_at(c, 0) as usize).collect();
    let entries: usize = lens.iter().sum();
    if entries != meta.entries {
        return Err(corrupt("lists", format!("{entries} entries, meta says {}", meta.entries)));
    }
    let check_len = |name: &str, want: usize| -> Result<usize> {
        let (o, l) = sec(name);
        if l != want {
            return Err(corrupt(name, format!("{l} bytes, expected {want}")));
        }
        Ok(o)
    };
    let codes_at = check_len("codes", lens.iter().map(|&n| layout.blocked_len(n)).sum())?;
    let packed = version >= 3;
    let blocks: usize = lens.iter().map(|&n| n.div_ceil(ids::BLOCK)).sum();
    let nonempty = lens.iter().filter(|&&n| n > 0).count();
    let (imgs_at, base_at, offs_at, delta_at) = if packed {
        (0, check_len("idbase", blocks * 4)?, check_len("idoffs", (blocks + nonempty) * 4)?, sec("iddelta").0)
    } else {
        (check_len("imgids", entries * 4)?, 0, 0, 0)
    };
    let delta_len = sec("iddelta").1;
    let feats_at = check_len("featids", entries * 2)?;
    let records = slice("images");
    check_len("images", meta.images * IMAGE_RECORD)?;
    let names = slice("names");
    check_len("names", meta.names_bytes)?;
    let kp_at = check_len("keypts", meta.keypoints * 4)?;
    let mut lists = Vec::with_capacity(spec.nlist);
    let (mut c, mut e, mut b, mut o, mut d) = (codes_at, 0usize, 0usize, 0usize, 0usize);
    for &n in &lens {
        let bl = layout.blocked_len(n);
        let view = |what: &str| corrupt(what, "misaligned array".into());
        let images = if packed {
            let nb = n.div_ceil(ids::BLOCK);
            let no = if n > 0 { nb + 1 } else { 0 };
            let offsets: Storage<u32> = Storage::mapped(&map, offs_at + o * 4, no).ok_or_else(|| view("idoffs"))?;
            let len = ids::check_offsets(offsets.as_slice(), n).map_err(|r| corrupt("idoffs", r))?;
            if d + len > delta_len {
                return Err(corrupt("iddelta", format!("{delta_len} bytes, the lists need more")));
            }
            let p = PackedIds {
                bases: Storage::mapped(&map, base_at + b * 4, nb).ok_or_else(|| view("idbase"))?,
                offsets,
                deltas: Storage::mapped(&map, delta_at + d, len).ok_or_else(|| view("iddelta"))?,
            };
            (b, o, d) = (b + nb, o + no, d + len);
            p
        } else {
            let plain: Storage<u32> = Storage::mapped(&map, imgs_at + e * 4, n).ok_or_else(|| view("imgids"))?;
            PackedIds::pack(plain.as_slice())
        };
        lists.push(InvList {
            len: n,
            codes: Storage::mapped(&map, c, bl).ok_or_else(|| view("codes"))?,
            images,
            features: Storage::mapped(&map, feats_at + e * 2, n).ok_or_else(|| view("featids"))?,
        });
        c += bl;
        e += n;
    }
    if packed && d != delta_len {
        return Err(corrupt("iddelta", format!("{delta_len} bytes, the lists use {d}")));
    }
    let mut images = Vec::with_capacity(meta.images);
    let mut name_at = 0usize;
    for r in records.chunks_exact(IMAGE_RECORD) {
        let (number, deleted, features, name_len) = (u32_at(r, 0), u32_at(r, 4), u32_at(r, 8), u32_at(r, 12) as usize);
        let keypoint_offset = u64_at(r, 16);
        let name = names
            .get(name_at..name_at + name_len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| corrupt("names", format!("name of image {number} is not valid UTF-8 inside the section")))?;
        name_at += name_len;
        if deleted > 1 || keypoint_offset + u64::from(features) > meta.keypoints as u64 {
            return Err(corrupt("images", format!("record of image {number} is out of range")));
        }
        images.push(ImageEntry { number, name: name.to_string(), features, keypoint_offset, deleted: deleted == 1 });
    }
    let keypoints =
        Storage::mapped(&map, kp_at, meta.keypoints * 2).ok_or_else(|| corrupt("keypts", "misaligned".into()))?;
    let scales = match sec("kpscale") {
        (_, 0) => Storage::default(),
        (at, len) if len == meta.keypoints => {
            Storage::mapped(&map, at, len).ok_or_else(|| corrupt("kpscale", "misaligned".into()))?
        }
        (_, len) => return Err(corrupt("kpscale", format!("{len} bytes for {} keypoints", meta.keypoints))),
    };
    Ok(Shard::from_parts(Arc::new(codebooks), meta.info, lists, images, keypoints, scales))
}
