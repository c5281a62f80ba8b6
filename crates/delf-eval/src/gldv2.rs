//! Google Landmarks v2 (Kaggle 2019 challenges), computed as the reference `metrics.py` of the DELF repository:
//!
//! - Retrieval mAP@100: per query, `sum over the first 100 predictions of precision@i for each new correct image`,
//!   divided by `min(relevant, 100)`; duplicates are skipped but still take their position; averaged over every
//!   query of the solution (a query without predictions scores 0).
//! - Recognition GAP (micro-AP): one (landmark, score) per query, all predictions sorted by score (descending), then
//!   id, then landmark; `sum over correct predictions of precision so far`, divided by the number of queries that
//!   have a landmark. Predictions for non-landmark queries (an empty `landmarks` in the solution) are wrong and
//!   count in the precision denominators, unless `ignore_non_landmark_queries`.
//! - Public and Private are scored apart, each solution subset with the predictions of its own queries (as the
//!   reference splits them when reading); `all` scores both subsets together. Predictions for `Ignored` queries are
//!   dropped; predictions for ids the solution does not list at all (the reference raises) are reported and not
//!   scored.
//!
//! CSV formats are Kaggle's: solution `id,images,Usage` (retrieval) or `id,landmarks,Usage` (recognition), values
//! space-separated, `Usage` `Public`, `Private` or `Ignored`; predictions `id,images` or `id,landmarks` with
//! `landmarks` = `"LABEL SCORE"` (empty = no prediction).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::error::EvalError;

/// Per query id, the expected image ids or landmarks.
pub type Expected = BTreeMap<String, Vec<String>>;

/// A parsed solution: per query id, the expected images (retrieval) or landmarks (recognition; empty for a
/// non-landmark query), and its usage.
#[derive(Debug, Clone, Default)]
pub struct Solution {
    /// Expected values per scored query.
    pub expected: BTreeMap<String, Vec<String>>,
    /// `Public` / `Private` per scored query.
    pub usage: HashMap<String, String>,
    /// Queries marked `Ignored`: their predictions are dropped.
    pub ignored: HashSet<String>,
}

impl Solution {
    /// The predictions of scored queries, and the ids of predictions for queries the solution does not list (sorted).
    /// Predictions for ignored queries are dropped.
    pub fn known<T>(&self, predictions: BTreeMap<String, T>) -> (BTreeMap<String, T>, Vec<String>) {
        let mut unknown = Vec::new();
        let mut known = BTreeMap::new();
        for (id, p) in predictions {
            if self.expected.contains_key(&id) {
                known.insert(id, p);
            } else if !self.ignored.contains(&id) {
                unknown.push(id);
            }
        }
        (known, unknown)
    }
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

/// A landmark label as compared: numbers as numbers (the reference parses them as integers, so `07` is `7`), other
/// labels as they are.
fn landmark(label: &str) -> String {
    label.parse::<u64>().map_or_else(|_| label.to_string(), |n| n.to_string())
}

/// Reads a solution CSV; `column` is `images` (retrieval) or `landmarks` (recognition). Recognition rows with no
/// landmark are non-landmark queries (kept, with nothing expected, as in the reference).
pub fn read_solution(path: &Path, column: &str) -> Result<Solution, EvalError> {
    let mut s = Solution::default();
    for (line, f) in rows(path, &["id", column, "Usage"])? {
        let usage = f[2].as_str();
        if !matches!(usage, "Public" | "Private" | "Ignored") {
            return Err(EvalError::format(path, format!("line {line}: Usage {usage:?} (Public, Private or Ignored)")));
        }
        let twice = || EvalError::format(path, format!("line {line}: query {} listed twice", f[0]));
        if s.expected.contains_key(&f[0]) || s.ignored.contains(&f[0]) {
            return Err(twice());
        }
        if usage == "Ignored" {
            s.ignored.insert(f[0].clone());
            continue;
        }
        let values: Vec<String> = if column == "landmarks" {
            f[1].split_whitespace().map(landmark).collect()
        } else {
            f[1].split_whitespace().map(str::to_string).collect()
        };
        s.expected.insert(f[0].clone(), values);
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
                let p = Recognition { landmark: landmark(label), score };
                if out.insert(f[0].clone(), p).is_some() {
                    return Err(EvalError::format(path, format!("line {line}: query {} predicted twice", f[0])));
                }
            }
            _ => return Err(EvalError::format(path, format!("line {line}: expected \"LABEL SCORE\", got {:?}", f[1]))),
        }
    }
    Ok(out)
}

