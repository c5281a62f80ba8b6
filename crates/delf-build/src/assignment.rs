//! Which shard each image of an extraction job goes to, and its image number there.
//!
//! Whole units go to one shard: unit `u` to shard `u % S`, so an encode worker that builds shard `s` reads only
//! the feature files of units `s, s + S, s + 2S, ...`, and every feature file is read once over all shards. Image
//! numbers keep the invariant the search and the cluster rely on, number `n` lives in shard `n % S`: the `j`-th
//! image of shard `s` (its units in order, each unit's rows in order) is number `s + j * S`. With one shard this is
//! the job's row order. Shards differ in size by at most about one unit's images. Indexes built before (image
//! `n` of the job in shard `n % S`) follow the same invariant and load as they are.

use delf_features::CommitRecord;

use crate::error::BuildError;

/// Where one unit's images go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitPlace {
    /// The unit.
    pub unit: usize,
    /// Its shard.
    pub shard: u32,
    /// Number of its first image; row `r` of the unit is `first_number + r * shards`.
    pub first_number: u32,
    /// Images (rows) in the unit.
    pub rows: usize,
}

/// The place of every unit of a job among `shards` shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitAssignment {
    shards: u32,
    places: Vec<UnitPlace>,
}

impl UnitAssignment {
    /// The assignment of the committed `units` (in unit order) to `shards` shards.
    pub fn new(units: &[CommitRecord], shards: u32) -> Result<Self, BuildError> {
        if shards == 0 {
            return Err(BuildError::Input("the shard count must be at least 1".into()));
        }
        let mut next = vec![0u64; shards as usize];
        let mut places = Vec::with_capacity(units.len());
        for u in units {
            let shard = (u.unit % shards as usize) as u32;
            let j = next[shard as usize];
            let last = u64::from(shard) + (j + u.rows.max(1) as u64 - 1) * u64::from(shards);
            if last > u64::from(u32::MAX) {
                return Err(BuildError::Input(format!(
                    "more than {} images in one index: split the corpus into several indexes",
                    u32::MAX
                )));
            }
            places.push(UnitPlace {
                unit: u.unit,
                shard,
                first_number: (u64::from(shard) + j * u64::from(shards)) as u32,
                rows: u.rows,
            });
            next[shard as usize] += u.rows as u64;
        }
        Ok(Self { shards, places })
    }

    /// Shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Every unit's place, in unit order.
    pub fn places(&self) -> &[UnitPlace] {
        &self.places
    }

    /// The units of `shard`, in order.
    pub fn units_of(&self, shard: u32) -> impl Iterator<Item = &UnitPlace> + '_ {
        self.places.iter().filter(move |p| p.shard == shard)
    }

    /// Images in `shard`.
    pub fn images_of(&self, shard: u32) -> usize {
        self.units_of(shard).map(|p| p.rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(unit: usize, rows: usize) -> CommitRecord {
        CommitRecord {
            unit,
            first: unit * 4,
            images: 4,
            rows,
            failures: 4 - rows,
            descriptors: rows as u64 * 10,
            features_file: format!("features/unit-{unit}.parquet"),
            features_bytes: 1,
            features_crc32: "0".into(),
            errors_file: None,
            errors_crc32: None,
            worker: "w".into(),
            attempt: "a".into(),
            seconds: 0.0,
            committed_unix_s: 0,
        }
    }

    #[test]
    fn whole_units_per_shard_and_numbers_that_name_their_shard() {
        let units: Vec<CommitRecord> = [4, 3, 4, 2, 4].iter().enumerate().map(|(u, &r)| record(u, r)).collect();
        let a = UnitAssignment::new(&units, 2).unwrap();
        let numbers = |shard: u32| -> Vec<u32> {
            a.units_of(shard).flat_map(|p| (0..p.rows as u32).map(move |r| p.first_number + r * 2)).collect()
        };
        // Shard 0: units 0, 2, 4 (12 images); shard 1: units 1, 3 (5 images).
        assert_eq!(numbers(0), (0..12).map(|j| j * 2).collect::<Vec<_>>());
        assert_eq!(numbers(1), (0..5).map(|j| 1 + j * 2).collect::<Vec<_>>());
        assert_eq!((a.images_of(0), a.images_of(1)), (12, 5));
        // One shard: the job's row order.
        let one = UnitAssignment::new(&units, 1).unwrap();
        let firsts: Vec<u32> = one.places().iter().map(|p| p.first_number).collect();
        assert_eq!(firsts, [0, 4, 7, 11, 13]);
        assert!(UnitAssignment::new(&units, 0).is_err());
    }
}
