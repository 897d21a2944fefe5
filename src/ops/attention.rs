//! Scaled dot-product attention with padding mask and causal option, forward and backward.
//!
//! Built from the strided matmul and the masked softmax: Q, K, V and the output are read and
//! written in place in the `[batch, seq, heads * head_dim]` layout of the projections (or as
//! column slices of a fused QKV tensor) through strides, so no permute copies are made. The
//! attention probabilities `[batch * heads, seq, seq]` are kept for the backward pass.

use super::matmul::{matmul, Act, MatView, Matmul};
use super::rng::{dropout, RngKey};
use super::softmax::{softmax, softmax_backward, SoftmaxMask};
use super::{expect_len, slot};
use crate::error::{shape_err, Result};
use crate::gpu::{Recorder, Tensor};

/// Sizes of one attention call (queries and keys have the same length).
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// Where one of Q, K, V (or their gradients, or the output) lives: element (b, t, h, d) is at
/// `off + (b * seq + t) * row_stride + h * head_dim + d`. A separate `[B, T, H*D]` tensor has
/// `off = 0, row_stride = H*D`; the K part of a fused `[B, T, 3*H*D]` QKV has `off = H*D,
/// row_stride = 3*H*D`.
#[derive(Clone, Copy, Debug)]
pub struct HeadView<'a> {
    pub t: &'a Tensor,
    pub off: usize,
    pub row_stride: usize,
}

impl<'a> HeadView<'a> {
    /// A plain `[batch, seq, heads * head_dim]` tensor.
    pub fn dense(t: &'a Tensor, s: &AttnShape) -> Self {
        HeadView { t, off: 0, row_stride: s.heads * s.head_dim }
    }
    fn mat(&self, s: &AttnShape) -> MatView<'a> {
        MatView { t: self.t, off: self.off, rs: self.row_stride, cs: 1, bo: s.seq * self.row_stride, bi: s.head_dim }
    }
}

fn scores_view<'a>(t: &'a Tensor, s: &AttnShape) -> MatView<'a> {
    MatView { t, off: 0, rs: s.seq, cs: 1, bo: s.heads * s.seq * s.seq, bi: s.seq * s.seq }
}

fn mm<'a>(
    s: &AttnShape,
    m: usize,
    n: usize,
    k: usize,
    a: MatView<'a>,
    b: MatView<'a>,
    c: MatView<'a>,
    beta: Option<f32>,
) -> Matmul<'a> {
    Matmul {
        m,
        n,
        k,
        batch: s.batch * s.heads,
        batch_inner: s.heads,
        a,
        b,
        c,
        bias: None,
        act: Act::None,
        pre: None,
        alpha: 1.0,
        beta,
    }
}

fn check(s: &AttnShape, views: &[(&str, &HeadView)]) -> Result<()> {
    if s.batch == 0 || s.seq == 0 || s.heads == 0 || s.head_dim == 0 {
        return shape_err("attention", format!("empty shape {s:?}"));
    }
    for (name, v) in views {
        if v.row_stride < s.heads * s.head_dim {
            return shape_err(
                "attention",
                format!("{name}: row stride {} < heads * head_dim = {}", v.row_stride, s.heads * s.head_dim),
            );
        }
    }
    Ok(())
}

/// Dropout on the attention probabilities (training): `dropped` keeps the dropped copy for the
/// backward pass; the mask is regenerated from `key`.
#[derive(Clone, Copy, Debug)]
pub struct AttnDropout<'a> {
    pub p: f32,
    pub key: RngKey,
    pub dropped: &'a Tensor,
}

/// Forward: `out = softmax(scale * Q K^T + mask) V`, saving `probs` ([batch * heads, seq, seq]).
/// `mask` is `[batch, seq]` u32 (1 = attend); `causal` hides later keys.
pub fn attention(
    rec: &mut Recorder,
    s: &AttnShape,
    q: HeadView,
    k: HeadView,
    v: HeadView,
    out: HeadView,
    probs: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    scale: f32,
) -> Result<()> {
    attention_with(rec, s, q, k, v, out, probs, mask, causal, scale, None)
}

