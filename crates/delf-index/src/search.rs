//! Batched search: all descriptors of a query image at once. Each query descriptor is assigned to its `nprobe`
//! nearest cells; then the probed lists are scanned one by one (in parallel across lists), each list read once
//! for every query descriptor that probes it, and every shard's copy of that list is scanned with the same lookup
//! table. Results use one total order, so they do not depend on threads or on how images are split into shards.

use rayon::prelude::*;

use crate::error::{IndexError, Result};
use crate::scan::ScanKernel;
use crate::shard::Shard;
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
            let mut scratch = Scratch::new(cb.spec.code_bytes());
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
            || (vec![None::<TopK>; nq], Scratch::new(cb.spec.code_bytes())),
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
}

impl Scratch {
    fn new(m: usize) -> Self {
        Self { lut: vec![0.0; m * 256], dist: Vec::new() }
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
    /// Lists that some query probes and some shard holds entries in.
    fn work(&self, by_list: &[Vec<u32>]) -> Vec<usize> {
        (0..by_list.len())
            .filter(|&l| !by_list[l].is_empty() && self.shards.iter().any(|s| s.lists[l].len > 0))
            .collect()
    }

    /// Scans list `l` of every shard for query `q`, offering candidates within `bound` to `top`.
    fn scan(&self, l: usize, q: usize, term: Option<&[f32]>, bound: f32, top: &mut TopK, s: &mut Scratch) {
        let qt = &self.qtables[q];
        match term {
            Some(t) => s.lut.iter_mut().zip(t.iter().zip(qt)).for_each(|(o, (t, x))| *o = t - 2.0 * x),
            None => s.lut.copy_from_slice(qt),
        }
        let base = self.cb.list_base(&self.queries[q * self.dim..][..self.dim], l);
        let m = self.cb.spec.code_bytes();
        for shard in self.shards {
            let list = &shard.lists[l];
            if list.len == 0 {
                continue;
            }
            s.dist.resize(list.len, 0.0);
            self.kernel.scan(&s.lut, base, list.codes.as_slice(), m, &mut s.dist);
            let (images, features) = (list.images.as_slice(), list.features.as_slice());
            let mut thr = top.threshold().min(bound);
            for (i, &d) in s.dist.iter().enumerate() {
                if d > thr || (!shard.deleted.is_empty() && shard.deleted.contains(&images[i])) {
                    continue;
                }
                top.push(Neighbor { distance: d, image: images[i], feature: features[i] });
                thr = top.threshold().min(bound);
            }
        }
    }
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
