//! ResNet50 conv4: torchvision names, loading, and receptive-field geometry checked against the network.
#![allow(clippy::unwrap_used)]

use delf_model::geometry::AxisGeometry;
use delf_model::{Backbone, ModelError, ResNet};
use tch::{Device, Kind, Tensor};

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("delf-resnet-{}-{name}", std::process::id()))
}

#[test]
fn torchvision_names_round_trip_through_safetensors() {
    tch::manual_seed(1);
    let net = ResNet::untrained(Device::Cpu);
    let names: Vec<String> = net.var_store().variables().into_keys().collect();
    for expected in ["conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer3.5.conv3.weight"] {
        assert!(names.iter().any(|n| n == expected), "missing {expected}");
    }
    assert!(!names.iter().any(|n| n.starts_with("layer4") || n.starts_with("fc")));
    let path = tmp("weights.safetensors");
    net.var_store().save(&path).unwrap();
    let loaded = ResNet::load_torchvision(&path, Device::Cpu).unwrap();
    let x = Tensor::randn([1, 3, 64, 80], (Kind::Float, Device::Cpu));
    let (a, b) = tch::no_grad(|| (net.features(&x), loaded.features(&x)));
    assert_eq!(a.size(), [1, 1024, 4, 5]);
    assert_eq!(f64::try_from((a - b).abs().max()).unwrap(), 0.0);

    // A checkpoint missing one tensor is refused, naming the tensor.
    let partial: Vec<(String, Tensor)> =
        net.var_store().variables().into_iter().filter(|(n, _)| n != "layer2.1.bn2.weight").collect();
    let partial_path = tmp("partial.safetensors");
    Tensor::write_safetensors(&partial, &partial_path).unwrap();
    let err = ResNet::load_torchvision(&partial_path, Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::Weights { .. }));
    assert!(format!("{:?}", err).contains("layer2.1.bn2.weight"), "{err:?}");
    std::fs::remove_file(&path).ok();
    std::fs::remove_file(&partial_path).ok();
}

#[test]
fn receptive_field_matches_back_propagation() {
    tch::manual_seed(3);
    let net = ResNet::untrained(Device::Cpu);
    let (h, w) = (401i64, 416i64);
    let x = (Tensor::rand([1, 3, h, w], (Kind::Float, Device::Cpu)) * 2.0 - 1.0).set_requires_grad(true);
    let f = net.features(&x);
    let (fh, fw) = (f.size()[2], f.size()[3]);
    let gy = AxisGeometry::compute(&net.layers(), h);
    let gx = AxisGeometry::compute(&net.layers(), w);
    assert_eq!((gy.cells, gx.cells, gy.stride), (fh, fw, 16));
    let cell = (fh / 2, fw / 2);
    f.get(0).select(1, cell.0).select(1, cell.1).sum(Kind::Float).backward();
    let g = x.grad().abs().sum_dim_intlist([0i64, 1].as_slice(), false, Kind::Float);
    let rows: Vec<f32> = g.sum_dim_intlist([1i64].as_slice(), false, Kind::Float).try_into().unwrap();
    let cols: Vec<f32> = g.sum_dim_intlist([0i64].as_slice(), false, Kind::Float).try_into().unwrap();
    let range =
        |v: &[f32]| (v.iter().position(|&a| a > 0.0).unwrap() as f64, v.iter().rposition(|&a| a > 0.0).unwrap() as f64);
    let clip = |(a, b): (f64, f64), n: i64| (a.max(0.0), b.min((n - 1) as f64));
    assert_eq!(range(&rows), clip(gy.span(cell.0), h), "rows; rf {}", gy.receptive_field);
    assert_eq!(range(&cols), clip(gx.span(cell.1), w), "cols");
}

#[test]
fn conv4_geometry_numbers() {
    // The figures quoted in docs/models.md.
    let net = ResNet::untrained(Device::Cpu);
    let g = AxisGeometry::compute(&net.layers(), 512);
    assert_eq!((g.stride, g.receptive_field), (16, 267));
}
