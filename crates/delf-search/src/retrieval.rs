//! Retrieval of one query image: ANN neighbours of every query descriptor, votes per database image, geometric
//! verification of the best-voted candidates with the matched keypoints, and a ranking by inliers. Candidates with
//! fewer than `min_inliers` inliers are not returned, so a query showing nothing in the index gets "no match".

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::time::Instant;

use delf_core::FeatureSet;
use delf_index::{Neighbor, ScanKernel, SearchParams, ShardedIndex};
use delf_verify::correspondences::one_to_one_by;
use delf_verify::{FittedModel, Match, Point, VerifyConfig, verify_correspondences};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::SearchError;

/// Settings of a retrieval.
#[derive(Debug, Clone)]
pub struct RetrievalConfig {
    /// ANN parameters (K neighbours per query descriptor, probes).
    pub search: SearchParams,
    /// Best-voted images verified geometrically (reference: 100).
    pub candidates: usize,
    /// Results returned at most.
    pub top: usize,
    /// RANSAC model and settings, and the scoring policy (`min_inliers`).
    pub verify: VerifyConfig,
    /// Query rotations: angles (degrees, the upright pass excluded) of the extra passes a query is searched at when
    /// its upright search finds too little (empty = upright only). One-process search and the coordinator apply the
    /// same policy; the extraction of a rotated pass is the extractor's (`delf_model::RotatedPass`).
    pub rotations: Vec<f64>,
    /// The rotated passes run only when the upright query's best result has fewer inliers than this (0 = always).
    pub rotations_below: usize,
}

impl RetrievalConfig {
    /// Default inliers a search result needs. Pairwise matching uses 15; a search verifies up to 100 candidates,
    /// and on the opencv-doc retrieval split with the shipped attention head the best chance candidate of a
    /// distractor query reached 15 inliers while the weakest true match (excluding the aero pair, which no scorer
    /// verifies) had 24 (docs/search.md; with feature-norm scores: 18 and 41).
    pub const DEFAULT_MIN_INLIERS: usize = 20;

    /// Whether a query whose upright search's best result scored `best` (`None`: no result) is searched again at
    /// the rotations.
    pub fn wants_rotations(&self, best: Option<usize>) -> bool {
        !self.rotations.is_empty() && (self.rotations_below == 0 || best.is_none_or(|b| b < self.rotations_below))
    }

    /// These settings with the ANN parameters an index's manifest stores (what it was built and tuned for).
    pub fn for_index(self, manifest: &crate::IndexManifest) -> Self {
        Self { search: manifest.search, ..self }
    }
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        let mut verify = VerifyConfig::robust();
        verify.policy.min_inliers = Self::DEFAULT_MIN_INLIERS;
        Self {
            search: SearchParams::default(),
            candidates: 100,
            top: 10,
            verify,
            rotations: Vec::new(),
            rotations_below: 0,
        }
    }
}

/// One verified database image.
#[derive(Debug, Clone)]
pub struct VerifiedImage {
    /// Global image number.
    pub image: u32,
    /// Image id as indexed.
    pub id: String,
    /// Query descriptors that had this image among their K neighbours.
    pub votes: usize,
    /// Inliers of the geometric model: the score.
    pub score: usize,
    /// The query pass its correspondences came from (0: the upright query; see [`correspondences`]).
    pub pass: usize,
    /// The fitted model (query -> database image coordinates).
    pub model: Option<FittedModel>,
    /// Query keypoints of the one-to-one correspondences.
    pub query_points: Vec<Point>,
    /// Database keypoints of the same correspondences.
    pub db_points: Vec<Point>,
    /// Inlier flag per correspondence.
    pub inliers: Vec<bool>,
}

/// The answer to one query.
#[derive(Debug, Clone)]
pub struct Retrieval {
    /// Matches, best first (score, then votes, then image number); empty means "no match".
    pub results: Vec<VerifiedImage>,
    /// Candidates verified.
    pub verified: usize,
    /// Every image that got a vote, by votes (then image number): the order before verification, which evaluation
    /// uses to rank the images beyond the verified candidates.
    pub voted: Vec<(u32, usize)>,
    /// Milliseconds in the ANN search and vote count.
    pub ann_ms: f64,
    /// Milliseconds in geometric verification.
    pub verify_ms: f64,
}

/// Retrieves the images of `index` that show what `query` shows.
pub fn retrieve(
    index: &ShardedIndex,
    query: &FeatureSet,
    config: &RetrievalConfig,
    kernel: ScanKernel,
) -> Result<Retrieval, SearchError> {
    Ok(retrieve_extending(index, query, &[], Vec::new(), config, kernel)?.0)
}

