//! `delf eval revisitop | gldv2 | pairs`: the published retrieval metrics (delf-eval) over searches of an index, or
//! over answers computed elsewhere. Rankings for the metrics: the verified candidates by inliers (every one, with
//! no `min_inliers` cut), then the other voted images by votes, then the rest in list order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use delf_eval::gldv2;
use delf_eval::pairs::{self, Answer, PairsGroundTruth};
use delf_eval::revisitop::{GroundTruth, Setup};
use delf_search::Retrieval;

use crate::cli::EvalCommand;
use crate::progress::StageBars;
use delf_engine::Config;
use delf_engine::Searcher;
use delf_engine::model;

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

/// The evaluation ranking of one retrieval, as index image numbers.
fn ranking(r: &Retrieval) -> Vec<u32> {
    let mut seen = std::collections::HashSet::new();
    r.results.iter().map(|v| v.image).chain(r.voted.iter().map(|v| v.0)).filter(|i| seen.insert(*i)).collect()
}

/// Where the answers of a pairs evaluation come from.
enum Answers<'a> {
    /// JSON lines computed before.
    File(&'a Path),
    /// Searches of an index now.
    Search {
        /// The index.
        index: &'a Path,
        /// Folder of the query images.
        queries_dir: Option<&'a Path>,
        /// Extraction device.
        device: Option<&'a str>,
    },
}

fn pairs_eval(gt_path: &Path, source: Answers<'_>, json: bool, html: Option<&Path>, config: &Config) -> Result<()> {
    let gt = PairsGroundTruth::load(gt_path)?;
    let answers: Vec<Answer> = match source {
        Answers::File(path) => read_answers(path)?,
        Answers::Search { index, queries_dir, device } => {
            let searcher = Searcher::open_for_eval(index, config, device)?;
            let dir = queries_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| gt_path.parent().unwrap_or(Path::new(".")).to_path_buf());
            let mut out = Vec::new();
            for q in &gt.queries {
                let path = dir.join(&q.query);
                let img = model::read_image(&path)?;
                let (r, _) = searcher.search(&img.rgb).with_context(|| format!("searching with {}", path.display()))?;
                tracing::info!(query = %q.query, results = r.results.len(), "searched");
                let results = r.results.iter().map(|v| (v.id.clone(), v.score as f64)).collect();
                out.push(Answer { query: path.display().to_string(), results });
            }
            out
        }
    };
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

/// JSON lines of `delf search --json` / `delf query --json`; a line with an error is an error.
fn read_answers(path: &Path) -> Result<Vec<Answer>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| delf_eval::EvalError::Io { path: path.to_path_buf(), source: e })?;
    let bad = |line: usize, reason: String| delf_eval::EvalError::Format {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
        if let Some(e) = v.get("error") {
            bail!(bad(i + 1, format!("the query failed: {e}")));
        }
        let query = v["query"].as_str().ok_or_else(|| bad(i + 1, "no query".into()))?.to_string();
        let results = v["results"]
            .as_array()
            .ok_or_else(|| bad(i + 1, "no results array".into()))?
            .iter()
            .map(|r| match (r["image_id"].as_str(), r["score"].as_f64()) {
                (Some(id), Some(s)) => Ok((id.to_string(), s)),
                _ => Err(bad(i + 1, "a result without image_id or score".into())),
            })
            .collect::<Result<_, _>>()?;
        out.push(Answer { query, results });
    }
    Ok(out)
}

/// A photo of a revisitop dataset: `NAME.jpg` (or NAME when it has an extension) in the folder or in its `jpg/`
/// subfolder, as the published archives unpack.
fn dataset_image(images: &Path, name: &str) -> Option<PathBuf> {
    let file = if Path::new(name).extension().is_some() { name.to_string() } else { format!("{name}.jpg") };
    [images.join(&file), images.join("jpg").join(&file)].into_iter().find(|p| p.is_file())
}

/// The query photo of a revisitop dataset, or a not-found error naming it.
fn query_path(images: &Path, name: &str) -> Result<PathBuf> {
    dataset_image(images, name).ok_or_else(|| {
        anyhow::anyhow!(delf_image::ImageError::Io {
            path: images.join(name),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "query image not found (also looked in jpg/)"),
        })
    })
}

