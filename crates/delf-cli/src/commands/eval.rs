//! `delf eval revisitop | gldv2 | pairs | views`: the published retrieval metrics (delf-eval) over searches of an
//! index (run by delf-bench's `protocols`), or over answers computed elsewhere, printed as tables, JSON or HTML.

use std::path::Path;

use anyhow::{Result, bail};
use delf_bench::protocols::{Answers, answers, revisitop_rankings};
use delf_engine::Config;
use delf_eval::gldv2;
use delf_eval::pairs::{self, PairsGroundTruth};
use delf_eval::revisitop::Setup;

use crate::cli::EvalCommand;
use crate::progress::StageBars;

/// Runs an evaluation.
pub fn run(command: &EvalCommand, config: &Config) -> Result<()> {
    match command {
        EvalCommand::Gldv2 { solution, predictions, ignore_non_landmark_queries, json } => {
            gldv2_eval(solution, predictions, *ignore_non_landmark_queries, *json)
        }
        EvalCommand::Pairs { gt, index, queries_dir, results, device, json, html } => {
            let source = match (results, index) {
                (Some(r), _) => Answers::File(r),
                (None, Some(index)) => {
                    Answers::Search { index, queries_dir: queries_dir.as_deref(), device: device.as_deref() }
                }
                (None, None) => bail!("give --index DIR (search now) or --results FILE (answers computed before)"),
            };
            pairs_eval(gt, source, *json, html.as_deref(), config)
        }
        EvalCommand::Revisitop { gnd, images, index, device, json, html } => {
            revisitop_eval(gnd, images, index.as_deref(), device.as_deref(), *json, html.as_deref(), config)
        }
        EvalCommand::Views(args) => delf_bench::views::run(args, config, &mut StageBars::default()),
    }
}

fn gldv2_eval(solution: &Path, predictions: &Path, ignore: bool, json: bool) -> Result<()> {
    let result = gldv2::evaluate(solution, predictions, ignore)?;
    let (task, metric) = (&result.task, &result.metric);
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}", v * 100.0));
        println!("GLDv2 {task}: {metric} over {} queries", result.queries);
        println!("  {:>8}  {:>8}  {:>8}", "all", "public", "private");
        println!("  {:>8}  {:>8}  {:>8}", pct(Some(result.all)), pct(result.public), pct(result.private));
        if !result.unknown_predictions.is_empty() {
            println!("  {} predicted ids are not in the solution (not scored)", result.unknown_predictions.len());
        }
    }
    Ok(())
}

fn pairs_eval(gt_path: &Path, source: Answers<'_>, json: bool, html: Option<&Path>, config: &Config) -> Result<()> {
    let gt = PairsGroundTruth::load(gt_path)?;
    let answers = answers(&gt, gt_path, source, config)?;
    let score = pairs::evaluate(&gt, &answers, &[1, 5]).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(path) = html {
        crate::commands::eval_report::pairs(path, &score, config.search.min_inliers)?;
    }
    if json {
        println!("{}", serde_json::to_string(&score)?);
        return Ok(());
    }
    println!(
        "{} queries with positives, {} distractors: mAP {:.2}, recall@1 {:.2}, recall@5 {:.2}",
        score.positive_queries,
        score.distractor_queries,
        score.map * 100.0,
        score.recall_at[0].1 * 100.0,
        score.recall_at[1].1 * 100.0
    );
    println!("  {:>9}  {:>8}  {:>8}  {:>8}", "threshold", "TPR", "wrong", "FPR");
    for p in &score.curve {
        println!(
            "  {:>9.0}  {:>8.3}  {:>8.3}  {:>8.3}",
            p.threshold, p.true_positive_rate, p.wrong_answer_rate, p.false_positive_rate
        );
    }
    match score.chosen {
        Some(p) => println!(
            "lowest threshold with no distractor above it: {:.0} inliers (TPR {:.3}, wrong answers {:.3}); configured \
             search.min_inliers: {}",
            p.threshold, p.true_positive_rate, p.wrong_answer_rate, config.search.min_inliers
        ),
        None => println!("every threshold lets a distractor through"),
    }
    for o in &score.queries {
        let top = o.top.as_ref().map_or("no result".to_string(), |(id, s)| format!("{id} ({s:.0})"));
        let kind = if o.positives == 0 {
            "distractor"
        } else if o.top_is_positive {
            "correct"
        } else {
            "WRONG"
        };
        println!("  {:<40} {kind:<10} top: {top}", o.query);
    }
    Ok(())
}

fn revisitop_eval(
    gnd: &Path,
    images: &Path,
    index: Option<&Path>,
    device: Option<&str>,
    json: bool,
    html: Option<&Path>,
    config: &Config,
) -> Result<()> {
    let (gt, rankings) = revisitop_rankings(gnd, images, index, device, config, &mut StageBars::default())?;
    let scores: Vec<_> =
        Setup::ALL.iter().map(|&s| delf_eval::revisitop::evaluate(&gt, &rankings, s, &[1, 5, 10])).collect();
    if let Some(path) = html {
        let completed: Vec<Vec<usize>> =
            rankings.iter().map(|r| delf_eval::revisitop::complete_ranking(r, gt.imlist.len())).collect();
        crate::commands::eval_report::revisitop(path, &gt, &scores, &completed)?;
    }
    if json {
        println!("{}", serde_json::to_string(&scores)?);
    } else {
        println!("{:<8} {:>7} {:>7} {:>7} {:>7}", "setup", "mAP", "mP@1", "mP@5", "mP@10");
        for s in &scores {
            println!(
                "{:<8} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
                format!("{:?}", s.setup),
                s.map * 100.0,
                s.mp[0].1 * 100.0,
                s.mp[1].1 * 100.0,
                s.mp[2].1 * 100.0
            );
        }
    }
    Ok(())
}
