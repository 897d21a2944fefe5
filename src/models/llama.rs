//! LLaMA-family causal language models (Hugging Face `LlamaForCausalLM`; SmolLM2): RMSNorm,
//! rotary position embeddings (rope_theta), SwiGLU MLP, grouped-query attention, tied or untied
//! LM head. Explicit forward and backward.
//!
//! Grouped-query attention repeats the K/V heads to the query heads (as Hugging Face's
//! `repeat_kv`) and sums their gradients back. The token table and an untied head may exceed
//! one binding: both are split tensors and the head runs per row block.

use super::gpt2::{lm_head, lm_head_backward, lm_head_from, KvCache, LmBatch};
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::io::config::LlamaConfig;
use crate::io::weights::{HostTensor, Weights};
use crate::nn::{site, Drop, Noise, ParamSet, Train};
use crate::ops::attention::{
    attention_backward_with, attention_cached, attention_with, AttnShape, CachedShape, HeadView,
};
use crate::ops::cross_entropy::{cross_entropy, IGNORE_INDEX};
use crate::ops::decoder::{
    repeat_heads, repeat_heads_backward, rope, rope_table, rope_table_from, swiglu, swiglu_backward,
};
use crate::ops::elementwise::axpby;
use crate::ops::embedding::{embedding_backward_parts, embedding_parts, EmbeddingIndex};
use crate::ops::matmul::{matmul, Matmul};
use crate::ops::norm::{norm_backward, rmsnorm, NormGrads};

struct LayerIdx {
    ln1: usize,
    q: usize,
    k: usize,
    v: usize,
    o: usize,
    ln2: usize,
    gate: usize,
    up: usize,
    down: usize,
}

struct Idx {
    embed: usize,
    layers: Vec<LayerIdx>,
    norm: usize,
    /// `lm_head.weight`, or the embedding table when tied.
    head: usize,
}

/// A LLaMA-family language model, parameters and gradients on the GPU.
pub struct Llama {
    pub cfg: LlamaConfig,
    pub params: ParamSet,
    idx: Idx,
}

struct LayerActs {
    ln1: Tensor,
    rstd1: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    qr: Tensor,
    kr: Tensor,
    /// K and V repeated to every query head (grouped-query attention only).
    krep: Option<Tensor>,
    vrep: Option<Tensor>,
    probs: Tensor,
    probs_drop: Tensor,
    ctx: Tensor,
    res1: Tensor,
    ln2: Tensor,
    rstd2: Tensor,
    gate: Tensor,
    up: Tensor,
    act: Tensor,
}

/// Every activation the backward needs, planned once per batch shape.
pub struct LlamaActs {
    batch: usize,
    seq: usize,
    train: std::cell::Cell<Option<Train>>,
    ids: Tensor,
    mask: Tensor,
    targets: Tensor,
    row_w: Tensor,
    table: Tensor,
    index: Option<EmbeddingIndex>,
    xs: Vec<Tensor>,
    layers: Vec<LayerActs>,
    lnf: Tensor,
    rstdf: Tensor,
    /// `[batch * seq, vocab]`
    pub logits: Tensor,
    /// `[loss, counted tokens]`
    pub loss: Tensor,
    dlogits: Tensor,
    dx: Tensor,
    dx2: Tensor,
    dh: Tensor,
    dtmp: Tensor,
    dctx: Tensor,
    dqr: Tensor,
    dq: Tensor,
    dkfull: Tensor,
    dvfull: Tensor,
    dkr: Tensor,
    dk: Tensor,
    dv: Tensor,
    dact: Tensor,
    dgate: Tensor,
    dup: Tensor,
}

/// `y (+)= x W^T` for an `nn.Linear` weight `W` `[out, in]` without bias.
fn proj(rec: &mut Recorder, x: &Tensor, w: &Tensor, y: &Tensor, accumulate: bool) -> Result<()> {
    let x2 = x.reshape(&[x.len() / w.cols(), w.cols()])?;
    let y2 = y.reshape(&[x2.rows(), w.rows()])?;
    let mut op = Matmul::new(&x2, false, w, true, &y2)?;
    if accumulate {
        op = op.accumulate(1.0);
    }
    matmul(rec, &op)
}