/// [`attention`] with optional dropout on the probabilities.
pub fn attention_with(
    rec: &mut Recorder,
    s: &AttnShape,
    q: HeadView,
    k: HeadView,
    v: HeadView,
    out: HeadView,
    probs: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    scale: f32,
    drop: Option<AttnDropout>,
) -> Result<()> {
    check(s, &[("q", &q), ("k", &k), ("v", &v), ("out", &out)])?;
    let n = s.batch * s.heads * s.seq * s.seq;
    expect_len("attention", "probs", probs, n)?;
    let scores = rec.gpu().scratch(slot::ATT_DS, n)?.reshape(&[s.batch * s.heads * s.seq, s.seq])?;
    let t = s.seq;
    matmul(rec, &mm(s, t, t, s.head_dim, q.mat(s), k.mat(s).t(), scores_view(&scores, s), None))?;
    let probs2 = probs.reshape(&[s.batch * s.heads * s.seq, s.seq])?;
    softmax(rec, &scores, &probs2, scale, &SoftmaxMask { mask, causal, tq: t, heads: s.heads })?;
    let used = match drop {
        Some(d) => {
            expect_len("attention", "dropped probs", d.dropped, n)?;
            dropout(rec, probs, d.dropped, d.p, d.key, false)?;
            d.dropped
        }
        None => probs,
    };
    matmul(rec, &mm(s, t, s.head_dim, t, scores_view(used, s), v.mat(s), out.mat(s), None))
}

/// Gradients of [`attention`] given `dout`. dq, dk, dv are written, or added to when
/// `accumulate`.
pub fn attention_backward(
    rec: &mut Recorder,
    s: &AttnShape,
    q: HeadView,
    k: HeadView,
    v: HeadView,
    probs: &Tensor,
    dout: HeadView,
    dq: HeadView,
    dk: HeadView,
    dv: HeadView,
    scale: f32,
    accumulate: bool,
) -> Result<()> {
    attention_backward_with(rec, s, q, k, v, probs, dout, dq, dk, dv, scale, accumulate, None)
}

/// [`attention_backward`] for a forward that used dropout (the same [`AttnDropout`]).
pub fn attention_backward_with(
    rec: &mut Recorder,
    s: &AttnShape,
    q: HeadView,
    k: HeadView,
    v: HeadView,
    probs: &Tensor,
    dout: HeadView,
    dq: HeadView,
    dk: HeadView,
    dv: HeadView,
    scale: f32,
    accumulate: bool,
    drop: Option<AttnDropout>,
) -> Result<()> {
    check(s, &[("q", &q), ("k", &k), ("v", &v), ("dout", &dout), ("dq", &dq), ("dk", &dk), ("dv", &dv)])?;
    let n = s.batch * s.heads * s.seq * s.seq;
    expect_len("attention_backward", "probs", probs, n)?;
    let gpu = rec.gpu();
    let dp = gpu.scratch(slot::ATT_DP, n)?.reshape(&[s.batch * s.heads * s.seq, s.seq])?;
    let ds = gpu.scratch(slot::ATT_DS, n)?.reshape(&[s.batch * s.heads * s.seq, s.seq])?;
    let (t, d) = (s.seq, s.head_dim);
    let beta = if accumulate { Some(1.0) } else { None };
    // dP' = dO V^T ; dV = P'^T dO, with P' the (dropped) probabilities the forward used
    let used = drop.map(|d| d.dropped).unwrap_or(probs);
    matmul(rec, &mm(s, t, t, d, dout.mat(s), v.mat(s).t(), scores_view(&dp, s), None))?;
    matmul(rec, &mm(s, t, d, t, scores_view(used, s).t(), dout.mat(s), dv.mat(s), beta))?;
    // Through the dropout: dP = mask * dP' / (1 - p), the mask regenerated from the key.
    let dp = match drop {
        Some(d) => {
            dropout(rec, &dp, &ds, d.p, d.key, false)?;
            rec.copy(&ds, &dp)?;
            dp
        }
        None => dp,
    };
    // dS = scale * P * (dP - rowsum(dP * P))
    let probs2 = probs.reshape(&[s.batch * s.heads * s.seq, s.seq])?;
    softmax_backward(rec, &probs2, &dp, &ds, scale)?;
    // dQ = dS K ; dK = dS^T Q
    matmul(rec, &mm(s, t, d, t, scores_view(&ds, s), k.mat(s), dq.mat(s), beta))?;
    matmul(rec, &mm(s, t, d, t, scores_view(&ds, s).t(), q.mat(s), dk.mat(s), beta))
}

