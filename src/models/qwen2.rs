//! Qwen2 (Hugging Face `Qwen2ForCausalLM`; the small Qwen2.5 models people fine-tune on
//! laptops): LLaMA's architecture with biases on the Q, K and V projections (none on the output
//! projection), a tied or untied head, and Qwen's keys (`use_sliding_window`, `sliding_window`,
//! `max_window_layers`). Everything else is [`super::llama`].

use super::llama::{self, LlamaConfig};
use super::lm::CausalLm;
use crate::error::{model_err, Result};
use crate::gpu::Gpu;
use crate::io::config::Keys;
use crate::io::weights::Weights;

/// Parse and validate a Qwen2 `config.json`; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<LlamaConfig> {
    let raw = Keys::parse(file, text)?;
    let k = Keys::new(file, &raw)?;
    k.model_type(&["qwen2"], "Qwen2 (expected \"qwen2\")")?;
    // Sliding-window attention only changes anything on sequences longer than the window.
    if k.boolean("use_sliding_window")? == Some(true) {
        return model_err(file, "use_sliding_window = true is not supported (full causal attention only)");
    }
    let mut cfg = LlamaConfig::from_json(file, raw)?;
    cfg.qkv_bias = true;
    cfg.o_bias = false;
    Ok(cfg)
}

/// Build Qwen2 from a config text and weights, its layers checked (the [`super::FAMILIES`]
/// loader).
pub fn from_config(gpu: &Gpu, file: &str, text: &str, w: &Weights, b: &super::Build) -> Result<CausalLm> {
    let cfg = parse(file, text)?;
    w.check_layers(cfg.num_layers, "num_hidden_layers")?;
    llama::load_with(gpu, &cfg, w, b, "Qwen2ForCausalLM")
}
