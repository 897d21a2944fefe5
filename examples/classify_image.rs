//! Image classification with DINOv2 features and no training: each class is the mean feature of
//! a few labelled images, and a test image takes the class whose mean is nearest (cosine) — the
//! k-NN/prototype evaluation DINOv2 is known for.
//!
//!   models/fetch.sh dinov2 && models/fetch_data.sh images && \
//!     cargo run --release --example classify_image [MODEL_DIR] [IMAGES] [PER_CLASS]
//!
//! IMAGES is a folder with a sub-folder of PNG/JPEG files per class, or an IDX file (default: the
//! MNIST subset's test images); the first PER_CLASS images of each class (default 5) are the
//! references, the next PER_CLASS the queries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use tramway::data::batch::ImageBatch;
use tramway::data::image::{ImagePrep, ImageSet};
use tramway::io::hf::read_weights;
use tramway::models::vit::Vit;
use tramway::models::vit::VitConfig;
use tramway::{Gpu, GpuOptions};

fn main() -> tramway::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or("models/dinov2-small".into()));
    let images = PathBuf::from(args.next().unwrap_or("data/images/mnist/test-images-idx3-ubyte".into()));
    let per_class: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);

    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|source| tramway::Error::Io { path: cfg_path.display().to_string(), source })?;
    let mut cfg = VitConfig::parse(&cfg_path.display().to_string(), &text)?;
    // Small digits: the model sees them at 28x28 (two 14-pixel patches a side); DINOv2's
    // position embeddings are interpolated to that grid.
    let mut prep = ImagePrep::from_dir(&dir, 224)?;
    prep.size = 28;
    prep.shortest_edge = None;
    cfg.input_size = prep.size;
    let model = Vit::load(&gpu, cfg, &read_weights(&dir)?, 0)?;

    // The first 2 * PER_CLASS images of each class.
    let set = ImageSet::open(&images)?;
    let mut by_class: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in 0..set.len() {
        let v = by_class.entry(set.label(i).to_string()).or_default();
        if v.len() < 2 * per_class {
            v.push(i);
        }
    }
    let features = |idx: &[usize]| -> tramway::Result<Vec<Vec<f32>>> {
        let mut pixels = Vec::new();
        for &i in idx {
            pixels.extend(set.pixels(i, &prep)?);
        }
        pollster::block_on(model.embed(&gpu, &ImageBatch { batch: idx.len(), pixels, labels: None }, true))
    };
    // Class prototypes: the mean normalised feature of each class's references.
    let mut protos = Vec::new();
    for (label, idx) in &by_class {
        let f = features(&idx[..per_class.min(idx.len())])?;
        let mean: Vec<f32> = (0..f[0].len()).map(|d| f.iter().map(|v| v[d]).sum::<f32>() / f.len() as f32).collect();
        protos.push((label.clone(), mean));
    }
    let (mut right, mut total) = (0, 0);
    for (label, idx) in &by_class {
        for f in features(&idx[per_class.min(idx.len())..])? {
            let score = |p: &Vec<f32>| p.iter().zip(&f).map(|(a, b)| a * b).sum::<f32>();
            let best = protos.iter().max_by(|a, b| score(&a.1).total_cmp(&score(&b.1))).map(|p| &p.0);
            right += (best == Some(label)) as usize;
            total += 1;
        }
    }
    println!(
        "{} classes, {per_class} reference images each: {right}/{total} queries classified correctly ({:.0} %; chance {:.0} %)",
        by_class.len(),
        100.0 * right as f64 / total.max(1) as f64,
        100.0 / by_class.len().max(1) as f64
    );
    Ok(())
}
