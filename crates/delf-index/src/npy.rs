//! Minimal NumPy `.npy` reading and writing for vector files (`float32`, C order, two dimensions), the format
//! `delf bench index` and the FAISS baseline exchange.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{IndexError, Result};

fn bad(path: &Path, reason: impl Into<String>) -> IndexError {
    IndexError::invalid("vector file", path.display(), reason.into())
}

/// Reads an `n x d` little-endian `float32` array; returns `(data, d)`.
pub fn read_f32(path: &Path) -> Result<(Vec<f32>, usize)> {
    let mut f = std::fs::File::open(path).map_err(|e| IndexError::io(path, e))?;
    let mut head = [0u8; 10];
    f.read_exact(&mut head).map_err(|e| IndexError::io(path, e))?;
    if &head[..6] != b"\x93NUMPY" {
        return Err(bad(path, "not a .npy file"));
    }
    let (hlen, _) = match head[6] {
        1 => (u16::from_le_bytes([head[8], head[9]]) as usize, 10),
        2 | 3 => {
            let mut more = [0u8; 2];
            f.read_exact(&mut more).map_err(|e| IndexError::io(path, e))?;
            (u32::from_le_bytes([head[8], head[9], more[0], more[1]]) as usize, 12)
        }
        v => return Err(bad(path, format!("unsupported .npy version {v}"))),
    };
    let mut header = vec![0u8; hlen];
    f.read_exact(&mut header).map_err(|e| IndexError::io(path, e))?;
    let header = String::from_utf8_lossy(&header);
    if !header.contains("'descr': '<f4'") || header.contains("'fortran_order': True") {
        return Err(bad(path, format!("need a C-order float32 array, header is {}", header.trim())));
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(path, "no shape in header"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad(path, "bad shape"))?;
    let [n, d] = dims[..] else { return Err(bad(path, format!("need a 2-D array, shape is ({shape})"))) };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(|e| IndexError::io(path, e))?;
    if bytes.len() != n * d * 4 {
        return Err(bad(path, format!("{} data bytes for shape ({n}, {d})", bytes.len())));
    }
    Ok((bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(), d))
}

/// Writes an `n x d` array of `T` (`descr` is NumPy's type string, e.g. `<f4` or `<i8`).
fn write(path: &Path, descr: &str, bytes: &[u8], n: usize, d: usize) -> Result<()> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n}, {d}), }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| IndexError::io(path, e))?);
    let io = |e| IndexError::io(path, e);
    f.write_all(b"\x93NUMPY\x01\x00").map_err(io)?;
    f.write_all(&(header.len() as u16).to_le_bytes()).map_err(io)?;
    f.write_all(header.as_bytes()).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.flush().map_err(io)
}

/// Writes an `n x d` `float32` array.
pub fn write_f32(path: &Path, data: &[f32], d: usize) -> Result<()> {
    write(path, "<f4", bytemuck::cast_slice(data), data.len() / d.max(1), d)
}

/// Writes an `n x d` `int64` array.
pub fn write_i64(path: &Path, data: &[i64], d: usize) -> Result<()> {
    write(path, "<i8", bytemuck::cast_slice(data), data.len() / d.max(1), d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_other_arrays() {
        let dir = std::env::temp_dir().join(format!("delf-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("v.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        write_f32(&p, &data, 4).unwrap();
        assert_eq!(read_f32(&p).unwrap(), (data, 4));
        write_i64(&p, &[1, 2, 3], 1).unwrap();
        assert!(read_f32(&p).is_err());
        std::fs::write(&p, b"hello").unwrap();
        assert!(read_f32(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
