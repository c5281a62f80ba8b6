//! Index parameters that read as one string, the way FAISS names its structures: `IVF1024,PQ20x8r` is an inverted
//! file with 1024 coarse cells and a product quantizer of 20 sub-vectors at 8 bits, encoding the residual to the
//! coarse centroid (`r`; without it the vector itself is encoded). `IVF1024,PQ20x4fsr` has 4-bit codes in the
//! fast-scan layout ([`crate::fastscan`]; `fs` is required with 4 bits, as in FAISS). Search parameters print as
//! `k=60,nprobe=8[,maxd=0.8]`. Both strings are logged and stored in shard files and manifests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};

/// Bits per sub-quantizer code supported by this build: 8 (256 centroids per sub-vector, one byte each) and 4
/// (16 centroids, half a byte, fast-scan layout).
pub const SUPPORTED_NBITS: [u32; 2] = [8, 4];

/// Structure of an IVF-PQ index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSpec {
    /// Number of coarse cells (inverted lists).
    pub nlist: usize,
    /// Number of PQ sub-vectors (bytes per code at 8 bits).
    pub m: usize,
    /// Bits per sub-vector code.
    pub nbits: u32,
    /// Encode the residual to the coarse centroid rather than the vector itself.
    pub residual: bool,
}

impl IndexSpec {
    /// Checks the parameters against a dimensionality.
    pub fn validate(&self, dim: usize) -> Result<()> {
        if dim == 0 {
            return Err(IndexError::invalid("dim", dim, "must be positive"));
        }
        if self.nlist == 0 || self.nlist > 1 << 20 {
            return Err(IndexError::invalid("nlist", self.nlist, "must be in 1..=1048576"));
        }
        if self.m == 0 || !dim.is_multiple_of(self.m) {
            return Err(IndexError::invalid("m", self.m, format!("must divide the dimensionality {dim}")));
        }
        if !SUPPORTED_NBITS.contains(&self.nbits) {
            return Err(IndexError::invalid("nbits", self.nbits, "codes of 8 or 4 bits are supported"));
        }
        if self.nbits == 4 && self.m > crate::fastscan::MAX_M {
            return Err(IndexError::invalid(
                "m",
                self.m,
                format!("4-bit codes allow at most {}", crate::fastscan::MAX_M),
            ));
        }
        Ok(())
    }

    /// Centroids per sub-quantizer.
    pub fn ksub(&self) -> usize {
        1 << self.nbits
    }

    /// Bytes of one PQ code (half a byte per sub-vector at 4 bits, rounded up).
    pub fn code_bytes(&self) -> usize {
        (self.m * self.nbits as usize).div_ceil(8)
    }

    /// A sensible spec for `n` vectors of dimension `dim`: about 4 sqrt(n) cells (a power of two, at most 65536 and
    /// at most n / 39 so every cell can be trained), and 2 dimensions per sub-vector.
    pub fn auto(n: usize, dim: usize) -> Self {
        let target = (4.0 * (n as f64).sqrt()) as usize;
        let mut nlist = target.next_power_of_two().clamp(1, 65536);
        while nlist > 1 && nlist * 39 > n {
            nlist /= 2;
        }
        let m = if dim.is_multiple_of(2) { dim / 2 } else { dim };
        Self { nlist, m, nbits: 8, residual: true }
    }
}

impl fmt::Display for IndexSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fs = if self.nbits == 4 { "fs" } else { "" };
        write!(f, "IVF{},PQ{}x{}{fs}{}", self.nlist, self.m, self.nbits, if self.residual { "r" } else { "" })
    }
}

impl FromStr for IndexSpec {
    type Err = IndexError;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |reason: &str| IndexError::BadSpec { text: text.to_string(), reason: reason.to_string() };
        let (ivf, pq) = text.trim().split_once(',').ok_or_else(|| bad("missing ',' between IVF and PQ parts"))?;
        let nlist = ivf.strip_prefix("IVF").ok_or_else(|| bad("first part must be IVF<nlist>"))?;
        let nlist: usize = nlist.parse().map_err(|_| bad("nlist is not a number"))?;
        let pq = pq.strip_prefix("PQ").ok_or_else(|| bad("second part must be PQ<m>x<nbits>[fs][r]"))?;
        let (pq, residual) = match pq.strip_suffix('r') {
            Some(p) => (p, true),
            None => (pq, false),
        };
        let (pq, fast_scan) = match pq.strip_suffix("fs") {
            Some(p) => (p, true),
            None => (pq, false),
        };
        let (m, nbits) = pq.split_once('x').ok_or_else(|| bad("PQ part must be PQ<m>x<nbits>"))?;
        let m: usize = m.parse().map_err(|_| bad("m is not a number"))?;
        let nbits: u32 = nbits.parse().map_err(|_| bad("nbits is not a number"))?;
        match (nbits, fast_scan) {
            (4, false) => return Err(bad("4-bit codes are stored for fast scan: write PQ<m>x4fs[r]")),
            (n, true) if n != 4 => return Err(bad("fast scan (fs) takes 4-bit codes: write PQ<m>x4fs[r]")),
            _ => {}
        }
        Ok(Self { nlist, m, nbits, residual })
    }
}

