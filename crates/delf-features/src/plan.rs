//! Work units: the list cut into fixed slices, so any worker can compute its share without talking to others.
//!
//! Unit `u` is list entries `[u * unit_size, (u + 1) * unit_size)`; each unit becomes one Parquet feature shard.
//! A static assignment gives worker `i` of `n` the units `u` with `u % n == i` (round robin, so the share of each
//! worker stays even when the tail unit is short); a dynamic one walks every unit and claims free ones.

use std::ops::Range;

use crate::error::StoreError;

/// How a list is cut into units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkPlan {
    /// Images in the list.
    pub images: usize,
    /// Images per unit (the last unit may be shorter).
    pub unit_size: usize,
}

/// Which units this worker takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// Worker `index` of `count`: the units `u % count == index` (Kubernetes Indexed Jobs).
    Static {
        /// This worker's index, `0..count`.
        index: u32,
        /// Number of workers.
        count: u32,
    },
    /// Every unit not yet committed, claiming each before working on it (any number of workers).
    Dynamic,
}

impl Assignment {
    /// Checks an assignment from `--shard-index/--num-shards` (both or neither).
    pub fn from_flags(index: Option<u32>, count: Option<u32>) -> Result<Self, StoreError> {
        match (index, count) {
            (None, None) => Ok(Assignment::Dynamic),
            (Some(index), Some(count)) if count > 0 && index < count => Ok(Assignment::Static { index, count }),
            (Some(index), Some(count)) => {
                Err(StoreError::BadAssignment(format!("shard index {index} is not in 0..{count}")))
            }
            (Some(_), None) => Err(StoreError::BadAssignment("--shard-index needs --num-shards".into())),
            (None, Some(_)) => Err(StoreError::BadAssignment("--num-shards needs --shard-index".into())),
        }
    }
}

impl WorkPlan {
    /// A plan; `unit_size` must be positive.
    pub fn new(images: usize, unit_size: usize) -> Result<Self, StoreError> {
        if unit_size == 0 {
            return Err(StoreError::BadAssignment("the unit size must be at least 1".into()));
        }
        Ok(Self { images, unit_size })
    }

    /// Number of units.
    pub fn units(&self) -> usize {
        self.images.div_ceil(self.unit_size)
    }

    /// The list entries of unit `u`.
    pub fn range(&self, unit: usize) -> Range<usize> {
        let start = (unit * self.unit_size).min(self.images);
        start..(start + self.unit_size).min(self.images)
    }

    /// The units of an assignment, in the order the worker visits them.
    pub fn units_for(&self, assignment: Assignment) -> Vec<usize> {
        match assignment {
            Assignment::Static { index, count } => (index as usize..self.units()).step_by(count as usize).collect(),
            Assignment::Dynamic => (0..self.units()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_shares_cover_every_unit_exactly_once() {
        let plan = WorkPlan::new(1003, 100).unwrap();
        assert_eq!(plan.units(), 11);
        assert_eq!(plan.range(10), 1000..1003);
        let mut seen = vec![0; plan.units()];
        for index in 0..4 {
            for u in plan.units_for(Assignment::Static { index, count: 4 }) {
                seen[u] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        let covered: usize = (0..plan.units()).map(|u| plan.range(u).len()).sum();
        assert_eq!(covered, 1003);
        assert!(plan.units_for(Assignment::Static { index: 20, count: 21 }).is_empty());
    }

    #[test]
    fn bad_flags_are_typed_errors() {
        assert_eq!(Assignment::from_flags(None, None).unwrap(), Assignment::Dynamic);
        assert_eq!(Assignment::from_flags(Some(1), Some(2)).unwrap(), Assignment::Static { index: 1, count: 2 });
        for (i, n) in [(Some(2), Some(2)), (Some(0), Some(0)), (Some(0), None), (None, Some(3))] {
            assert!(Assignment::from_flags(i, n).is_err());
        }
        assert!(WorkPlan::new(10, 0).is_err());
    }
}
