//! Our ground truth for real-photo sets: each query with the ids of the database images that show the same thing;
//! a query with none is a distractor and must answer "no match".
//!
//! ```json
//! {"queries": [{"query": "graf3.png", "positives": ["graf1.png"]},
//!              {"query": "starry_night.jpg", "positives": []}]}
//! ```
//!
//! Ids match when equal or when one ends with `/` + the other (an index may store absolute paths). Metrics: mAP over
//! the returned ranking (a query answered "no match" scores 0), recall@k, and the threshold curve: for each score
//! threshold `t`, the true-positive rate (queries whose best result is a positive scoring at least `t`), the
//! wrong-answer rate (queries whose best result at or above `t` is not a positive) and the false-positive rate of
//! distractors (best result at or above `t`). The chosen threshold is the lowest with no distractor above it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::EvalError;

/// One query of the ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairQuery {
    /// The query image (path or id).
    pub query: String,
    /// Database ids that show the same thing (empty: a distractor).
    #[serde(default)]
    pub positives: Vec<String>,
}

/// The ground truth file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairsGroundTruth {
    /// Every query.
    pub queries: Vec<PairQuery>,
}

impl PairsGroundTruth {
    /// Reads and checks a ground-truth file (at least one query; no query twice).
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        let gt: Self = serde_json::from_str(&text).map_err(|e| EvalError::format(path, e.to_string()))?;
        if gt.queries.is_empty() {
            return Err(EvalError::format(path, "no queries"));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(q) = gt.queries.iter().find(|q| !seen.insert(q.query.as_str())) {
            return Err(EvalError::format(path, format!("query {} listed twice", q.query)));
        }
        Ok(gt)
    }
}

/// Whether two ids name the same image (equal, or one is a path ending in the other).
pub fn same_id(a: &str, b: &str) -> bool {
    a == b || a.ends_with(&format!("/{b}")) || b.ends_with(&format!("/{a}"))
}

/// AP of a ranking (ids, best first) against `positives` (ids matched by [`same_id`]; each positive counted once
/// even if returned twice); 0 for an empty ranking, `NaN` without positives.
pub fn average_precision<'a>(ranking: impl IntoIterator<Item = &'a str>, positives: &[String]) -> f64 {
    let mut found = std::collections::HashSet::new();
    let mut sum = 0.0;
    for (i, id) in ranking.into_iter().enumerate() {
        if let Some(p) = positives.iter().find(|p| same_id(id, p))
            && found.insert(p.as_str())
        {
            sum += found.len() as f64 / (i + 1) as f64;
        }
    }
    sum / positives.len() as f64
}

/// A system's answer to one query: (id, score), best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The query as the system saw it.
    pub query: String,
    /// Results, best first.
    pub results: Vec<(String, f64)>,
}

/// One point of the threshold curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThresholdPoint {
    /// Score threshold: results below it count as "no match".
    pub threshold: f64,
    /// Queries with positives whose best result is a positive at or above the threshold.
    pub true_positive_rate: f64,
    /// Queries with positives whose best result at or above the threshold is not a positive.
    pub wrong_answer_rate: f64,
    /// Distractor queries with a result at or above the threshold.
    pub false_positive_rate: f64,
}

/// The outcome of one query.
#[derive(Debug, Clone, Serialize)]
pub struct QueryOutcome {
    /// The query.
    pub query: String,
    /// Number of positives (0 = distractor).
    pub positives: usize,
    /// AP over the returned ranking (`None` for distractors).
    pub ap: Option<f64>,
    /// The best result and its score.
    pub top: Option<(String, f64)>,
    /// Whether the best result is a positive.
    pub top_is_positive: bool,
    /// 1-based rank of the first positive returned.
    pub first_positive: Option<usize>,
}

/// All scores.
#[derive(Debug, Clone, Serialize)]
pub struct PairsScore {
    /// Mean AP over queries with positives.
    pub map: f64,
    /// Fraction of queries with positives that have one in the first k results.
    pub recall_at: Vec<(usize, f64)>,
    /// Queries with positives.
    pub positive_queries: usize,
    /// Distractor queries.
    pub distractor_queries: usize,
    /// Threshold curve, by increasing threshold (one point per distinct best score, plus 0).
    pub curve: Vec<ThresholdPoint>,
    /// The lowest threshold with no distractor at or above it.
    pub chosen: Option<ThresholdPoint>,
    /// Per query, in ground-truth order.
    pub queries: Vec<QueryOutcome>,
}