/// Retrieval mAP@`max_predictions` (Kaggle: 100) over the queries of `solution`; predictions for other queries
/// are not looked at ([`Solution::known`] reports them).
pub fn mean_average_precision(
    predictions: &BTreeMap<String, Vec<String>>,
    solution: &BTreeMap<String, Vec<String>>,
    max_predictions: usize,
) -> f64 {
    if solution.is_empty() {
        return 0.0;
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
    total / solution.len() as f64
}

/// Recognition GAP over the queries of `solution` (predictions for other queries are not looked at). With
/// `ignore_non_landmark_queries`, predictions for queries without a landmark are skipped (the reference's
/// `ignore_non_gt_test_images`); by default they count as wrong.
pub fn global_average_precision(
    predictions: &BTreeMap<String, Recognition>,
    solution: &BTreeMap<String, Vec<String>>,
    ignore_non_landmark_queries: bool,
) -> f64 {
    let positives = solution.values().filter(|e| !e.is_empty()).count();
    if positives == 0 {
        return 0.0;
    }
    let mut sorted: Vec<(&String, &Recognition, &Vec<String>)> =
        predictions.iter().filter_map(|(q, p)| solution.get(q).map(|e| (q, p, e))).collect();
    sorted.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(b.0)).then(a.1.landmark.cmp(&b.1.landmark)));
    let (mut gap, mut total, mut correct) = (0.0, 0usize, 0usize);
    for (_, p, expected) in sorted {
        if ignore_non_landmark_queries && expected.is_empty() {
            continue;
        }
        total += 1;
        if expected.contains(&p.landmark) {
            correct += 1;
            gap += correct as f64 / total as f64;
        }
    }
    gap / positives as f64
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
    /// Scored queries in the solution (Public and Private; for recognition, non-landmark queries included).
    pub queries: usize,
    /// Predicted ids that the solution does not list (not scored; the reference refuses such a file).
    pub unknown_predictions: Vec<String>,
}

