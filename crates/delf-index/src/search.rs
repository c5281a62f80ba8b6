//! Batched search: all descriptors of a query image at once. Each query descriptor is assigned to its `nprobe`
//! nearest cells; then the probed lists are scanned one by one (in parallel across lists), each list read once
//! for every query descriptor that probes it, and every shard's copy of that list is scanned with the same lookup
//! table. Results use one total order, so they do not depend on threads or on how images are split into shards.

use rayon::prelude::*;

use crate::error::{IndexError, Result};
use crate::fastscan::{self, QuantizedLut};
use crate::scan::ScanKernel;
use crate::shard::{InvList, Shard};
use crate::spec::SearchParams;
use crate::topk::{Neighbor, TopK};

/// Searches `queries` (`n x dim`) in the given shards, which must share codebooks and descriptor fingerprint.
/// Returns, per query descriptor, up to `k` neighbours nearest first (squared distances).
pub fn search(
    shards: &[&Shard],
    queries: &[f32],
    dim: usize,
    params: &SearchParams,
    kernel: ScanKernel,
) -> Result<Vec<Vec<Neighbor>>> {
    search_probed(shards, queries, dim, None, params, kernel)
}

/// [`search`] with the cells each query descriptor probes already known: `probes` holds `n x nprobe` cell numbers,
/// nearest first, as [`crate::Codebooks::probe`] or [`crate::CoarseQuantizer::probe`] give them (a coordinator
/// assigns once and sends the cells to every shard). `None` assigns here. Cells out of range, repeated in a row, or
/// a count other than `n x nprobe` are refused.
pub fn search_probed(
    shards: &[&Shard],
    queries: &[f32],
    dim: usize,
    probes: Option<&[u32]>,
    params: &SearchParams,
    kernel: ScanKernel,
) -> Result<Vec<Vec<Neighbor>>> {
    let first = shards.first().ok_or(IndexError::EmptyIndex)?;
    let cb = &first.codebooks;
    for s in &shards[1..] {
        first.check_same_index(s)?;
    }
    let nq = cb.check_dim(queries, dim)?;
    params.validate(&cb.spec)?;
    if shards.iter().all(|s| s.live_vectors() == 0) {
        return Err(IndexError::EmptyIndex);
    }
    if let Some(bad) = queries.iter().find(|v| !v.is_finite()) {
        return Err(IndexError::invalid("query descriptor", bad, "contains NaN or infinity"));
    }
    let nprobe = params.nprobe;
    let probes = match probes {
        Some(p) => {
            check_probes(p, nq, nprobe, cb.spec.nlist)?;
            std::borrow::Cow::Borrowed(p)
        }
        None => std::borrow::Cow::Owned(cb.probe(queries, nprobe).0),
    };
    let qtables: Vec<Vec<f32>> = queries.par_chunks_exact(dim).map(|q| cb.query_table(q)).collect();
    let ctx = Ctx { shards, cb, queries, dim, qtables: &qtables, kernel };
    let max_d2 = params.max_distance.map_or(f32::INFINITY, |d| d * d);
    if cb.spec.nbits == 4 {
        return Ok(ctx.search_query_major(&probes, nprobe, params.k, max_d2));
    }

    // Phase 1: every query descriptor scans its nearest cell. Each query has exactly one, so the lists are split
    // among threads with no sharing, and every query gets a full top-k whose k-th distance bounds the rest.
    let mut first: Vec<Vec<u32>> = vec![Vec::new(); cb.spec.nlist];
    let mut rest: Vec<Vec<u32>> = vec![Vec::new(); cb.spec.nlist];
    for (q, p) in probes.chunks_exact(nprobe).enumerate() {
        first[p[0] as usize].push(q as u32);
        for &l in &p[1..] {
            rest[l as usize].push(q as u32);
        }
    }
    let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(params.k)).collect();
    let phase1: Vec<(u32, TopK)> = ctx
        .work(&first)
        .par_iter()
        .flat_map_iter(|&l| {
            let mut scratch = Scratch::new(cb.spec.m, cb.spec.ksub());
            let term = cb.spec.residual.then(|| cb.list_term(l));
            first[l]
                .iter()
                .map(|&q| {
                    let mut top = TopK::new(params.k);
                    ctx.scan(l, q as usize, term.as_deref(), max_d2, &mut top, &mut scratch);
                    (q, top)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for (q, top) in phase1 {
        tops[q as usize] = top;
    }
    let bounds: Vec<f32> = tops.iter().map(|t| t.threshold().min(max_d2)).collect();

    // Phase 2: the other probed cells, list by list (each list read once for all the query descriptors that
    // probe it), in parallel across lists. Per-thread partial top-k lists only take candidates within the
    // phase-1 bound (ties kept, so the id tie-break still decides), then merge.
    let work = ctx.work(&rest);
    let min_len = (work.len() / (rayon::current_num_threads() * 8)).max(1);
    let partial = work
        .par_iter()
        .with_min_len(min_len)
        .fold(
            || (vec![None::<TopK>; nq], Scratch::new(cb.spec.m, cb.spec.ksub())),
            |(mut part, mut scratch), &l| {
                let term = cb.spec.residual.then(|| cb.list_term(l));
                for &q in &rest[l] {
                    let q = q as usize;
                    let top = part[q].get_or_insert_with(|| TopK::new(params.k));
                    ctx.scan(l, q, term.as_deref(), bounds[q], top, &mut scratch);
                }
                (part, scratch)
            },
        )
        .map(|(part, _)| part)
        .reduce(
            || vec![None; nq],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    match (x.as_mut(), y) {
                        (Some(x), Some(y)) => x.merge(y),
                        (None, Some(y)) => *x = Some(y),
                        _ => {}
                    }
                }
                a
            },
        );
    for (top, part) in tops.iter_mut().zip(partial) {
        if let Some(part) = part {
            top.merge(part);
        }
    }
    Ok(tops.into_iter().map(TopK::into_sorted).collect())
}

/// Checks cells given by the caller: `nq x nprobe` of them, each below `nlist`, none twice for one descriptor.
fn check_probes(probes: &[u32], nq: usize, nprobe: usize, nlist: usize) -> Result<()> {
    if probes.len() != nq * nprobe {
        return Err(IndexError::invalid(
            "probes",
            probes.len(),
            format!("{nq} query descriptors x nprobe {nprobe} = {} cells expected", nq * nprobe),
        ));
    }
    if let Some(&bad) = probes.iter().find(|&&l| l as usize >= nlist) {
        return Err(IndexError::invalid("probes", bad, format!("cells are numbered 0..{nlist}")));
    }
    for (q, row) in probes.chunks_exact(nprobe).enumerate() {
        if row.iter().enumerate().any(|(i, l)| row[..i].contains(l)) {
            return Err(IndexError::invalid("probes", q, "a query descriptor's cells repeat"));
        }
    }
    Ok(())
}

/// Per-thread buffers of a scan.
struct Scratch {
    lut: Vec<f32>,
    dist: Vec<f32>,
    /// 4-bit codes only: the quantized table and the quantized sums.
    qlut: QuantizedLut,
    sums: Vec<u16>,
}

impl Scratch {
    fn new(m: usize, ksub: usize) -> Self {
        Self { lut: vec![0.0; m * ksub], dist: Vec::new(), qlut: QuantizedLut::new(m), sums: Vec::new() }
    }
}

/// Everything a list scan needs.
struct Ctx<'a> {
    shards: &'a [&'a Shard],
    cb: &'a crate::Codebooks,
    queries: &'a [f32],
    dim: usize,
    qtables: &'a [Vec<f32>],
    kernel: ScanKernel,
}

