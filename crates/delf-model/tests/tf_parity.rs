//! Networks converted from the published DELF and DELG TensorFlow releases compute what TensorFlow computes.
//!
//! For each architecture, `scripts/python/tf_delf_reference.py` builds the network in TensorFlow with the release's
//! variable names and seeded random weights, saves it in the release's format (a TF1 SavedModel and PCA `.datum`
//! files for DELF, a TF2 SavedModel for DELG) and runs TensorFlow's forward pass on a real photo;
//! `scripts/python/convert_tf_delf.py` converts the saved files as a user would convert a download; the converted
//! network runs here on the same input. Every tensor must agree within 1e-4 of its largest magnitude, and the
//! keypoints selected by score must be the same cells.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use delf_image::{DecodeLimits, decode_file};
use delf_model::extractor::l2_normalize;
use delf_model::geometry::AxisGeometry;
use delf_model::preprocess::{Normalization, to_tensor};
use delf_model::{AttentionHead, Backbone, Pca, ResNet, TensorFile};
use image::imageops::{self, FilterType};
use tch::{Device, Tensor};

const TOLERANCE: f64 = 1e-4;

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/python")
}

fn run_python(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let python = std::env::var("DELFRS_PYTHON").expect("DELFRS_PYTHON is set by .cargo/config.toml");
    Command::new(&python)
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e} (run scripts/setup.sh)"))
}

fn python(args: &[&std::ffi::OsStr]) {
    let out = run_python(args);
    assert!(
        out.status.success(),
        "{args:?} failed (TensorFlow comes from scripts/setup.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real photo resized to `w x h`, normalised as the releases do.
fn photo(name: &str, w: u32, h: u32) -> Tensor {
    let path = delf_testkit::photos_dir().join(name);
    let img = decode_file(&path, &DecodeLimits::default()).unwrap();
    let resized = imageops::resize(&img.rgb, w, h, FilterType::Triangle);
    to_tensor(&resized, Normalization::DELF_RELEASE, Device::Cpu)
}

/// `max |a - b| <= 1e-4 * max |reference|`, shapes equal.
fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    assert_eq!(ours.size(), reference.size(), "{what}: shapes");
    let scale = f64::try_from(reference.abs().max()).unwrap();
    let diff = f64::try_from((ours - reference).abs().max()).unwrap();
    eprintln!("{what}: max |ours - TF| = {diff:.3e}, largest |TF| = {scale:.3e} ({:.2e} of it)", diff / scale);
    assert!(scale > 0.0, "{what}: reference is all zeros");
    assert!(diff <= TOLERANCE * scale, "{what}: max difference {diff:e} > {TOLERANCE} x {scale:e}");
}

/// Cells in selection order: score descending, ties by position (row-major index).
fn ranking(scores: &Tensor) -> Vec<(usize, f32)> {
    let v: Vec<f32> = scores.flatten(0, -1).try_into().unwrap();
    let mut cells: Vec<(usize, f32)> = v.into_iter().enumerate().collect();
    cells.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    cells
}

/// The top-`k` cells by our scores are TensorFlow's top-`k`, except where two cells' scores are within the
/// tolerance of the `k`-th: there, which one is kept is rounding, not the network.
fn assert_same_keypoints(ours: &Tensor, reference: &Tensor, k: usize) {
    let (a, b) = (ranking(ours), ranking(reference));
    let scale = f64::from(b[0].1);
    let kth = f64::from(b[k - 1].1);
    let top = |r: &[(usize, f32)]| r[..k].iter().map(|c| c.0).collect::<std::collections::BTreeSet<_>>();
    let (sa, sb) = (top(&a), top(&b));
    let score_of = |i: usize| f64::from(b.iter().find(|c| c.0 == i).unwrap().1);
    for cell in sa.symmetric_difference(&sb) {
        let gap = (score_of(*cell) - kth).abs();
        assert!(gap <= TOLERANCE * scale, "cell {cell} selected on one side only, {gap:e} from the k-th score");
    }
    eprintln!(
        "keypoints: top {k} of {} cells, {} differ (at the boundary)",
        b.len(),
        sa.symmetric_difference(&sb).count()
    );
}

struct Case {
    dir: tempfile::TempDir,
    input: Tensor,
    reference: TensorFile,
}

fn case(arch: &str, photo_name: &str, w: u32, h: u32) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let input = photo(photo_name, w, h);
    let input_path = dir.path().join("input.safetensors");
    TensorFile::save(&input_path, &[("image".into(), input.shallow_clone())], Default::default()).unwrap();
    let release = dir.path().join("release");
    python(&[
        scripts().join("tf_delf_reference.py").as_os_str(),
        "--arch".as_ref(),
        arch.as_ref(),
        "--input".as_ref(),
        input_path.as_os_str(),
        "--out".as_ref(),
        release.as_os_str(),
    ]);
    let reference = TensorFile::load(&release.join("reference.safetensors")).unwrap();
    Case { dir, input, reference }
}

