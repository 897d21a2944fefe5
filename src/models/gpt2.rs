//! GPT-2 (Hugging Face `GPT2LMHeadModel`): token and learned position embeddings, pre-LayerNorm
//! blocks with a GELU-tanh MLP and causal self-attention, and the LM head tied to `wte`. The
//! shared machinery is [`CausalLm`]; this file names the tensors.
//!
//! Hugging Face stores GPT-2's projections as `Conv1D` (`[in, out]`, `y = x W + b`): the
//! linears read the weights untransposed. `c_attn`'s fused `[h, 3h]` weight is three column
//! blocks writing separate Q, K and V tensors (no tensor is bound twice in a dispatch, which
//! WebGPU forbids for writable bindings). The tied `wte` may exceed one binding (50257 x 768 x 4
//! bytes is 154 MB): it is a split tensor.

use super::lm::{CausalLm, LmParts};
use super::Build;
use crate::error::model_err;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::io::config::{heads, Keys, MAX_LAYERS, MAX_POSITIONS, MAX_SIZE};
use crate::io::weights::Weights;
use crate::nn::block::{Attention, Block, Mlp};
use crate::nn::layers::Layout;
use crate::nn::Specs;
use crate::ops::matmul::Act;

/// A GPT-2 `config.json` (GPT2LMHeadModel), validated.
#[derive(Clone, Debug)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub inner_size: usize,
    pub layer_norm_eps: f32,
    pub act: Act,
    pub resid_dropout: f32,
    pub embd_dropout: f32,
    pub attn_dropout: f32,
    /// The LM head is `wte` (GPT-2 always ties it; an untied checkpoint is refused).
    pub tie_word_embeddings: bool,
    pub eos_token_id: Option<u32>,
    pub raw: serde_json::Value,
}

impl Gpt2Config {
    /// Parse and validate a GPT-2 `config.json`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let raw = Keys::parse(file, text)?;
        let k = Keys::new(file, &raw)?;
        k.model_type(&["gpt2"], "GPT-2 (expected \"gpt2\")")?;
        let unsupported = [
            (k.boolean("scale_attn_weights")? == Some(false), "scale_attn_weights = false"),
            (k.boolean("scale_attn_by_inverse_layer_idx")? == Some(true), "scale_attn_by_inverse_layer_idx = true"),
            (k.boolean("tie_word_embeddings")? == Some(false), "tie_word_embeddings = false"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(bad, _)| *bad) {
            return model_err(file, format!("{what} is not supported"));
        }
        // reorder_and_upcast_attn only changes the precision of PyTorch's fp16 path: f32 here.
        k.boolean("reorder_and_upcast_attn")?;
        let (hidden_size, num_heads) = heads(&k, "n_embd", "n_head")?;
        let act = match k.string("activation_function")?.unwrap_or("gelu_new") {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Act::GeluTanh,
            "gelu" => Act::GeluErf,
            other => {
                return model_err(
                    file,
                    format!("activation_function {other:?} is not supported (expected \"gelu_new\" or \"gelu\")"),
                )
            }
        };
        let vocab_size = k.size("vocab_size", None, MAX_SIZE)?;
        let n_positions = k.size("n_positions", None, MAX_POSITIONS)?;
        let inner_size = k.size("n_inner", Some(4 * hidden_size), MAX_SIZE)?;
        let h = ("n_embd", hidden_size);
        k.tensor("token embedding", &[("vocab_size", vocab_size), h])?;
        k.tensor("position embedding", &[("n_positions", n_positions), h])?;
        k.tensor("c_attn", &[h, ("3 x n_embd", 3 * hidden_size)])?;
        k.tensor("MLP", &[h, ("n_inner", inner_size)])?;
        Ok(Gpt2Config {
            vocab_size,
            n_positions,
            hidden_size,
            num_layers: k.size("n_layer", None, MAX_LAYERS)?,
            num_heads,
            inner_size,
            layer_norm_eps: k.eps("layer_norm_epsilon", 1e-5)?,
            act,
            resid_dropout: k.prob("resid_pdrop", 0.1)?,
            embd_dropout: k.prob("embd_pdrop", 0.1)?,
            attn_dropout: k.prob("attn_pdrop", 0.1)?,
            tie_word_embeddings: true,
            eos_token_id: k.token_id("eos_token_id")?,
            raw,
        })
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

/// [`load`] from a config text, its layers checked against the weights (the [`super::FAMILIES`]
/// loader).
pub fn from_config(gpu: &Gpu, file: &str, text: &str, w: &Weights, b: &Build) -> Result<CausalLm> {
    let cfg = Gpt2Config::parse(file, text)?;
    w.check_layers(cfg.num_layers, "n_layer")?;
    load_with(gpu, &cfg, w, b)
}

/// Build GPT-2 from its config and weights (names with or without `transformer.`).
pub fn load(gpu: &Gpu, c: &Gpt2Config, w: &Weights, seed: u64) -> Result<CausalLm> {
    load_with(gpu, c, w, &Build { seed, ..Default::default() })
}

/// [`load`] as `b` says (LoRA adapters).
pub fn load_with(gpu: &Gpu, c: &Gpt2Config, w: &Weights, b: &Build) -> Result<CausalLm> {
    let (h, i, eps, heads) = (c.hidden_size, c.inner_size, c.layer_norm_eps, c.num_heads);
    let mut s = Specs::for_build(b);
    let tokens = s.add_split("transformer.wte.weight", &[c.vocab_size, h]);
    let positions = s.add("transformer.wpe.weight", &[c.n_positions, h]);
    let mut blocks = Vec::with_capacity(c.num_layers);
    for l in 0..c.num_layers {
        let n = |x: &str| format!("transformer.h.{l}.{x}");
        let norm1 = s.layer_norm(&n("ln_1.weight"), &n("ln_1.bias"), h, eps);
        let qkv = s.conv1d(&n("attn.c_attn"), h, 3 * h);
        let qkv_col = |j: usize| {
            let mut b = qkv;
            b.layout = Layout::InOut { cols: Some((j * h, h)) };
            b
        };
        let o = s.conv1d(&n("attn.c_proj"), h, h);
        let norm2 = s.layer_norm(&n("ln_2.weight"), &n("ln_2.bias"), h, eps);
        let up = s.conv1d(&n("mlp.c_fc"), h, i);
        let down = s.conv1d(&n("mlp.c_proj"), i, h);
        let attn = Attention {
            q: qkv_col(0),
            k: qkv_col(1),
            v: qkv_col(2),
            o,
            heads,
            kv_heads: heads,
            head_dim: h / heads,
            causal: true,
            rope: false,
        };
        blocks.push(Block::new(attn, Mlp::Act { up, down, act: c.act }, (norm1, norm2), h, i));
    }
    let norm = s.layer_norm("transformer.ln_f.weight", "transformer.ln_f.bias", h, eps);
    let params = s.load(gpu, w, "transformer.", s.len(), b.seed)?;
    let config = super::with_architecture(&c.raw, "GPT2LMHeadModel");
    let parts = LmParts {
        tokens,
        positions: Some(positions),
        blocks,
        norm,
        head: tokens,
        vocab: c.vocab_size,
        max_positions: c.n_positions,
        hidden_dropout: c.resid_dropout,
        attention_dropout: c.attn_dropout,
        embedding_dropout: c.embd_dropout,
        rope: None,
    };
    Ok(CausalLm { params, parts, config, eos: c.eos_token_id })
}
