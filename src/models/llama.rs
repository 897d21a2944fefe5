//! LLaMA-family causal language models (Hugging Face `LlamaForCausalLM`; SmolLM2): token
//! embeddings, pre-norm blocks with RMSNorm, rotary positions (rope_theta), grouped-query
//! attention and a SwiGLU MLP, a final RMSNorm and a tied or untied LM head (both tables may
//! be split into row blocks). The shared machinery is [`CausalLm`]; this file names the
//! tensors.

use super::lm::{CausalLm, LmParts};
use super::Build;
use crate::error::model_err;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::io::config::{show, Keys, MAX_LAYERS, MAX_POSITIONS, MAX_SIZE};
use crate::io::weights::Weights;
use crate::nn::block::{Attention, Block, Mlp};
use crate::nn::Specs;

/// A LLaMA-family `config.json` (LlamaForCausalLM: RMSNorm, RoPE, SwiGLU, grouped-query
/// attention), validated.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    /// Biases on the Q, K and V projections (`attention_bias`; Qwen2 always).
    pub qkv_bias: bool,
    /// A bias on the output projection (`attention_bias`; never in Qwen2).
    pub o_bias: bool,
    pub attention_dropout: f32,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub raw: serde_json::Value,
}

impl LlamaConfig {
    /// Parse and validate a LLaMA `config.json`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let raw = Keys::parse(file, text)?;
        Keys::new(file, &raw)?.model_type(&["llama"], "LLaMA (expected \"llama\")")?;
        Self::from_json(file, raw)
    }

    /// The LLaMA-architecture keys of a parsed `config.json` object (any `model_type`: a family
    /// that shares the architecture checks its own).
    pub fn from_json(file: &str, raw: serde_json::Value) -> Result<Self> {
        let k = Keys::new(file, &raw)?;
        if let Some(s) = k.get("rope_scaling") {
            return model_err(file, format!("rope_scaling {} is not supported (plain RoPE only)", show(s)));
        }
        if k.boolean("mlp_bias")? == Some(true) {
            return model_err(file, "mlp_bias = true is not supported");
        }
        let attention_bias = k.boolean("attention_bias")?.unwrap_or(false);
        match k.string("hidden_act")?.unwrap_or("silu") {
            "silu" | "swish" => {}
            other => return model_err(file, format!("hidden_act {other:?} is not supported (expected \"silu\")")),
        }
        let big = MAX_SIZE;
        let hidden_size = k.size("hidden_size", None, big)?;
        let num_heads = k.size("num_attention_heads", None, big)?;
        let explicit_head_dim = k.uint("head_dim")?.is_some();
        let head_dim = k.size("head_dim", Some((hidden_size / num_heads).max(1)), big)?;
        if !head_dim.is_multiple_of(2) || (!explicit_head_dim && !hidden_size.is_multiple_of(num_heads)) {
            return model_err(
                file,
                format!(
                    "head_dim {head_dim} must be even and positive (hidden_size {hidden_size} / {num_heads} heads)"
                ),
            );
        }
        let num_kv_heads = k.size("num_key_value_heads", Some(num_heads), big)?;
        if !num_heads.is_multiple_of(num_kv_heads) {
            return model_err(
                file,
                format!("num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}"),
            );
        }
        let vocab_size = k.size("vocab_size", None, big)?;
        let intermediate_size = k.size("intermediate_size", None, big)?;
        let h = ("hidden_size", hidden_size);
        let q = num_heads.saturating_mul(head_dim);
        k.tensor("token embedding", &[("vocab_size", vocab_size), h])?;
        k.tensor("q_proj", &[("num_attention_heads x head_dim", q), h])?;
        k.tensor("MLP", &[("intermediate_size", intermediate_size), h])?;
        let rope_theta = k.float("rope_theta")?.unwrap_or(10000.0);
        if !(rope_theta.is_finite() && rope_theta > 0.0) {
            return k.range("rope_theta", rope_theta, "a finite number > 0");
        }
        Ok(LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers: k.size("num_hidden_layers", None, MAX_LAYERS)?,
            num_heads,
            num_kv_heads,
            head_dim,
            max_position_embeddings: k.size("max_position_embeddings", Some(2048), MAX_POSITIONS)?,
            rms_norm_eps: k.eps("rms_norm_eps", 1e-6)?,
            rope_theta,
            tie_word_embeddings: k.boolean("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias: attention_bias,
            o_bias: attention_bias,
            attention_dropout: k.prob("attention_dropout", 0.0)?,
            bos_token_id: k.token_id("bos_token_id")?,
            eos_token_id: k.token_id("eos_token_id")?,
            raw,
        })
    }
}

