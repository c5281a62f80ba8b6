//! Revisited Oxford / Paris (Radenovic et al., CVPR 2018), computed exactly as the protocol's `compute_map` and
//! `compute_ap` (revisitop `evaluate.py`): per query, positives and ignored images by setup (Easy: positives easy,
//! ignored junk + hard; Medium: positives easy + hard, ignored junk; Hard: positives hard, ignored junk + easy);
//! ignored images are removed from the ranking, AP is the trapezoidal rule over recall steps, queries without
//! positives are skipped, and mP@k uses `min(k, position of the last positive)` as the denominator, like the original.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Serialize;
use serde_pickle::{HashableValue, Value};

use crate::error::EvalError;

/// The ground truth of one query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryGnd {
    /// Database image numbers (into `imlist`) of easy positives.
    pub easy: Vec<usize>,
    /// Hard positives.
    pub hard: Vec<usize>,
    /// Junk (always ignored).
    pub junk: Vec<usize>,
    /// Query region `[x1, y1, x2, y2]` in query-image pixels; queries are cropped to it before extraction.
    pub bbx: Option<[f64; 4]>,
}

/// A dataset's ground truth (`gnd_roxford5k.pkl`, `gnd_rparis6k.pkl`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroundTruth {
    /// Database image names (without extension).
    pub imlist: Vec<String>,
    /// Query image names (without extension).
    pub qimlist: Vec<String>,
    /// One entry per query, in `qimlist` order.
    pub gnd: Vec<QueryGnd>,
}

/// The three setups of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Setup {
    /// Positives: easy; ignored: junk and hard.
    Easy,
    /// Positives: easy and hard; ignored: junk.
    Medium,
    /// Positives: hard; ignored: junk and easy.
    Hard,
}

impl Setup {
    /// All three, in the protocol's order.
    pub const ALL: [Setup; 3] = [Setup::Easy, Setup::Medium, Setup::Hard];

    /// (positives, ignored) of a query under this setup.
    pub fn split(self, q: &QueryGnd) -> (Vec<usize>, Vec<usize>) {
        let cat = |a: &[usize], b: &[usize]| [a, b].concat();
        match self {
            Setup::Easy => (q.easy.clone(), cat(&q.junk, &q.hard)),
            Setup::Medium => (cat(&q.easy, &q.hard), q.junk.clone()),
            Setup::Hard => (q.hard.clone(), cat(&q.junk, &q.easy)),
        }
    }
}

/// The protocol's AP: `pos` are the 0-based ranks of the positives once ignored images are removed (ascending),
/// `nres` the number of positives. Trapezoids between consecutive recall steps of `1 / nres`.
pub fn compute_ap(pos: &[usize], nres: usize) -> f64 {
    let step = 1.0 / nres as f64;
    pos.iter()
        .enumerate()
        .map(|(j, &rank)| {
            let p0 = if rank == 0 { 1.0 } else { j as f64 / rank as f64 };
            let p1 = (j + 1) as f64 / (rank + 1) as f64;
            (p0 + p1) * step / 2.0
        })
        .sum()
}

/// Scores of one setup.
#[derive(Debug, Clone, Serialize)]
pub struct SetupScore {
    /// The setup.
    pub setup: Setup,
    /// Mean AP over the queries that have positives.
    pub map: f64,
    /// Mean precision at each k (same queries).
    pub mp: Vec<(usize, f64)>,
    /// AP per query; `None` for queries without positives (skipped, as in the protocol).
    pub aps: Vec<Option<f64>>,
}

/// Completes a ranking into a permutation of `0..n`: images the system did not rank follow in list order (the
/// protocol ranks every database image; a retrieval system returns the best ones).
pub fn complete_ranking(ranking: &[usize], n: usize) -> Vec<usize> {
    let mut seen = vec![false; n];
    let mut out = Vec::with_capacity(n);
    for &i in ranking {
        if i < n && !seen[i] {
            seen[i] = true;
            out.push(i);
        }
    }
    out.extend((0..n).filter(|&i| !seen[i]));
    out
}