/// Sizes of one [`attention_cached`] call: `t` new queries at positions `past..past + t` over a
/// cache of keys and values at positions `0..past + t`; `heads / kv_heads` query heads share each
/// K/V head (grouped-query attention, as Hugging Face's `repeat_kv`).
#[derive(Clone, Copy, Debug)]
pub struct CachedShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub past: usize,
    pub t: usize,
}

/// Causal attention of new queries over a K/V cache (generation): `out[i] = softmax(scale q_i
/// K^T, keys j <= past + i) V`. `q` and `out` are `[t, heads * head_dim]` (or longer), `k` and
/// `v` `[capacity, kv_heads * head_dim]` holding the first `past + t` positions; later cache rows
/// are not read. Query heads read their shared K/V head through strides (no repeated copy); the
/// scores and probabilities live in scratch.
pub fn attention_cached(
    rec: &mut Recorder,
    s: &CachedShape,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    scale: f32,
) -> Result<()> {
    let CachedShape { heads, kv_heads, head_dim: d, past, t } = *s;
    if heads == 0 || kv_heads == 0 || d == 0 || t == 0 || !heads.is_multiple_of(kv_heads) {
        return shape_err("attention_cached", format!("{s:?}: heads must be a positive multiple of kv_heads"));
    }
    let (qd, kd, l, g) = (heads * d, kv_heads * d, past + t, heads / kv_heads);
    for (name, x, need) in [("q", q, t * qd), ("out", out, t * qd), ("k cache", k, l * kd), ("v cache", v, l * kd)] {
        if x.len() < need {
            return shape_err(
                "attention_cached",
                format!("{name} {:?} holds fewer than the {need} elements {s:?} reads", x.shape()),
            );
        }
    }
    let gpu = rec.gpu();
    let n = heads * t * l;
    let scores = gpu.scratch(slot::ATT_DS, n)?.reshape(&[heads * t, l])?;
    let probs = gpu.scratch(slot::ATT_DP, n)?.reshape(&[heads * t, l])?;
    // Batch z = head = (kv head z / g, member z % g).
    let per_head = |t| MatView { t, off: 0, rs: qd, cs: 1, bo: g * d, bi: d };
    let sv = MatView { t: &scores, off: 0, rs: l, cs: 1, bo: g * t * l, bi: t * l };
    let mm = |m, n, k, a, b, c| Matmul {
        m,
        n,
        k,
        batch: heads,
        batch_inner: g,
        a,
        b,
        c,
        bias: None,
        act: Act::None,
        pre: None,
        alpha: 1.0,
        beta: None,
    };
    // scores = Q K^T: K^T of kv head o is element (x, j) at j * kd + o * d + x.
    let kt = MatView { t: k, off: 0, rs: 1, cs: kd, bo: d, bi: 0 };
    matmul(rec, &mm(t, l, d, per_head(q), kt, sv))?;
    softmax(rec, &scores, &probs, scale, &SoftmaxMask { mask: None, causal: true, tq: t, heads })?;
    let vv = MatView { t: v, off: 0, rs: kd, cs: 1, bo: d, bi: 0 };
    matmul(rec, &mm(t, d, l, MatView { t: &probs, ..sv }, vv, per_head(out)))
}
