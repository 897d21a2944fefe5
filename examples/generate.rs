//! Text generation with a causal LM (GPT-2 or LLaMA family) and its K/V cache: the prompt is
//! read in chunks, then one token per step, greedy.
//!
//!   models/fetch.sh smollm2 && cargo run --release --example generate [MODEL_DIR] [PROMPT]

use std::path::PathBuf;
use tramway::train::lm::{generate_greedy, lm_tokenizer, CausalLm};
use tramway::{Gpu, GpuOptions};

fn main() -> tramway::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or("models/SmolLM2-135M-Instruct".into()));
    let prompt = args.next().unwrap_or("The capital of France is".into());

    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let model = CausalLm::load(&gpu, &dir, 0)?;
    let tok = lm_tokenizer(&dir, &model)?;

    let ids = tok.ids(&prompt, false)?;
    // Stop at the model's end-of-text token, or after 12 new tokens.
    let stop: Vec<u32> = model.eos().into_iter().collect();
    let new = generate_greedy(&gpu, &model, &ids, 12, &stop)?;
    println!("{prompt}{}", tok.decode(&new, true)?);
    Ok(())
}
