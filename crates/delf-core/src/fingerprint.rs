use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies the model + PCA that produced a set of descriptors. Descriptors with different fingerprints live in
/// different spaces and must never be compared; every consumer checks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(pub String);

impl Fingerprint {
    /// Hashes the given parts (FNV-1a 64 over each part and its length), as 16 hex digits prefixed by `label/`.
    pub fn of(label: &str, parts: &[&[u8]]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in parts {
            for &b in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        Self(format!("{label}/{h:016x}"))
    }

    /// The fingerprint as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Fingerprint;

    #[test]
    fn depends_on_every_part_and_its_boundaries() {
        let a = Fingerprint::of("m", &[b"ab", b"c"]);
        assert_eq!(a, Fingerprint::of("m", &[b"ab", b"c"]));
        assert_ne!(a, Fingerprint::of("m", &[b"a", b"bc"]));
        assert_ne!(a, Fingerprint::of("m", &[b"ab", b"d"]));
        assert!(a.as_str().starts_with("m/") && a.as_str().len() == 2 + 16);
    }
}
