//! Batches of training views: images fetched (local files or object storage), decoded on a pool of CPU threads,
//! optionally kept decoded in memory, rendered into views, and prepared ahead of the training step on a background
//! thread so decoding overlaps with the network.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use delf_image::{DecodeLimits, decode_bytes};
use delf_model::preprocess::Normalization;
use delf_storage::Stores;
use image::RgbImage;
use image::imageops::{self, FilterType};
use tch::{Kind, Tensor};

use crate::TrainError;
use crate::augment::View;
use crate::labels::Sample;

/// Reads and decodes training images, caching decoded pixels up to a memory budget.
pub struct ImageSource {
    stores: Stores,
    runtime: tokio::runtime::Runtime,
    limits: DecodeLimits,
    max_side: u32,
    cache: Mutex<Cache>,
}

struct Cache {
    images: HashMap<String, Arc<RgbImage>>,
    bytes: usize,
    budget: usize,
}

impl ImageSource {
    /// Images are downscaled on decode so that their longer side is at most `max_side`; up to `cache_bytes` of
    /// decoded pixels stay in memory (a small corpus is decoded once; a large one streams).
    pub fn new(stores: Stores, max_side: u32, cache_bytes: usize) -> Result<Self, TrainError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| TrainError::Config(format!("cannot start the I/O runtime: {e}")))?;
        Ok(Self {
            stores,
            runtime,
            limits: DecodeLimits::default(),
            max_side,
            cache: Mutex::new(Cache { images: HashMap::new(), bytes: 0, budget: cache_bytes }),
        })
    }

    /// The decoded image of `sample`.
    pub fn image(&self, sample: &Sample) -> Result<Arc<RgbImage>, TrainError> {
        if let Some(img) = self.cache.lock().ok().and_then(|c| c.images.get(&sample.uri).cloned()) {
            return Ok(img);
        }
        let bad = |reason: String| TrainError::Image { uri: sample.uri.clone(), reason };
        let bytes = self.fetch(&sample.uri).map_err(bad)?;
        let decoded = decode_bytes(&bytes, &self.limits).map_err(|e| bad(e.to_string()))?;
        let mut rgb = decoded.rgb;
        let long = rgb.width().max(rgb.height());
        if long > self.max_side {
            let f = f64::from(self.max_side) / f64::from(long);
            let (w, h) = ((f64::from(rgb.width()) * f).round() as u32, (f64::from(rgb.height()) * f).round() as u32);
            rgb = imageops::resize(&rgb, w.max(1), h.max(1), FilterType::Triangle);
        }
        let img = Arc::new(rgb);
        if let Ok(mut cache) = self.cache.lock() {
            let size = img.as_raw().len();
            if cache.bytes + size <= cache.budget {
                cache.bytes += size;
                cache.images.insert(sample.uri.clone(), img.clone());
            }
        }
        Ok(img)
    }

    fn fetch(&self, uri: &str) -> Result<Vec<u8>, String> {
        if let Ok(path) = url::Url::parse(uri).map_err(|_| ()).and_then(|u| u.to_file_path()) {
            return std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()));
        }
        self.runtime.block_on(self.stores.read(uri)).map(|b| b.to_vec()).map_err(|e| e.to_string())
    }
}

/// What one training step looks at: which samples, which views, at which input size.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    /// Global step (0-based).
    pub step: u64,
    /// Epoch of the step (0-based).
    pub epoch: u64,
    /// Sample index and drawn view per slot.
    pub items: Vec<(usize, ViewSeed)>,
    /// Input side in pixels for this batch.
    pub side: u32,
    /// Each photo is cut into a `regions x regions` grid whose cells are classes of their own (1 = whole photos).
    pub regions: u32,
}

/// The seed of one slot's view; the view itself needs the image's size, known once decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewSeed(pub u64);

/// A rendered batch on the CPU.
#[derive(Debug)]
pub struct Batch {
    /// The plan it came from.
    pub plan: BatchPlan,
    /// `[B, 3, side, side]`, normalised.
    pub images: Tensor,
    /// `[B]` class indices (`i64`).
    pub labels: Tensor,
}

/// One rendered view (normalised CHW pixels) and its class, or why it could not be made.
type Slot = Result<(Vec<f32>, i64), TrainError>;

/// Renders a planned batch with `threads` CPU threads.
pub fn render_batch(
    source: &ImageSource,
    samples: &[Sample],
    plan: BatchPlan,
    augment: &crate::augment::AugmentConfig,
    norm: Normalization,
    threads: usize,
) -> Result<Batch, TrainError> {
    let side = plan.side;
    let n = plan.items.len();
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Slot>>> = (0..n).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(index, seed)) = plan.items.get(k) else { break };
                    let result = source.image(&samples[index]).map(|img| {
                        let (view, cell) = draw(augment, seed, plan.regions, img.width(), img.height());
                        let class = samples[index].class as i64 * i64::from(plan.regions.pow(2)) + cell;
                        (view.render(&img, side, norm), class)
                    });
                    if let Ok(mut slot) = slots[k].lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    let mut pixels = Vec::with_capacity(n * 3 * (side as usize).pow(2));
    let mut labels = Vec::with_capacity(n);
    for slot in slots {
        let result =
            slot.into_inner().ok().flatten().ok_or_else(|| TrainError::Config("a loader thread died".into()))?;
        let (view, class) = result?;
        pixels.extend(view);
        labels.push(class);
    }
    let images = Tensor::from_slice(&pixels).view([n as i64, 3, i64::from(side), i64::from(side)]);
    Ok(Batch { plan, images, labels: Tensor::from_slice(&labels).to_kind(Kind::Int64) })
}

/// The view of a slot and its grid cell: the cell is drawn first, then the view inside it.
fn draw(augment: &crate::augment::AugmentConfig, seed: ViewSeed, regions: u32, width: u32, height: u32) -> (View, i64) {
    let mut rng = delf_core::rng::SplitMix64(seed.0);
    let regions = regions.max(1);
    let cell = if regions > 1 { rng.below((regions * regions) as usize) as u32 } else { 0 };
    let (cw, ch) = ((width / regions).max(1), (height / regions).max(1));
    let mut view = augment.sample(&mut rng, cw, ch);
    view.cx += f64::from((cell % regions) * cw);
    view.cy += f64::from((cell / regions) * ch);
    (view, i64::from(cell))
}

/// Renders `plans` in order on a background thread, at most `ahead` batches ahead of the consumer.
pub fn prefetch(
    source: Arc<ImageSource>,
    samples: Arc<Vec<Sample>>,
    plans: Vec<BatchPlan>,
    augment: crate::augment::AugmentConfig,
    norm: Normalization,
    threads: usize,
    ahead: usize,
) -> Receiver<Result<Batch, TrainError>> {
    let (tx, rx) = sync_channel(ahead.max(1));
    std::thread::spawn(move || {
        for plan in plans {
            let batch = render_batch(&source, &samples, plan, &augment, norm, threads);
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                break;
            }
        }
    });
    rx
}
