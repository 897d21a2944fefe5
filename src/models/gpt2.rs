//! GPT-2 (Hugging Face `GPT2LMHeadModel`): learned positions, pre-LayerNorm blocks, GELU-tanh
//! MLP, causal self-attention, and the LM head tied to `wte`. Explicit forward and backward.
//!
//! Hugging Face stores GPT-2's projections as `Conv1D` (`[in, out]`, `y = x W + b`), so the
//! matmuls here read the weights untransposed. `c_attn`'s fused `[h, 3h]` weight is used as three
//! column blocks writing separate Q, K, V tensors (no tensor is bound twice in a dispatch, which
//! WebGPU forbids for writable bindings). The tied `wte` may exceed one binding (50257 x 768 x 4
//! bytes is 154 MB); it is a split tensor, and the LM head and its backward run per row block.

use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Part, Recorder, Tensor};
use crate::io::config::Gpt2Config;
use crate::io::weights::{HostTensor, Weights};
use crate::nn::{site, Drop, Noise, ParamSet, Train};
use crate::ops::attention::{
    attention_backward_with, attention_cached, attention_with, AttnShape, CachedShape, HeadView,
};
use crate::ops::cross_entropy::{cross_entropy, IGNORE_INDEX};
use crate::ops::elementwise::{activation_backward, axpby};
use crate::ops::embedding::{embedding, embedding_backward, embedding_backward_parts, embedding_parts, EmbeddingIndex};
use crate::ops::matmul::{matmul, Act, MatView, Matmul};
use crate::ops::norm::{layernorm, norm_backward, NormGrads};

struct LayerIdx {
    ln1_g: usize,
    ln1_b: usize,
    attn_w: usize,
    attn_b: usize,
    proj_w: usize,
    proj_b: usize,
    ln2_g: usize,
    ln2_b: usize,
    fc_w: usize,
    fc_b: usize,
    out_w: usize,
    out_b: usize,
}

struct Idx {
    wte: usize,
    wpe: usize,
    layers: Vec<LayerIdx>,
    lnf_g: usize,
    lnf_b: usize,
}

/// A GPT-2 language model, parameters and gradients on the GPU.
pub struct Gpt2 {
    pub cfg: Gpt2Config,
    pub params: ParamSet,
    idx: Idx,
}

/// A batch of token sequences `[batch, seq]` (right padding marked by `mask` = 0). The loss is
/// next-token cross-entropy over positions whose next token is real.
#[derive(Clone, Debug)]
pub struct LmBatch {
    pub batch: usize,
    pub seq: usize,
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
}

impl LmBatch {
    /// Next-token targets: position `t` predicts `ids[t + 1]` when that token is real;
    /// otherwise (last position, padding) it is ignored.
    pub fn targets(&self) -> Vec<u32> {
        let (b, t) = (self.batch, self.seq);
        (0..b * t)
            .map(|i| {
                let next = i + 1;
                if i % t + 1 < t && self.mask[next] != 0 {
                    self.ids[next]
                } else {
                    IGNORE_INDEX
                }
            })
            .collect()
    }
}

/// The KL terms' row weights for a batch's `targets`: 1 / (scored tokens) on each row with a
/// target, 0 elsewhere (padding and each sequence's last position), so that they sum to 1.
pub fn row_weights(targets: &[u32]) -> Vec<f32> {
    let n = targets.iter().filter(|&&x| x != IGNORE_INDEX).count().max(1) as f32;
    targets.iter().map(|&x| if x != IGNORE_INDEX { 1.0 / n } else { 0.0 }).collect()
}

struct LayerActs {
    ln1: Tensor,
    ln1_mean: Tensor,
    ln1_rstd: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    probs: Tensor,
    probs_drop: Tensor,
    ctx: Tensor,
    res1: Tensor,
    ln2: Tensor,
    ln2_mean: Tensor,
    ln2_rstd: Tensor,
    pre: Tensor,
    inter: Tensor,
}

/// Every activation the backward needs, planned once per batch shape.
pub struct Gpt2Acts {
    batch: usize,
    seq: usize,
    train: std::cell::Cell<Option<Train>>,
    ids: Tensor,
    pos: Tensor,
    mask: Tensor,
    targets: Tensor,
    row_w: Tensor,
    ones: Tensor,
    index: Option<[EmbeddingIndex; 2]>,
    emb: Tensor,
    xs: Vec<Tensor>,
    layers: Vec<LayerActs>,
    lnf: Tensor,
    lnf_mean: Tensor,
    lnf_rstd: Tensor,
    /// `[batch * seq, vocab]`
    pub logits: Tensor,
    /// `[loss, counted tokens]`
    pub loss: Tensor,
    dlogits: Tensor,
    dx: Tensor,
    dx2: Tensor,
    dh: Tensor,
    dtmp: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    dctx: Tensor,
    dinter: Tensor,
    dpre: Tensor,
}

