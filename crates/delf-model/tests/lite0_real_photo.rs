//! The default backbone, with its real ImageNet weights, on a real photo: the squirrel must come out as a
//! squirrel, and the logits must match an independent numpy implementation within 1e-3.

use std::path::PathBuf;
use std::process::Command;

use delf_image::{DecodeLimits, decode_file};
use delf_model::imagenet::ImagenetClasses;
use delf_model::preprocess::{Normalization, center_crop_resize, to_tensor};
use delf_model::{EfficientNetLite, LiteVariant};
use tch::Device;

fn home() -> PathBuf {
    PathBuf::from(std::env::var("DELF_HOME").expect("DELF_HOME is set by .cargo/config.toml"))
}

fn squirrel_input() -> tch::Tensor {
    let path = home().join("data/opencv-doc/squirrel_cls.jpg");
    let img = decode_file(&path, &DecodeLimits::default()).unwrap_or_else(|e| panic!("{e}: run scripts/setup.sh"));
    let crop = center_crop_resize(&img.rgb, LiteVariant::LITE0.resolution);
    to_tensor(&crop, Normalization::EFFICIENTNET_LITE, Device::Cpu)
}

fn lite0() -> (tch::nn::VarStore, EfficientNetLite) {
    let weights = home().join("models/efficientnet-lite0.safetensors");
    EfficientNetLite::load(&weights, LiteVariant::LITE0, Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn squirrel_photo_is_classified_as_a_squirrel() {
    let (_vs, net) = lite0();
    let logits = tch::no_grad(|| net.logits(&squirrel_input()));
    let classes = ImagenetClasses::load(&home().join("data/imagenet_classes.txt")).unwrap();
    let top = classes.top_k(&logits, 5).unwrap();
    eprintln!("top-5: {top:?}");
    // ImageNet class 335 is "fox squirrel, eastern fox squirrel, Sciurus niger".
    assert_eq!(top[0].class, 335, "top-5: {top:?}");
    assert!(top[0].name.contains("squirrel"));
    assert!(top[0].probability > 0.5, "top-5: {top:?}");
}

#[test]
fn logits_match_independent_numpy_reference() {
    let (_vs, net) = lite0();
    let input = squirrel_input();
    let logits: Vec<f32> = tch::no_grad(|| net.logits(&input)).flatten(0, -1).try_into().unwrap();

    let dir = std::env::temp_dir().join(format!("delf-lite0-ref-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (inp, out) = (dir.join("input.f32"), dir.join("logits.f32"));
    let pixels: Vec<f32> = input.flatten(0, -1).try_into().unwrap();
    std::fs::write(&inp, pixels.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();

    let python = std::env::var("DELFRS_PYTHON").expect("DELFRS_PYTHON is set by .cargo/config.toml");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/python/efficientnet_lite_numpy.py");
    let side = LiteVariant::LITE0.resolution.to_string();
    let status = Command::new(&python)
        .arg(&script)
        .arg(home().join("models/efficientnet-lite0.safetensors"))
        .args([inp.as_os_str(), side.as_ref(), side.as_ref(), out.as_os_str()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e} (run scripts/setup.sh)"));
    assert!(status.success(), "numpy reference failed");
    let reference: Vec<f32> =
        std::fs::read(&out).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    std::fs::remove_dir_all(&dir).ok();

    assert_eq!(reference.len(), 1000);
    let max_diff = logits.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("max |rust - numpy| over 1000 logits = {max_diff:e}");
    assert!(max_diff < 1e-3, "max |rust - numpy| = {max_diff}");
    let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    assert_eq!(argmax(&logits), argmax(&reference));
}
