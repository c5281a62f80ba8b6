//! `delf search --index DIR QUERY...`: extract each query with the index's model, PCA and extraction settings,
//! retrieve, and print a table, JSON lines (docs/cli.md has the contract) or an HTML report.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use delf_index::ScanKernel;
use delf_search::manifest::PCA_FILE;
use delf_search::{IndexManifest, Retrieval, retrieve, retrieve_extending};

use crate::cli::SearchArgs;
use crate::commands::model;
use crate::commands::search_report::{self, QueryOutcome};
use crate::config::{Config, ExtractSettings};

/// An open index with the extractor that makes its descriptors: what `delf search` and `delf eval` query.
pub struct Searcher {
    /// The index's manifest.
    pub manifest: IndexManifest,
    /// The shards.
    pub index: delf_index::ShardedIndex,
    /// The index's model, PCA and extraction settings.
    pub extractor: delf_model::Extractor,
    /// Retrieval settings (the index's ANN parameters, the configuration's verification and search sections).
    pub rc: delf_search::RetrievalConfig,
    /// The scan kernel of this CPU.
    pub kernel: ScanKernel,
    /// What each rotated pass may cost (the rotations themselves are `rc.rotations`).
    pub rotated_pass: delf_model::RotatedPass,
}

impl Searcher {
    /// A searcher tuned for evaluation: every verified candidate returned, none cut by `min_inliers`.
    pub fn open_for_eval(index: &Path, config: &Config, device: Option<&str>) -> Result<Self> {
        let mut s = Self::open(index, config, device)?;
        s.rc.top = usize::MAX;
        s.rc.verify.policy.min_inliers = 0;
        Ok(s)
    }

    /// Opens the index in `dir` and loads its extractor on `device` (a flag, else the configuration's).
    pub fn open(dir: &Path, config: &Config, device: Option<&str>) -> Result<Self> {
        let manifest = IndexManifest::load(dir)?;
        let index = manifest.open_index(dir)?;
        let settings = ExtractSettings::from_stored(&manifest.extract, "manifest", config)?;
        let device = model::device(device, config)?;
        let extractor = model::extractor(config, settings.to_config(), Some(&dir.join(PCA_FILE)), device)?;
        if extractor.fingerprint().as_str() != manifest.descriptor_fingerprint {
            anyhow::bail!(delf_search::SearchError::FingerprintMismatch {
                index: manifest.descriptor_fingerprint.clone(),
                query: extractor.fingerprint().to_string(),
            });
        }
        let rc = config.retrieval().for_index(&manifest);
        let rotated_pass = config.search.rotated_pass();
        Ok(Self { manifest, index, extractor, rc, kernel: ScanKernel::detect(), rotated_pass })
    }

    /// Extracts `image` and retrieves it: the retrieval and the extraction milliseconds. With several query
    /// rotations, the upright query is searched first and, unless its best result reaches `rotations_below`
    /// inliers, again with the features of every rotation together (mapped back to the query's own coordinates),
    /// each candidate verified with the one pass that matches it best.
    pub fn search(&self, image: &image::RgbImage) -> Result<(Retrieval, f64)> {
        let t = Instant::now();
        let mut features = self.extractor.extract(image)?;
        let mut extract_ms = t.elapsed().as_secs_f64() * 1e3;
        if self.rc.rotations.is_empty() {
            return Ok((retrieve(&self.index, &features, &self.rc, self.kernel)?, extract_ms));
        }
        let mut upright_neighbors = Vec::new();
        if self.rc.rotations_below > 0 {
            let (upright, neighbors) =
                retrieve_extending(&self.index, &features, &[], Vec::new(), &self.rc, self.kernel)?;
            if !self.rc.wants_rotations(upright.results.first().map(|r| r.score)) {
                return Ok((upright, extract_ms));
            }
            upright_neighbors = neighbors;
        }
        let t = Instant::now();
        let mut passes = vec![features.len()];
        passes.extend(features.extend_passes(self.extractor.extract_rotations(
            image,
            &self.rc.rotations,
            self.rotated_pass,
        )?)?);
        extract_ms += t.elapsed().as_secs_f64() * 1e3;
        // The upright descriptors' neighbours are those of the first search: only the rotated ones are searched.
        let (all, _) = retrieve_extending(&self.index, &features, &passes, upright_neighbors, &self.rc, self.kernel)?;
        Ok((all, extract_ms))
    }
}

