//! `delf search --html FILE`: one self-contained page (images embedded as PNG data URIs) with each query, its
//! ranked matches and their inlier lines, for a person to check the results.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use delf_engine::model;
use delf_search::{IndexManifest, Retrieval};
use delf_verify::draw::{DrawOptions, draw_matches};
use image::RgbImage;

fn png_uri(img: &RgbImage) -> Result<String> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)?;
    Ok(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(buf.get_ref())))
}

/// One query's outcome, kept for the report.
pub struct QueryOutcome {
    /// Query path.
    pub query: PathBuf,
    /// The retrieval with extraction and total milliseconds, or why the query failed.
    pub result: std::result::Result<(Retrieval, f64, f64), String>,
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Writes the report.
pub fn write(path: &Path, outcomes: &[QueryOutcome], manifest: &IndexManifest) -> Result<()> {
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>delf search</title><style>body{font-family:sans-serif;margin:2em}\
         img{max-width:100%;border:1px solid #ccc}section{margin-bottom:3em}td,th{padding:2px 8px;text-align:left}\
         .none{color:#a00}</style>",
    );
    writeln!(
        html,
        "<h1>delf search</h1><p>index: {} images, {}, model {}</p>",
        manifest.images,
        escape(&manifest.spec),
        escape(&manifest.model)
    )?;
    for o in outcomes {
        let q = o.query.display().to_string();
        writeln!(html, "<section><h2>{}</h2>", escape(&q))?;
        let (r, extract_ms, total_ms) = match &o.result {
            Ok(r) => r,
            Err(e) => {
                writeln!(html, "<p class=none>error: {}</p></section>", escape(e))?;
                continue;
            }
        };
        let query_img = model::read_image(&o.query)?.rgb;
        let thumb = image::imageops::resize(
            &query_img,
            (query_img.width() * 200 / query_img.height().max(1)).max(1),
            200,
            image::imageops::FilterType::Triangle,
        );
        writeln!(
            html,
            "<img src=\"{}\" alt=query><p>extract {extract_ms:.0} ms, ann {:.0} ms, verify {:.0} ms, total {total_ms:.0} ms</p>",
            png_uri(&thumb)?,
            r.ann_ms,
            r.verify_ms
        )?;
        if r.results.is_empty() {
            writeln!(html, "<p class=none>no match</p></section>")?;
            continue;
        }
        for (i, v) in r.results.iter().enumerate() {
            let db_path = manifest.image_path(&v.id);
            writeln!(html, "<h3>{}. {} — {} inliers, {} votes</h3>", i + 1, escape(&v.id), v.score, v.votes)?;
            match model::read_image(&db_path) {
                Ok(db) => {
                    let options = DrawOptions { height: 360, outliers: false, ..DrawOptions::default() };
                    let pic = draw_matches(&query_img, &db.rgb, &v.query_points, &v.db_points, &v.inliers, &options);
                    writeln!(html, "<img src=\"{}\" alt=matches>", png_uri(&pic)?)?;
                }
                Err(e) => writeln!(
                    html,
                    "<p class=none>cannot read {}: {}</p>",
                    escape(&db_path.display().to_string()),
                    escape(&format!("{e:#}"))
                )?,
            }
        }
        writeln!(html, "</section>")?;
    }
    std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    /// The data URIs are standard, padded base64 (RFC 4648), as browsers read them.
    #[test]
    fn base64_matches_the_rfc_examples() {
        for (raw, enc) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()), enc);
        }
    }
}
