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
        } else if let Some(mut worst) = self.heap.peek_mut()
            && n.order(&worst.0) == Ordering::Less
        {
            // Replacing the top sifts once, where pop + push would sift twice.
            *worst = Ordered(n);
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

/// Merges per-shard answers for the same queries: `parts[s][q]` is shard `s`'s list for query `q`, nearest first.
/// The result equals searching all shards at once. Shards hold disjoint images, so the lists share no neighbour;
/// each list is sorted again first (linear when it already is), so a list out of order cannot change the answer.
pub fn merge_neighbor_lists(parts: Vec<Vec<Vec<Neighbor>>>, k: usize) -> Vec<Vec<Neighbor>> {
    let nq = parts.first().map_or(0, Vec::len);
    let mut parts: Vec<_> = parts.into_iter().map(Vec::into_iter).collect();
    (0..nq)
        .map(|_| {
            let mut lists: Vec<Vec<Neighbor>> = parts.iter_mut().map(|p| p.next().unwrap_or_default()).collect();
            for list in &mut lists {
                list.sort_unstable_by(Neighbor::order);
            }
            merge_sorted(lists, k)
        })
        .collect()
}

/// Lists merged by scanning every head for each neighbour taken; more go through a heap of heads.
const LINEAR_MERGE_MAX: usize = 8;

/// The `k` first of several sorted lists: a k-way merge, `k x lists` comparisons for a few lists, `k x log(lists)`
/// through a heap of the lists' heads for many (a coordinator merges one short answer per shard).
fn merge_sorted(mut lists: Vec<Vec<Neighbor>>, k: usize) -> Vec<Neighbor> {
    if lists.len() == 1 {
        let mut only = lists.swap_remove(0);
        only.truncate(k);
        return only;
    }
    if lists.len() > LINEAR_MERGE_MAX {
        return merge_through_heap(&lists, k);
    }
    let total = lists.iter().map(Vec::len).sum::<usize>().min(k);
    let mut heads = vec![0usize; lists.len()];
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let mut best: Option<(usize, Neighbor)> = None;
        for (l, list) in lists.iter().enumerate() {
            if let Some(&n) = list.get(heads[l])
                && best.is_none_or(|(_, b)| n.order(&b) == Ordering::Less)
            {
                best = Some((l, n));
            }
        }
        let Some((l, n)) = best else { break };
        heads[l] += 1;
        out.push(n);
    }
    out
}

/// [`merge_sorted`] of many lists: the smallest head is popped from a heap of every list's head.
fn merge_through_heap(lists: &[Vec<Neighbor>], k: usize) -> Vec<Neighbor> {
    let total = lists.iter().map(Vec::len).sum::<usize>().min(k);
    let mut heads: BinaryHeap<std::cmp::Reverse<(Ordered, usize, usize)>> = lists
        .iter()
        .enumerate()
        .filter_map(|(l, list)| list.first().map(|&n| std::cmp::Reverse((Ordered(n), l, 0))))
        .collect();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let Some(std::cmp::Reverse((Ordered(n), l, i))) = heads.pop() else { break };
        out.push(n);
        if let Some(&next) = lists[l].get(i + 1) {
            heads.push(std::cmp::Reverse((Ordered(next), l, i + 1)));
        }
    }
    out
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

    #[test]
    fn merging_equals_one_top_k_over_everything() {
        let mut rng = delf_core::rng::SplitMix64(7);
        for shards in [1, 2, 3, 8, 9, 64] {
            for k in [1, 5, 60] {
                // Shard s holds images = s (mod shards); a few equal distances exercise the tie-break.
                let parts: Vec<Vec<Vec<Neighbor>>> = (0..shards)
                    .map(|s| {
                        (0..4)
                            .map(|_| {
                                let len = (rng.next_u64() % (k as u64 + 3)) as usize;
                                let mut list: Vec<Neighbor> = (0..len)
                                    .map(|_| Neighbor {
                                        distance: (rng.next_u64() % 16) as f32 / 4.0,
                                        image: (rng.next_u64() % 50) as u32 * shards + s,
                                        feature: (rng.next_u64() % 1000) as u16,
                                    })
                                    .collect();
                                list.sort_by(Neighbor::order);
                                list.dedup_by(|a, b| a.image == b.image && a.feature == b.feature);
                                if s == 1 {
                                    list.reverse(); // out of order: merged all the same
                                }
                                list
                            })
                            .collect()
                    })
                    .collect();
                let expected: Vec<Vec<Neighbor>> = (0..4)
                    .map(|q| {
                        let mut top = TopK::new(k);
                        parts.iter().flat_map(|p| p[q].iter()).for_each(|&n| top.push(n));
                        top.into_sorted()
                    })
                    .collect();
                assert_eq!(merge_neighbor_lists(parts, k), expected, "{shards} shards, k {k}");
            }
        }
    }
}