/// The index a revisitop evaluation searches: `index` (default `DELF_HOME/eval/GND_STEM`) as it is when it holds a
/// manifest, else built there from the ground truth's `imlist` first. A dataset image that is missing is an error
/// before anything is extracted: the protocol ranks the whole database.
fn revisitop_index(
    gnd: &Path,
    gt: &GroundTruth,
    images: &Path,
    index: Option<&Path>,
    device: Option<&str>,
    config: &Config,
) -> Result<PathBuf> {
    let dir = match index {
        Some(dir) => dir.to_path_buf(),
        None => config.home.join("eval").join(gnd.file_stem().unwrap_or(std::ffi::OsStr::new("revisitop"))),
    };
    if dir.join(delf_search::manifest::MANIFEST_FILE).is_file() {
        return Ok(dir);
    }
    let mut paths = Vec::with_capacity(gt.imlist.len());
    let mut missing = Vec::new();
    for name in &gt.imlist {
        match dataset_image(images, name) {
            Some(p) => paths.push(std::path::absolute(&p)?),
            None => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        bail!(delf_eval::EvalError::Format {
            path: gnd.to_path_buf(),
            reason: format!(
                "{} of its {} database images are not in {} (nor in its jpg/ folder), e.g. {}; the index cannot be \
                 built",
                missing.len(),
                gt.imlist.len(),
                images.display(),
                missing.iter().take(3).copied().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    eprintln!("building the index of {} database images in {} (reruns reuse it)", paths.len(), dir.display());
    delf_engine::index_build::build_index_of(&paths, &dir, device, config, &mut StageBars::default())?;
    Ok(dir)
}

fn stem(id: &str) -> String {
    Path::new(id).file_stem().map_or_else(|| id.to_string(), |s| s.to_string_lossy().into_owned())
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
    let gt = GroundTruth::load(gnd)?;
    let index = revisitop_index(gnd, &gt, images, index, device, config)?;
    let searcher = Searcher::open_for_eval(&index, config, device)?;
    let by_stem: HashMap<String, usize> = gt.imlist.iter().enumerate().map(|(i, n)| (stem(n), i)).collect();
    // Index image number -> dataset image number.
    let mut to_dataset: HashMap<u32, usize> = HashMap::new();
    for shard in searcher.index.shards() {
        for e in shard.images().iter().filter(|e| !e.deleted) {
            if let Some(&i) = by_stem.get(&stem(&e.name)) {
                to_dataset.insert(e.number, i);
            }
        }
    }
    if to_dataset.len() < gt.imlist.len() {
        tracing::warn!(
            indexed = to_dataset.len(),
            dataset = gt.imlist.len(),
            "some dataset images are not in the index"
        );
    }
    let mut rankings = Vec::with_capacity(gt.qimlist.len());
    for (q, name) in gt.qimlist.iter().enumerate() {
        let path = query_path(images, name)?;
        let img = model::read_image(&path)?.rgb;
        let img = match gt.gnd[q].bbx {
            Some([x1, y1, x2, y2]) => {
                let (w, h) = (f64::from(img.width()), f64::from(img.height()));
                let (x1, y1) = (x1.clamp(0.0, w).floor() as u32, y1.clamp(0.0, h).floor() as u32);
                let (x2, y2) = (x2.clamp(0.0, w).ceil() as u32, y2.clamp(0.0, h).ceil() as u32);
                if x2 <= x1 || y2 <= y1 {
                    bail!("query {name}: empty bounding box {:?}", gt.gnd[q].bbx);
                }
                image::imageops::crop_imm(&img, x1, y1, x2 - x1, y2 - y1).to_image()
            }
            None => img,
        };
        let (r, _) = searcher.search(&img).with_context(|| format!("searching with {}", path.display()))?;
        rankings.push(ranking(&r).iter().filter_map(|n| to_dataset.get(n).copied()).collect::<Vec<usize>>());
        tracing::info!(query = %name, done = q + 1, of = gt.qimlist.len(), "searched");
    }
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