/// [`retrieve`] of a query made of several extraction passes (`passes`: the number of features of each, in order;
/// empty = one pass), whose first `known.len()` descriptors were searched before (`known` holds their neighbour
/// lists, as an earlier call returned them): only the others go through the ANN search, so a query grown by more
/// passes (other rotations) does not search its first ones twice. Each candidate is verified with the
/// correspondences of one pass ([`correspondences`]). Returns the neighbour lists of every descriptor too.
pub fn retrieve_extending(
    index: &ShardedIndex,
    query: &FeatureSet,
    passes: &[usize],
    known: Vec<Vec<Neighbor>>,
    config: &RetrievalConfig,
    kernel: ScanKernel,
) -> Result<(Retrieval, Vec<Vec<Neighbor>>), SearchError> {
    let expected = &index.shards()[0].info().descriptor_fingerprint;
    if query.fingerprint.as_str() != expected {
        return Err(SearchError::FingerprintMismatch { index: expected.clone(), query: query.fingerprint.to_string() });
    }
    check_passes(passes, query.len())?;
    if query.is_empty() {
        let empty = Retrieval { results: Vec::new(), verified: 0, voted: Vec::new(), ann_ms: 0.0, verify_ms: 0.0 };
        return Ok((empty, Vec::new()));
    }
    let started = Instant::now();
    let mut neighbors = known;
    neighbors.truncate(query.len());
    let rest = &query.descriptors[neighbors.len() * query.dim..];
    if !rest.is_empty() {
        neighbors.extend(index.search(rest, query.dim, &config.search, kernel)?);
    }
    let voted = vote(&neighbors, usize::MAX);
    let candidates = &voted[..config.candidates.min(voted.len())];
    let ann_ms = started.elapsed().as_secs_f64() * 1e3;

    let started = Instant::now();
    let wanted: FxHashSet<u32> = candidates.iter().map(|&(image, _)| image).collect();
    let matches = correspondences(&neighbors, &wanted, passes, config, |_, _| f32::INFINITY);
    let results: Vec<VerifiedImage> = candidates
        .par_iter()
        .filter_map(|&(image, votes)| {
            let db_kp = index.keypoints_of(image)?;
            let entry = index.image(image)?;
            let putative = matches.get(&image).map_or(&[][..], Vec::as_slice);
            let kp = |f: u32| db_kp.get(f as usize).copied().unwrap_or([f32::NAN; 3]);
            let (query_points, db_points, scale_ratios) = candidate_points(putative, query, kp);
            let (model, inliers, _) = verify_correspondences(&query_points, &db_points, &scale_ratios, &config.verify);
            let score = inliers.iter().filter(|&&b| b).count();
            let pass = pass_of(putative, passes);
            let id = entry.name.clone();
            Some(VerifiedImage { image, id, votes, score, pass, model, query_points, db_points, inliers })
        })
        .collect();
    let verified = results.len();
    let results = rank(results, config);
    let verify_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok((Retrieval { results, verified, voted, ann_ms, verify_ms }, neighbors))
}

/// The one-to-one correspondences of a candidate as point pairs (query, database) and keypoint scale ratios
/// (database / query, NaN where the index stores no scale), from its putative matches and a lookup of the
/// candidate's keypoint `(x, y, scale)` by feature number.
pub fn candidate_points(
    putative: &[Match],
    query: &FeatureSet,
    db_kp: impl Fn(u32) -> [f32; 3],
) -> (Vec<Point>, Vec<Point>, Vec<f32>) {
    let qk = |q: u32| (query.keypoints[q as usize].x, query.keypoints[q as usize].y);
    let kept = one_to_one_by(putative, qk, |t| {
        let p = db_kp(t);
        (p[0], p[1])
    });
    let mut out = (Vec::with_capacity(kept.len()), Vec::with_capacity(kept.len()), Vec::with_capacity(kept.len()));
    for m in &kept {
        let (a, b) = (&query.keypoints[m.query as usize], db_kp(m.train));
        out.0.push(Point::new(f64::from(a.x), f64::from(a.y)));
        out.1.push(Point::new(f64::from(b[0]), f64::from(b[1])));
        out.2.push(b[2] / a.scale);
    }
    out
}

/// Keeps the verified candidates that pass the scoring policy, best first (score, then votes, then image number),
/// at most `config.top`.
pub fn rank(mut results: Vec<VerifiedImage>, config: &RetrievalConfig) -> Vec<VerifiedImage> {
    results.retain(|r| config.verify.policy.is_match(r.score));
    results.sort_by(|a, b| b.score.cmp(&a.score).then(b.votes.cmp(&a.votes)).then(a.image.cmp(&b.image)));
    results.truncate(config.top);
    results
}

