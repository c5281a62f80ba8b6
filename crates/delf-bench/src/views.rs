//! `delf eval views`: the robustness benchmark (delf-eval `views`). Renders the hard views of the seed (once; later
//! runs reuse them), builds or resumes the index of the database photos, searches every query with the default
//! pipeline, runs the RootSIFT + RANSAC baseline on the same files, and prints both side by side.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use delf_build::Progress;
use delf_engine::index_build::build_index_of;
use delf_engine::{Config, Searcher, model};
use delf_eval::views::score::{Ranked, ViewsScore, score};
use delf_eval::views::{self, PhotoList, ViewsSet};

use crate::cluster::percentile;

/// `delf eval views`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalViewsArgs {
    /// Photo list (roles and paths relative to DELF_HOME/data); default DELF_HOME/data/views-photos/list.tsv,
    /// installed by scripts/setup.sh from tests/fixtures/views_photos.tsv.
    #[arg(long)]
    pub photos: Option<PathBuf>,
    /// Seed of the views.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A quarter of the photos (every 4th of each role), for development.
    #[arg(long)]
    pub quick: bool,
    /// Working folder: the views, the index, the answers; default DELF_HOME/eval/views-sSEED[-quick]. Views and
    /// the index's extraction are reused by later runs.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Python with OpenCV and FAISS for the RootSIFT baseline, or `none` to skip it.
    #[arg(long, env = "DELFRS_PYTHON", default_value = ".cache/venv/bin/python")]
    pub python: String,
    /// Device for extraction.
    #[arg(long)]
    pub device: Option<String>,
    /// One JSON object per system instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Every 4th photo of each role in `--quick` runs.
const QUICK_STEP: usize = 4;

/// One system's answers and its per-query latency (milliseconds: extraction, and everything).
struct Run {
    name: String,
    threshold: f64,
    ranked: Vec<Ranked>,
    extract_ms: Vec<f64>,
    total_ms: Vec<f64>,
}

/// Runs the benchmark; `progress` draws its stages (rendering, the index build, the searches).
pub fn run(args: &EvalViewsArgs, config: &Config, progress: &mut dyn Progress) -> Result<()> {
    let data = config.home.join("data");
    let photos = args.photos.clone().unwrap_or_else(|| data.join("views-photos/list.tsv"));
    let mut list = PhotoList::load(&photos).with_context(|| "the benchmark photos (run scripts/setup.sh)")?;
    if args.quick {
        list = list.every(QUICK_STEP);
    }
    let out = args.out.clone().unwrap_or_else(|| {
        config.home.join("eval").join(format!("views-s{}{}", args.seed, if args.quick { "-quick" } else { "" }))
    });
    let set = views_of(&list, &data, &out, args.seed, progress)?;
    let n_rendered = set.queries.iter().filter(|q| q.rendered).count();
    eprintln!(
        "{} queries ({n_rendered} hard views, {} real views, {} distractors), {} database photos, in {}",
        set.queries.len(),
        set.queries.iter().filter(|q| q.bin == views::Bin::RealView).count(),
        set.queries.iter().filter(|q| q.positives.is_empty()).count(),
        set.database.len(),
        out.display()
    );

    let index = out.join("index");
    let paths: Vec<PathBuf> =
        set.database.iter().map(|id| std::path::absolute(data.join(id))).collect::<std::io::Result<_>>()?;
    build_index_of(&paths, &index, args.device.as_deref(), config, progress)?;
    let ours = search_all(&set, &data, &out, &index, args.device.as_deref(), config, progress)?;
    let mut runs = vec![ours];
    if args.python != "none" {
        runs.push(sift(&set, &data, &out, &args.python)?);
    }
    let scores: Vec<ViewsScore> =
        runs.iter().map(|r| score(&set, &r.ranked, r.threshold).map_err(anyhow::Error::msg)).collect::<Result<_>>()?;
    if args.json {
        for (r, s) in runs.iter().zip(&scores) {
            let json = serde_json::json!({
                "system": r.name,
                "seed": set.seed,
                "queries": set.queries.len(),
                "database": set.database.len(),
                "median_extract_ms": median(&r.extract_ms),
                "median_total_ms": median(&r.total_ms),
                "score": s,
            });
            println!("{json}");
        }
    } else {
        print_table(&mut std::io::stdout().lock(), &runs, &scores)?;
    }
    Ok(())
}

/// The views of `seed` in `out`: read when `views.json` there was made from the same seed and photos, else
/// rendered afresh.
fn views_of(list: &PhotoList, data: &Path, out: &Path, seed: u64, progress: &mut dyn Progress) -> Result<ViewsSet> {
    if let Ok(set) = ViewsSet::load(out) {
        let same_db = set.database.iter().map(String::as_str).eq(list.all_database());
        if set.seed == seed && same_db {
            return Ok(set);
        }
    }
    progress.start("rendering views", views::plan(list, seed).len());
    let set = views::generate(list, data, out, seed, |_, _| progress.advance())?;
    progress.finish();
    Ok(set)
}

fn query_path(set_dir: &Path, data: &Path, q: &views::ViewQuery) -> PathBuf {
    if q.rendered { set_dir.join(&q.file) } else { data.join(&q.file) }
}

