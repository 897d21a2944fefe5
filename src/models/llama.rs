//! LLaMA-family causal language models (Hugging Face `LlamaForCausalLM`; SmolLM2): token
//! embeddings, pre-norm blocks with RMSNorm, rotary positions (rope_theta), grouped-query
//! attention and a SwiGLU MLP, a final RMSNorm and a tied or untied LM head (both tables may
//! be split into row blocks). The shared machinery is [`CausalLm`]; this file names the
//! tensors.

use super::lm::{CausalLm, LmParts};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::io::config::LlamaConfig;
use crate::io::weights::Weights;
use crate::nn::block::{Attention, Block, Mlp};
use crate::nn::Specs;

/// Build a LLaMA-architecture model from its config and weights; `arch` is the
/// `architectures` entry a saved config.json gets (`LlamaForCausalLM`, `Qwen2ForCausalLM`).
pub fn load(gpu: &Gpu, c: &LlamaConfig, w: &Weights, seed: u64, arch: &str) -> Result<CausalLm> {
    let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);
    let (heads, kv_heads, head_dim) = (c.num_heads, c.num_kv_heads, c.head_dim);
    let (qd, kd) = (heads * head_dim, kv_heads * head_dim);
    let mut s = Specs::default();
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
        blocks.push(Block {
            attn: Attention { q, k, v, o, heads, kv_heads, head_dim, causal: true, rope: true },
            mlp: Mlp::SwiGlu { gate, up, down },
            norm1,
            norm2,
            post_norm: false,
            scale: None,
            hidden: h,
            inter: i,
        });
    }
    let norm = s.rms_norm("model.norm.weight", h, eps);
    let head = if c.tie_word_embeddings { tokens } else { s.add_split("lm_head.weight", &[c.vocab_size, h]) };
    let params = s.load(gpu, w, "", s.len(), seed)?;
    let mut config = c.raw.clone();
    if let Some(m) = config.as_object_mut() {
        m.insert("architectures".into(), serde_json::json!([arch]));
    }
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
