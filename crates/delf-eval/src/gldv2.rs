//! Google Landmarks v2 (Kaggle 2019 challenges), computed as the reference `metrics.py` of the DELF repository:
//!
//! - Retrieval mAP@100: per query, `sum over the first 100 predictions of precision@i for each new correct image`,
//!   divided by `min(relevant, 100)`; duplicates are skipped but still take their position; averaged over every
//!   query of the solution (a query without predictions scores 0).
//! - Recognition GAP (micro-AP): one (landmark, score) per query, all predictions sorted by score (descending), then
//!   id, then landmark; `sum over correct predictions of precision so far`, divided by the number of queries that
//!   have a landmark. Queries without a landmark (not in the solution) still count in the precision denominators.
//!
//! CSV formats are Kaggle's: solution `id,images,Usage` (retrieval) or `id,landmarks,Usage` (recognition), values
//! space-separated, `Usage` `Public`, `Private` or `Ignored` (ignored rows are dropped); predictions `id,images` or
//! `id,landmarks` with `landmarks` = `"LABEL SCORE"` (empty = no prediction).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::error::EvalError;

/// A parsed solution: per query id, the expected images (retrieval) or landmarks (recognition), and its usage.
#[derive(Debug, Clone, Default)]
pub struct Solution {
    /// Expected values per query.
    pub expected: BTreeMap<String, Vec<String>>,
    /// `Public` / `Private` per query.
    pub usage: HashMap<String, String>,
}

/// One recognition prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognition {
    /// Predicted landmark.
    pub landmark: String,
    /// Confidence.
    pub score: f64,
}

fn rows(path: &Path, expected_header: &[&str]) -> Result<Vec<(usize, Vec<String>)>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| EvalError::format(path, "empty file"))?;
    let header: Vec<&str> = header.split(',').map(str::trim).collect();
    if header.len() < expected_header.len() || header[..expected_header.len()] != *expected_header {
        return Err(EvalError::format(path, format!("header {header:?}, expected {expected_header:?} first")));
    }
    lines
        .map(|(i, l)| {
            let fields: Vec<String> = l.split(',').map(|f| f.trim().to_string()).collect();
            if fields.len() != header.len() {
                return Err(EvalError::format(
                    path,
                    format!("line {}: {} fields, header has {}", i + 1, fields.len(), header.len()),
                ));
            }
            Ok((i + 1, fields))
        })
        .collect()
}

/// Reads a solution CSV; `column` is `images` (retrieval) or `landmarks` (recognition). Recognition rows with no
/// landmark are non-landmark queries: left out of the solution, as in the reference.
pub fn read_solution(path: &Path, column: &str) -> Result<Solution, EvalError> {
    let mut s = Solution::default();
    for (line, f) in rows(path, &["id", column, "Usage"])? {
        let usage = f[2].as_str();
        if !matches!(usage, "Public" | "Private" | "Ignored") {
            return Err(EvalError::format(path, format!("line {line}: Usage {usage:?} (Public, Private or Ignored)")));
        }
        if usage == "Ignored" {
            continue;
        }
        let values: Vec<String> = f[1].split_whitespace().map(str::to_string).collect();
        if values.is_empty() && column == "landmarks" {
            continue;
        }
        if s.expected.insert(f[0].clone(), values).is_some() {
            return Err(EvalError::format(path, format!("line {line}: query {} listed twice", f[0])));
        }
        s.usage.insert(f[0].clone(), usage.to_string());
    }
    Ok(s)
}

/// Reads retrieval predictions (`id,images`).
pub fn read_retrieval_predictions(path: &Path) -> Result<BTreeMap<String, Vec<String>>, EvalError> {
    let mut out = BTreeMap::new();
    for (line, f) in rows(path, &["id", "images"])? {
        let images = f[1].split_whitespace().map(str::to_string).collect();
        if out.insert(f[0].clone(), images).is_some() {
            return Err(EvalError::format(path, format!("line {line}: query {} predicted twice", f[0])));
        }
    }
    Ok(out)
}

/// Reads recognition predictions (`id,landmarks` with `"LABEL SCORE"`; empty = none).
pub fn read_recognition_predictions(path: &Path) -> Result<BTreeMap<String, Recognition>, EvalError> {
    let mut out = BTreeMap::new();
    for (line, f) in rows(path, &["id", "landmarks"])? {
        let parts: Vec<&str> = f[1].split_whitespace().collect();
        match parts.as_slice() {
            [] => continue,
            [label, score] => {
                let score: f64 =
                    score.parse().ok().filter(|s: &f64| s.is_finite()).ok_or_else(|| {
                        EvalError::format(path, format!("line {line}: score {score:?} is not a number"))
                    })?;
                let p = Recognition { landmark: (*label).to_string(), score };
                if out.insert(f[0].clone(), p).is_some() {
                    return Err(EvalError::format(path, format!("line {line}: query {} predicted twice", f[0])));
                }
            }
            _ => return Err(EvalError::format(path, format!("line {line}: expected \"LABEL SCORE\", got {:?}", f[1]))),
        }
    }
    Ok(out)
}

