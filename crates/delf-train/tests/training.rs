//! Training on real photos: a step lowers the loss, a stopped run resumes bit for bit, the attention stays
//! non-negative, and bad inputs are typed errors.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use delf_model::preprocess::Normalization;
use delf_model::{FeatureTap, LiteVariant, TensorFile};
use delf_storage::Stores;
use delf_testkit::{lite0_weights, train_photos_dir};
use delf_train::loader::{BatchPlan, ImageSource, ViewSeed, render_batch};
use delf_train::sgd::Sgd;
use delf_train::{AugmentConfig, LabelSet, RunOptions, Stage, TrainConfig, TrainError, TrainNet, train};
use tch::Device;

/// Four real photos in three classes (the two motorcycle views share one).
fn tiny_labels(dir: &Path) -> LabelSet {
    let photos = train_photos_dir();
    let csv = format!(
        "path,label\n{0}/skimage/chelsea.png,cat\n{0}/skimage/coffee.png,coffee\n\
         {0}/skimage/motorcycle_left.png,motorcycle\n{0}/skimage/motorcycle_right.png,motorcycle\n",
        photos.display()
    );
    let path = dir.join("labels.csv");
    std::fs::write(&path, &csv).unwrap();
    LabelSet::parse(&format!("file://{}", path.display()), csv.as_bytes(), None).unwrap()
}

fn config(stage: Stage) -> TrainConfig {
    TrainConfig {
        batch_size: 4,
        epochs: 2,
        repeats: 2,
        input_size: 128,
        min_input_scale: 0.75,
        warmup_steps: 1,
        val_fraction: 0.0,
        checkpoint_every: 1,
        augment: AugmentConfig::instance(),
        lr: 0.05,
        ..TrainConfig::paper(stage)
    }
}

fn options(out: PathBuf, stop_after: Option<u64>) -> RunOptions {
    RunOptions { weights: lite0_weights(), out, device: Device::Cpu, loader_threads: 2, stop_after, log_every: 1 }
}

fn source() -> ImageSource {
    ImageSource::new(Stores::new(), 512, 64 << 20).unwrap()
}

#[test]
fn one_step_lowers_the_loss_on_a_tiny_real_batch_in_both_stages() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let labels = tiny_labels(dir.path());
    let source = source();
    let items = (0..4).map(|i| (i, ViewSeed(i as u64))).collect();
    let plan = BatchPlan { step: 0, epoch: 0, items, side: 128, regions: 1 };
    let batch = render_batch(
        &source,
        &labels.samples,
        plan,
        &AugmentConfig::paper_descriptor(),
        Normalization::EFFICIENTNET_LITE,
        2,
    )
    .unwrap();
    assert_eq!(batch.images.size(), [4, 3, 128, 128]);
    for (stage, lr) in [(Stage::Attention, 0.5), (Stage::Descriptor, 0.01)] {
        tch::manual_seed(3);
        let net =
            TrainNet::new(stage, &lite0_weights(), LiteVariant::LITE0, FeatureTap::BlockOutput(10), 3, Device::Cpu)
                .unwrap();
        let loss =
            |net: &TrainNet| f64::try_from(net.logits(&batch.images, true).cross_entropy_for_logits(&batch.labels));
        let before = loss(&net).unwrap();
        let mut sgd = Sgd::new(0.9, 1e-4);
        let params = net.trainable();
        assert!(!params.is_empty());
        net.logits(&batch.images, true).cross_entropy_for_logits(&batch.labels).backward();
        sgd.step(&params, lr);
        let after = loss(&net).unwrap();
        assert!(after < before, "{stage:?}: loss {before} -> {after}");
        if stage == Stage::Attention {
            // Softplus: never negative, even far outside the inputs it was trained on.
            let wild = tch::Tensor::randn([2, 3, 96, 96], (tch::Kind::Float, Device::Cpu)) * 50.0;
            let scores = net.attention_scores(&wild).unwrap();
            assert!(f64::try_from(scores.min()).unwrap() >= 0.0);
        }
    }
}

/// Tensor values by name, and the metadata, of a run's checkpoint.
type Checkpoint = (Vec<(String, Vec<f32>)>, std::collections::HashMap<String, String>);

fn checkpoint_tensors(dir: &Path) -> Checkpoint {
    let file = TensorFile::load(&dir.join("checkpoint.safetensors")).unwrap();
    let tensors =
        file.tensors.iter().map(|(n, t)| (n.clone(), Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())).collect();
    (tensors, file.meta)
}