fn convert(case: &Case, with_pca: bool) -> (PathBuf, Option<PathBuf>) {
    let release = case.dir.path().join("release");
    let model = case.dir.path().join("model.safetensors");
    let pca = case.dir.path().join("pca.safetensors");
    let mut args = vec![
        scripts().join("convert_tf_delf.py").into_os_string(),
        release.into_os_string(),
        "--out".into(),
        model.clone().into_os_string(),
    ];
    if with_pca {
        args.extend(["--pca-out".into(), pca.clone().into_os_string()]);
    }
    python(&args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    (model, with_pca.then_some(pca))
}

fn get(case: &Case, name: &str) -> Tensor {
    case.reference.get(name).unwrap_or_else(|| panic!("reference has no {name}")).shallow_clone()
}

/// Rows of cells (row-major), one descriptor each, L2-normalised.
fn cell_descriptors(features: &Tensor) -> Tensor {
    let c = features.size()[1];
    l2_normalize(&features.get(0).permute([1, 2, 0]).reshape([-1, c]))
}

/// Runs one architecture's parity check; returns the case (its folder holds the release and the converted files).
fn check(arch: &str, photo_name: &str, w: u32, h: u32) -> Case {
    let case = case(arch, photo_name, w, h);
    let delf = arch.ends_with("-delf");
    let (model, pca) = convert(&case, delf);
    let net = ResNet::load_converted(&model, arch, Device::Cpu).unwrap();
    let head = AttentionHead::load(&model, net.channels(), Device::Cpu).unwrap();
    let (conv4, features, scores, global) = tch::no_grad(|| {
        let features = net.features(&case.input);
        let scores = head.forward(&features);
        (net.conv4(&case.input), features, scores, net.global_descriptor(&case.input))
    });
    assert_close("conv4 feature map", &conv4, &get(&case, "conv4"));
    assert_close("local feature map", &features, &get(&case, "features"));
    assert_close("attention scores", &scores, &get(&case, "scores"));
    let mut descriptors = cell_descriptors(&features);
    if let Some(pca) = pca {
        let pca = Pca::load(&pca).unwrap();
        assert_eq!(pca.source(), net.name(), "the PCA is accepted for this backbone");
        descriptors = l2_normalize(&pca.project(&descriptors).unwrap());
    }
    assert_close("local descriptors", &descriptors, &get(&case, "descriptors"));
    match case.reference.get("global") {
        Some(reference) => assert_close("global descriptor", &global.expect("a global branch"), reference),
        None => assert!(global.is_none()),
    }
    let cells = scores.numel();
    assert_same_keypoints(&scores, &get(&case, "scores"), (cells / 2).max(1));

    // Keypoint geometry: our layer list gives the feature map TensorFlow produced, at stride 32.
    let (fh, fw) = (features.size()[2], features.size()[3]);
    let gy = AxisGeometry::compute(&net.layers(), i64::from(h));
    let gx = AxisGeometry::compute(&net.layers(), i64::from(w));
    assert_eq!((gy.cells, gx.cells, gy.stride), (fh, fw, 32), "geometry of {arch}");
    if delf {
        // DELF.md: TF-slim block3 has receptive field 291 and padding 145.
        assert_eq!(gy.receptive_field, 291);
    }
    case
}

// Even and odd sides both: TF's "SAME" pads one pixel more after than before on even inputs with stride 2 (the
// TF-slim stem's max pool, the Keras stem's convolution), symmetrically on odd ones.

#[test]
fn delf_release_converts_to_the_same_network() {
    let case = check("resnet50-delf", "building.jpg", 512, 384);
    // Bad input is a clear error (exit 2), and the weights written before stay as they were.
    let release = case.dir.path().join("release");
    let model = case.dir.path().join("model.safetensors");
    let before = std::fs::read(&model).unwrap();
    let mean = release.join("pca/mean.datum");
    let bytes = std::fs::read(&mean).unwrap();
    std::fs::write(&mean, &bytes[..bytes.len() / 2]).unwrap();
    let script = scripts().join("convert_tf_delf.py");
    let other = case.dir.path().join("other.safetensors");
    let out = run_python(&[
        script.as_os_str(),
        release.as_os_str(),
        "--out".as_ref(),
        other.as_os_str(),
        "--pca-out".as_ref(),
        case.dir.path().join("pca2.safetensors").as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mean.datum"), "{stderr}");
    let out = run_python(&[script.as_os_str(), case.dir.path().as_os_str(), "--out".as_ref(), model.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no TensorFlow checkpoint"), "{stderr}");
    assert_eq!(std::fs::read(&model).unwrap(), before);
}

#[test]
fn delg_r50_release_converts_to_the_same_network() {
    let case = check("resnet50-delg", "leuvenA.jpg", 448, 320);
    // The same variables under Keras layer names (`res4a_branch2a`, `attn_conv1`, ...), as a TF1 graph built from
    // DELG's code would name them, convert to the very same tensors.
    let layer_names = case.dir.path().join("release/model-layer-names");
    let converted = case.dir.path().join("layer-names.safetensors");
    python(&[
        scripts().join("convert_tf_delf.py").as_os_str(),
        layer_names.as_os_str(),
        "--out".as_ref(),
        converted.as_os_str(),
    ]);
    let a = TensorFile::load(&case.dir.path().join("model.safetensors")).unwrap();
    let b = TensorFile::load(&converted).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for ((na, ta), (nb, tb)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs");
    }
}

#[test]
fn delg_r101_release_converts_to_the_same_network() {
    check("resnet101-delg", "graf1.png", 385, 289);
}