/// Runs the search; a query that cannot be read is reported and the others still run (then exit code 3).
pub fn run(opts: &SearchArgs, config: &Config) -> Result<()> {
    let mut searcher = Searcher::open(&opts.index, config, opts.device.as_deref())?;
    let rc = &mut searcher.rc;
    let flags = &opts.retrieval;
    rc.top = flags.top as usize;
    if let Some(n) = flags.candidates {
        rc.candidates = (n as usize).max(1);
    }
    if let Some(n) = flags.nprobe {
        rc.search.nprobe = n as usize;
    }
    if let Some(n) = flags.min_inliers {
        rc.verify.policy.min_inliers = n as usize;
    }
    let (manifest, rc) = (&searcher.manifest, &searcher.rc);
    tracing::info!(index = %opts.index.display(), spec = %manifest.spec, search = %rc.search, candidates = rc.candidates, "searching");

    let mut outcomes = Vec::new();
    let mut stdout = std::io::stdout().lock();
    let mut failed = None;
    for query in &opts.queries {
        let started = Instant::now();
        let result = (|| -> Result<(Retrieval, f64, f64)> {
            let img = model::read_image(query)?;
            let (r, extract_ms) =
                searcher.search(&img.rgb).with_context(|| format!("searching with {}", query.display()))?;
            Ok((r, extract_ms, started.elapsed().as_secs_f64() * 1e3))
        })();
        let result = match result {
            Ok((r, extract_ms, total_ms)) => {
                if opts.json {
                    writeln!(stdout, "{}", json_line(query, &r, manifest, extract_ms, total_ms))?;
                } else {
                    let min = rc.verify.policy.min_inliers;
                    print_table(&mut stdout, query, &r, manifest, extract_ms, total_ms, min)?;
                }
                Ok((r, extract_ms, total_ms))
            }
            Err(e) => {
                let message = format!("{e:#}");
                eprintln!("error: {}: {message}", query.display());
                if opts.json {
                    writeln!(stdout, "{}", serde_json::json!({ "query": query, "error": message }))?;
                }
                failed.get_or_insert(e);
                Err(message)
            }
        };
        outcomes.push(QueryOutcome { query: query.clone(), result });
    }
    stdout.flush()?;
    if let Some(path) = &opts.html {
        search_report::write(path, &outcomes, manifest)?;
        eprintln!("report: {}", path.display());
    }
    match failed {
        Some(e) => Err(e.context("some queries could not be searched")),
        None => Ok(()),
    }
}

fn json_line(
    query: &Path,
    r: &Retrieval,
    manifest: &IndexManifest,
    extract_ms: f64,
    total_ms: f64,
) -> serde_json::Value {
    let results: Vec<serde_json::Value> = r
        .results
        .iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::json!({
                "image_id": v.id,
                "path": manifest.image_path(&v.id),
                "score": v.score,
                "votes": v.votes,
                "rank": i + 1,
            })
        })
        .collect();
    serde_json::json!({
        "query": query,
        "results": results,
        "timing_ms": { "extract": extract_ms, "ann": r.ann_ms, "verify": r.verify_ms, "total": total_ms },
    })
}

fn print_table(
    out: &mut impl Write,
    query: &Path,
    r: &Retrieval,
    manifest: &IndexManifest,
    extract_ms: f64,
    total_ms: f64,
    min_inliers: usize,
) -> Result<()> {
    writeln!(
        out,
        "query {}: extract {extract_ms:.0} ms, ann {:.0} ms, verify {:.0} ms ({} candidates), total {total_ms:.0} ms",
        query.display(),
        r.ann_ms,
        r.verify_ms,
        r.verified
    )?;
    if r.results.is_empty() {
        writeln!(out, "  no match (no candidate reached {min_inliers} inliers)")?;
        return Ok(());
    }
    writeln!(out, "  {:>4}  {:>6}  {:>6}  image", "rank", "score", "votes")?;
    for (i, v) in r.results.iter().enumerate() {
        writeln!(out, "  {:>4}  {:>6}  {:>6}  {}", i + 1, v.score, v.votes, manifest.image_path(&v.id).display())?;
    }
    Ok(())
}
