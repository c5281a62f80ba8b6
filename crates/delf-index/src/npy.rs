//! NumPy `.npy` vector files (`float32`, C order, two dimensions), the format `delf bench index` and the FAISS
//! baseline exchange, read and written through the `npyz` crate; errors carry the file's path.

use std::io::{BufReader, BufWriter};
use std::path::Path;

use npyz::WriterBuilder;

use crate::error::{IndexError, Result};

fn bad(path: &Path, reason: impl Into<String>) -> IndexError {
    IndexError::invalid("vector file", path.display(), reason.into())
}

/// Reads an `n x d` little-endian `float32` array in C order; returns `(data, d)`.
pub fn read_f32(path: &Path) -> Result<(Vec<f32>, usize)> {
    let f = std::fs::File::open(path).map_err(|e| IndexError::io(path, e))?;
    let npy = npyz::NpyFile::new(BufReader::new(f)).map_err(|e| bad(path, format!("not a .npy file: {e}")))?;
    let dtype = npy.header().dtype();
    if dtype != <f32 as npyz::AutoSerialize>::default_dtype() {
        return Err(bad(path, format!("need a float32 ('<f4') array, found {}", dtype.descr())));
    }
    if npy.order() != npyz::Order::C {
        return Err(bad(path, "need a C-order array, found Fortran order"));
    }
    let [n, d] = npy.shape()[..] else {
        return Err(bad(path, format!("need a 2-D array, shape is {:?}", npy.shape())));
    };
    let data: Vec<f32> = npy.into_vec().map_err(|e| bad(path, format!("cannot read the data: {e}")))?;
    if data.len() as u64 != n * d {
        return Err(bad(path, format!("{} values for shape ({n}, {d})", data.len())));
    }
    Ok((data, d as usize))
}

/// Writes an `n x d` array of `T` in C order.
fn write<T: npyz::AutoSerialize + Copy>(path: &Path, data: &[T], d: usize) -> Result<()> {
    let io = |e| IndexError::io(path, e);
    let f = BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let shape = [(data.len() / d.max(1)) as u64, d as u64];
    let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(f).begin_nd().map_err(io)?;
    w.extend(data.iter().copied()).map_err(io)?;
    w.finish().map_err(io)
}

/// Writes an `n x d` `float32` array.
pub fn write_f32(path: &Path, data: &[f32], d: usize) -> Result<()> {
    write(path, data, d)
}

/// Writes an `n x d` `int64` array.
pub fn write_i64(path: &Path, data: &[i64], d: usize) -> Result<()> {
    write(path, data, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_other_arrays() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        write_f32(&p, &data, 4).unwrap();
        assert_eq!(read_f32(&p).unwrap(), (data, 4));
        write_i64(&p, &[1, 2, 3], 1).unwrap();
        assert!(read_f32(&p).unwrap_err().to_string().contains("float32"));
        std::fs::write(&p, b"hello").unwrap();
        assert!(read_f32(&p).unwrap_err().to_string().contains("not a .npy file"));
    }

    /// The header NumPy itself writes (version 1.0, padded to 64 bytes) is read as NumPy means it.
    #[test]
    fn reads_numpy_written_headers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("np.npy");
        let mut header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }".to_string();
        header.push_str(&" ".repeat((64 - (10 + header.len() + 1) % 64) % 64));
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        (0..6).for_each(|i| bytes.extend((i as f32).to_le_bytes()));
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read_f32(&p).unwrap(), ((0..6).map(|i| i as f32).collect(), 3));
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        assert!(read_f32(&p).is_err(), "a truncated file is an error");
    }
}
