//! The robustness benchmark: hard views of real photos (rotation over the whole circle, scale, perspective, blur,
//! JPEG, tone and colour, noise, occlusion), other real views, and unrelated distractor photos, against a database
//! of the originals and unrelated photos (docs/search.md, "Robustness benchmark").
//!
//! - [`photos`]: the photo list and the roles of its photos.
//! - [`recipe`]: what each view does, drawn from a seed.
//! - [`render`]: a recipe applied to its original.
//! - [`score`]: R@1, mAP and TPR at FPR = 0, overall and per transformation, rotation and scale bin.
//!
//! [`generate`] writes the views and `views.json`, which names every query, its partner and its recipe.

pub mod photos;
pub mod recipe;
pub mod render;
pub mod score;

use std::path::Path;

use delf_core::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::EvalError;
pub use photos::PhotoList;
pub use recipe::{Bin, Recipe};

/// Rotation views rendered per original.
pub const ROTATION_VIEWS: usize = 2;
/// Views of the other transformations rendered per original (bins taken in turn).
pub const OTHER_VIEWS: usize = 2;

/// One query of the benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewQuery {
    /// The query file: relative to the views folder for rendered views, to the data folder otherwise.
    pub file: String,
    /// Whether `file` is a rendered view (in the views folder).
    pub rendered: bool,
    /// Database photos that show the same thing (ids relative to the data folder); empty for distractors.
    pub positives: Vec<String>,
    /// What the query is.
    pub bin: Bin,
    /// In-plane rotation of the view, degrees (0 for photos that are not rendered).
    pub rotation: f64,
    /// Size of the view relative to its original (1 for photos that are not rendered).
    pub scale: f64,
    /// How the view was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<Recipe>,
}

/// The queries and database of one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewsSet {
    /// The seed the views were drawn with.
    pub seed: u64,
    /// Database photos (ids relative to the data folder): originals first.
    pub database: Vec<String>,
    /// Every query, rendered views first.
    pub queries: Vec<ViewQuery>,
}

impl ViewsSet {
    /// The file that describes a generated set inside its folder.
    pub const FILE: &'static str = "views.json";

    /// Reads `views.json` of a generated folder.
    pub fn load(dir: &Path) -> Result<Self, EvalError> {
        let path = dir.join(Self::FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| EvalError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| EvalError::format(&path, e.to_string()))
    }
}

/// The views of `list` for `seed`: which original gets which recipe. Original `i` gets [`ROTATION_VIEWS`]
/// rotations taken in turn from [`recipe::ROTATIONS`] and [`OTHER_VIEWS`] views of the other bins taken in turn,
/// so every angle and every bin is covered about equally.
pub fn plan(list: &PhotoList, seed: u64) -> Vec<(String, Recipe)> {
    let mut rng = SplitMix64(seed);
    let others: Vec<Bin> = Bin::RENDERED.iter().copied().filter(|b| *b != Bin::Rotation).collect();
    let mut out = Vec::new();
    for (i, original) in list.originals.iter().enumerate() {
        for k in 0..ROTATION_VIEWS {
            let angle = recipe::ROTATIONS[(ROTATION_VIEWS * i + k) % recipe::ROTATIONS.len()];
            out.push((original.clone(), Recipe::draw(Bin::Rotation, angle, &mut rng)));
        }
        for k in 0..OTHER_VIEWS {
            let bin = others[(OTHER_VIEWS * i + k) % others.len()];
            out.push((original.clone(), Recipe::draw(bin, 0.0, &mut rng)));
        }
    }
    out
}

/// Renders the views of `list` (photos read from `data_dir`) into `out_dir` and writes `views.json` there;
/// `progress` is called after each view with (done, total).
pub fn generate(
    list: &PhotoList,
    data_dir: &Path,
    out_dir: &Path,
    seed: u64,
    mut progress: impl FnMut(usize, usize),
) -> Result<ViewsSet, EvalError> {
    std::fs::create_dir_all(out_dir).map_err(|e| EvalError::io(out_dir, e))?;
    let planned = plan(list, seed);
    let mut queries = Vec::with_capacity(planned.len() + list.distractors.len() + list.real_views.len());
    let mut cached: Option<(String, delf_image::RgbImage)> = None;
    for (n, (original, recipe)) in planned.iter().enumerate() {
        if cached.as_ref().is_none_or(|(p, _)| p != original) {
            let path = data_dir.join(original);
            let img = delf_image::decode_file(&path, &Default::default())
                .map_err(|e| EvalError::format(&path, format!("cannot read the original: {e}")))?;
            cached = Some((original.clone(), img.rgb));
        }
        let Some((_, img)) = &cached else { unreachable!("set above") };
        let stem = Path::new(original).file_stem().and_then(|s| s.to_str()).unwrap_or("view");
        let file = format!("{n:04}-{}-{stem}.jpg", recipe.bin.name());
        let view = render::render(img, recipe)
            .map_err(|e| EvalError::format(&data_dir.join(original), format!("rendering view {file}: {e}")))?;
        let path = out_dir.join(&file);
        std::fs::write(&path, &view.jpeg).map_err(|e| EvalError::io(&path, e))?;
        queries.push(ViewQuery {
            file,
            rendered: true,
            positives: vec![original.clone()],
            bin: recipe.bin,
            rotation: recipe.rotation,
            scale: view.scale,
            recipe: Some(recipe.clone()),
        });
        progress(n + 1, planned.len());
    }
    for (q, partner) in &list.real_views {
        queries.push(ViewQuery {
            file: q.clone(),
            rendered: false,
            positives: vec![partner.clone()],
            bin: Bin::RealView,
            rotation: 0.0,
            scale: 1.0,
            recipe: None,
        });
    }
    for d in &list.distractors {
        queries.push(ViewQuery {
            file: d.clone(),
            rendered: false,
            positives: Vec::new(),
            bin: Bin::Distractor,
            rotation: 0.0,
            scale: 1.0,
            recipe: None,
        });
    }
    let set = ViewsSet { seed, database: list.all_database().map(str::to_string).collect(), queries };
    let path = out_dir.join(ViewsSet::FILE);
    let text = serde_json::to_string_pretty(&set).map_err(|e| EvalError::format(&path, e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| EvalError::io(&path, e))?;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_covers_every_angle_and_bin() {
        let originals: Vec<String> = (0..40).map(|i| format!("o{i}.jpg")).collect();
        let list = PhotoList { originals, ..Default::default() };
        let planned = plan(&list, 7);
        assert_eq!(planned.len(), 40 * (ROTATION_VIEWS + OTHER_VIEWS));
        assert_eq!(planned, plan(&list, 7));
        for angle in recipe::ROTATIONS {
            let n = planned.iter().filter(|(_, r)| r.bin == Bin::Rotation && r.rotation == angle).count();
            assert_eq!(n, 4, "{angle}");
        }
        for bin in Bin::RENDERED.into_iter().skip(1) {
            let n = planned.iter().filter(|(_, r)| r.bin == bin).count();
            assert!((11..=12).contains(&n), "{bin:?} {n}");
        }
    }
}
