//! Image numbers of an inverted list, packed: entries are cut into blocks of [`BLOCK`]; a block stores its smallest
//! image number (`bases`) and every entry's difference to it in 1, 2 or 4 bytes, the narrowest that holds the
//! block's largest difference. Lists fill in image order, so a block's differences are usually small: about 1.25
//! bytes per entry instead of 4. Random access by position (the scan reads the number of only the codes that enter
//! a top-k list): `offsets[b]..offsets[b + 1]` are block `b`'s bytes, and their count over the block's entries is
//! its width.

use crate::storage::Storage;

/// Entries per block.
pub const BLOCK: usize = 32;

/// Image numbers of one list.
#[derive(Debug, Clone, Default)]
pub(crate) struct PackedIds {
    /// Smallest image number of each block.
    pub(crate) bases: Storage<u32>,
    /// Byte offset of each block's differences in `deltas`, plus the end (`blocks + 1` values; empty for an empty
    /// list).
    pub(crate) offsets: Storage<u32>,
    /// The differences, little-endian.
    pub(crate) deltas: Storage<u8>,
}

/// Bytes needed for a difference.
fn width_of(delta: u32) -> usize {
    if delta <= 0xFF {
        1
    } else if delta <= 0xFFFF {
        2
    } else {
        4
    }
}

impl PackedIds {
    /// Packs `ids` (a whole list).
    pub(crate) fn pack(ids: &[u32]) -> Self {
        let mut p = Self::default();
        for (i, &id) in ids.iter().enumerate() {
            p.push(i, id);
        }
        p
    }

    /// Image number of entry `i` (`i` below the list's length).
    #[inline]
    pub(crate) fn get(&self, i: usize, len: usize) -> u32 {
        let b = i / BLOCK;
        let offsets = self.offsets.as_slice();
        let (start, end) = (offsets[b] as usize, offsets[b + 1] as usize);
        let count = (len - b * BLOCK).min(BLOCK);
        // A shift for every full block; a division only in a list's last one.
        let width = if count == BLOCK { (end - start) / BLOCK } else { (end - start) / count };
        let at = start + (i % BLOCK) * width;
        let d = &self.deltas.as_slice()[at..at + width];
        let delta = match width {
            1 => u32::from(d[0]),
            2 => u32::from(u16::from_le_bytes([d[0], d[1]])),
            _ => u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
        };
        self.bases.as_slice()[b] + delta
    }

    /// Every image number of a list of `len` entries, in order.
    pub(crate) fn unpack(&self, len: usize) -> Vec<u32> {
        (0..len).map(|i| self.get(i, len)).collect()
    }

    /// Appends `id` as entry `len` (the list's length before the append): one more difference in the last block,
    /// or the block re-encoded when `id` lowers its base or needs a wider difference.
    pub(crate) fn push(&mut self, len: usize, id: u32) {
        let lane = len % BLOCK;
        if lane == 0 {
            self.bases.make_mut().push(id);
            let offsets = self.offsets.make_mut();
            if offsets.is_empty() {
                offsets.push(0);
            }
            let end = *offsets.last().unwrap_or(&0);
            offsets.push(end + 1);
            self.deltas.make_mut().push(0);
            return;
        }
        let b = len / BLOCK;
        let (base, width) = {
            let offsets = self.offsets.as_slice();
            (self.bases.as_slice()[b], (offsets[b + 1] - offsets[b]) as usize / lane)
        };
        if id >= base && width_of(id - base) <= width {
            // The usual case (lists fill in image order): the block's base and width stay, one difference is added.
            let deltas = self.deltas.make_mut();
            deltas.extend_from_slice(&(id - base).to_le_bytes()[..width]);
            let end = deltas.len() as u32;
            self.offsets.make_mut()[b + 1] = end;
            return;
        }
        let mut block = [0u32; BLOCK];
        for (i, v) in block[..lane].iter_mut().enumerate() {
            *v = self.get(b * BLOCK + i, len);
        }
        block[lane] = id;
        let block = &block[..=lane];
        let base = block.iter().copied().min().unwrap_or(id);
        let width = width_of(block.iter().map(|&v| v - base).max().unwrap_or(0));
        let offsets = self.offsets.make_mut();
        let start = offsets[b] as usize;
        let deltas = self.deltas.make_mut();
        deltas.truncate(start);
        for &v in block {
            deltas.extend_from_slice(&(v - base).to_le_bytes()[..width]);
        }
        offsets[b + 1] = deltas.len() as u32;
        self.bases.make_mut()[b] = base;
    }

    /// Bytes held (bases, offsets and differences).
    pub(crate) fn bytes(&self) -> usize {
        self.bases.len() * 4 + self.offsets.len() * 4 + self.deltas.len()
    }
}

/// Checks a list's block offsets as read from a file (`n` entries): they start at 0, and every block's byte count
/// is 1, 2 or 4 per entry. Returns the list's difference bytes, or what is wrong.
pub(crate) fn check_offsets(offsets: &[u32], n: usize) -> Result<usize, String> {
    if n == 0 {
        return Ok(0);
    }
    if offsets.first() != Some(&0) {
        return Err("a list's block offsets do not start at 0".into());
    }
    for (b, w) in offsets.windows(2).enumerate() {
        let count = (n - b * BLOCK).min(BLOCK);
        let bytes = w[1].checked_sub(w[0]).ok_or("block offsets decrease")? as usize;
        if ![count, 2 * count, 4 * count].contains(&bytes) {
            return Err(format!("block {b} has {bytes} bytes for {count} entries"));
        }
    }
    Ok(offsets.last().copied().unwrap_or(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use delf_core::rng::SplitMix64;

    #[test]
    fn packing_round_trips_and_takes_the_narrowest_width() {
        let mut g = SplitMix64(3);
        let sorted: Vec<u32> = (0..1000u32).map(|i| i * 3 + g.below(3) as u32).collect();
        let mut wide: Vec<u32> = (0..100).map(|_| g.below(u32::MAX as usize) as u32).collect();
        wide.extend([0, u32::MAX, 70_000, 5]);
        let medium: Vec<u32> = (0..77).map(|i| 1_000_000 + (i * 997) % 40_000).collect();
        for ids in [&sorted, &wide, &medium, &vec![7u32], &Vec::new()] {
            let p = PackedIds::pack(ids);
            assert_eq!(&p.unpack(ids.len()), ids);
        }
        // Image order with small steps: one byte per entry plus 8 bytes per block of 32.
        let p = PackedIds::pack(&sorted);
        assert_eq!(p.bytes(), 1000 + 32 * 4 + 33 * 4);
        assert_eq!(PackedIds::pack(&wide).deltas.len(), 104 * 4);
    }
}