/// Backward of [`proj`]: `dW += dy^T x`, and `dx (+)= dy W`.
fn proj_backward(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    dx: (&Tensor, bool),
) -> Result<()> {
    let (out, inp) = (w.rows(), w.cols());
    let rows = dy.len() / out;
    let x2 = x.reshape(&[rows, inp])?;
    let dy2 = dy.reshape(&[rows, out])?;
    matmul(rec, &Matmul::new(&dy2, true, &x2, false, dw)?.accumulate(1.0))?;
    let dx2 = dx.0.reshape(&[rows, inp])?;
    let mut op = Matmul::new(&dy2, false, w, false, &dx2)?;
    if dx.1 {
        op = op.accumulate(1.0);
    }
    matmul(rec, &op)
}

impl Llama {
    /// The canonical `(name, shape)` list in arena order (Hugging Face names).
    fn specs(c: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let (qd, kd) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let mut v = vec![("model.embed_tokens.weight".to_string(), vec![c.vocab_size, h])];
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}.");
            v.push((format!("{p}input_layernorm.weight"), vec![h]));
            v.push((format!("{p}self_attn.q_proj.weight"), vec![qd, h]));
            v.push((format!("{p}self_attn.k_proj.weight"), vec![kd, h]));
            v.push((format!("{p}self_attn.v_proj.weight"), vec![kd, h]));
            v.push((format!("{p}self_attn.o_proj.weight"), vec![h, qd]));
            v.push((format!("{p}post_attention_layernorm.weight"), vec![h]));
            v.push((format!("{p}mlp.gate_proj.weight"), vec![i, h]));
            v.push((format!("{p}mlp.up_proj.weight"), vec![i, h]));
            v.push((format!("{p}mlp.down_proj.weight"), vec![h, i]));
        }
        v.push(("model.norm.weight".into(), vec![h]));
        if !c.tie_word_embeddings {
            v.push(("lm_head.weight".into(), vec![c.vocab_size, h]));
        }
        v
    }

    /// Build the model from a config and its weights.
    pub fn load(gpu: &Gpu, cfg: LlamaConfig, w: &Weights, seed: u64) -> Result<Self> {
        let specs = Self::specs(&cfg);
        let split: Vec<usize> = if cfg.tie_word_embeddings { vec![0] } else { vec![0, specs.len() - 1] };
        let params = ParamSet::load(gpu, &specs, w, "", specs.len(), &split, seed)?;
        let mut k = 1;
        let mut next = || {
            k += 1;
            k - 1
        };
        let layers = (0..cfg.num_layers)
            .map(|_| LayerIdx {
                ln1: next(),
                q: next(),
                k: next(),
                v: next(),
                o: next(),
                ln2: next(),
                gate: next(),
                up: next(),
                down: next(),
            })
            .collect();
        let norm = next();
        let head = if cfg.tie_word_embeddings { 0 } else { next() };
        Ok(Llama { cfg, params, idx: Idx { embed: 0, layers, norm, head } })
    }

    /// Every parameter under its Hugging Face name, in the dtype it was loaded in.
    pub async fn state(&self, gpu: &Gpu) -> Result<Vec<(String, HostTensor)>> {
        self.params.state(gpu).await
    }

    /// `config.json` for saving (the loaded config, architecture LlamaForCausalLM).
    pub fn config_json(&self) -> serde_json::Value {
        let mut v = self.cfg.raw.clone();
        if let Some(m) = v.as_object_mut() {
            m.insert("architectures".into(), serde_json::json!(["LlamaForCausalLM"]));
        }
        v
    }

    /// Plan the activations for batches of `batch` sequences of `seq` tokens.
    pub fn acts(&self, gpu: &Gpu, batch: usize, seq: usize) -> Result<LlamaActs> {
        let c = &self.cfg;
        if batch == 0 || seq == 0 {
            return shape_err("llama", "empty batch");
        }
        if seq > c.max_position_embeddings {
            return shape_err(
                "llama",
                format!("sequences of {seq} tokens exceed max_position_embeddings = {}", c.max_position_embeddings),
            );
        }
        let bt = batch * seq;
        let (h, i, nv) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let (qd, kd) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let gqa = c.num_kv_heads != c.num_heads;
        let f = |s: &[usize]| gpu.zeros(s);
        let probs = batch * c.num_heads * seq * seq;
        let layers = (0..c.num_layers)
            .map(|_| {
                Ok(LayerActs {
                    ln1: f(&[bt, h])?,
                    rstd1: f(&[bt])?,
                    q: f(&[bt, qd])?,
                    k: f(&[bt, kd])?,
                    v: f(&[bt, kd])?,
                    qr: f(&[bt, qd])?,
                    kr: f(&[bt, kd])?,
                    krep: if gqa { Some(f(&[bt, qd])?) } else { None },
                    vrep: if gqa { Some(f(&[bt, qd])?) } else { None },
                    probs: f(&[probs])?,
                    probs_drop: if c.attention_dropout > 0.0 { f(&[probs])? } else { f(&[1])? },
                    ctx: f(&[bt, qd])?,
                    res1: f(&[bt, h])?,
                    ln2: f(&[bt, h])?,
                    rstd2: f(&[bt])?,
                    gate: f(&[bt, i])?,
                    up: f(&[bt, i])?,
                    act: f(&[bt, i])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LlamaActs {
            batch,
            seq,
            train: Default::default(),
            ids: gpu.zeros_u32(&[bt])?,
            mask: gpu.zeros_u32(&[bt])?,
            targets: gpu.zeros_u32(&[bt])?,
            row_w: f(&[bt])?,
            table: gpu.from_f32(&rope_table(seq, c.head_dim / 2, c.rope_theta), &[2 * seq * c.head_dim / 2])?,
            index: None,
            xs: (0..=c.num_layers).map(|_| f(&[bt, h])).collect::<Result<_>>()?,
            layers,
            lnf: f(&[bt, h])?,
            rstdf: f(&[bt])?,
            logits: f(&[bt, nv])?,
            loss: f(&[2])?,
            dlogits: f(&[bt, nv])?,
            dx: f(&[bt, h])?,
            dx2: f(&[bt, h])?,
            dh: f(&[bt, h])?,
            dtmp: f(&[bt, h])?,
            dctx: f(&[bt, qd])?,
            dqr: f(&[bt, qd])?,
            dq: f(&[bt, qd])?,
            dkfull: f(&[bt, qd])?,
            dvfull: f(&[bt, qd])?,
            dkr: f(&[bt, kd])?,
            dk: f(&[bt, kd])?,
            dv: f(&[bt, kd])?,
            dact: f(&[bt, i])?,
            dgate: f(&[bt, i])?,
            dup: f(&[bt, i])?,
        })
    }

    /// Check a batch against the model and upload it into `acts`.
    pub fn upload(&self, gpu: &Gpu, acts: &mut LlamaActs, b: &LmBatch) -> Result<()> {
        let n = b.batch * b.seq;
        if b.batch != acts.batch || b.seq != acts.seq {
            return shape_err(
                "llama",
                format!(
                    "batch is {}x{} but the activations were planned for {}x{}",
                    b.batch, b.seq, acts.batch, acts.seq
                ),
            );
        }
        if b.ids.len() != n || b.mask.len() != n {
            return shape_err(
                "llama",
                format!("ids ({}) and mask ({}) must have {n} entries", b.ids.len(), b.mask.len()),
            );
        }
        gpu.write_u32(&acts.ids, &b.ids)?;
        gpu.write_u32(&acts.mask, &b.mask)?;
        let targets = b.targets();
        gpu.write_u32(&acts.targets, &targets)?;
        gpu.write_f32(&acts.row_w, &super::gpt2::row_weights(&targets))?;
        acts.index = Some(EmbeddingIndex::upload(gpu, &b.ids, self.cfg.vocab_size)?);
        Ok(())
    }

    fn shape(&self, a: &LlamaActs) -> AttnShape {
        AttnShape { batch: a.batch, seq: a.seq, heads: self.cfg.num_heads, head_dim: self.cfg.head_dim }
    }

    /// Record the forward pass (logits of every position; the mean next-token loss and
    /// dlogits when `with_loss`).
    pub fn forward(&self, rec: &mut Recorder, a: &LlamaActs, with_loss: bool, train: Option<Train>) -> Result<()> {
        self.forward_with(rec, a, with_loss, train, &self.params, None)
    }

    /// [`Llama::forward`] with another parameter set of the same layout and optional noise on
    /// the token embeddings (TRAM-x, R3F).
    pub fn forward_with(
        &self,
        rec: &mut Recorder,
        a: &LlamaActs,
        with_loss: bool,
        train: Option<Train>,
        params: &ParamSet,
        noise: Option<Noise>,
    ) -> Result<()> {
        let (p, x, c) = (params, &self.idx, &self.cfg);
        a.train.set(train);
        let d = Drop::new(train, 0.0, c.attention_dropout);
        let (eps, half, nh, nkv, hd) = (c.rms_norm_eps, c.head_dim / 2, c.num_heads, c.num_kv_heads, c.head_dim);
        embedding_parts(rec, p.parts(x.embed), &a.ids, &a.xs[0])?;
        if let Some(n) = noise {
            n.fill(rec, &a.dtmp)?;
            axpby(rec, 1.0, &a.dtmp, 1.0, &a.xs[0])?;
        }
        let s = self.shape(a);
        let scale = 1.0 / (hd as f32).sqrt();
        for (l, (li, la)) in x.layers.iter().zip(&a.layers).enumerate() {
            let xin = &a.xs[l];
            rmsnorm(rec, xin, p.p(li.ln1), &la.ln1, &la.rstd1, eps)?;
            proj(rec, &la.ln1, p.p(li.q), &la.q, false)?;
            proj(rec, &la.ln1, p.p(li.k), &la.k, false)?;
            proj(rec, &la.ln1, p.p(li.v), &la.v, false)?;
            rope(rec, &la.q, &a.table, &la.qr, nh, half, a.seq, false)?;
            rope(rec, &la.k, &a.table, &la.kr, nkv, half, a.seq, false)?;
            let (kk, vv) = match (&la.krep, &la.vrep) {
                (Some(kr), Some(vr)) => {
                    repeat_heads(rec, &la.kr, kr, nh, nkv, hd)?;
                    repeat_heads(rec, &la.v, vr, nh, nkv, hd)?;
                    (kr, vr)
                }
                _ => (&la.kr, &la.v),
            };
            let drop = d.attn(site::attn(l), &la.probs_drop);
            let (q, k, v) = (HeadView::dense(&la.qr, &s), HeadView::dense(kk, &s), HeadView::dense(vv, &s));
            attention_with(
                rec,
                &s,
                q,
                k,
                v,
                HeadView::dense(&la.ctx, &s),
                &la.probs,
                Some(&a.mask),
                true,
                scale,
                drop,
            )?;
            rec.copy(xin, &la.res1)?;
            proj(rec, &la.ctx, p.p(li.o), &la.res1, true)?;
            rmsnorm(rec, &la.res1, p.p(li.ln2), &la.ln2, &la.rstd2, eps)?;
            proj(rec, &la.ln2, p.p(li.gate), &la.gate, false)?;
            proj(rec, &la.ln2, p.p(li.up), &la.up, false)?;
            swiglu(rec, &la.gate, &la.up, &la.act)?;
            rec.copy(&la.res1, &a.xs[l + 1])?;
            proj(rec, &la.act, p.p(li.down), &a.xs[l + 1], true)?;
        }
        rmsnorm(rec, &a.xs[c.num_layers], p.p(x.norm), &a.lnf, &a.rstdf, eps)?;
        lm_head(rec, p.parts(x.head), &a.lnf, &a.logits)?;
        if with_loss {
            cross_entropy(rec, &a.logits, &a.targets, &a.loss, Some(&a.dlogits), IGNORE_INDEX, 1.0)?;
        }
        Ok(())
    }

    /// Record the backward pass of the mean loss, accumulating into the gradients.
    pub fn backward(&self, rec: &mut Recorder, a: &LlamaActs) -> Result<()> {
        self.backward_from(rec, a, &a.dlogits, true)
    }

    /// The backward pass from a given gradient of the logits; `input_grad = false` leaves out
    /// the token-embedding path of the input (a tied head's gradient still reaches the table).
    pub fn backward_from(&self, rec: &mut Recorder, a: &LlamaActs, dlogits: &Tensor, input_grad: bool) -> Result<()> {
        let (p, x, c) = (&self.params, &self.idx, &self.cfg);
        let Some(index) = &a.index else {
            return shape_err("llama", "backward before a batch was uploaded");
        };
        let d = Drop::new(a.train.get(), 0.0, c.attention_dropout);
        let g = |i: usize| p.g(i);
        let (half, nh, nkv, hd) = (c.head_dim / 2, c.num_heads, c.num_kv_heads, c.head_dim);
        lm_head_backward(rec, p.parts(x.head), p.grad_parts(x.head), &a.lnf, dlogits, &a.dh)?;
        let ng = NormGrads { dx: &a.dx, accumulate_dx: false, dgamma: g(x.norm), dbeta: None };
        norm_backward(rec, &a.xs[c.num_layers], p.p(x.norm), &a.dh, None, &a.rstdf, &ng)?;
        let s = self.shape(a);
        let scale = 1.0 / (hd as f32).sqrt();
        for (l, (li, la)) in x.layers.iter().zip(&a.layers).enumerate().rev() {
            // MLP: x_{l+1} = res1 + down(silu(gate) * up).
            rec.copy(&a.dx, &a.dx2)?;
            proj_backward(rec, &la.act, p.p(li.down), &a.dx, g(li.down), (&a.dact, false))?;
            swiglu_backward(rec, &la.gate, &la.up, &a.dact, &a.dgate, &a.dup)?;
            proj_backward(rec, &la.ln2, p.p(li.gate), &a.dgate, g(li.gate), (&a.dh, false))?;
            proj_backward(rec, &la.ln2, p.p(li.up), &a.dup, g(li.up), (&a.dh, true))?;
            let ng = NormGrads { dx: &a.dx2, accumulate_dx: true, dgamma: g(li.ln2), dbeta: None };
            norm_backward(rec, &la.res1, p.p(li.ln2), &a.dh, None, &la.rstd2, &ng)?;
            // Attention: res1 = x_l + o(attn(rope(q), rope(k), v)).
            rec.copy(&a.dx2, &a.dx)?;
            proj_backward(rec, &la.ctx, p.p(li.o), &a.dx2, g(li.o), (&a.dctx, false))?;
            let gqa = la.krep.is_some();
            let (kk, vv) = match (&la.krep, &la.vrep) {
                (Some(kr), Some(vr)) => (kr, vr),
                _ => (&la.kr, &la.v),
            };
            let (dkk, dvv) = if gqa { (&a.dkfull, &a.dvfull) } else { (&a.dkr, &a.dv) };
            let (q, k, v) = (HeadView::dense(&la.qr, &s), HeadView::dense(kk, &s), HeadView::dense(vv, &s));
            let (dq, dk, dv) = (HeadView::dense(&a.dqr, &s), HeadView::dense(dkk, &s), HeadView::dense(dvv, &s));
            let drop = d.attn(site::attn(l), &la.probs_drop);
            attention_backward_with(
                rec,
                &s,
                q,
                k,
                v,
                &la.probs,
                HeadView::dense(&a.dctx, &s),
                dq,
                dk,
                dv,
                scale,
                false,
                drop,
            )?;
            if gqa {
                repeat_heads_backward(rec, &a.dkfull, &a.dkr, nh, nkv, hd)?;
                repeat_heads_backward(rec, &a.dvfull, &a.dv, nh, nkv, hd)?;
            }
            rope(rec, &a.dqr, &a.table, &a.dq, nh, half, a.seq, true)?;
            rope(rec, &a.dkr, &a.table, &a.dk, nkv, half, a.seq, true)?;
            proj_backward(rec, &la.ln1, p.p(li.q), &a.dq, g(li.q), (&a.dh, false))?;
            proj_backward(rec, &la.ln1, p.p(li.k), &a.dk, g(li.k), (&a.dh, true))?;
            proj_backward(rec, &la.ln1, p.p(li.v), &a.dv, g(li.v), (&a.dh, true))?;
            let ng = NormGrads { dx: &a.dx, accumulate_dx: true, dgamma: g(li.ln1), dbeta: None };
            norm_backward(rec, &a.xs[l], p.p(li.ln1), &a.dh, None, &la.rstd1, &ng)?;
        }
        if input_grad {
            embedding_backward_parts(rec, &a.dx, index, p.grad_parts(x.embed))?;
        }
        Ok(())
    }
}

/// Incremental decoding state of a [`Llama`] (batch 1, see [`Llama::decode`]): the K/V cache
/// (keys after RoPE, one entry per K/V head) and the buffers of one chunk of new tokens.
pub struct LlamaDecoder {
    cache: KvCache,
    ids: Tensor,
    table: Tensor,
    x: Tensor,
    ln: Tensor,
    rstd: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    qr: Tensor,
    kr: Tensor,
    ctx: Tensor,
    gate: Tensor,
    up: Tensor,
    act: Tensor,
    /// `[1, vocab]`: the logits after the last token fed.
    pub logits: Tensor,
}

impl LlamaDecoder {
    /// The K/V cache: positions fed so far, capacity, tokens per call.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }
}

impl Llama {
    /// Plan incremental decoding of up to `capacity` positions, fed `chunk` tokens at a time at
    /// most (a prompt in chunks, then one token per step).
    pub fn decoder(&self, gpu: &Gpu, capacity: usize, chunk: usize) -> Result<LlamaDecoder> {
        let c = &self.cfg;
        if capacity > c.max_position_embeddings {
            return shape_err(
                "llama",
                format!("{capacity} positions exceed max_position_embeddings = {}", c.max_position_embeddings),
            );
        }
        let (qd, kd) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let cache = KvCache::new(gpu, c.num_layers, capacity, chunk, kd)?;
        let (t, h, i) = (cache.chunk(), c.hidden_size, c.intermediate_size);
        let f = |s: &[usize]| gpu.zeros(s);
        Ok(LlamaDecoder {
            ids: gpu.zeros_u32(&[t])?,
            table: f(&[2 * t * (c.head_dim / 2)])?,
            x: f(&[t, h])?,
            ln: f(&[t, h])?,
            rstd: f(&[t])?,
            q: f(&[t, qd])?,
            k: f(&[t, kd])?,
            v: f(&[t, kd])?,
            qr: f(&[t, qd])?,
            kr: f(&[t, kd])?,
            ctx: f(&[t, qd])?,
            gate: f(&[t, i])?,
            up: f(&[t, i])?,
            act: f(&[t, i])?,
            logits: f(&[1, c.vocab_size])?,
            cache,
        })
    }

    /// Feed the next `ids` (1 to `chunk` tokens) through the model with the K/V cache: each
    /// attends to every position fed before it. Records and submits; the logits after the last
    /// one are in `d.logits`. The same values as [`Llama::forward`] on the whole sequence.
    pub fn decode(&self, gpu: &Gpu, d: &mut LlamaDecoder, ids: &[u32]) -> Result<()> {
        let (p, x, c) = (&self.params, &self.idx, &self.cfg);
        let past = d.cache.begin(ids, c.vocab_size)?;
        let (t, h, i, eps) = (ids.len(), c.hidden_size, c.intermediate_size, c.rms_norm_eps);
        let (half, nh, nkv, hd) = (c.head_dim / 2, c.num_heads, c.num_kv_heads, c.head_dim);
        let (qd, kd) = (nh * hd, nkv * hd);
        let rows = |a: &Tensor, w: usize| a.narrow(0, &[t, w]);
        let idt = d.ids.narrow(0, &[t])?;
        gpu.write_u32(&idt, ids)?;
        let table = d.table.narrow(0, &[2 * t * half])?;
        gpu.write_f32(&table, &rope_table_from(past, t, half, c.rope_theta))?;
        let (xs, ln, rstd) = (rows(&d.x, h)?, rows(&d.ln, h)?, d.rstd.narrow(0, &[t])?);
        let (q, k, v, qr, kr) = (rows(&d.q, qd)?, rows(&d.k, kd)?, rows(&d.v, kd)?, rows(&d.qr, qd)?, rows(&d.kr, kd)?);
        let (ctx, gate, up, act) = (rows(&d.ctx, qd)?, rows(&d.gate, i)?, rows(&d.up, i)?, rows(&d.act, i)?);
        let s = CachedShape { heads: nh, kv_heads: nkv, head_dim: hd, past, t };
        let scale = 1.0 / (hd as f32).sqrt();
        let mut rec = gpu.recorder();
        let rc = &mut rec;
        embedding_parts(rc, p.parts(x.embed), &idt, &xs)?;
        for (l, li) in x.layers.iter().enumerate() {
            rmsnorm(rc, &xs, p.p(li.ln1), &ln, &rstd, eps)?;
            proj(rc, &ln, p.p(li.q), &q, false)?;
            proj(rc, &ln, p.p(li.k), &k, false)?;
            proj(rc, &ln, p.p(li.v), &v, false)?;
            rope(rc, &q, &table, &qr, nh, half, t, false)?;
            rope(rc, &k, &table, &kr, nkv, half, t, false)?;
            d.cache.store(rc, l, &kr, &v, past)?;
            let (kc, vc) = d.cache.planes(l);
            attention_cached(rc, &s, &qr, kc, vc, &ctx, scale)?;
            proj(rc, &ctx, p.p(li.o), &xs, true)?;
            rmsnorm(rc, &xs, p.p(li.ln2), &ln, &rstd, eps)?;
            proj(rc, &ln, p.p(li.gate), &gate, false)?;
            proj(rc, &ln, p.p(li.up), &up, false)?;
            swiglu(rc, &gate, &up, &act)?;
            proj(rc, &act, p.p(li.down), &xs, true)?;
        }
        rmsnorm(rc, &xs, p.p(x.norm), &ln, &rstd, eps)?;
        lm_head_from(rc, p.parts(x.head), &ln, t - 1, &d.logits)?;
        rec.submit()?;
        d.cache.advance(t);
        Ok(())
    }
}

/// A LLaMA model as the optimizer drives it (see [`crate::optim::Task`]).
pub type LlamaTask<'a> = crate::optim::Task<'a, Llama>;

impl crate::optim::TaskModel for Llama {
    type Acts = LlamaActs;
    fn params(&self) -> &ParamSet {
        &self.params
    }
    fn forward_acts(
        &self,
        rec: &mut Recorder,
        acts: &LlamaActs,
        with_loss: bool,
        train: Option<Train>,
        params: &ParamSet,
        noise: Option<Noise>,
    ) -> Result<()> {
        self.forward_with(rec, acts, with_loss, train, params, noise)
    }
    fn backward_acts(&self, rec: &mut Recorder, acts: &LlamaActs, dlogits: &Tensor, input_grad: bool) -> Result<()> {
        self.backward_from(rec, acts, dlogits, input_grad)
    }
    fn outputs(acts: &LlamaActs) -> (&Tensor, &Tensor, &Tensor) {
        (&acts.logits, &acts.loss, &acts.dlogits)
    }
    fn row_weights(acts: &LlamaActs) -> Option<&Tensor> {
        Some(&acts.row_w)
    }
}