impl Ctx<'_> {
    /// Whether some shard holds entries in list `l`.
    fn holds(&self, l: usize) -> bool {
        self.shards.iter().any(|s| s.lists[l].len > 0)
    }

    /// Lists that some query probes and some shard holds entries in.
    fn work(&self, by_list: &[Vec<u32>]) -> Vec<usize> {
        (0..by_list.len()).filter(|&l| !by_list[l].is_empty() && self.holds(l)).collect()
    }

    /// Scans list `l` of every shard for query `q`, offering candidates within `bound` to `top`.
    fn scan(&self, l: usize, q: usize, term: Option<&[f32]>, bound: f32, top: &mut TopK, s: &mut Scratch) {
        let qt = &self.qtables[q];
        match term {
            Some(t) => s.lut.iter_mut().zip(t.iter().zip(qt)).for_each(|(o, (t, x))| *o = t - 2.0 * x),
            None => s.lut.copy_from_slice(qt),
        }
        let base = self.cb.list_base(&self.queries[q * self.dim..][..self.dim], l);
        if self.cb.spec.nbits == 4 {
            return self.scan_fast(l, base, bound, top, s);
        }
        let m = self.cb.spec.code_bytes();
        for shard in self.shards {
            let list = &shard.lists[l];
            if list.len == 0 {
                continue;
            }
            s.dist.resize(list.len, 0.0);
            self.kernel.scan(&s.lut, base, list.codes.as_slice(), m, &mut s.dist);
            let mut thr = top.threshold().min(bound);
            for (i, &d) in s.dist.iter().enumerate() {
                if d <= thr {
                    thr = offer(shard, list, i, d, bound, top);
                }
            }
        }
    }
}