/// Evaluates one setup. `rankings[q]` ranks database images (numbers into `imlist`) for query `q`, best first;
/// it is completed with [`complete_ranking`].
pub fn evaluate(gt: &GroundTruth, rankings: &[Vec<usize>], setup: Setup, kappas: &[usize]) -> SetupScore {
    let n = gt.imlist.len();
    let mut aps = Vec::with_capacity(gt.gnd.len());
    let (mut map, mut pr, mut evaluated) = (0.0, vec![0.0; kappas.len()], 0usize);
    for (q, qgnd) in gt.gnd.iter().enumerate() {
        let (ok, junk) = setup.split(qgnd);
        if ok.is_empty() {
            aps.push(None);
            continue;
        }
        let ranking = complete_ranking(rankings.get(q).map_or(&[][..], Vec::as_slice), n);
        let (ok_set, junk_set): (HashSet<usize>, HashSet<usize>) =
            (ok.iter().copied().collect(), junk.iter().copied().collect());
        let mut pos: Vec<usize> = Vec::new();
        let mut junk_before = 0;
        for (rank, image) in ranking.iter().enumerate() {
            // An image both positive and ignored counts as a positive (np.in1d is evaluated for each list
            // separately and junk only shifts the positives after it): keep the original's behaviour.
            if ok_set.contains(image) {
                pos.push(rank - junk_before);
            }
            if junk_set.contains(image) && !ok_set.contains(image) {
                junk_before += 1;
            }
        }
        let ap = compute_ap(&pos, ok.len());
        map += ap;
        aps.push(Some(ap));
        evaluated += 1;
        let last = pos.iter().max().map_or(0, |&p| p + 1);
        for (slot, &k) in pr.iter_mut().zip(kappas) {
            let kq = last.min(k).max(1);
            *slot += pos.iter().filter(|&&p| p < kq).count() as f64 / kq as f64;
        }
    }
    let denom = evaluated.max(1) as f64;
    SetupScore { setup, map: map / denom, mp: kappas.iter().zip(pr).map(|(&k, p)| (k, p / denom)).collect(), aps }
}

fn key<'a>(d: &'a BTreeMap<HashableValue, Value>, k: &str) -> Option<&'a Value> {
    d.get(&HashableValue::String(k.to_string())).or_else(|| d.get(&HashableValue::Bytes(k.as_bytes().to_vec())))
}

fn strings(v: &Value, what: &str, path: &Path) -> Result<Vec<String>, EvalError> {
    let items = match v {
        Value::List(l) | Value::Tuple(l) => l,
        _ => return Err(EvalError::format(path, format!("{what} is not a list"))),
    };
    items
        .iter()
        .map(|i| match i {
            Value::String(s) => Ok(s.clone()),
            Value::Bytes(b) => Ok(String::from_utf8_lossy(b).into_owned()),
            _ => Err(EvalError::format(path, format!("{what} holds a non-string"))),
        })
        .collect()
}

