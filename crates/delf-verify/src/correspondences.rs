//! One-to-one correspondences. Photos with few distinctive features let many query keypoints match the same few
//! database keypoints (or keypoints of several pyramid levels at the same spot); any model then "explains" them.
//! Keeping each keypoint, and each location, at most once on each side removes that failure.

use std::collections::HashSet;

use delf_core::FeatureSet;

use crate::matching::Match;
use crate::point::Point;

/// Location key: the keypoint position rounded to whole pixels.
fn cell(x: f32, y: f32) -> (i64, i64) {
    (x.round() as i64, y.round() as i64)
}

/// Keeps the best (smallest distance) match per query keypoint, database keypoint, query location and database
/// location. The result is ordered by increasing distance.
pub fn one_to_one(matches: &[Match], a: &FeatureSet, b: &FeatureSet) -> Vec<Match> {
    one_to_one_by(
        matches,
        |q| (a.keypoints[q as usize].x, a.keypoints[q as usize].y),
        |t| (b.keypoints[t as usize].x, b.keypoints[t as usize].y),
    )
}

/// [`one_to_one`] with keypoint locations given by functions: `query_xy(m.query)` and `train_xy(m.train)` (search
/// uses it with database keypoints read from the index).
pub fn one_to_one_by(
    matches: &[Match],
    query_xy: impl Fn(u32) -> (f32, f32),
    train_xy: impl Fn(u32) -> (f32, f32),
) -> Vec<Match> {
    let mut sorted = matches.to_vec();
    sorted.sort_by(|m, n| m.distance.total_cmp(&n.distance).then(m.query.cmp(&n.query)).then(m.train.cmp(&n.train)));
    let (mut qi, mut ti) = (HashSet::new(), HashSet::new());
    let (mut ql, mut tl) = (HashSet::new(), HashSet::new());
    sorted
        .into_iter()
        .filter(|m| {
            let (ka, kb) = (query_xy(m.query), train_xy(m.train));
            let (ca, cb) = (cell(ka.0, ka.1), cell(kb.0, kb.1));
            let fresh = !qi.contains(&m.query) && !ti.contains(&m.train) && !ql.contains(&ca) && !tl.contains(&cb);
            if fresh {
                qi.insert(m.query);
                ti.insert(m.train);
                ql.insert(ca);
                tl.insert(cb);
            }
            fresh
        })
        .collect()
}

/// Query and database points of matches, in the same order.
pub fn points(matches: &[Match], a: &FeatureSet, b: &FeatureSet) -> (Vec<Point>, Vec<Point>) {
    matches
        .iter()
        .map(|m| {
            let (p, q) = (a.keypoints[m.query as usize], b.keypoints[m.train as usize]);
            (Point::new(f64::from(p.x), f64::from(p.y)), Point::new(f64::from(q.x), f64::from(q.y)))
        })
        .unzip()
}

/// Keypoint scale ratio (database / query) of each match, in the same order: what
/// [`crate::RansacConfig::scale_tolerance`] checks.
pub fn scale_ratios(matches: &[Match], a: &FeatureSet, b: &FeatureSet) -> Vec<f32> {
    matches.iter().map(|m| b.keypoints[m.train as usize].scale / a.keypoints[m.query as usize].scale).collect()
}