/// Parameters of one search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchParams {
    /// Neighbours kept per query descriptor (the paper's K = 60).
    pub k: usize,
    /// Coarse cells visited per query descriptor.
    pub nprobe: usize,
    /// Neighbours farther than this (Euclidean, not squared) are dropped; `None` keeps all K.
    pub max_distance: Option<f32>,
}

/// Coarse cells visited per query descriptor unless told otherwise: the one default of the CLI, new indexes'
/// manifests, benchmarks and library callers.
pub const DEFAULT_NPROBE: usize = 16;

/// Neighbours per query descriptor unless told otherwise (the DELF reference's K): the one default of the library,
/// the CLI and the benchmarks.
pub const DEFAULT_K: usize = 60;

impl Default for SearchParams {
    fn default() -> Self {
        Self { k: DEFAULT_K, nprobe: DEFAULT_NPROBE, max_distance: None }
    }
}

/// Largest K accepted per query descriptor.
pub const MAX_K: usize = 4096;

impl SearchParams {
    /// Checks the parameters against an index.
    pub fn validate(&self, spec: &IndexSpec) -> Result<()> {
        if self.k == 0 || self.k > MAX_K {
            return Err(IndexError::invalid("k", self.k, format!("must be in 1..={MAX_K}")));
        }
        if self.nprobe == 0 || self.nprobe > spec.nlist {
            return Err(IndexError::invalid("nprobe", self.nprobe, format!("must be in 1..={}", spec.nlist)));
        }
        if let Some(d) = self.max_distance
            && !(d.is_finite() && d > 0.0)
        {
            return Err(IndexError::invalid("max_distance", d, "must be a positive finite distance"));
        }
        Ok(())
    }
}

impl fmt::Display for SearchParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k={},nprobe={}", self.k, self.nprobe)?;
        if let Some(d) = self.max_distance {
            write!(f, ",maxd={d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_string_round_trips_and_rejects_nonsense() {
        for s in ["IVF1024,PQ20x8r", "IVF1,PQ40x8", "IVF65536,PQ10x8r", "IVF4096,PQ20x4fsr", "IVF16,PQ5x4fs"] {
            assert_eq!(s.parse::<IndexSpec>().unwrap().to_string(), s);
        }
        for s in [
            "",
            "IVF,PQ20x8",
            "IVF10PQ20x8",
            "IVF10,PQ20",
            "IVF10,QQ20x8",
            "IVFx,PQ20x8",
            "IVF16,PQ20x4r",
            "IVF16,PQ20x8fs",
        ] {
            assert!(matches!(s.parse::<IndexSpec>(), Err(IndexError::BadSpec { .. })), "{s}");
        }
        assert!("IVF16,PQ7x8".parse::<IndexSpec>().unwrap().validate(40).is_err());
        assert!("IVF16,PQ20x6".parse::<IndexSpec>().unwrap().validate(40).is_err());
        let fs = "IVF16,PQ5x4fsr".parse::<IndexSpec>().unwrap();
        assert!(fs.validate(40).is_ok());
        assert_eq!((fs.ksub(), fs.code_bytes()), (16, 3));
        assert!("IVF0,PQ20x8".parse::<IndexSpec>().unwrap().validate(40).is_err());
    }

    #[test]
    fn auto_spec_keeps_cells_trainable() {
        let s = IndexSpec::auto(1_000_000, 40);
        assert_eq!(s.to_string(), "IVF4096,PQ20x8r");
        assert!(IndexSpec::auto(100, 40).nlist * 39 <= 100 || IndexSpec::auto(100, 40).nlist == 1);
        assert_eq!(IndexSpec::auto(10, 40).nlist, 1);
    }

    #[test]
    fn search_params_are_range_checked() {
        let spec: IndexSpec = "IVF16,PQ20x8r".parse().unwrap();
        assert!(SearchParams::default().validate(&spec).is_ok());
        assert!(SearchParams { k: 0, ..Default::default() }.validate(&spec).is_err());
        assert!(SearchParams { nprobe: 17, ..Default::default() }.validate(&spec).is_err());
        assert!(SearchParams { max_distance: Some(f32::NAN), ..Default::default() }.validate(&spec).is_err());
        assert_eq!(
            SearchParams { max_distance: Some(0.8), ..Default::default() }.to_string(),
            "k=60,nprobe=16,maxd=0.8"
        );
    }
}