fn numbers(v: &Value, what: &str, path: &Path) -> Result<Vec<f64>, EvalError> {
    let items = match v {
        Value::List(l) | Value::Tuple(l) => l,
        Value::None => {
            return Err(EvalError::format(
                path,
                format!("{what} is not a plain list (NumPy arrays cannot be read: save lists, e.g. with .tolist())"),
            ));
        }
        _ => return Err(EvalError::format(path, format!("{what} is not a list"))),
    };
    items
        .iter()
        .map(|i| match i {
            Value::I64(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            Value::Int(x) => x.to_string().parse().map_err(|_| EvalError::format(path, format!("{what}: {x}"))),
            _ => Err(EvalError::format(path, format!("{what} holds a non-number"))),
        })
        .collect()
}

impl GroundTruth {
    /// Reads the original ground-truth pickle: a dict with `imlist`, `qimlist` and `gnd` (per query `easy`,
    /// `hard`, `junk`, `bbx`). Image numbers are checked against `imlist`.
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
        let options = serde_pickle::DeOptions::new().replace_unresolved_globals().decode_strings();
        let value = serde_pickle::value_from_slice(&bytes, options)
            .map_err(|e| EvalError::format(path, format!("not a readable pickle: {e}")))?;
        let Value::Dict(top) = value else { return Err(EvalError::format(path, "the pickle is not a dict")) };
        let get = |k: &str| key(&top, k).ok_or_else(|| EvalError::format(path, format!("no `{k}` key")));
        let imlist = strings(get("imlist")?, "imlist", path)?;
        let qimlist = strings(get("qimlist")?, "qimlist", path)?;
        let Value::List(entries) = get("gnd")? else { return Err(EvalError::format(path, "`gnd` is not a list")) };
        if entries.len() != qimlist.len() {
            return Err(EvalError::format(
                path,
                format!("{} gnd entries for {} queries", entries.len(), qimlist.len()),
            ));
        }
        let mut gnd = Vec::with_capacity(entries.len());
        for (q, e) in entries.iter().enumerate() {
            let Value::Dict(d) = e else { return Err(EvalError::format(path, format!("gnd[{q}] is not a dict"))) };
            let list = |k: &str| -> Result<Vec<usize>, EvalError> {
                let Some(v) = key(d, k) else { return Ok(Vec::new()) };
                numbers(v, &format!("gnd[{q}].{k}"), path)?
                    .into_iter()
                    .map(|x| {
                        if x >= 0.0 && x.fract() == 0.0 && (x as usize) < imlist.len() {
                            Ok(x as usize)
                        } else {
                            Err(EvalError::format(path, format!("gnd[{q}].{k} names image {x}, not in imlist")))
                        }
                    })
                    .collect()
            };
            let bbx = match key(d, "bbx") {
                None | Some(Value::None) => None,
                Some(v) => {
                    let b = numbers(v, &format!("gnd[{q}].bbx"), path)?;
                    let b: [f64; 4] =
                        b.try_into().map_err(|_| EvalError::format(path, format!("gnd[{q}].bbx is not 4 numbers")))?;
                    Some(b)
                }
            };
            gnd.push(QueryGnd { easy: list("easy")?, hard: list("hard")?, junk: list("junk")?, bbx });
        }
        Ok(Self { imlist, qimlist, gnd })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn ap_by_hand() {
        // Positives at ranks 0 and 2 of 2: (1 + 1)/2 * 0.5 + (1/2 + 2/3)/2 * 0.5.
        close(compute_ap(&[0, 2], 2), 0.5 + (0.5 + 2.0 / 3.0) / 4.0);
        // A perfect ranking.
        close(compute_ap(&[0, 1, 2], 3), 1.0);
        // One of two positives never retrieved contributes nothing.
        close(compute_ap(&[0], 2), 0.5);
    }

    fn gt(easy: Vec<usize>, hard: Vec<usize>, junk: Vec<usize>) -> GroundTruth {
        GroundTruth {
            imlist: (0..6).map(|i| format!("db{i}")).collect(),
            qimlist: vec!["q".into()],
            gnd: vec![QueryGnd { easy, hard, junk, bbx: None }],
        }
    }

    #[test]
    fn junk_before_and_after_positives() {
        // Ranking 0..6; positives (medium) 1 and 4, junk 0 and 3: after removal the positives sit at 0 and 2.
        let g = gt(vec![1], vec![4], vec![0, 3]);
        let s = evaluate(&g, &[vec![0, 1, 2, 3, 4, 5]], Setup::Medium, &[1, 5]);
        close(s.map, compute_ap(&[0, 2], 2));
        // mP@1: kq = 1, one positive at position 1. mP@5: kq = min(5, 3) = 3, two positives -> 2/3.
        close(s.mp[0].1, 1.0);
        close(s.mp[1].1, 2.0 / 3.0);
        // Easy: positive 1 only, hard image 4 ignored like junk.
        let e = evaluate(&g, &[vec![0, 1, 2, 3, 4, 5]], Setup::Easy, &[1]);
        close(e.map, 1.0);
        // Hard: positive 4; junk 0, 3 and easy 1 removed: it is at position 1 after 2.
        let h = evaluate(&g, &[vec![0, 1, 2, 3, 4, 5]], Setup::Hard, &[1]);
        close(h.map, compute_ap(&[1], 1));
        close(h.mp[0].1, 0.0);
    }

    #[test]
    fn queries_without_positives_are_skipped_and_rankings_completed() {
        let mut g = gt(vec![], vec![2], vec![]);
        g.gnd.push(QueryGnd { easy: vec![5], hard: vec![], junk: vec![], bbx: None });
        g.qimlist.push("q2".into());
        // Query 0 has no easy positive: skipped under Easy. Query 1 ranks nothing: 5 is appended last (position 5).
        let s = evaluate(&g, &[vec![2], vec![]], Setup::Easy, &[10]);
        assert_eq!(s.aps[0], None);
        close(s.map, compute_ap(&[5], 1));
        assert_eq!(complete_ranking(&[3, 3, 9, 1], 4), vec![3, 1, 0, 2]);
    }
}
