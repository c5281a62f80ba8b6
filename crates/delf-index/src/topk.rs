//! Per-query-descriptor neighbour lists with one total order, so results never depend on scan order, thread count
//! or sharding: by squared distance, then image number, then feature number.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

/// One database descriptor found for a query descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Neighbor {
    /// Squared Euclidean distance estimated by asymmetric PQ distance.
    pub distance: f32,
    /// Global image number (unique across all shards of an index).
    pub image: u32,
    /// Feature number within that image.
    pub feature: u16,
}

impl Neighbor {
    /// The total order used everywhere.
    pub fn order(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.image.cmp(&other.image))
            .then(self.feature.cmp(&other.feature))
    }
}

#[derive(Debug, Clone, Copy)]
struct Ordered(Neighbor);

impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        self.0.order(&other.0) == Ordering::Equal
    }
}
impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.order(&other.0)
    }
}

/// The `k` smallest neighbours seen so far.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Ordered>,
}

impl TopK {
    /// An empty list keeping at most `k`.
    pub fn new(k: usize) -> Self {
        Self { k, heap: BinaryHeap::with_capacity(k + 1) }
    }

    /// Distance a candidate must beat (or tie and win on ids) to enter; infinity while not full.
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k { f32::INFINITY } else { self.heap.peek().map_or(f32::INFINITY, |w| w.0.distance) }
    }

    /// Offers a candidate.
    #[inline]
    pub fn push(&mut self, n: Neighbor) {
        if self.heap.len() < self.k {
            self.heap.push(Ordered(n));
        } else if let Some(worst) = self.heap.peek()
            && n.order(&worst.0) == Ordering::Less
        {
            self.heap.pop();
            self.heap.push(Ordered(n));
        }
    }

    /// Takes every neighbour of `other`.
    pub fn merge(&mut self, other: TopK) {
        for n in other.heap {
            self.push(n.0);
        }
    }

    /// Neighbours, nearest first.
    pub fn into_sorted(self) -> Vec<Neighbor> {
        self.heap.into_sorted_vec().into_iter().map(|o| o.0).collect()
    }
}

/// Merges per-shard answers for the same queries: `parts[s][q]` is shard `s`'s sorted list for query `q`. The
/// result equals searching all shards at once.
pub fn merge_neighbor_lists(parts: Vec<Vec<Vec<Neighbor>>>, k: usize) -> Vec<Vec<Neighbor>> {
    let nq = parts.first().map_or(0, Vec::len);
    let mut out: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
    for part in parts {
        for (q, list) in part.into_iter().enumerate().take(nq) {
            for n in list {
                out[q].push(n);
            }
        }
    }
    out.into_iter().map(TopK::into_sorted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_k_smallest_with_id_tie_break() {
        let mut t = TopK::new(3);
        for (d, i) in [(5.0, 1), (1.0, 9), (1.0, 2), (7.0, 0), (0.5, 4), (1.0, 1)] {
            t.push(Neighbor { distance: d, image: i, feature: 0 });
        }
        let v: Vec<(f32, u32)> = t.into_sorted().iter().map(|n| (n.distance, n.image)).collect();
        assert_eq!(v, vec![(0.5, 4), (1.0, 1), (1.0, 2)]);
    }
}
