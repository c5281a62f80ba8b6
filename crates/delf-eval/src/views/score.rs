//! Scores of one system on a [`ViewsSet`]: recall@1 and mAP of the answers a user gets (results at or above the
//! system's threshold; a query answered "no match" scores 0), and the true-positive rate at a false-positive rate
//! of zero (the share of queries whose best result is right and scores above every distractor's best result),
//! overall and per transformation bin, per rotation of the rotation bin, and per scale of every rendered view.

use serde::Serialize;

use super::{Bin, ViewQuery, ViewsSet};
use crate::pairs::{average_precision, same_id};

/// A system's ranked results for one query, best first, every verified candidate (no threshold applied).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// The query file as in the set.
    pub query: String,
    /// (database id, score), best first.
    pub results: Vec<(String, f64)>,
}

/// Scores of one group of queries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The group: `all`, a bin name, `rotation N` (absolute degrees) or `scale A-B`.
    pub group: String,
    /// Queries with a partner in the group.
    pub queries: usize,
    /// Share whose first answer (at or above the threshold) is the partner.
    pub recall_at_1: f64,
    /// Mean AP of the answers at or above the threshold.
    pub map: f64,
    /// Share whose best result is the partner and scores above every distractor's best result.
    pub tpr_at_fpr0: f64,
}

/// All scores of one system.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewsScore {
    /// The threshold the answers were cut at.
    pub threshold: f64,
    /// Rows: `all`, the bins, the rotations, the scales.
    pub rows: Vec<Row>,
    /// Distractor queries.
    pub distractors: usize,
    /// Distractor queries with an answer at or above the threshold.
    pub distractors_answered: usize,
    /// The best score of any distractor (the threshold of FPR = 0 lies just above it).
    pub best_distractor_score: f64,
}

/// The scale groups of rendered views.
pub const SCALE_GROUPS: [(f64, f64); 3] = [(0.0, 0.5), (0.5, 0.7), (0.7, 1.01)];