impl Ctx<'_> {
    /// Query-major search (4-bit codes): each query descriptor scans its cells nearest first, with one top-k whose
    /// threshold only tightens, so few codes pass the quantized bound. Lookup tables are small (`m x 16`), so
    /// reading a list once per query costs little; queries run in parallel.
    fn search_query_major(&self, probes: &[u32], nprobe: usize, k: usize, max_d2: f32) -> Vec<Vec<Neighbor>> {
        let nq = probes.len() / nprobe;
        (0..nq)
            .into_par_iter()
            .map_init(
                || Scratch::new(self.cb.spec.m, self.cb.spec.ksub()),
                |scratch, q| {
                    let mut top = TopK::new(k);
                    for &l in &probes[q * nprobe..][..nprobe] {
                        let l = l as usize;
                        if !self.holds(l) {
                            continue;
                        }
                        let term = self.cb.spec.residual.then(|| self.cb.list_term(l));
                        self.scan(l, q, term.as_deref(), max_d2, &mut top, scratch);
                    }
                    top.into_sorted()
                },
            )
            .collect()
    }

    /// The 4-bit scan of list `l` with the float table in `s.lut`: quantized sums for the whole list, then the
    /// float distance of every code whose sum is within the rounding bound of the current threshold, so the result
    /// equals a float scan of every code.
    fn scan_fast(&self, l: usize, base: f32, bound: f32, top: &mut TopK, s: &mut Scratch) {
        let m = self.cb.spec.m;
        fastscan::quantize_lut(&s.lut, base, &mut s.qlut);
        for shard in self.shards {
            let list = &shard.lists[l];
            if list.len == 0 {
                continue;
            }
            let codes = list.codes.as_slice();
            s.sums.resize(list.len, 0);
            self.kernel.scan4(&s.qlut, codes, &mut s.sums);
            let mut thr = top.threshold().min(bound);
            let mut limit = sum_limit(s.qlut.limit(thr));
            // Chunks of 16 sums with none under the limit are skipped by one (vectorised) comparison.
            for (c, chunk) in s.sums.chunks(16).enumerate() {
                if !chunk.iter().fold(false, |any, &sum| any | (sum <= limit)) {
                    continue;
                }
                for (j, &sum) in chunk.iter().enumerate() {
                    if sum > limit {
                        continue;
                    }
                    let i = c * 16 + j;
                    let d = fastscan::exact_distance(&s.lut, base, codes, m, i, list.len);
                    if d <= thr {
                        thr = offer(shard, list, i, d, bound, top);
                        limit = sum_limit(s.qlut.limit(thr));
                    }
                }
            }
        }
    }
}

/// Offers entry `i` of `list` (at distance `d`, already within the threshold) to `top` unless its image is
/// tombstoned; returns the threshold the next candidate must meet.
#[inline]
fn offer(shard: &Shard, list: &InvList, i: usize, d: f32, bound: f32, top: &mut TopK) -> f32 {
    let image = list.images.get(i, list.len);
    if shard.deleted.is_empty() || !shard.deleted.contains(&image) {
        top.push(Neighbor { distance: d, image, feature: list.features.as_slice()[i] });
    }
    top.threshold().min(bound)
}

/// The largest `u16` sum at or under a float limit (`u16::MAX` when the limit is above every sum). A negative limit
/// gives 0, which still admits sums of 0: the float check after it decides.
fn sum_limit(limit: f32) -> u16 {
    if limit >= f32::from(u16::MAX) { u16::MAX } else { limit.max(0.0) as u16 }
}

