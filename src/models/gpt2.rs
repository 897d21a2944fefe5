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
use crate::error::Result;
use crate::gpu::Gpu;
use crate::io::config::Gpt2Config;
use crate::io::weights::Weights;
use crate::nn::block::{Attention, Block, Mlp};
use crate::nn::layers::Layout;
use crate::nn::Specs;

/// Build GPT-2 from its config and weights (names with or without `transformer.`).
pub fn load(gpu: &Gpu, c: &Gpt2Config, w: &Weights, seed: u64) -> Result<CausalLm> {
    let (h, i, eps, heads) = (c.hidden_size, c.inner_size, c.layer_norm_eps, c.num_heads);
    let mut s = Specs::default();
    let tokens = s.add_split("transformer.wte.weight", &[c.vocab_size, h]);
    let positions = s.add("transformer.wpe.weight", &[c.n_positions, h]);
    let mut blocks = Vec::with_capacity(c.num_layers);
    for l in 0..c.num_layers {
        let n = |x: &str| format!("transformer.h.{l}.{x}");
        let norm1 = s.layer_norm(&n("ln_1.weight"), &n("ln_1.bias"), h, eps);
        let qkv = s.conv1d(&n("attn.c_attn"), h, 3 * h);
        let block = |j: usize| {
            let mut b = qkv;
            b.layout = Layout::InOut { cols: Some((j * h, h)) };
            b
        };
        let o = s.conv1d(&n("attn.c_proj"), h, h);
        let norm2 = s.layer_norm(&n("ln_2.weight"), &n("ln_2.bias"), h, eps);
        let up = s.conv1d(&n("mlp.c_fc"), h, i);
        let down = s.conv1d(&n("mlp.c_proj"), i, h);
        blocks.push(Block {
            attn: Attention {
                q: block(0),
                k: block(1),
                v: block(2),
                o,
                heads,
                kv_heads: heads,
                head_dim: h / heads,
                causal: true,
                rope: false,
            },
            mlp: Mlp::Act { up, down, act: c.act },
            norm1,
            norm2,
            post_norm: false,
            scale: None,
            hidden: h,
            inter: i,
        });
    }
    let norm = s.layer_norm("transformer.ln_f.weight", "transformer.ln_f.bias", h, eps);
    let params = s.load(gpu, w, "transformer.", s.len(), seed)?;
    let mut config = c.raw.clone();
    if let Some(m) = config.as_object_mut() {
        m.insert("architectures".into(), serde_json::json!(["GPT2LMHeadModel"]));
    }
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