/// Scores `answers` (matched to ground-truth queries by [`same_id`]) against `gt`. A ground-truth query without an
/// answer is an error: every query must have been run.
pub fn evaluate(gt: &PairsGroundTruth, answers: &[Answer], ks: &[usize]) -> Result<PairsScore, String> {
    let mut outcomes = Vec::with_capacity(gt.queries.len());
    for q in &gt.queries {
        let answer = answers
            .iter()
            .find(|a| same_id(&a.query, &q.query))
            .ok_or_else(|| format!("no answer for query {}", q.query))?;
        let is_pos = |id: &str| q.positives.iter().any(|p| same_id(id, p));
        let hits: Vec<usize> =
            answer.results.iter().enumerate().filter(|(_, r)| is_pos(&r.0)).map(|(i, _)| i).collect();
        let ap = (!q.positives.is_empty())
            .then(|| average_precision(answer.results.iter().map(|r| r.0.as_str()), &q.positives));
        let top = answer.results.first().cloned();
        outcomes.push(QueryOutcome {
            query: q.query.clone(),
            positives: q.positives.len(),
            ap,
            top_is_positive: top.as_ref().is_some_and(|t| is_pos(&t.0)),
            top,
            first_positive: hits.first().map(|i| i + 1),
        });
    }
    let with: Vec<&QueryOutcome> = outcomes.iter().filter(|o| o.positives > 0).collect();
    let without: Vec<&QueryOutcome> = outcomes.iter().filter(|o| o.positives == 0).collect();
    let rate = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let map = with.iter().filter_map(|o| o.ap).sum::<f64>() / with.len().max(1) as f64;
    let recall_at = ks
        .iter()
        .map(|&k| (k, rate(with.iter().filter(|o| o.first_positive.is_some_and(|r| r <= k)).count(), with.len())))
        .collect();
    let mut thresholds: Vec<f64> = outcomes.iter().filter_map(|o| o.top.as_ref().map(|t| t.1)).collect();
    thresholds.push(0.0);
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    let curve: Vec<ThresholdPoint> = thresholds
        .iter()
        .map(|&t| {
            let above = |o: &&&QueryOutcome| o.top.as_ref().is_some_and(|x| x.1 >= t);
            ThresholdPoint {
                threshold: t,
                true_positive_rate: rate(with.iter().filter(above).filter(|o| o.top_is_positive).count(), with.len()),
                wrong_answer_rate: rate(with.iter().filter(above).filter(|o| !o.top_is_positive).count(), with.len()),
                false_positive_rate: rate(without.iter().filter(above).count(), without.len()),
            }
        })
        .collect();
    let chosen = curve.iter().find(|p| p.false_positive_rate == 0.0).copied();
    Ok(PairsScore {
        map,
        recall_at,
        positive_queries: with.len(),
        distractor_queries: without.len(),
        curve,
        chosen,
        queries: outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(q: &str, r: &[(&str, f64)]) -> Answer {
        Answer { query: q.into(), results: r.iter().map(|(i, s)| (i.to_string(), *s)).collect() }
    }

    #[test]
    fn scores_by_hand() {
        let gt = PairsGroundTruth {
            queries: vec![
                PairQuery { query: "a2.jpg".into(), positives: vec!["a1.jpg".into(), "a3.jpg".into()] },
                PairQuery { query: "b2.jpg".into(), positives: vec!["b1.jpg".into()] },
                PairQuery { query: "x.jpg".into(), positives: vec![] },
                PairQuery { query: "y.jpg".into(), positives: vec![] },
            ],
        };
        let answers = vec![
            // Paths on the system side, bare names in the ground truth.
            answer(
                "/data/q/a2.jpg",
                &[("/db/a1.jpg", 90.0), ("/db/z.jpg", 40.0), ("/db/a3.jpg", 30.0), ("/db/a1.jpg", 20.0)],
            ),
            answer("/data/q/b2.jpg", &[("/db/z.jpg", 35.0), ("/db/b1.jpg", 33.0)]),
            answer("/data/q/x.jpg", &[("/db/z.jpg", 28.0)]),
            answer("/data/q/y.jpg", &[]),
        ];
        let s = evaluate(&gt, &answers, &[1, 5]).unwrap();
        // a2: hits at 1 and 3 -> (1 + 2/3) / 2; b2: hit at 2 -> 1/2.
        let expected = ((1.0 + 2.0 / 3.0) / 2.0 + 0.5) / 2.0;
        assert!((s.map - expected).abs() < 1e-12, "{}", s.map);
        assert_eq!(s.recall_at, vec![(1, 0.5), (5, 1.0)]);
        assert_eq!((s.positive_queries, s.distractor_queries), (2, 2));
        // Thresholds 0, 28, 35, 90. At 28: x is a false positive (1/2), b2's top is wrong (1/2).
        let at = |t: f64| *s.curve.iter().find(|p| p.threshold == t).unwrap();
        assert_eq!(at(28.0).false_positive_rate, 0.5);
        assert_eq!(at(28.0).wrong_answer_rate, 0.5);
        assert_eq!(at(28.0).true_positive_rate, 0.5);
        // The lowest threshold without distractors: 35 (b2's wrong top still counts as wrong there).
        let chosen = s.chosen.unwrap();
        assert_eq!(chosen.threshold, 35.0);
        assert_eq!((chosen.true_positive_rate, chosen.wrong_answer_rate), (0.5, 0.5));
        assert!(evaluate(&gt, &answers[..3], &[1]).unwrap_err().contains("y.jpg"));
    }
}
