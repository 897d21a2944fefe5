//! `tramway embed`: sentence embeddings from a text encoder folder, image features from a
//! ViT/DINOv2 folder.

use crate::data::batch::ImageBatch;
use crate::data::image::ImagePrep;
use crate::data::text::{token_counts, TextTokenizer};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::hf::read_weights;
use crate::models::encoder::{read_encoder_config, Encoder, Pooling};
use crate::models::vit::{Vit, VitConfig};
use std::path::{Path, PathBuf};

/// How texts are embedded.
#[derive(Clone, Copy, Debug)]
pub struct TextEmbedding {
    /// Tokens per text at most (at most the model's positions).
    pub max_len: usize,
    /// Texts per forward.
    pub batch_size: usize,
    pub pooling: Pooling,
    /// L2-normalise each embedding.
    pub normalize: bool,
}

/// Each text's token count and embedding, with the encoder in `dir` (the device opened by
/// `gpu` once the inputs are checked).
pub fn embed_texts(
    gpu: impl FnOnce() -> Result<Gpu>,
    dir: &Path,
    texts: &[String],
    o: &TextEmbedding,
) -> Result<Vec<(usize, Vec<f32>)>> {
    let bad = |name, value: String, expected: &str| Err(Error::BadSetting { name, value, expected: expected.into() });
    if texts.is_empty() {
        return bad("TEXT", String::new(), "at least one text to embed");
    }
    if o.batch_size == 0 {
        return bad("--batch-size", "0".into(), "a positive number");
    }
    let cfg = read_encoder_config(dir)?;
    if o.max_len > cfg.max_position_embeddings {
        let expected = format!("at most the model's max_position_embeddings ({})", cfg.max_position_embeddings);
        return bad("--max-len", o.max_len.to_string(), &expected);
    }
    let tok = TextTokenizer::from_dir(dir, o.max_len, cfg.pad_token_id)?;
    let gpu = gpu()?;
    let model = Encoder::load(&gpu, cfg, &read_weights(dir)?, 0)?;
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(o.batch_size) {
        let refs: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
        let batch = tok.encode(&refs)?;
        let embs = pollster::block_on(model.embed(&gpu, &batch, o.pooling, o.normalize))?;
        out.extend(token_counts(&batch).into_iter().zip(embs));
    }
    Ok(out)
}

/// Each image's CLS features (after the last LayerNorm; L2-normalised when `normalize`), with
/// the ViT/DINOv2 in `dir` at its preprocessor's size (224 at most).
pub fn embed_images(
    gpu: &Gpu,
    dir: &Path,
    images: &[PathBuf],
    batch_size: usize,
    normalize: bool,
) -> Result<Vec<Vec<f32>>> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|source| Error::Io { path: cfg_path.display().to_string(), source })?;
    let mut cfg = VitConfig::parse(&cfg_path.display().to_string(), &text)?;
    let prep = ImagePrep::from_dir(dir, cfg.image_size.min(224))?;
    cfg.input_size = prep.size;
    let model = Vit::load(gpu, cfg, &read_weights(dir)?, 0)?;
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch_size.max(1)) {
        let mut pixels = Vec::new();
        for p in chunk {
            pixels.extend(prep.load(p)?);
        }
        let batch = ImageBatch { batch: chunk.len(), pixels, labels: None };
        out.extend(pollster::block_on(model.embed(gpu, &batch, normalize))?);
    }
    Ok(out)
}
