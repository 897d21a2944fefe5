//! Sentence embeddings with a BERT-family encoder, on whatever GPU wgpu finds (Vulkan, Metal,
//! DX12, GL), and their cosine similarities.
//!
//!   models/fetch.sh minilm && cargo run --release --example embed_sentences [MODEL_DIR]

use std::path::PathBuf;
use tramway::data::text::TextTokenizer;
use tramway::io::hf::read_weights;
use tramway::models::encoder::read_encoder_config;
use tramway::models::encoder::{Encoder, Pooling};
use tramway::{Gpu, GpuOptions};

fn main() -> tramway::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or("models/all-MiniLM-L6-v2".into()));
    let sentences = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell today."];

    // The device (TRAMWAY_BACKEND / TRAMWAY_ADAPTER choose another), then the Hugging Face folder.
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let cfg = read_encoder_config(&dir)?;
    let tok = TextTokenizer::from_dir(&dir, 128, cfg.pad_token_id)?;
    let model = Encoder::load(&gpu, cfg, &read_weights(&dir)?, 0)?;

    // Tokenize (padded to the longest), run the encoder, mean-pool over real tokens, L2-normalise:
    // what sentence-transformers does for all-MiniLM-L6-v2.
    let batch = tok.encode(&sentences)?;
    let emb = pollster::block_on(model.embed(&gpu, &batch, Pooling::Mean, true))?;

    println!("device: {}; {}-dimensional embeddings", gpu.adapter_info().name, emb[0].len());
    for i in 0..sentences.len() {
        for j in i + 1..sentences.len() {
            let cos: f32 = emb[i].iter().zip(&emb[j]).map(|(a, b)| a * b).sum();
            println!("{cos:.3}  {:?} ~ {:?}", sentences[i], sentences[j]);
        }
    }
    Ok(())
}