/// A plain (batch 1) matmul of strided views: `C (+)= A . B + bias`.
pub(crate) fn mm<'a>(m: usize, n: usize, k: usize, a: MatView<'a>, b: MatView<'a>, c: MatView<'a>) -> Matmul<'a> {
    Matmul { m, n, k, batch: 1, batch_inner: 1, a, b, c, bias: None, act: Act::None, pre: None, alpha: 1.0, beta: None }
}

pub(crate) fn view(t: &Tensor, off: usize, rs: usize, cs: usize) -> MatView<'_> {
    MatView { t, off, rs, cs, bo: 0, bi: 0 }
}

/// The LM head on a `[vocab, h]` table stored as row blocks: `logits[:, r0..r0+n] = x . block^T`
/// for each block (`x` `[rows, h]`, `logits` `[rows, vocab]`).
pub(crate) fn lm_head(rec: &mut Recorder, w: &[Part], x: &Tensor, logits: &Tensor) -> Result<()> {
    lm_head_from(rec, w, x, 0, logits)
}

/// [`lm_head`] on the rows of `x` from `row0` on (as many as `logits` has).
pub(crate) fn lm_head_from(rec: &mut Recorder, w: &[Part], x: &Tensor, row0: usize, logits: &Tensor) -> Result<()> {
    let (rows, nv) = (logits.rows(), logits.cols());
    let h = x.cols();
    for part in w {
        let n = part.tensor.rows();
        let (xv, wv, lv) = (view(x, row0 * h, h, 1), view(&part.tensor, 0, 1, h), view(logits, part.row0, nv, 1));
        matmul(rec, &mm(rows, n, h, xv, wv, lv))?;
    }
    Ok(())
}

/// The K/V cache of incremental decoding (batch 1): per layer, keys and values `[capacity,
/// width]` of every position fed so far (keys after any position encoding).
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    width: usize,
    capacity: usize,
    chunk: usize,
    len: usize,
}

impl KvCache {
    pub(crate) fn new(gpu: &Gpu, layers: usize, capacity: usize, chunk: usize, width: usize) -> Result<Self> {
        if capacity == 0 || chunk == 0 {
            return shape_err("decoder", format!("capacity {capacity} and chunk {chunk} must be positive"));
        }
        let plane = || (0..layers).map(|_| gpu.zeros(&[capacity, width])).collect::<Result<Vec<_>>>();
        Ok(KvCache { k: plane()?, v: plane()?, width, capacity, chunk: chunk.min(capacity), len: 0 })
    }
    /// Check that `ids` fit (1..=chunk of them, within the capacity and the vocabulary);
    /// returns the position of the first.
    pub(crate) fn begin(&self, ids: &[u32], vocab: usize) -> Result<usize> {
        if ids.is_empty() || ids.len() > self.chunk {
            return shape_err("decoder", format!("{} tokens fed at once; expected 1 to {}", ids.len(), self.chunk));
        }
        if self.len + ids.len() > self.capacity {
            return shape_err(
                "decoder",
                format!("{} + {} tokens exceed the cache's {} positions", self.len, ids.len(), self.capacity),
            );
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return shape_err("decoder", format!("token id {bad} is not below the vocabulary size {vocab}"));
        }
        Ok(self.len)
    }
    /// Record the copy of `t` new rows of keys and values into layer `l` at `past`.
    pub(crate) fn store(&self, rec: &mut Recorder, l: usize, k: &Tensor, v: &Tensor, past: usize) -> Result<()> {
        let n = k.len();
        rec.copy(k, &self.k[l].narrow(past * self.width, &[n])?)?;
        rec.copy(v, &self.v[l].narrow(past * self.width, &[n])?)
    }
    pub(crate) fn planes(&self, l: usize) -> (&Tensor, &Tensor) {
        (&self.k[l], &self.v[l])
    }
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
    /// Positions fed so far.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Positions it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Most tokens one decode call takes.
    pub fn chunk(&self) -> usize {
        self.chunk
    }
}