/// [`load`] from a config text, its layers checked against the weights (the [`super::FAMILIES`]
/// loader).
pub fn from_config(gpu: &Gpu, file: &str, text: &str, w: &Weights, b: &Build) -> Result<CausalLm> {
    let cfg = LlamaConfig::parse(file, text)?;
    w.check_layers(cfg.num_layers, "num_hidden_layers")?;
    load_with(gpu, &cfg, w, b, "LlamaForCausalLM")
}

/// Build a LLaMA-architecture model from its config and weights; `arch` is the
/// `architectures` entry a saved config.json gets (`LlamaForCausalLM`, `Qwen2ForCausalLM`).
pub fn load(gpu: &Gpu, c: &LlamaConfig, w: &Weights, seed: u64, arch: &str) -> Result<CausalLm> {
    load_with(gpu, c, w, &Build { seed, ..Default::default() }, arch)
}

/// [`load`] as `b` says (LoRA adapters).
pub fn load_with(gpu: &Gpu, c: &LlamaConfig, w: &Weights, b: &Build, arch: &str) -> Result<CausalLm> {
    let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);
    let (heads, kv_heads, head_dim) = (c.num_heads, c.num_kv_heads, c.head_dim);
    let (qd, kd) = (heads * head_dim, kv_heads * head_dim);
    let mut s = Specs::for_build(b);
    let tokens = s.add_split("model.embed_tokens.weight", &[c.vocab_size, h]);
    let mut blocks = Vec::with_capacity(c.num_layers);
    for l in 0..c.num_layers {
        let n = |x: &str| format!("model.layers.{l}.{x}");
        let norm1 = s.rms_norm(&n("input_layernorm.weight"), h, eps);
        let q = s.linear(&n("self_attn.q_proj"), qd, h, c.qkv_bias);
        let k = s.linear(&n("self_attn.k_proj"), kd, h, c.qkv_bias);
        let v = s.linear(&n("self_attn.v_proj"), kd, h, c.qkv_bias);
        let o = s.linear(&n("self_attn.o_proj"), h, qd, c.o_bias);
        let norm2 = s.rms_norm(&n("post_attention_layernorm.weight"), h, eps);
        let gate = s.linear(&n("mlp.gate_proj"), i, h, false);
        let up = s.linear(&n("mlp.up_proj"), i, h, false);
        let down = s.linear(&n("mlp.down_proj"), h, i, false);
        let attn = Attention { q, k, v, o, heads, kv_heads, head_dim, causal: true, rope: true };
        blocks.push(Block::new(attn, Mlp::SwiGlu { gate, up, down }, (norm1, norm2), h, i));
    }
    let norm = s.rms_norm("model.norm.weight", h, eps);
    let head = if c.tie_word_embeddings { tokens } else { s.add_split("lm_head.weight", &[c.vocab_size, h]) };
    let params = s.load(gpu, w, "", s.len(), b.seed)?;
    let config = super::with_architecture(&c.raw, arch);
    let parts = LmParts {
        tokens,
        positions: None,
        blocks,
        norm,
        head,
        vocab: c.vocab_size,
        max_positions: c.max_position_embeddings,
        hidden_dropout: 0.0,
        attention_dropout: c.attention_dropout,
        embedding_dropout: 0.0,
        rope: Some((head_dim / 2, c.rope_theta)),
    };
    Ok(CausalLm { params, parts, config, eos: c.eos_token_id })
}
