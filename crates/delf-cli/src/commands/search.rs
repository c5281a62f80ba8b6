//! `delf search --index DIR QUERY...`: extract each query with the index's model, PCA and extraction settings,
//! retrieve, and print a table, JSON lines (docs/cli.md has the contract) or an HTML report.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use delf_engine::{Config, Searcher, model};
use delf_search::{IndexManifest, Retrieval};

use crate::cli::SearchArgs;
use crate::commands::search_report::{self, QueryOutcome};

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