/// Backward of [`lm_head`]: `dx = dlogits . W` (written) and `dW += dlogits^T . x`, per block.
pub(crate) fn lm_head_backward(
    rec: &mut Recorder,
    w: &[Part],
    dw: &[Part],
    x: &Tensor,
    dlogits: &Tensor,
    dx: &Tensor,
) -> Result<()> {
    let (rows, nv) = (dlogits.rows(), dlogits.cols());
    let h = x.cols();
    for (part, gpart) in w.iter().zip(dw) {
        let n = part.tensor.rows();
        let mut gx = mm(rows, h, n, view(dlogits, part.row0, nv, 1), view(&part.tensor, 0, h, 1), view(dx, 0, h, 1));
        if part.row0 > 0 {
            gx.beta = Some(1.0);
        }
        matmul(rec, &gx)?;
        let mut gw = mm(n, h, rows, view(dlogits, part.row0, 1, nv), view(x, 0, h, 1), view(&gpart.tensor, 0, h, 1));
        gw.beta = Some(1.0);
        matmul(rec, &gw)?;
    }
    Ok(())
}

/// `y (+)= act(x W[:, c0..c0+n] + b[c0..c0+n])` for a Conv1D weight `W` `[in, out]`.
fn conv1d(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    c0: usize,
    n: usize,
    y: &Tensor,
    act: Act,
    pre: Option<&Tensor>,
    accumulate: bool,
) -> Result<()> {
    let (inp, out) = (w.rows(), w.cols());
    let rows = x.len() / inp;
    let mut op = mm(rows, n, inp, view(x, 0, inp, 1), view(w, c0, out, 1), view(y, 0, n, 1));
    op.bias = Some((b, c0));
    op.act = act;
    op.pre = pre.map(|p| (p, 0));
    if accumulate {
        op.beta = Some(1.0);
    }
    matmul(rec, &op)
}

/// Backward of [`conv1d`] (no activation): `dW[:, c0..] += x^T dy`, `db[c0..] += 1^T dy`, and
/// `dx (+)= dy W[:, c0..]^T` when asked.
fn conv1d_backward(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    c0: usize,
    n: usize,
    dy: &Tensor,
    dw: &Tensor,
    db: &Tensor,
    ones: &Tensor,
    dx: Option<(&Tensor, bool)>,
) -> Result<()> {
    let (inp, out) = (w.rows(), w.cols());
    let rows = x.len() / inp;
    let mut gw = mm(inp, n, rows, view(x, 0, 1, inp), view(dy, 0, n, 1), view(dw, c0, out, 1));
    gw.beta = Some(1.0);
    matmul(rec, &gw)?;
    let mut gb = mm(1, n, rows, view(ones, 0, rows, 1), view(dy, 0, n, 1), view(db, c0, n, 1));
    gb.beta = Some(1.0);
    matmul(rec, &gb)?;
    if let Some((dx, acc)) = dx {
        let mut gx = mm(rows, inp, n, view(dy, 0, n, 1), view(w, c0, 1, out), view(dx, 0, inp, 1));
        if acc {
            gx.beta = Some(1.0);
        }
        matmul(rec, &gx)?;
    }
    Ok(())
}

impl Gpt2 {
    /// The canonical `(name, shape)` list in arena order (Hugging Face names).
    fn specs(cfg: &Gpt2Config) -> Vec<(String, Vec<usize>)> {
        let (h, i) = (cfg.hidden_size, cfg.inner_size);
        let mut v = vec![
            ("transformer.wte.weight".to_string(), vec![cfg.vocab_size, h]),
            ("transformer.wpe.weight".to_string(), vec![cfg.n_positions, h]),
        ];
        for l in 0..cfg.num_layers {
            let p = format!("transformer.h.{l}.");
            v.push((format!("{p}ln_1.weight"), vec![h]));
            v.push((format!("{p}ln_1.bias"), vec![h]));
            v.push((format!("{p}attn.c_attn.weight"), vec![h, 3 * h]));
            v.push((format!("{p}attn.c_attn.bias"), vec![3 * h]));
            v.push((format!("{p}attn.c_proj.weight"), vec![h, h]));
            v.push((format!("{p}attn.c_proj.bias"), vec![h]));
            v.push((format!("{p}ln_2.weight"), vec![h]));
            v.push((format!("{p}ln_2.bias"), vec![h]));
            v.push((format!("{p}mlp.c_fc.weight"), vec![h, i]));
            v.push((format!("{p}mlp.c_fc.bias"), vec![i]));
            v.push((format!("{p}mlp.c_proj.weight"), vec![i, h]));
            v.push((format!("{p}mlp.c_proj.bias"), vec![h]));
        }
        v.push(("transformer.ln_f.weight".into(), vec![h]));
        v.push(("transformer.ln_f.bias".into(), vec![h]));
        v
    }

