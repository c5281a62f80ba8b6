//! A compact binary file for one image's [`FeatureSet`]: the extraction cache that makes `delf index build`
//! resumable. Until the Parquet feature store lands (issue 7) this is the on-disk form of extracted features.
//!
//! Layout (little-endian): magic `b"DELFFEAT"`, version u32 (= 1), width u32, height u32, dim u32, features u32,
//! fingerprint length u32 + UTF-8 bytes, then per feature x, y, scale, score (f32), then descriptors (f32,
//! features x dim), then a CRC-32 of everything before it.

use crate::{FeatureSet, Fingerprint, Keypoint};

const MAGIC: &[u8; 8] = b"DELFFEAT";
const VERSION: u32 = 1;

/// Why a feature file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeatureFileError {
    /// Not a feature file, another version, damaged or truncated.
    #[error("not a valid delf feature file: {0}")]
    Invalid(String),
}

/// The bytes of a feature file.
pub fn encode(f: &FeatureSet) -> Vec<u8> {
    let fp = f.fingerprint.as_str().as_bytes();
    let mut out = Vec::with_capacity(36 + fp.len() + f.len() * 16 + f.descriptors.len() * 4);
    out.extend_from_slice(MAGIC);
    for v in [VERSION, f.width, f.height, f.dim as u32, f.len() as u32, fp.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(fp);
    for k in &f.keypoints {
        for v in [k.x, k.y, k.scale, k.score] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    for v in &f.descriptors {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Parses a feature file, checking its checksum and shape.
pub fn decode(bytes: &[u8]) -> Result<FeatureSet, FeatureFileError> {
    let bad = |why: &str| FeatureFileError::Invalid(why.to_string());
    if bytes.len() < 36 || &bytes[..8] != MAGIC {
        return Err(bad("bad magic bytes"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) {
        return Err(bad("checksum mismatch (damaged or truncated)"));
    }
    let word = |i: usize| u32::from_le_bytes([body[8 + 4 * i], body[9 + 4 * i], body[10 + 4 * i], body[11 + 4 * i]]);
    if word(0) != VERSION {
        return Err(bad("unsupported version"));
    }
    let (width, height, dim, n, fl) = (word(1), word(2), word(3) as usize, word(4) as usize, word(5) as usize);
    let need = 32usize
        .checked_add(fl)
        .and_then(|v| v.checked_add(n.checked_mul(16)?))
        .and_then(|v| v.checked_add(n.checked_mul(dim)?.checked_mul(4)?));
    if need != Some(body.len()) {
        return Err(bad("length does not match the header"));
    }
    let fingerprint = std::str::from_utf8(&body[32..32 + fl]).map_err(|_| bad("fingerprint is not UTF-8"))?;
    let floats: Vec<f32> =
        body[32 + fl..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let keypoints =
        floats[..n * 4].chunks_exact(4).map(|k| Keypoint { x: k[0], y: k[1], scale: k[2], score: k[3] }).collect();
    let f = FeatureSet {
        width,
        height,
        dim,
        keypoints,
        descriptors: floats[n * 4..].to_vec(),
        fingerprint: Fingerprint(fingerprint.to_string()),
    };
    f.validate().map_err(|e| FeatureFileError::Invalid(e.to_string()))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_is_caught() {
        let f = FeatureSet {
            width: 640,
            height: 480,
            dim: 3,
            keypoints: vec![Keypoint { x: 1.5, y: 2.5, scale: 2.0, score: 0.7 }; 2],
            descriptors: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            fingerprint: Fingerprint("delf/0123456789abcdef".into()),
        };
        let bytes = encode(&f);
        let back = decode(&bytes).unwrap();
        assert_eq!((back.width, back.dim, back.keypoints.len()), (640, 3, 2));
        assert_eq!(back.descriptors, f.descriptors);
        assert_eq!(back.fingerprint, f.fingerprint);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b).is_err(), "flipped byte {i}");
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
