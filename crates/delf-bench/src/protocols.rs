//! The published evaluation protocols run on our own searches: the answers of a pairs evaluation and the rankings
//! of Revisited Oxford/Paris (delf-eval scores them; `delf eval` prints them). Rankings for the metrics: the
//! verified candidates by inliers (every one, with no `min_inliers` cut), then the other voted images by votes, then
//! the rest in list order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use delf_build::Progress;
use delf_engine::{Config, Searcher, model};
use delf_eval::pairs::{Answer, PairsGroundTruth};
use delf_eval::revisitop::GroundTruth;
use delf_search::Retrieval;

/// The evaluation ranking of one retrieval, as index image numbers.
fn ranking(r: &Retrieval) -> Vec<u32> {
    let mut seen = std::collections::HashSet::new();
    r.results.iter().map(|v| v.image).chain(r.voted.iter().map(|v| v.0)).filter(|i| seen.insert(*i)).collect()
}

/// Where the answers of a pairs evaluation come from.
pub enum Answers<'a> {
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

/// The answers of a pairs evaluation: read from `source`'s file, or searched now, each query of `gt` (whose file is
/// `gt_path`) from the queries folder (default: the ground truth's folder).
pub fn answers(gt: &PairsGroundTruth, gt_path: &Path, source: Answers<'_>, config: &Config) -> Result<Vec<Answer>> {
    Ok(match source {
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
    })
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
    progress: &mut dyn Progress,
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
    delf_engine::index_build::build_index_of(&paths, &dir, device, config, progress)?;
    Ok(dir)
}

fn stem(id: &str) -> String {
    Path::new(id).file_stem().map_or_else(|| id.to_string(), |s| s.to_string_lossy().into_owned())
}

/// The rankings of a Revisited Oxford/Paris evaluation: the ground truth in `gnd`, its queries (cropped to their
/// boxes) searched in `index` (built from `images` first when it holds no index), each ranking as
/// dataset image numbers.
pub fn revisitop_rankings(
    gnd: &Path,
    images: &Path,
    index: Option<&Path>,
    device: Option<&str>,
    config: &Config,
    progress: &mut dyn Progress,
) -> Result<(GroundTruth, Vec<Vec<usize>>)> {
    let gt = GroundTruth::load(gnd)?;
    let index = revisitop_index(gnd, &gt, images, index, device, config, progress)?;
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
    Ok((gt, rankings))
}