/// Retrieval mAP@`max_predictions` (Kaggle: 100). Predictions for queries outside the solution are an error in the
/// reference; here they are returned as the second value so the caller can report them.
pub fn mean_average_precision(
    predictions: &BTreeMap<String, Vec<String>>,
    solution: &BTreeMap<String, Vec<String>>,
    max_predictions: usize,
) -> (f64, Vec<String>) {
    let unknown: Vec<String> = predictions.keys().filter(|k| !solution.contains_key(*k)).cloned().collect();
    if solution.is_empty() {
        return (0.0, unknown);
    }
    let mut total = 0.0;
    for (query, expected) in solution {
        let Some(predicted) = predictions.get(query) else { continue };
        let expected: HashSet<&String> = expected.iter().collect();
        let mut seen = HashSet::new();
        let (mut ap, mut correct) = (0.0, 0usize);
        for (i, image) in predicted.iter().take(max_predictions).enumerate() {
            if seen.insert(image) && expected.contains(image) {
                correct += 1;
                ap += correct as f64 / (i + 1) as f64;
            }
        }
        let denominator = expected.len().min(max_predictions);
        if denominator > 0 {
            total += ap / denominator as f64;
        }
    }
    (total / solution.len() as f64, unknown)
}

/// Recognition GAP. With `ignore_non_landmark_queries`, predictions for queries outside the solution are skipped
/// (the reference's `ignore_non_gt_test_images`); by default they count as wrong.
pub fn global_average_precision(
    predictions: &BTreeMap<String, Recognition>,
    solution: &BTreeMap<String, Vec<String>>,
    ignore_non_landmark_queries: bool,
) -> f64 {
    if solution.is_empty() {
        return 0.0;
    }
    let mut sorted: Vec<(&String, &Recognition)> = predictions.iter().collect();
    sorted.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(b.0)).then(a.1.landmark.cmp(&b.1.landmark)));
    let (mut gap, mut total, mut correct) = (0.0, 0usize, 0usize);
    for (query, p) in sorted {
        let expected = solution.get(query);
        if ignore_non_landmark_queries && expected.is_none() {
            continue;
        }
        total += 1;
        if expected.is_some_and(|e| e.contains(&p.landmark)) {
            correct += 1;
            gap += correct as f64 / total as f64;
        }
    }
    gap / solution.len() as f64
}

/// Scores of a GLDv2 evaluation, overall and per usage.
#[derive(Debug, Clone, Serialize)]
pub struct Gldv2Score {
    /// `retrieval` or `recognition`.
    pub task: String,
    /// `map@100` or `gap`.
    pub metric: String,
    /// Over every non-ignored query.
    pub all: f64,
    /// Over the `Public` queries.
    pub public: Option<f64>,
    /// Over the `Private` queries.
    pub private: Option<f64>,
    /// Queries in the solution.
    pub queries: usize,
    /// Predicted ids that the solution does not know (retrieval; ignored in the score).
    pub unknown_predictions: Vec<String>,
}

/// The solution restricted to one usage.
pub fn subset(solution: &Solution, usage: &str) -> BTreeMap<String, Vec<String>> {
    solution
        .expected
        .iter()
        .filter(|(k, _)| solution.usage.get(*k).is_some_and(|u| u == usage))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[test]
    fn map_at_100_by_hand_with_duplicates_and_missing_queries() {
        let solution = map(&[("q1", &["a", "b"]), ("q2", &["c"]), ("q3", &["d"])]);
        // q1: a at 1, a again (skipped, position 2 used), b at 3 -> (1/1 + 2/3) / 2. q2: c at 2 -> 1/2.
        // q3: no prediction -> 0. Unknown q9 is reported, not scored.
        let predictions = map(&[("q1", &["a", "a", "b"]), ("q2", &["x", "c"]), ("q9", &["a"])]);
        let (m, unknown) = mean_average_precision(&predictions, &solution, 100);
        let expected = ((1.0 + 2.0 / 3.0) / 2.0 + 0.5 + 0.0) / 3.0;
        assert!((m - expected).abs() < 1e-12, "{m} vs {expected}");
        assert_eq!(unknown, vec!["q9".to_string()]);
        // Only the first max_predictions count, and the denominator is min(relevant, max).
        let (m2, _) = mean_average_precision(&map(&[("q2", &["x", "c"])]), &map(&[("q2", &["c"])]), 1);
        assert_eq!(m2, 0.0);
    }

    #[test]
    fn gap_by_hand_with_non_landmark_queries_and_ties() {
        let solution = map(&[("q1", &["L1"]), ("q2", &["L2"]), ("q3", &["L3"])]);
        let p = |l: &str, s: f64| Recognition { landmark: l.into(), score: s };
        let predictions: BTreeMap<String, Recognition> = [
            ("q1".to_string(), p("L1", 0.9)), // correct, rank 1
            ("n1".to_string(), p("L1", 0.8)), // a non-landmark query: wrong, counts in the denominators
            ("q2".to_string(), p("L2", 0.8)), // tie with n1 on score: ids sort n1 before q2 -> rank 3, correct
            ("q3".to_string(), p("L9", 0.1)), // wrong
        ]
        .into_iter()
        .collect();
        let gap = global_average_precision(&predictions, &solution, false);
        assert!((gap - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12, "{gap}");
        let ignoring = global_average_precision(&predictions, &solution, true);
        assert!((ignoring - (1.0 + 1.0) / 3.0).abs() < 1e-12, "{ignoring}");
    }
}