/// Checks that pass lengths (empty = one pass) add up to a query's `features`.
pub fn check_passes(passes: &[usize], features: usize) -> Result<(), SearchError> {
    let total: usize = passes.iter().sum();
    if passes.is_empty() || total == features {
        return Ok(());
    }
    Err(SearchError::InvalidQuery(format!("its passes hold {total} features in all, the query {features}")))
}

/// Putative correspondences per candidate image from the ANN neighbours, filtered like pairwise matching
/// (`verify.matching`): a query descriptor's nearest neighbour inside the candidate must be within `max_distance`
/// and pass the ratio test against its second-nearest inside the same image. When that second one is not among
/// the K neighbours, it lies beyond the K-th (or beyond the search's distance cutoff), which bounds the ratio from
/// the safe side: a match is never kept on a guess.
///
/// Lists a cluster merged from shard answers cut short (`delf_index::shard_cut`) may lack neighbours of some images:
/// `unseen(list, image)` is the squared distance from which an unlisted neighbour of `image` may exist in list
/// `list` (`f32::INFINITY` where the list is complete: always, in one process), and bounds the second-nearest the
/// same way.
///
/// A query of several passes (`passes`: features per pass, in order; see [`retrieve_extending`]) keeps, per
/// candidate, only the correspondences of the pass that has the most of them (ties: the earlier pass): a turned
/// copy is explained by the rotation closest to its own, and pooling every pass's chance matches would hand
/// RANSAC several times as many of them for an unrelated image (docs/search.md).
pub fn correspondences<S: BuildHasher>(
    neighbors: &[Vec<Neighbor>],
    wanted: &HashSet<u32, S>,
    passes: &[usize],
    config: &RetrievalConfig,
    unseen: impl Fn(usize, u32) -> f32,
) -> HashMap<u32, Vec<Match>> {
    let matching = &config.verify.matching;
    let k = config.search.k;
    let mut out: HashMap<u32, Vec<Match>> = HashMap::new();
    // Per list: (image, nearest distance, its feature, second-nearest distance) of each wanted image in it. Lists
    // hold K (reference: 60) neighbours, so a short vector searched linearly beats a map.
    let mut firsts: Vec<(u32, f32, u16, Option<f32>)> = Vec::new();
    for (q, list) in neighbors.iter().enumerate() {
        // Beyond the last listed neighbour, the nearest unseen one is at least this far (Euclidean).
        let horizon = if list.len() >= k {
            list.last().map_or(f32::INFINITY, |n| n.distance.max(0.0).sqrt())
        } else {
            config.search.max_distance.unwrap_or(f32::INFINITY)
        };
        firsts.clear();
        for n in list.iter().filter(|n| wanted.contains(&n.image)) {
            let d = n.distance.max(0.0).sqrt();
            match firsts.iter_mut().find(|e| e.0 == n.image) {
                Some(e) => e.3 = e.3.or(Some(d)),
                None => firsts.push((n.image, d, n.feature, None)),
            }
        }
        for &(image, d1, feature, d2) in &firsts {
            let d2 = d2.unwrap_or_else(|| horizon.min(unseen(q, image).max(0.0).sqrt()));
            if matching.max_distance.is_some_and(|m| d1 > m) || matching.ratio.is_some_and(|r| d1 >= r * d2) {
                continue;
            }
            out.entry(image).or_default().push(Match { query: q as u32, train: u32::from(feature), distance: d1 });
        }
    }
    if passes.len() > 1 {
        out.values_mut().for_each(|m| keep_best_pass(m, passes));
    }
    out
}

/// The pass (`passes`: features per pass) that a candidate's correspondences, as [`correspondences`] kept them,
/// come from: 0 for one pass or none.
pub fn pass_of(matches: &[Match], passes: &[usize]) -> usize {
    matches.first().map_or(0, |m| pass_holding(m.query, passes))
}

/// The pass (`passes`: features per pass) that holds query feature `query`; `passes.len()` past the last one, and
/// 0 for no passes.
fn pass_holding(query: u32, passes: &[usize]) -> usize {
    let mut end = 0;
    passes
        .iter()
        .position(|&n| {
            end += n;
            (query as usize) < end
        })
        .unwrap_or(passes.len())
}

/// Keeps the matches of the pass (`passes`: features per pass) that holds the most of them; `matches` are in
/// query order, as [`correspondences`] makes them, so each pass's matches are one run.
fn keep_best_pass(matches: &mut Vec<Match>, passes: &[usize]) {
    let (mut start, mut best) = (0, 0..0);
    for run in matches.chunk_by(|a, b| pass_holding(a.query, passes) == pass_holding(b.query, passes)) {
        if run.len() > best.len() {
            best = start..start + run.len();
        }
        start += run.len();
    }
    matches.truncate(best.end);
    matches.drain(..best.start);
}