#[test]
fn a_stopped_run_resumes_bit_identically_on_the_cpu() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let labels = tiny_labels(dir.path());
    for stage in [Stage::Attention, Stage::Descriptor] {
        let cfg = config(stage);
        let straight = dir.path().join(format!("{}-straight", stage.name()));
        let summary = train(&cfg, &labels, source(), &options(straight.clone(), None)).unwrap();
        assert_eq!((summary.steps, summary.total_steps, summary.resumed_from), (4, 4, 0));
        let output = summary.output.unwrap();
        assert!(output.is_file());

        let resumed = dir.path().join(format!("{}-resumed", stage.name()));
        let first = train(&cfg, &labels, source(), &options(resumed.clone(), Some(1))).unwrap();
        assert_eq!((first.steps, first.output.is_none()), (1, true));
        let second = train(&cfg, &labels, source(), &options(resumed.clone(), None)).unwrap();
        assert_eq!((second.resumed_from, second.steps), (1, 4));

        let (a, meta_a) = checkpoint_tensors(&straight);
        let (b, meta_b) = checkpoint_tensors(&resumed);
        assert_eq!(meta_a.get("step"), Some(&"4".to_string()));
        assert_eq!(meta_a, meta_b);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().any(|(n, _)| n.starts_with("momentum.")), "optimiser state is checkpointed");
        for ((name_a, va), (name_b, vb)) in a.iter().zip(&b) {
            assert_eq!(name_a, name_b);
            assert!(va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()), "{stage:?}: {name_a} differs");
        }
        let lines = std::fs::read_to_string(resumed.join("metrics.jsonl")).unwrap();
        assert!(lines.lines().filter(|l| l.contains("\"step\"")).count() == 4, "{lines}");
        assert!(lines.contains("epoch_done"), "{lines}");

        // Another setting cannot continue this run's checkpoint.
        let other = TrainConfig { lr: 0.02, ..cfg.clone() };
        let e = train(&other, &labels, source(), &options(resumed.clone(), None)).unwrap_err();
        assert!(matches!(e, TrainError::Checkpoint { .. }), "{e}");
    }
    // The exported head loads where extraction loads heads.
    let head = dir.path().join("attention-straight/attention.safetensors");
    delf_model::AttentionHead::load(&head, 112, Device::Cpu).unwrap();
}

#[test]
fn a_corrupt_photo_and_a_missing_photo_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let photos = train_photos_dir();
    let csv = format!("path,label\nbroken.jpg,a\n{}/skimage/coffee.png,b\n", photos.display());
    let uri = format!("file://{}/labels.csv", dir.path().display());
    let labels = LabelSet::parse(&uri, csv.as_bytes(), None).unwrap();
    labels.check_local_files().unwrap();
    let cfg = TrainConfig { batch_size: 2, repeats: 1, ..config(Stage::Attention) };
    let e = train(&cfg, &labels, source(), &options(dir.path().join("out"), None)).unwrap_err();
    assert!(matches!(&e, TrainError::Image { uri, .. } if uri.ends_with("broken.jpg")), "{e}");

    let csv = "path,label\nnope.jpg,a\nalso-nope.jpg,b\n";
    let labels = LabelSet::parse(&uri, csv.as_bytes(), None).unwrap();
    assert!(matches!(labels.check_local_files(), Err(TrainError::MissingImages { count: 2, .. })));
}

#[test]
fn labels_and_photos_on_a_real_s3_compatible_server() {
    let server = delf_testkit::S3Server::start().expect("S3-compatible test server");
    server.create_bucket("train").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stores = Stores::with_options(server.options());
    let bucket = stores.location("s3://train").unwrap();
    let photos = train_photos_dir();
    for name in ["chelsea.png", "coffee.png"] {
        let bytes = std::fs::read(photos.join("skimage").join(name)).unwrap();
        rt.block_on(bucket.put(&bucket.child(&format!("img/{name}")), bytes.into())).unwrap();
    }
    let csv = "path,label\nimg/chelsea.png,cat\nimg/coffee.png,coffee\nimg/gone.png,gone\n";
    rt.block_on(bucket.put(&bucket.child("labels.csv"), csv.as_bytes().to_vec().into())).unwrap();
    let bytes = rt.block_on(bucket.get(&bucket.child("labels.csv"))).unwrap();
    let labels = LabelSet::parse("s3://train/labels.csv", &bytes, None).unwrap();
    assert_eq!(labels.samples[0].uri, "s3://train/img/chelsea.png");
    // Remote images are checked when read: the missing one is a typed error naming it.
    labels.check_local_files().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig { batch_size: 3, repeats: 1, epochs: 1, ..config(Stage::Attention) };
    let source = ImageSource::new(Stores::with_options(server.options()), 512, 64 << 20).unwrap();
    let e = train(&cfg, &labels, source, &options(dir.path().join("missing"), None)).unwrap_err();
    assert!(matches!(&e, TrainError::Image { uri, .. } if uri == "s3://train/img/gone.png"), "{e}");

    let present =
        LabelSet::parse("s3://train/labels.csv", b"path,label\nimg/chelsea.png,cat\nimg/coffee.png,coffee\n", None)
            .unwrap();
    let cfg = TrainConfig { batch_size: 2, ..cfg };
    let source = ImageSource::new(Stores::with_options(server.options()), 512, 64 << 20).unwrap();
    let summary = train(&cfg, &present, source, &options(dir.path().join("ok"), None)).unwrap();
    assert_eq!(summary.steps, 1);
    assert!(summary.output.unwrap().is_file());
}