/// Our default pipeline on every query: the searcher of `delf search` with no inlier threshold (every verified
/// candidate kept, so the threshold curve can be drawn), scored at the configured `search.min_inliers`.
fn search_all(
    set: &ViewsSet,
    data: &Path,
    out: &Path,
    index: &Path,
    device: Option<&str>,
    config: &Config,
    progress: &mut dyn Progress,
) -> Result<Run> {
    let searcher = Searcher::open_for_eval(index, config, device)?;
    let threshold = config.search.min_inliers as f64;
    progress.start("searching", set.queries.len());
    let answers = out.join("answers-delf.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&answers)?);
    let mut run =
        Run { name: "delf-rs".into(), threshold, ranked: Vec::new(), extract_ms: Vec::new(), total_ms: Vec::new() };
    for q in &set.queries {
        let path = query_path(out, data, q);
        let started = Instant::now();
        let img = model::read_image(&path)?;
        let (r, extract_ms) =
            searcher.search(&img.rgb).with_context(|| format!("searching with {}", path.display()))?;
        let total_ms = started.elapsed().as_secs_f64() * 1e3;
        let results: Vec<(String, f64)> = r.results.iter().map(|v| (v.id.clone(), v.score as f64)).collect();
        // The one-to-one correspondences each result was verified on, for studying chance inliers offline.
        let correspondences: Vec<usize> = r.results.iter().map(|v| v.query_points.len()).collect();
        let passes: Vec<usize> = r.results.iter().map(|v| v.pass).collect();
        let ms = serde_json::json!({ "extract": extract_ms, "total": total_ms });
        let line = serde_json::json!({ "query": q.file, "results": results, "correspondences": correspondences, "passes": passes, "ms": ms });
        writeln!(file, "{line}")?;
        run.ranked.push(Ranked { query: q.file.clone(), results });
        run.extract_ms.push(extract_ms);
        run.total_ms.push(total_ms);
        progress.advance();
    }
    progress.finish();
    Ok(run)
}

/// The RootSIFT + RANSAC baseline (scripts/python/bench_sift_retrieval.py) on the same files; ranked by inliers
/// with no threshold (its best possible recall@1).
fn sift(set: &ViewsSet, data: &Path, out: &Path, python: &str) -> Result<Run> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/python/bench_sift_retrieval.py");
    let answers = out.join("answers-sift.jsonl");
    eprintln!("running the RootSIFT + RANSAC baseline ({python})");
    let status = Command::new(python)
        .arg(&script)
        .args(["--views".as_ref(), out.as_os_str(), "--data".as_ref(), data.as_os_str()])
        .args(["--out".as_ref(), answers.as_os_str()])
        .status()
        .with_context(|| format!("running {python} (scripts/setup.sh installs OpenCV and FAISS in .cache/venv)"))?;
    if !status.success() {
        bail!("the RootSIFT baseline failed ({status})");
    }
    let text = std::fs::read_to_string(&answers)?;
    let mut run = Run {
        name: "RootSIFT+RANSAC".into(),
        threshold: 0.0,
        ranked: Vec::new(),
        extract_ms: Vec::new(),
        total_ms: Vec::new(),
    };
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let query = v["query"].as_str().unwrap_or_default().to_string();
        let results = v["results"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| Some((r[0].as_str()?.to_string(), r[1].as_f64()?))).collect::<Vec<_>>())
            .unwrap_or_default();
        let ms = |k: &str| v["ms"][k].as_f64().unwrap_or(0.0);
        run.extract_ms.push(ms("extract"));
        run.total_ms.push(ms("extract") + ms("search") + ms("verify"));
        run.ranked.push(Ranked { query, results });
    }
    if run.ranked.len() != set.queries.len() {
        bail!("the RootSIFT baseline answered {} of {} queries", run.ranked.len(), set.queries.len());
    }
    Ok(run)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 0.5)
}

fn print_table(out: &mut impl Write, runs: &[Run], scores: &[ViewsScore]) -> Result<()> {
    write!(out, "{:<18} {:>5}", "group", "n")?;
    for r in runs {
        write!(out, " | {:^23}", r.name)?;
    }
    writeln!(out)?;
    write!(out, "{:<18} {:>5}", "", "")?;
    for _ in runs {
        write!(out, " | {:>7} {:>7} {:>7}", "R@1", "mAP", "TPR@0")?;
    }
    writeln!(out)?;
    for (i, row) in scores[0].rows.iter().enumerate() {
        write!(out, "{:<18} {:>5}", row.group, row.queries)?;
        for s in scores {
            let r = &s.rows[i];
            write!(out, " | {:>7.3} {:>7.3} {:>7.3}", r.recall_at_1, r.map, r.tpr_at_fpr0)?;
        }
        writeln!(out)?;
    }
    for (r, s) in runs.iter().zip(scores) {
        writeln!(
            out,
            "{}: threshold {}, distractors answered {}/{}, best distractor score {}, median extraction {:.0} ms, \
             median query {:.0} ms",
            r.name,
            if r.threshold > 0.0 { format!("{}", r.threshold) } else { "none (ranking by score)".into() },
            s.distractors_answered,
            s.distractors,
            s.best_distractor_score,
            median(&r.extract_ms),
            median(&r.total_ms)
        )?;
    }
    Ok(())
}