/// Scores `ranked` (one entry per query of `set`, matched by file) at `threshold`.
pub fn score(set: &ViewsSet, ranked: &[Ranked], threshold: f64) -> Result<ViewsScore, String> {
    let find = |q: &ViewQuery| {
        ranked.iter().find(|r| r.query == q.file).ok_or_else(|| format!("no answer for query {}", q.file))
    };
    let mut best_distractor = 0.0f64;
    let mut distractors = 0;
    let mut answered = 0;
    for q in set.queries.iter().filter(|q| q.positives.is_empty()) {
        let r = find(q)?;
        distractors += 1;
        let top = r.results.first().map_or(0.0, |x| x.1);
        best_distractor = best_distractor.max(top);
        if top >= threshold && !r.results.is_empty() {
            answered += 1;
        }
    }
    // (query, recall@1, AP, right above every distractor)
    let mut outcomes: Vec<(&ViewQuery, f64, f64, f64)> = Vec::new();
    for q in set.queries.iter().filter(|q| !q.positives.is_empty()) {
        let r = find(q)?;
        let is_pos = |id: &str| q.positives.iter().any(|p| same_id(id, p));
        let answers: Vec<&(String, f64)> = r.results.iter().filter(|x| x.1 >= threshold).collect();
        let r1 = if answers.first().is_some_and(|a| is_pos(&a.0)) { 1.0 } else { 0.0 };
        let ap = average_precision(answers.iter().map(|a| a.0.as_str()), &q.positives);
        let tpr = match r.results.first() {
            Some((id, s)) if is_pos(id) && *s > best_distractor => 1.0,
            _ => 0.0,
        };
        outcomes.push((q, r1, ap, tpr));
    }
    let row = |group: String, pick: &dyn Fn(&ViewQuery) -> bool| {
        let sel: Vec<_> = outcomes.iter().filter(|o| pick(o.0)).collect();
        let n = sel.len().max(1) as f64;
        Row {
            group,
            queries: sel.len(),
            recall_at_1: sel.iter().map(|o| o.1).sum::<f64>() / n,
            map: sel.iter().map(|o| o.2).sum::<f64>() / n,
            tpr_at_fpr0: sel.iter().map(|o| o.3).sum::<f64>() / n,
        }
    };
    let mut rows = vec![row("all".into(), &|_| true), row("hard views".into(), &|q| q.rendered)];
    for bin in Bin::RENDERED.into_iter().chain([Bin::RealView]) {
        rows.push(row(bin.name().into(), &|q| q.bin == bin));
    }
    let mut angles: Vec<i64> =
        set.queries.iter().filter(|q| q.bin == Bin::Rotation).map(|q| q.rotation.abs().round() as i64).collect();
    angles.sort_unstable();
    angles.dedup();
    for a in angles {
        rows.push(row(format!("rotation {a}"), &|q| q.bin == Bin::Rotation && q.rotation.abs().round() as i64 == a));
    }
    for (lo, hi) in SCALE_GROUPS {
        let name = format!("scale {lo:.2}-{:.2}", hi.min(1.0));
        rows.push(row(name, &|q| q.rendered && q.scale >= lo && q.scale < hi));
    }
    Ok(ViewsScore {
        threshold,
        rows,
        distractors,
        distractors_answered: answered,
        best_distractor_score: best_distractor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(file: &str, positives: &[&str], bin: Bin, rotation: f64, scale: f64) -> ViewQuery {
        ViewQuery {
            file: file.into(),
            rendered: !matches!(bin, Bin::Distractor | Bin::RealView),
            positives: positives.iter().map(|s| s.to_string()).collect(),
            bin,
            rotation,
            scale,
            recipe: None,
        }
    }

    fn r(query: &str, results: &[(&str, f64)]) -> Ranked {
        Ranked { query: query.into(), results: results.iter().map(|(i, s)| (i.to_string(), *s)).collect() }
    }

    #[test]
    fn scores_by_hand() {
        let set = ViewsSet {
            seed: 1,
            database: vec!["a.jpg".into(), "b.jpg".into(), "c.jpg".into()],
            queries: vec![
                q("v1.jpg", &["a.jpg"], Bin::Rotation, 90.0, 0.8),
                q("v2.jpg", &["b.jpg"], Bin::Rotation, -90.0, 0.6),
                q("v3.jpg", &["c.jpg"], Bin::Scale, 2.0, 0.4),
                q("d1.jpg", &[], Bin::Distractor, 0.0, 1.0),
            ],
        };
        let ranked = vec![
            r("v1.jpg", &[("/data/a.jpg", 80.0), ("/data/b.jpg", 3.0)]),
            // The partner second.
            r("v2.jpg", &[("/data/c.jpg", 25.0), ("/data/b.jpg", 22.0)]),
            r("v3.jpg", &[("/data/c.jpg", 18.0)]),
            r("d1.jpg", &[("/data/a.jpg", 19.0)]),
        ];
        let s = score(&set, &ranked, 20.0).unwrap();
        let get = |g: &str| s.rows.iter().find(|r| r.group == g).unwrap().clone();
        // v1 right at 1; v2 right at 2 (AP 1/2); v3: nothing at or above 20 -> "no match", 0.
        assert_eq!(get("all").recall_at_1, 1.0 / 3.0);
        assert_eq!(get("all").map, 0.5);
        assert_eq!(get("rotation").queries, 2);
        // Both ways of a turn share a row.
        assert_eq!((get("rotation 90").queries, get("rotation 90").recall_at_1), (2, 0.5));
        // TPR at FPR 0: the distractor's best is 19; v1 (80, right) counts; v2's best is wrong; v3 18 < 19.
        assert_eq!(get("all").tpr_at_fpr0, 1.0 / 3.0);
        assert_eq!(s.best_distractor_score, 19.0);
        assert_eq!((s.distractors, s.distractors_answered), (1, 0));
        assert_eq!(get("scale 0.00-0.50").queries, 1);
        assert_eq!(get("scale 0.70-1.00").queries, 1);
        assert!(score(&set, &ranked[..2], 20.0).is_err());
    }
}
