//! Shard answers cut short, so that what a coordinator receives per query does not grow with the shard count: each
//! of S shards returns only its K' nearest neighbours per query descriptor instead of K, with K' derived from K and
//! S under a stated bound ([`shard_k`]), and the merge says where a cut answer may hide neighbours that belong in
//! the global list ([`merge_cut_lists`]), so that nothing downstream takes a missing neighbour for an absent one.
//!
//! The bound assumes what sharding by image number gives: a query descriptor's neighbours lie in any shard with the
//! same probability 1/S, whatever they show. Neighbours that concentrate in one shard (many look-alike features of
//! one image) are left out more often than the bound says; `delf bench cluster` measures the effect on answers.

use crate::topk::{Neighbor, merge_neighbor_lists};

/// The expected number of a query descriptor's global top-`k` neighbours left out when each of `shards` shards
/// answers only its `k_part` nearest, with every neighbour in any shard with probability 1/`shards`:
/// `shards x E[(X - k_part)+]`, X ~ Binomial(`k`, 1/`shards`).
pub fn expected_left_out(k: usize, shards: usize, k_part: usize) -> f64 {
    if shards <= 1 {
        return k.saturating_sub(k_part) as f64;
    }
    let p = 1.0 / shards as f64;
    let mut pmf = (1.0 - p).powi(k as i32);
    let mut excess = 0.0;
    for x in 0..=k {
        if x > k_part {
            excess += (x - k_part) as f64 * pmf;
        }
        pmf *= (k - x) as f64 / (x + 1) as f64 * p / (1.0 - p);
    }
    shards as f64 * excess
}

/// The smallest per-shard K' (at least 1, at most `k`) whose [`expected_left_out`] is at most `max_left_out`
/// neighbours per query descriptor; `k` itself for one shard, or when `max_left_out` is 0 (no cut).
pub fn shard_k(k: usize, shards: usize, max_left_out: f64) -> usize {
    if shards <= 1 || max_left_out <= 0.0 || k == 0 {
        return k;
    }
    (1..=k).find(|&kp| expected_left_out(k, shards, kp) <= max_left_out).unwrap_or(k)
}

/// Where a merged list may be short: answer `part` returned its full `k_part` neighbours for list `list` and its
/// last one made it into the merged list, so that shard may hold more neighbours that belong there, all at
/// `distance` (squared) or farther.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cut {
    /// The query descriptor.
    pub list: u32,
    /// The answer (index into the parts merged).
    pub part: u32,
    /// Squared distance of that answer's last neighbour: its unlisted neighbours are at least this far.
    pub distance: f32,
}

