//! `delf eval ... --html FILE`: one self-contained page with the scores and every query's outcome, for a person to
//! see where a system fails.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use delf_eval::pairs::PairsScore;
use delf_eval::revisitop::{GroundTruth, SetupScore};

use crate::commands::search_report::escape;

const HEAD: &str = "<!doctype html><meta charset=utf-8><style>body{font-family:sans-serif;margin:2em}\
    td,th{padding:2px 8px;text-align:left}table{border-collapse:collapse;margin-bottom:2em}\
    tr:nth-child(even){background:#f4f4f4}\
    .ok{color:#070}.bad{color:#a00}.easy{background:#cfc}.hard{background:#cdf}.junk{background:#ddd}</style>";

fn write(path: &Path, html: &str) -> Result<()> {
    std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))
}

fn pct(v: f64) -> String {
    format!("{:.2}", v * 100.0)
}

/// The pairs report: scores, the threshold curve, one row per query.
pub fn pairs(path: &Path, s: &PairsScore, configured_min_inliers: usize) -> Result<()> {
    let mut h = format!("{HEAD}<title>delf eval pairs</title><h1>Pairs evaluation</h1>");
    let _ = write!(
        h,
        "<p>{} queries with positives, {} distractors: mAP {}, recall@1 {}, recall@5 {}; configured min_inliers {}</p>",
        s.positive_queries,
        s.distractor_queries,
        pct(s.map),
        pct(s.recall_at.first().map_or(0.0, |r| r.1)),
        pct(s.recall_at.get(1).map_or(0.0, |r| r.1)),
        configured_min_inliers
    );
    h += "<h2>Threshold curve</h2><table><tr><th>threshold</th><th>TPR</th><th>wrong</th><th>distractor FPR</th></tr>";
    for p in &s.curve {
        let chosen = s.chosen.is_some_and(|c| c.threshold == p.threshold);
        let _ = write!(
            h,
            "<tr{}><td>{:.0}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            if chosen { " class=ok" } else { "" },
            p.threshold,
            p.true_positive_rate,
            p.wrong_answer_rate,
            p.false_positive_rate
        );
    }
    h += "</table><h2>Queries</h2><table><tr><th>query</th><th>outcome</th><th>top result</th><th>score</th>\
          <th>first positive</th><th>AP</th></tr>";
    for q in &s.queries {
        let (kind, class) = match (q.positives, q.top_is_positive) {
            (0, _) => ("distractor", if q.top.is_some() { "bad" } else { "ok" }),
            (_, true) => ("correct", "ok"),
            (_, false) => ("wrong", "bad"),
        };
        let (top, score) =
            q.top.as_ref().map_or(("no result".to_string(), String::new()), |(i, s)| (escape(i), format!("{s:.0}")));
        let _ = write!(
            h,
            "<tr><td>{}</td><td class={class}>{kind}</td><td>{top}</td><td>{score}</td><td>{}</td><td>{}</td></tr>",
            escape(&q.query),
            q.first_positive.map_or("-".into(), |r| r.to_string()),
            q.ap.map_or("-".into(), pct)
        );
    }
    h += "</table>";
    write(path, &h)
}

/// The Revisited Oxford/Paris report: mAP and mP@k per setup, and per query its APs and first ten results
/// (green easy, blue hard, grey junk).
pub fn revisitop(path: &Path, gt: &GroundTruth, scores: &[SetupScore], rankings: &[Vec<usize>]) -> Result<()> {
    let mut h = format!(
        "{HEAD}<title>delf eval revisitop</title><h1>Revisited Oxford / Paris</h1><table><tr><th>setup</th><th>mAP</th>"
    );
    for (k, _) in scores.first().map_or(&[][..], |s| s.mp.as_slice()) {
        let _ = write!(h, "<th>mP@{k}</th>");
    }
    h += "</tr>";
    for s in scores {
        let _ = write!(h, "<tr><td>{:?}</td><td>{}</td>", s.setup, pct(s.map));
        for (_, p) in &s.mp {
            let _ = write!(h, "<td>{}</td>", pct(*p));
        }
        h += "</tr>";
    }
    h += "</table><table><tr><th>query</th>";
    for s in scores {
        let _ = write!(h, "<th>AP {:?}</th>", s.setup);
    }
    h += "<th>first ten results</th></tr>";
    for (q, name) in gt.qimlist.iter().enumerate() {
        let _ = write!(h, "<tr><td>{}</td>", escape(name));
        for s in scores {
            let _ = write!(h, "<td>{}</td>", s.aps.get(q).copied().flatten().map_or("-".into(), pct));
        }
        h += "<td>";
        let g = &gt.gnd[q];
        for &i in rankings.get(q).map_or(&[][..], Vec::as_slice).iter().take(10) {
            let class = if g.easy.contains(&i) {
                "easy"
            } else if g.hard.contains(&i) {
                "hard"
            } else if g.junk.contains(&i) {
                "junk"
            } else {
                ""
            };
            let _ = write!(h, "<span class='{class}'>{}</span> ", escape(&gt.imlist[i]));
        }
        h += "</td></tr>";
    }
    h += "</table>";
    write(path, &h)
}