/// Database rows compared per SGEMM block in [`exact_search`].
const EXACT_CHUNK: usize = 8192;

/// Exact nearest neighbours by brute force (squared L2 via SGEMM, `||q||^2 + ||x||^2 - 2 q.x`), with the same
/// output and order as [`search`]: the reference that recall is measured against. `database` rows are labelled
/// by `(image, feature)` in `labels`.
pub fn exact_search(
    database: &[f32],
    labels: &[(u32, u16)],
    queries: &[f32],
    dim: usize,
    k: usize,
) -> Vec<Vec<Neighbor>> {
    let nq = queries.len() / dim;
    let qnorms = crate::linalg::row_norms(queries, dim);
    database
        .par_chunks(EXACT_CHUNK * dim)
        .zip(labels.par_chunks(EXACT_CHUNK))
        .fold(
            || vec![TopK::new(k); nq],
            |mut tops, (chunk, labels)| {
                let rows = chunk.len() / dim;
                let norms = crate::linalg::row_norms(chunk, dim);
                let mut dots = vec![0.0f32; nq * rows];
                crate::linalg::sgemm_xct(queries, chunk, &mut dots, nq, rows, dim);
                for (q, top) in tops.iter_mut().enumerate() {
                    for (j, (&dot, &(image, feature))) in dots[q * rows..][..rows].iter().zip(labels).enumerate() {
                        let d = (qnorms[q] + norms[j] - 2.0 * dot).max(0.0);
                        if d <= top.threshold() {
                            top.push(Neighbor { distance: d, image, feature });
                        }
                    }
                }
                tops
            },
        )
        .reduce(
            || vec![TopK::new(k); nq],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    x.merge(y);
                }
                a
            },
        )
        .into_iter()
        .map(TopK::into_sorted)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Codebooks, NewImage, Shard, ShardInfo, SyntheticDescriptors, TrainConfig};

    /// The 4-bit scan prunes with quantized sums; it must keep exactly what a float scan of every code keeps.
    #[test]
    fn fast_scan_pruning_loses_nothing() {
        let dim = 40;
        let mix = SyntheticDescriptors::new(dim, 64, 0.35, 7);
        let data = mix.sample(20_000, 1);
        let cb = Arc::new(
            Codebooks::train(&data, dim, "IVF16,PQ20x4fsr".parse().unwrap(), &TrainConfig::default()).unwrap(),
        );
        let info = ShardInfo { shard_id: 0, shard_count: 1, descriptor_fingerprint: "t".into() };
        let mut shard = Shard::new(Arc::clone(&cb), info);
        let names: Vec<String> = (0..200).map(|i| format!("{i}")).collect();
        let kp = vec![[1.0, 1.0]; 100];
        let batch: Vec<NewImage<'_>> = (0..200)
            .map(|i| NewImage {
                number: i as u32,
                name: &names[i],
                descriptors: &data[i * 100 * dim..][..100 * dim],
                keypoints: &kp,
                scales: &[],
            })
            .collect();
        shard.add_images(&batch, dim).unwrap();
        let queries = mix.sample(100, 2);
        let params = SearchParams { k: 30, nprobe: 4, max_distance: None };
        let got = search(&[&shard], &queries, dim, &params, ScanKernel::detect()).unwrap();
        let (probes, _) = cb.probe(&queries, params.nprobe);
        let m = cb.spec.m;
        for (q, x) in queries.chunks_exact(dim).enumerate() {
            let qt = cb.query_table(x);
            let mut top = TopK::new(params.k);
            for &l in &probes[q * params.nprobe..][..params.nprobe] {
                let l = l as usize;
                let lut: Vec<f32> = cb.list_term(l).iter().zip(&qt).map(|(t, v)| t - 2.0 * v).collect();
                let base = cb.list_base(x, l);
                let list = &shard.lists[l];
                for i in 0..list.len {
                    let d = fastscan::exact_distance(&lut, base, list.codes.as_slice(), m, i, list.len);
                    top.push(Neighbor {
                        distance: d,
                        image: list.images.get(i, list.len),
                        feature: list.features.as_slice()[i],
                    });
                }
            }
            assert_eq!(got[q], top.into_sorted(), "query {q}");
        }
    }
}