/// [`merge_neighbor_lists`] of answers (`parts[a][q]`, sorted or not) that each hold at most `k_part` neighbours per
/// query descriptor, into lists of at most `k`, with the [`Cut`]s: the (list, answer) pairs where a cut answer may
/// hide neighbours that belong in the list. No cut is reported when `k_part >= k` (an answer of K is never short).
pub fn merge_cut_lists(parts: Vec<Vec<Vec<Neighbor>>>, k: usize, k_part: usize) -> (Vec<Vec<Neighbor>>, Vec<Cut>) {
    // The last neighbour of every full answer, taken before the merge consumes them.
    let lasts: Vec<Vec<Option<Neighbor>>> = if k_part >= k {
        Vec::new()
    } else {
        parts
            .iter()
            .map(|lists| {
                lists
                    .iter()
                    .map(|l| (l.len() >= k_part).then(|| l.iter().copied().max_by(Neighbor::order)).flatten())
                    .collect()
            })
            .collect()
    };
    let merged = merge_neighbor_lists(parts, k);
    let mut cuts = Vec::new();
    for (part, lasts) in lasts.iter().enumerate() {
        for (q, last) in lasts.iter().enumerate() {
            let (Some(last), Some(list)) = (last, merged.get(q)) else { continue };
            // The answer's last neighbour is in the merged list (a list short of k holds every answer whole).
            let inside = list.len() < k || list.last().is_some_and(|end| last.order(end).is_le());
            if inside {
                cuts.push(Cut { list: q as u32, part: part as u32, distance: last.distance });
            }
        }
    }
    (merged, cuts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topk::TopK;

    /// The closed form matches a direct count over every way K neighbours can fall into S shards (small cases).
    #[test]
    fn expected_left_out_matches_enumeration() {
        for (k, shards) in [(4usize, 2usize), (5, 3), (6, 2)] {
            for k_part in 0..=k {
                let mut total = 0.0;
                let outcomes = shards.pow(k as u32);
                for code in 0..outcomes {
                    let mut counts = vec![0usize; shards];
                    let mut c = code;
                    for _ in 0..k {
                        counts[c % shards] += 1;
                        c /= shards;
                    }
                    total += counts.iter().map(|&n| n.saturating_sub(k_part)).sum::<usize>() as f64;
                }
                let exact = total / outcomes as f64;
                let ours = expected_left_out(k, shards, k_part);
                assert!((ours - exact).abs() < 1e-9, "k {k} shards {shards} k' {k_part}: {ours} vs {exact}");
            }
        }
    }

    #[test]
    fn shard_k_follows_the_bound() {
        assert_eq!(shard_k(60, 1, 0.05), 60);
        assert_eq!(shard_k(60, 64, 0.0), 60);
        for shards in [2, 4, 16, 64, 1000] {
            let kp = shard_k(60, shards, 0.05);
            assert!(expected_left_out(60, shards, kp) <= 0.05);
            assert!(kp == 1 || expected_left_out(60, shards, kp - 1) > 0.05, "{shards} shards: {kp} is not the least");
        }
        // More shards, fewer neighbours each; never fewer than one.
        assert!(shard_k(60, 64, 0.05) < shard_k(60, 16, 0.05));
        assert!(shard_k(60, 16, 0.05) < shard_k(60, 4, 0.05));
        assert_eq!(shard_k(60, 1_000_000, 0.05), 1);
    }

    /// Merged lists of cut answers equal the full merge wherever no cut is reported, and where one is, the merged
    /// list holds every neighbour nearer than the cut.
    #[test]
    fn cuts_mark_every_list_that_may_be_short() {
        let mut rng = delf_core::rng::SplitMix64(5);
        let (shards, k, k_part, nq) = (4u32, 12usize, 4usize, 200usize);
        let full: Vec<Vec<Vec<Neighbor>>> = (0..shards)
            .map(|s| {
                (0..nq)
                    .map(|_| {
                        let mut top = TopK::new(k);
                        for _ in 0..(rng.next_u64() % 20) {
                            top.push(Neighbor {
                                distance: (rng.next_u64() % 1000) as f32 / 100.0,
                                image: (rng.next_u64() % 100) as u32 * shards + s,
                                feature: (rng.next_u64() % 500) as u16,
                            });
                        }
                        top.into_sorted()
                    })
                    .collect()
            })
            .collect();
        let cut: Vec<Vec<Vec<Neighbor>>> =
            full.iter().map(|p| p.iter().map(|l| l[..l.len().min(k_part)].to_vec()).collect()).collect();
        let exact = merge_neighbor_lists(full, k);
        let (merged, cuts) = merge_cut_lists(cut, k, k_part);
        let mut short = 0;
        for q in 0..nq {
            let here: Vec<&Cut> = cuts.iter().filter(|c| c.list as usize == q).collect();
            if here.is_empty() {
                assert_eq!(merged[q], exact[q], "list {q} has no cut but differs");
                continue;
            }
            let nearest = here.iter().map(|c| c.distance).fold(f32::INFINITY, f32::min);
            let complete: Vec<&Neighbor> = exact[q].iter().filter(|n| n.distance < nearest).collect();
            assert!(complete.iter().all(|n| merged[q].contains(n)), "list {q} lost a neighbour nearer than its cut");
            short += usize::from(merged[q] != exact[q]);
        }
        assert!(short > 0, "the test should cut some list short");
        // No cut when the answers are K long.
        assert!(merge_cut_lists(vec![vec![vec![]; 3]; 2], 5, 5).1.is_empty());
    }
}