/// Votes per database image (one per query descriptor that has the image among its neighbours), the `n` best
/// first (ties by image number).
pub fn vote(neighbors: &[Vec<Neighbor>], n: usize) -> Vec<(u32, usize)> {
    // Image -> (votes, last query descriptor that voted): one map operation per neighbour.
    let mut votes: FxHashMap<u32, (usize, usize)> = FxHashMap::default();
    for (q, list) in neighbors.iter().enumerate() {
        for nb in list {
            let e = votes.entry(nb.image).or_insert((0, usize::MAX));
            if e.1 != q {
                *e = (e.0 + 1, q);
            }
        }
    }
    let mut ranked: Vec<(u32, usize)> = votes.into_iter().map(|(image, (v, _))| (image, v)).collect();
    let order = |a: &(u32, usize), b: &(u32, usize)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
    if n < ranked.len() {
        ranked.select_nth_unstable_by(n, order);
        ranked.truncate(n);
    }
    ranked.sort_unstable_by(order);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_count_each_query_descriptor_once_per_image() {
        let nb = |image, feature| Neighbor { distance: 0.1, image, feature };
        let lists = vec![vec![nb(3, 0), nb(3, 1), nb(5, 0)], vec![nb(5, 2)], vec![nb(7, 0), nb(3, 4)]];
        assert_eq!(vote(&lists, 10), vec![(3, 2), (5, 2), (7, 1)]);
        assert_eq!(vote(&lists, 1), vec![(3, 2)]);
    }

    /// A candidate's correspondences come from its best pass only; one pass (or none given) keeps them all.
    #[test]
    fn each_candidate_keeps_the_matches_of_its_best_pass() {
        let m = |q: u32| Match { query: q, train: q, distance: 0.1 };
        let all: Vec<Match> = [0, 1, 4, 5, 6, 9].into_iter().map(m).collect();
        let kept = |passes: &[usize]| {
            let mut v = all.clone();
            keep_best_pass(&mut v, passes);
            v.iter().map(|m| m.query).collect::<Vec<_>>()
        };
        assert_eq!(kept(&[4, 4, 4]), vec![4, 5, 6]);
        assert_eq!(kept(&[2, 2, 6]), vec![4, 5, 6, 9]);
        assert_eq!(kept(&[3, 3, 6]), vec![0, 1], "ties go to the earlier pass");
        assert_eq!(kept(&[12]), vec![0, 1, 4, 5, 6, 9]);
        assert_eq!((pass_of(&[m(5)], &[4, 4, 4]), pass_of(&[m(5)], &[]), pass_of(&[], &[4, 4])), (1, 0, 0));
        assert!(check_passes(&[4, 4], 8).is_ok() && check_passes(&[], 8).is_ok());
        assert!(matches!(check_passes(&[4, 3], 8), Err(SearchError::InvalidQuery(_))));
    }

    /// Searching a query whose first descriptors' neighbours are known gives what searching it whole gives.
    #[test]
    fn extending_a_searched_query_equals_searching_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::synthetic::SyntheticIndex {
            images: 40,
            per_image: 200,
            dim: 40,
            shards: 2,
            spec: "IVF16,PQ20x8r".parse().unwrap(),
            search: SearchParams { k: 20, nprobe: 4, max_distance: None },
            train_sample: 5_000,
            seed: 3,
        };
        let (manifest, mut queries) = spec.build(dir.path(), 1).unwrap();
        let query = queries.remove(0);
        let index = ShardedIndex::load(dir.path(), 2).unwrap();
        let config = RetrievalConfig { search: manifest.search, ..RetrievalConfig::default() };
        let kernel = ScanKernel::detect();
        let whole = retrieve(&index, &query, &config, kernel).unwrap();
        assert!(!whole.results.is_empty());
        let half = query.len() / 2;
        let first = FeatureSet {
            keypoints: query.keypoints[..half].to_vec(),
            descriptors: query.descriptors[..half * query.dim].to_vec(),
            ..query.clone()
        };
        let (_, known) = retrieve_extending(&index, &first, &[], Vec::new(), &config, kernel).unwrap();
        assert_eq!(known.len(), half);
        let (extended, all) = retrieve_extending(&index, &query, &[], known, &config, kernel).unwrap();
        assert_eq!(all.len(), query.len());
        assert_eq!(extended.voted, whole.voted);
        let scores = |r: &Retrieval| r.results.iter().map(|v| (v.image, v.score)).collect::<Vec<_>>();
        assert_eq!(scores(&extended), scores(&whole));
    }
}