    /// Build the model from a config and its weights (names with or without `transformer.`).
    pub fn load(gpu: &Gpu, cfg: Gpt2Config, w: &Weights, seed: u64) -> Result<Self> {
        let specs = Self::specs(&cfg);
        let params = ParamSet::load(gpu, &specs, w, "transformer.", specs.len(), &[0], seed)?;
        let mut k = 0;
        let mut next = || {
            k += 1;
            k - 1
        };
        let (wte, wpe) = (next(), next());
        let layers = (0..cfg.num_layers)
            .map(|_| LayerIdx {
                ln1_g: next(),
                ln1_b: next(),
                attn_w: next(),
                attn_b: next(),
                proj_w: next(),
                proj_b: next(),
                ln2_g: next(),
                ln2_b: next(),
                fc_w: next(),
                fc_b: next(),
                out_w: next(),
                out_b: next(),
            })
            .collect();
        let idx = Idx { wte, wpe, layers, lnf_g: next(), lnf_b: next() };
        Ok(Gpt2 { cfg, params, idx })
    }

    /// Every parameter under its Hugging Face name, in the dtype it was loaded in.
    pub async fn state(&self, gpu: &Gpu) -> Result<Vec<(String, HostTensor)>> {
        self.params.state(gpu).await
    }

    /// `config.json` for saving (the loaded config, architecture GPT2LMHeadModel).
    pub fn config_json(&self) -> serde_json::Value {
        let mut v = self.cfg.raw.clone();
        if let Some(m) = v.as_object_mut() {
            m.insert("architectures".into(), serde_json::json!(["GPT2LMHeadModel"]));
        }
        v
    }