/// Scores a Kaggle predictions CSV against its solution CSV: the task (retrieval mAP@100 or recognition GAP) comes
/// from the solution's second column.
pub fn evaluate(
    solution: &Path,
    predictions: &Path,
    ignore_non_landmark_queries: bool,
) -> Result<Gldv2Score, EvalError> {
    let text = std::fs::read_to_string(solution).map_err(|e| EvalError::io(solution, e))?;
    let column = text.lines().next().and_then(|l| l.split(',').nth(1)).map(str::trim).unwrap_or_default();
    let (task, metric) = match column {
        "images" => ("retrieval", "map@100"),
        "landmarks" => ("recognition", "gap"),
        other => {
            return Err(EvalError::format(
                solution,
                format!("second column {other:?}: expected `images` (retrieval) or `landmarks` (recognition)"),
            ));
        }
    };
    let sol = read_solution(solution, column)?;
    let part = |usage: &str| subset(&sol, usage);
    let (public, private) = (part("Public"), part("Private"));
    let scores = |score: &dyn Fn(&Expected) -> f64| {
        let on = |s: &Expected| (!s.is_empty()).then(|| score(s));
        (score(&sol.expected), on(&public), on(&private))
    };
    let (unknown, (all, public, private)) = if task == "retrieval" {
        let (p, unknown) = sol.known(read_retrieval_predictions(predictions)?);
        (unknown, scores(&|s| mean_average_precision(&p, s, 100)))
    } else {
        let (p, unknown) = sol.known(read_recognition_predictions(predictions)?);
        (unknown, scores(&|s| global_average_precision(&p, s, ignore_non_landmark_queries)))
    };
    Ok(Gldv2Score {
        task: task.into(),
        metric: metric.into(),
        all,
        public,
        private,
        queries: sol.expected.len(),
        unknown_predictions: unknown,
    })
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
        let m = mean_average_precision(&predictions, &solution, 100);
        let expected = ((1.0 + 2.0 / 3.0) / 2.0 + 0.5 + 0.0) / 3.0;
        assert!((m - expected).abs() < 1e-12, "{m} vs {expected}");
        let sol = Solution { expected: solution, ignored: ["q8".to_string()].into(), ..Default::default() };
        let (known, unknown) = sol.known(map(&[("q1", &["a"]), ("q8", &["a"]), ("q9", &["a"])]));
        assert_eq!(
            (known.keys().map(String::as_str).collect::<Vec<_>>(), unknown),
            (vec!["q1"], vec!["q9".to_string()])
        );
        // Only the first max_predictions count, and the denominator is min(relevant, max).
        let m2 = mean_average_precision(&map(&[("q2", &["x", "c"])]), &map(&[("q2", &["c"])]), 1);
        assert_eq!(m2, 0.0);
    }

    #[test]
    fn gap_by_hand_with_non_landmark_queries_and_ties() {
        let solution = map(&[("q1", &["L1"]), ("q2", &["L2"]), ("q3", &["L3"]), ("n1", &[])]);
        let p = |l: &str, s: f64| Recognition { landmark: l.into(), score: s };
        let predictions: BTreeMap<String, Recognition> = [
            ("q1".to_string(), p("L1", 0.9)),  // correct, rank 1
            ("n1".to_string(), p("L1", 0.8)),  // a non-landmark query: wrong, counts in the denominators
            ("x9".to_string(), p("L1", 0.95)), // not a query of this solution (another subset): not looked at
            ("q2".to_string(), p("L2", 0.8)),  // tie with n1 on score: ids sort n1 before q2 -> rank 3, correct
            ("q3".to_string(), p("L9", 0.1)),  // wrong
        ]
        .into_iter()
        .collect();
        let gap = global_average_precision(&predictions, &solution, false);
        assert!((gap - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12, "{gap}");
        let ignoring = global_average_precision(&predictions, &solution, true);
        assert!((ignoring - (1.0 + 1.0) / 3.0).abs() < 1e-12, "{ignoring}");
    }

    /// Public and Private each see only their own queries' predictions; Ignored predictions vanish; an id the
    /// solution does not list is reported, not scored.
    #[test]
    fn public_and_private_are_scored_apart_from_csv_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            path
        };
        let solution = write(
            "solution.csv",
            "id,landmarks,Usage\npa,1,Public\npb,2,Public\npn,,Public\nva,3,Private\nvn,,Private\nig,,Ignored\n",
        );
        // Sorted by score: ig (dropped), va 0.9 right, pn 0.8 wrong, pa 0.7 right, vn 0.6 wrong, pb 0.5 wrong,
        // zz (unknown).
        // Labels are numbers: `03` is landmark 3, as in the reference.
        let predictions = write(
            "predictions.csv",
            "id,landmarks\nig,1 0.99\nva,03 0.9\npn,1 0.8\npa,1 0.7\nvn,3 0.6\npb,9 0.5\nzz,1 0.95\n",
        );
        let s = evaluate(&solution, &predictions, false).unwrap();
        assert_eq!((s.task.as_str(), s.queries), ("recognition", 5));
        // Public: pn (wrong), pa (right, 1/2), pb (wrong); 2 queries with a landmark.
        assert!((s.public.unwrap() - 0.5 / 2.0).abs() < 1e-12, "{s:?}");
        // Private: va (right, 1/1), vn (wrong); 1 query with a landmark.
        assert!((s.private.unwrap() - 1.0).abs() < 1e-12, "{s:?}");
        // All: va 1/1, pn, pa 2/3, vn, pb; 3 queries with a landmark.
        assert!((s.all - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12, "{s:?}");
        assert_eq!(s.unknown_predictions, vec!["zz".to_string()]);
        // Ignoring non-landmark queries: Public pa 1/1; All va 1/1, pa 2/2.
        let s = evaluate(&solution, &predictions, true).unwrap();
        assert!((s.public.unwrap() - 0.5).abs() < 1e-12 && (s.all - 2.0 / 3.0).abs() < 1e-12, "{s:?}");
        let twice = write("twice.csv", "id,landmarks,Usage\npa,1,Public\npa,,Ignored\n");
        assert!(
            evaluate(&twice, &predictions, false).unwrap_err().to_string().contains("line 3: query pa listed twice")
        );
    }
}