    /// Plan the activations for batches of `batch` sequences of `seq` tokens.
    pub fn acts(&self, gpu: &Gpu, batch: usize, seq: usize) -> Result<Gpt2Acts> {
        let c = &self.cfg;
        if batch == 0 || seq == 0 {
            return shape_err("gpt2", "empty batch");
        }
        if seq > c.n_positions {
            return shape_err("gpt2", format!("sequences of {seq} tokens exceed n_positions = {}", c.n_positions));
        }
        let (bt, h, i, nv) = (batch * seq, c.hidden_size, c.inner_size, c.vocab_size);
        let f = |s: &[usize]| gpu.zeros(s);
        let probs = batch * c.num_heads * seq * seq;
        let layers = (0..c.num_layers)
            .map(|_| {
                Ok(LayerActs {
                    ln1: f(&[bt, h])?,
                    ln1_mean: f(&[bt])?,
                    ln1_rstd: f(&[bt])?,
                    q: f(&[bt, h])?,
                    k: f(&[bt, h])?,
                    v: f(&[bt, h])?,
                    probs: f(&[probs])?,
                    probs_drop: if c.attn_dropout > 0.0 { f(&[probs])? } else { f(&[1])? },
                    ctx: f(&[bt, h])?,
                    res1: f(&[bt, h])?,
                    ln2: f(&[bt, h])?,
                    ln2_mean: f(&[bt])?,
                    ln2_rstd: f(&[bt])?,
                    pre: f(&[bt, i])?,
                    inter: f(&[bt, i])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gpt2Acts {
            batch,
            seq,
            train: Default::default(),
            ids: gpu.zeros_u32(&[bt])?,
            pos: gpu.zeros_u32(&[bt])?,
            mask: gpu.zeros_u32(&[bt])?,
            targets: gpu.zeros_u32(&[bt])?,
            row_w: f(&[bt])?,
            ones: gpu.from_f32(&vec![1.0; bt], &[bt])?,
            index: None,
            emb: f(&[bt, h])?,
            xs: (0..=c.num_layers).map(|_| f(&[bt, h])).collect::<Result<_>>()?,
            layers,
            lnf: f(&[bt, h])?,
            lnf_mean: f(&[bt])?,
            lnf_rstd: f(&[bt])?,
            logits: f(&[bt, nv])?,
            loss: f(&[2])?,
            dlogits: f(&[bt, nv])?,
            dx: f(&[bt, h])?,
            dx2: f(&[bt, h])?,
            dh: f(&[bt, h])?,
            dtmp: f(&[bt, h])?,
            dq: f(&[bt, h])?,
            dk: f(&[bt, h])?,
            dv: f(&[bt, h])?,
            dctx: f(&[bt, h])?,
            dinter: f(&[bt, i])?,
            dpre: f(&[bt, i])?,
        })
    }

    /// Check a batch against the model and upload it into `acts`.
    pub fn upload(&self, gpu: &Gpu, acts: &mut Gpt2Acts, b: &LmBatch) -> Result<()> {
        let c = &self.cfg;
        let n = b.batch * b.seq;
        if b.batch != acts.batch || b.seq != acts.seq {
            return shape_err(
                "gpt2",
                format!(
                    "batch is {}x{} but the activations were planned for {}x{}",
                    b.batch, b.seq, acts.batch, acts.seq
                ),
            );
        }
        if b.ids.len() != n || b.mask.len() != n {
            return shape_err(
                "gpt2",
                format!("ids ({}) and mask ({}) must have {n} entries", b.ids.len(), b.mask.len()),
            );
        }
        let pos: Vec<u32> = (0..n).map(|i| (i % b.seq) as u32).collect();
        gpu.write_u32(&acts.ids, &b.ids)?;
        gpu.write_u32(&acts.pos, &pos)?;
        gpu.write_u32(&acts.mask, &b.mask)?;
        let targets = b.targets();
        gpu.write_u32(&acts.targets, &targets)?;
        gpu.write_f32(&acts.row_w, &row_weights(&targets))?;
        acts.index = Some([
            EmbeddingIndex::upload(gpu, &b.ids, c.vocab_size)?,
            EmbeddingIndex::upload(gpu, &pos, c.n_positions)?,
        ]);
        Ok(())
    }

    fn shape(&self, a: &Gpt2Acts) -> AttnShape {
        AttnShape { batch: a.batch, seq: a.seq, heads: self.cfg.num_heads, head_dim: self.cfg.head_dim() }
    }

    /// Record the forward pass: logits of every position, and the mean next-token loss (with
    /// dlogits ready) when `with_loss`. `train` turns dropout on.
    pub fn forward(&self, rec: &mut Recorder, a: &Gpt2Acts, with_loss: bool, train: Option<Train>) -> Result<()> {
        self.forward_with(rec, a, with_loss, train, &self.params, None)
    }

    /// [`Gpt2::forward`] with another parameter set of the same layout and optional noise on
    /// the token embeddings (TRAM-x, R3F).
    pub fn forward_with(
        &self,
        rec: &mut Recorder,
        a: &Gpt2Acts,
        with_loss: bool,
        train: Option<Train>,
        params: &ParamSet,
        noise: Option<Noise>,
    ) -> Result<()> {
        let (p, x, c) = (params, &self.idx, &self.cfg);
        a.train.set(train);
        let d = Drop::new(train, c.resid_dropout, c.attn_dropout);
        let de = Drop::new(train, c.embd_dropout, 0.0);
        let (h, i, eps) = (c.hidden_size, c.inner_size, c.layer_norm_eps);
        embedding_parts(rec, p.parts(x.wte), &a.ids, &a.emb)?;
        if let Some(n) = noise {
            n.fill(rec, &a.dtmp)?;
            axpby(rec, 1.0, &a.dtmp, 1.0, &a.emb)?;
        }
        embedding(rec, p.p(x.wpe), &a.pos, &a.dtmp)?;
        axpby(rec, 1.0, &a.dtmp, 1.0, &a.emb)?;
        de.apply(rec, &a.emb, &a.xs[0], site::EMB, false)?;
        let s = self.shape(a);
        let scale = 1.0 / (c.head_dim() as f32).sqrt();
        for (l, (li, la)) in x.layers.iter().zip(&a.layers).enumerate() {
            let xin = &a.xs[l];
            layernorm(rec, xin, p.p(li.ln1_g), p.p(li.ln1_b), &la.ln1, &la.ln1_mean, &la.ln1_rstd, eps)?;
            for (j, t) in [&la.q, &la.k, &la.v].into_iter().enumerate() {
                conv1d(rec, &la.ln1, p.p(li.attn_w), p.p(li.attn_b), j * h, h, t, Act::None, None, false)?;
            }
            let (q, k, v) = (HeadView::dense(&la.q, &s), HeadView::dense(&la.k, &s), HeadView::dense(&la.v, &s));
            let drop = d.attn(site::attn(l), &la.probs_drop);
            let ctx = HeadView::dense(&la.ctx, &s);
            attention_with(rec, &s, q, k, v, ctx, &la.probs, Some(&a.mask), true, scale, drop)?;
            rec.copy(xin, &la.res1)?;
            if d.hidden() {
                conv1d(rec, &la.ctx, p.p(li.proj_w), p.p(li.proj_b), 0, h, &a.dtmp, Act::None, None, false)?;
                d.apply(rec, &a.dtmp, &la.res1, site::attn_out(l), true)?;
            } else {
                conv1d(rec, &la.ctx, p.p(li.proj_w), p.p(li.proj_b), 0, h, &la.res1, Act::None, None, true)?;
            }
            layernorm(rec, &la.res1, p.p(li.ln2_g), p.p(li.ln2_b), &la.ln2, &la.ln2_mean, &la.ln2_rstd, eps)?;
            conv1d(rec, &la.ln2, p.p(li.fc_w), p.p(li.fc_b), 0, i, &la.inter, c.act, Some(&la.pre), false)?;
            let out = &a.xs[l + 1];
            rec.copy(&la.res1, out)?;
            if d.hidden() {
                conv1d(rec, &la.inter, p.p(li.out_w), p.p(li.out_b), 0, h, &a.dtmp, Act::None, None, false)?;
                d.apply(rec, &a.dtmp, out, site::ffn_out(l), true)?;
            } else {
                conv1d(rec, &la.inter, p.p(li.out_w), p.p(li.out_b), 0, h, out, Act::None, None, true)?;
            }
        }
        let last = &a.xs[c.num_layers];
        layernorm(rec, last, p.p(x.lnf_g), p.p(x.lnf_b), &a.lnf, &a.lnf_mean, &a.lnf_rstd, eps)?;
        // The tied head, one row block of wte at a time: logits[:, r0..r0+n] = lnf . block^T.
        lm_head(rec, p.parts(x.wte), &a.lnf, &a.logits)?;
        if with_loss {
            cross_entropy(rec, &a.logits, &a.targets, &a.loss, Some(&a.dlogits), IGNORE_INDEX, 1.0)?;
        }
        Ok(())
    }

    /// Record the backward pass of the mean loss, accumulating into the gradients.
    pub fn backward(&self, rec: &mut Recorder, a: &Gpt2Acts) -> Result<()> {
        self.backward_from(rec, a, &a.dlogits, true)
    }

    /// The backward pass from a given gradient of the logits; `wte_input_grad = false` leaves
    /// out the token-embedding path of the input (a branch whose embeddings were detached).
    /// The tied head's gradient always reaches `wte`.
    pub fn backward_from(
        &self,
        rec: &mut Recorder,
        a: &Gpt2Acts,
        dlogits: &Tensor,
        wte_input_grad: bool,
    ) -> Result<()> {
        let (p, x, c) = (&self.params, &self.idx, &self.cfg);
        let Some(index) = &a.index else {
            return shape_err("gpt2", "backward before a batch was uploaded");
        };
        let d = Drop::new(a.train.get(), c.resid_dropout, c.attn_dropout);
        let de = Drop::new(a.train.get(), c.embd_dropout, 0.0);
        let g = |i: usize| p.g(i);
        let (h, i) = (c.hidden_size, c.inner_size);
        // Head: d lnf = dlogits . wte; d wte += dlogits^T . lnf (per row block).
        lm_head_backward(rec, p.parts(x.wte), p.grad_parts(x.wte), &a.lnf, dlogits, &a.dh)?;
        let ng = NormGrads { dx: &a.dx, accumulate_dx: false, dgamma: g(x.lnf_g), dbeta: Some(g(x.lnf_b)) };
        norm_backward(rec, &a.xs[c.num_layers], p.p(x.lnf_g), &a.dh, Some(&a.lnf_mean), &a.lnf_rstd, &ng)?;
        let s = self.shape(a);
        let scale = 1.0 / (c.head_dim() as f32).sqrt();
        // a.dx holds d x_{l+1}; each layer leaves d x_l in it.
        for (l, (li, la)) in x.layers.iter().zip(&a.layers).enumerate().rev() {
            // MLP branch: x_{l+1} = res1 + drop(inter W_out + b).
            rec.copy(&a.dx, &a.dx2)?;
            let dout = d.back(rec, &a.dx, &a.dtmp, site::ffn_out(l))?;
            conv1d_backward(
                rec,
                &la.inter,
                p.p(li.out_w),
                0,
                h,
                dout,
                g(li.out_w),
                g(li.out_b),
                &a.ones,
                Some((&a.dinter, false)),
            )?;
            activation_backward(rec, &la.pre, &a.dinter, &a.dpre, c.act, false)?;
            conv1d_backward(
                rec,
                &la.ln2,
                p.p(li.fc_w),
                0,
                i,
                &a.dpre,
                g(li.fc_w),
                g(li.fc_b),
                &a.ones,
                Some((&a.dh, false)),
            )?;
            let ng = NormGrads { dx: &a.dx2, accumulate_dx: true, dgamma: g(li.ln2_g), dbeta: Some(g(li.ln2_b)) };
            norm_backward(rec, &la.res1, p.p(li.ln2_g), &a.dh, Some(&la.ln2_mean), &la.ln2_rstd, &ng)?;
            // Attention branch: res1 = x_l + drop(ctx W_proj + b).
            rec.copy(&a.dx2, &a.dx)?;
            let dout = d.back(rec, &a.dx2, &a.dtmp, site::attn_out(l))?;
            conv1d_backward(
                rec,
                &la.ctx,
                p.p(li.proj_w),
                0,
                h,
                dout,
                g(li.proj_w),
                g(li.proj_b),
                &a.ones,
                Some((&a.dctx, false)),
            )?;
            let (q, k, v) = (HeadView::dense(&la.q, &s), HeadView::dense(&la.k, &s), HeadView::dense(&la.v, &s));
            let (dq, dk, dv) = (HeadView::dense(&a.dq, &s), HeadView::dense(&a.dk, &s), HeadView::dense(&a.dv, &s));
            let drop = d.attn(site::attn(l), &la.probs_drop);
            let dctx = HeadView::dense(&a.dctx, &s);
            attention_backward_with(rec, &s, q, k, v, &la.probs, dctx, dq, dk, dv, scale, false, drop)?;
            for (j, dt) in [&a.dq, &a.dk, &a.dv].into_iter().enumerate() {
                let dx = Some((&a.dh, j > 0));
                conv1d_backward(rec, &la.ln1, p.p(li.attn_w), j * h, h, dt, g(li.attn_w), g(li.attn_b), &a.ones, dx)?;
            }
            let ng = NormGrads { dx: &a.dx, accumulate_dx: true, dgamma: g(li.ln1_g), dbeta: Some(g(li.ln1_b)) };
            norm_backward(rec, &a.xs[l], p.p(li.ln1_g), &a.dh, Some(&la.ln1_mean), &la.ln1_rstd, &ng)?;
        }
        let demb = de.back(rec, &a.dx, &a.dtmp, site::EMB)?;
        if wte_input_grad {
            embedding_backward_parts(rec, demb, &index[0], p.grad_parts(x.wte))?;
        }
        embedding_backward(rec, demb, &index[1], g(x.wpe))?;
        Ok(())
    }
}

/// Incremental decoding state of a [`Gpt2`] (batch 1, see [`Gpt2::decode`]): the K/V cache and
/// the buffers of one chunk of new tokens.
pub struct Gpt2Decoder {
    cache: KvCache,
    ids: Tensor,
    pos: Tensor,
    x: Tensor,
    tmp: Tensor,
    ln: Tensor,
    mean: Tensor,
    rstd: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    ctx: Tensor,
    inter: Tensor,
    /// `[1, vocab]`: the logits after the last token fed.
    pub logits: Tensor,
}

impl Gpt2Decoder {
    /// The K/V cache: positions fed so far, capacity, tokens per call.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }
}

impl Gpt2 {
    /// Plan incremental decoding of up to `capacity` positions, fed `chunk` tokens at a time at
    /// most (a prompt in chunks, then one token per step).
    pub fn decoder(&self, gpu: &Gpu, capacity: usize, chunk: usize) -> Result<Gpt2Decoder> {
        let c = &self.cfg;
        if capacity > c.n_positions {
            return shape_err("gpt2", format!("{capacity} positions exceed n_positions = {}", c.n_positions));
        }
        let cache = KvCache::new(gpu, c.num_layers, capacity, chunk, c.hidden_size)?;
        let (t, h) = (cache.chunk(), c.hidden_size);
        let f = |s: &[usize]| gpu.zeros(s);
        Ok(Gpt2Decoder {
            ids: gpu.zeros_u32(&[t])?,
            pos: gpu.zeros_u32(&[t])?,
            x: f(&[t, h])?,
            tmp: f(&[t, h])?,
            ln: f(&[t, h])?,
            mean: f(&[t])?,
            rstd: f(&[t])?,
            q: f(&[t, h])?,
            k: f(&[t, h])?,
            v: f(&[t, h])?,
            ctx: f(&[t, h])?,
            inter: f(&[t, c.inner_size])?,
            logits: f(&[1, c.vocab_size])?,
            cache,
        })
    }

    /// Feed the next `ids` (1 to `chunk` tokens) through the model with the K/V cache: each
    /// attends to every position fed before it. Records and submits; the logits after the last
    /// one are in `d.logits`. The same values as [`Gpt2::forward`] on the whole sequence.
    pub fn decode(&self, gpu: &Gpu, d: &mut Gpt2Decoder, ids: &[u32]) -> Result<()> {
        let (p, x, c) = (&self.params, &self.idx, &self.cfg);
        let past = d.cache.begin(ids, c.vocab_size)?;
        let (t, h, i, eps) = (ids.len(), c.hidden_size, c.inner_size, c.layer_norm_eps);
        let rows = |a: &Tensor, w: usize| a.narrow(0, &[t, w]);
        let (idt, post) = (d.ids.narrow(0, &[t])?, d.pos.narrow(0, &[t])?);
        gpu.write_u32(&idt, ids)?;
        gpu.write_u32(&post, &(past as u32..(past + t) as u32).collect::<Vec<_>>())?;
        let (xs, tmp, ln, ctx) = (rows(&d.x, h)?, rows(&d.tmp, h)?, rows(&d.ln, h)?, rows(&d.ctx, h)?);
        let (q, k, v, inter) = (rows(&d.q, h)?, rows(&d.k, h)?, rows(&d.v, h)?, rows(&d.inter, i)?);
        let (mean, rstd) = (d.mean.narrow(0, &[t])?, d.rstd.narrow(0, &[t])?);
        let s = CachedShape { heads: c.num_heads, kv_heads: c.num_heads, head_dim: c.head_dim(), past, t };
        let scale = 1.0 / (c.head_dim() as f32).sqrt();
        let mut rec = gpu.recorder();
        let rc = &mut rec;
        embedding_parts(rc, p.parts(x.wte), &idt, &xs)?;
        embedding(rc, p.p(x.wpe), &post, &tmp)?;
        axpby(rc, 1.0, &tmp, 1.0, &xs)?;
        for (l, li) in x.layers.iter().enumerate() {
            layernorm(rc, &xs, p.p(li.ln1_g), p.p(li.ln1_b), &ln, &mean, &rstd, eps)?;
            for (j, out) in [&q, &k, &v].into_iter().enumerate() {
                conv1d(rc, &ln, p.p(li.attn_w), p.p(li.attn_b), j * h, h, out, Act::None, None, false)?;
            }
            d.cache.store(rc, l, &k, &v, past)?;
            let (kc, vc) = d.cache.planes(l);
            attention_cached(rc, &s, &q, kc, vc, &ctx, scale)?;
            conv1d(rc, &ctx, p.p(li.proj_w), p.p(li.proj_b), 0, h, &xs, Act::None, None, true)?;
            layernorm(rc, &xs, p.p(li.ln2_g), p.p(li.ln2_b), &ln, &mean, &rstd, eps)?;
            conv1d(rc, &ln, p.p(li.fc_w), p.p(li.fc_b), 0, i, &inter, c.act, None, false)?;
            conv1d(rc, &inter, p.p(li.out_w), p.p(li.out_b), 0, h, &xs, Act::None, None, true)?;
        }
        layernorm(rc, &xs, p.p(x.lnf_g), p.p(x.lnf_b), &ln, &mean, &rstd, eps)?;
        lm_head_from(rc, p.parts(x.wte), &ln, t - 1, &d.logits)?;
        rec.submit()?;
        d.cache.advance(t);
        Ok(())
    }
}

/// GPT-2 as the optimizer drives it (see [`crate::optim::Task`]).
pub type Gpt2Task<'a> = crate::optim::Task<'a, Gpt2>;

impl crate::optim::TaskModel for Gpt2 {
    type Acts = Gpt2Acts;
    fn params(&self) -> &ParamSet {
        &self.params
    }
    fn forward_acts(
        &self,
        rec: &mut Recorder,
        acts: &Gpt2Acts,
        with_loss: bool,
        train: Option<Train>,
        params: &ParamSet,
        noise: Option<Noise>,
    ) -> Result<()> {
        self.forward_with(rec, acts, with_loss, train, params, noise)
    }
    fn backward_acts(&self, rec: &mut Recorder, acts: &Gpt2Acts, dlogits: &Tensor, input_grad: bool) -> Result<()> {
        self.backward_from(rec, acts, dlogits, input_grad)
    }
    fn outputs(acts: &Gpt2Acts) -> (&Tensor, &Tensor, &Tensor) {
        (&acts.logits, &acts.loss, &acts.dlogits)
    }
    fn row_weights(acts: &Gpt2Acts) -> Option<&Tensor> {
        Some(&acts.row_w)
    }
}
