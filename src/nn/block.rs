//! The transformer block every model shares: [`Attention`] (causal or not, RoPE, grouped-query
//! K/V heads, a K/V cache when decoding), [`Mlp`] (an activation or SwiGLU) and [`Block`]
//! (pre-norm as GPT-2, ViT and LLaMA, or post-norm as BERT; DINOv2's LayerScale), each with
//! forward, backward and — for causal pre-norm blocks — cached decoding.
//!
//! Activations a backward needs are planned once per batch shape ([`BlockActs`], one per
//! layer); the backward's temporaries are shared by every layer of a stack ([`Scratch`]).

use super::layers::{KvCache, Linear, Norm, NormStats};
use super::{site, Drop, ParamSet};
use crate::error::Result;
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::ops::attention::{
    attention_backward_with, attention_cached, attention_with, AttnShape, CachedShape, HeadView,
};
use crate::ops::decoder::{repeat_heads, repeat_heads_backward, rope, swiglu, swiglu_backward};
use crate::ops::elementwise::{activation_backward, mul, mul_cols};
use crate::ops::matmul::Act;
use crate::ops::reduce::colsum;

/// Multi-head self-attention with its four projections.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub heads: usize,
    /// K/V heads (fewer than `heads`: grouped-query attention, each repeated to its queries).
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Each position attends only to itself and earlier ones.
    pub causal: bool,
    /// Rotary position embeddings on Q and K (the table comes with the [`Pass`]).
    pub rope: bool,
}

/// The feed-forward part of a block.
#[derive(Clone, Copy, Debug)]
pub enum Mlp {
    /// `down(act(up(x)))`.
    Act { up: Linear, down: Linear, act: Act },
    /// `down(silu(gate(x)) * up(x))`.
    SwiGlu { gate: Linear, up: Linear, down: Linear },
}

/// One transformer layer.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    pub attn: Attention,
    pub mlp: Mlp,
    pub norm1: Norm,
    pub norm2: Norm,
    /// Post-norm (BERT): `n1 = norm1(x + attn(x))`, `out = norm2(n1 + mlp(n1))`. Otherwise
    /// pre-norm: `r = x + attn(norm1(x))`, `out = r + mlp(norm2(r))`.
    pub post_norm: bool,
    /// DINOv2's LayerScale vectors `(λ1, λ2)`, multiplying each branch before its residual add.
    pub scale: Option<(usize, usize)>,
    pub hidden: usize,
    pub inter: usize,
}

/// What one pass through a stack shares: the batch shape, the attention mask, the RoPE table,
/// the dropout in force, and the layer (its dropout sites).
pub struct Pass<'a> {
    pub batch: usize,
    pub seq: usize,
    /// `[batch, seq]`, 1 for real tokens.
    pub mask: Option<&'a Tensor>,
    /// RoPE's cos/sin table for the sequence.
    pub table: Option<&'a Tensor>,
    pub drop: &'a Drop,
    pub layer: usize,
}

/// One layer's activations for a batch shape, kept for the backward.
pub struct BlockActs {
    n1: Tensor,
    st1: NormStats,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    /// Q and K after RoPE.
    qr: Option<Tensor>,
    kr: Option<Tensor>,
    /// K and V repeated to every query head (grouped-query attention).
    krep: Option<Tensor>,
    vrep: Option<Tensor>,
    probs: Tensor,
    probs_drop: Tensor,
    ctx: Tensor,
    res1: Tensor,
    /// Pre-norm: `norm2(res1)`. Post-norm: `n1 + mlp(n1)`, before `norm2`.
    mid: Tensor,
    st2: NormStats,
    /// The MLP: pre-activation (or SwiGLU's gate), SwiGLU's up, and the activation.
    a1: Tensor,
    a2: Option<Tensor>,
    inner: Tensor,
    /// LayerScale's branch outputs (after dropout), for dλ.
    o1: Option<Tensor>,
    o2: Option<Tensor>,
}

/// The backward's temporaries, shared by every layer of a stack; `dx`/`dx2` carry the gradient
/// between layers, and models use them (and `dtmp`) around the stack too.
pub struct Scratch {
    pub dx: Tensor,
    pub dx2: Tensor,
    pub dres: Tensor,
    pub dh: Tensor,
    pub dtmp: Tensor,
    dtmp2: Tensor,
    dls: Tensor,
    dctx: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    dqr: Tensor,
    dkr: Tensor,
    dkf: Tensor,
    dvf: Tensor,
    d1: Tensor,
    d2: Tensor,
    d3: Tensor,
    /// `[rows]` of 1 (the bias gradient of a column block).
    pub ones: Tensor,
}

impl Attention {
    fn shape(&self, ps: &Pass) -> AttnShape {
        AttnShape { batch: ps.batch, seq: ps.seq, heads: self.heads, head_dim: self.head_dim }
    }
    fn gqa(&self) -> bool {
        self.kv_heads != self.heads
    }
    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
    /// The Q, K, V the attention kernel reads: after RoPE and the K/V head repeat.
    fn inputs<'a>(&self, a: &'a BlockActs) -> (&'a Tensor, &'a Tensor, &'a Tensor) {
        let q = a.qr.as_ref().unwrap_or(&a.q);
        let k = a.krep.as_ref().or(a.kr.as_ref()).unwrap_or(&a.k);
        let v = a.vrep.as_ref().unwrap_or(&a.v);
        (q, k, v)
    }

    fn forward(&self, rec: &mut Recorder, p: &ParamSet, x: &Tensor, a: &BlockActs, ps: &Pass) -> Result<()> {
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
        for (lin, out) in [(&self.q, &a.q), (&self.k, &a.k), (&self.v, &a.v)] {
            lin.forward(rec, p, x, out, Act::None, None, false)?;
        }
        if let (Some(qr), Some(kr), Some(table)) = (&a.qr, &a.kr, ps.table) {
            rope(rec, &a.q, table, qr, nh, hd / 2, ps.seq, false)?;
            rope(rec, &a.k, table, kr, nkv, hd / 2, ps.seq, false)?;
        }
        if let (Some(krep), Some(vrep)) = (&a.krep, &a.vrep) {
            repeat_heads(rec, a.kr.as_ref().unwrap_or(&a.k), krep, nh, nkv, hd)?;
            repeat_heads(rec, &a.v, vrep, nh, nkv, hd)?;
        }
        let s = self.shape(ps);
        let (q, k, v) = self.inputs(a);
        let (q, k, v) = (HeadView::dense(q, &s), HeadView::dense(k, &s), HeadView::dense(v, &s));
        let drop = ps.drop.attn(site::attn(ps.layer), &a.probs_drop);
        let ctx = HeadView::dense(&a.ctx, &s);
        attention_with(rec, &s, q, k, v, ctx, &a.probs, ps.mask, self.causal, self.scale(), drop)
    }

    /// From `dout` (the gradient of the output projection's result) to `dx (=|+=) d x`.
    fn backward(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        x: &Tensor,
        a: &BlockActs,
        s: &Scratch,
        ps: &Pass,
        dout: &Tensor,
        dx: (&Tensor, bool),
    ) -> Result<()> {
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
        self.o.backward(rec, p, &a.ctx, dout, Some((&s.dctx, false)), &s.ones)?;
        let dq = if self.rope { &s.dqr } else { &s.dq };
        let dk_near = if self.rope { &s.dkr } else { &s.dk };
        let (dk, dv) = if self.gqa() { (&s.dkf, &s.dvf) } else { (dk_near, &s.dv) };
        let sh = self.shape(ps);
        let (q, k, v) = self.inputs(a);
        let (q, k, v) = (HeadView::dense(q, &sh), HeadView::dense(k, &sh), HeadView::dense(v, &sh));
        let (dqv, dkv, dvv) = (HeadView::dense(dq, &sh), HeadView::dense(dk, &sh), HeadView::dense(dv, &sh));
        let drop = ps.drop.attn(site::attn(ps.layer), &a.probs_drop);
        let dctx = HeadView::dense(&s.dctx, &sh);
        attention_backward_with(rec, &sh, q, k, v, &a.probs, dctx, dqv, dkv, dvv, self.scale(), false, drop)?;
        if self.gqa() {
            repeat_heads_backward(rec, &s.dkf, dk_near, nh, nkv, hd)?;
            repeat_heads_backward(rec, &s.dvf, &s.dv, nh, nkv, hd)?;
        }
        if let (true, Some(table)) = (self.rope, ps.table) {
            rope(rec, &s.dqr, table, &s.dq, nh, hd / 2, ps.seq, true)?;
            rope(rec, &s.dkr, table, &s.dk, nkv, hd / 2, ps.seq, true)?;
        }
        self.q.backward(rec, p, x, &s.dq, Some(dx), &s.ones)?;
        self.k.backward(rec, p, x, &s.dk, Some((dx.0, true)), &s.ones)?;
        self.v.backward(rec, p, x, &s.dv, Some((dx.0, true)), &s.ones)
    }
}

impl Mlp {
    fn down(&self) -> &Linear {
        match self {
            Mlp::Act { down, .. } | Mlp::SwiGlu { down, .. } => down,
        }
    }

    /// `inner` = the activation the down projection reads; `a1` (`a2`) keep what the backward
    /// needs (`None`: not kept, decoding).
    fn forward(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        x: &Tensor,
        a1: Option<&Tensor>,
        a2: Option<&Tensor>,
        gate_buf: &Tensor,
        inner: &Tensor,
    ) -> Result<()> {
        match self {
            Mlp::Act { up, act, .. } => up.forward(rec, p, x, inner, *act, a1, false),
            Mlp::SwiGlu { gate, up, .. } => {
                let g = a1.unwrap_or(gate_buf);
                let u = a2.expect("SwiGLU keeps its up projection");
                gate.forward(rec, p, x, g, Act::None, None, false)?;
                up.forward(rec, p, x, u, Act::None, None, false)?;
                swiglu(rec, g, u, inner)
            }
        }
    }

    /// From `dout` (the gradient of the down projection's result) to `dx (=|+=) d x`.
    fn backward(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        x: &Tensor,
        a: &BlockActs,
        s: &Scratch,
        dout: &Tensor,
        dx: (&Tensor, bool),
    ) -> Result<()> {
        self.down().backward(rec, p, &a.inner, dout, Some((&s.d1, false)), &s.ones)?;
        match self {
            Mlp::Act { up, act, .. } => {
                activation_backward(rec, &a.a1, &s.d1, &s.d2, *act, false)?;
                up.backward(rec, p, x, &s.d2, Some(dx), &s.ones)
            }
            Mlp::SwiGlu { gate, up, .. } => {
                let u = a.a2.as_ref().expect("SwiGLU keeps its up projection");
                swiglu_backward(rec, &a.a1, u, &s.d1, &s.d2, &s.d3)?;
                gate.backward(rec, p, x, &s.d2, Some(dx), &s.ones)?;
                up.backward(rec, p, x, &s.d3, Some((dx.0, true)), &s.ones)
            }
        }
    }
}

/// Backward of `out = λ ⊙ o` (+ residual): `dλ += colsum(dy ⊙ o)`; returns `do = λ ⊙ dy`.
fn layer_scale_backward<'t>(
    rec: &mut Recorder,
    p: &ParamSet,
    ls: usize,
    dy: &Tensor,
    o: &Tensor,
    s: &'t Scratch,
) -> Result<&'t Tensor> {
    let h = p.p(ls).len();
    if let Some(g) = p.g(ls) {
        mul(rec, dy, o, &s.dtmp2, 1.0)?;
        colsum(rec, &s.dtmp2, dy.len() / h, h, g, true, 1.0)?;
    }
    mul_cols(rec, dy, p.p(ls), None, &s.dls)?;
    Ok(&s.dls)
}

impl Block {
    /// Every Linear of the block (GPT-2's Q, K and V column blocks share one weight).
    pub fn linears(&self) -> Vec<&Linear> {
        let a = &self.attn;
        let mut out = vec![&a.q, &a.k, &a.v, &a.o];
        match &self.mlp {
            Mlp::Act { up, down, .. } => out.extend([up, down]),
            Mlp::SwiGlu { gate, up, down } => out.extend([gate, up, down]),
        }
        out
    }

    /// A pre-norm block (`norms`: before attention, before the MLP) without LayerScale.
    pub fn new(attn: Attention, mlp: Mlp, norms: (Norm, Norm), hidden: usize, inter: usize) -> Self {
        Block { attn, mlp, norm1: norms.0, norm2: norms.1, post_norm: false, scale: None, hidden, inter }
    }
    /// The same block post-norm (BERT: `norms` after each residual add).
    pub fn post_norm(self) -> Self {
        Block { post_norm: true, ..self }
    }
    /// The same block with LayerScale vectors `(λ1, λ2)` (DINOv2).
    pub fn layer_scale(self, scale: Option<(usize, usize)>) -> Self {
        Block { scale, ..self }
    }

    fn qd(&self) -> usize {
        self.attn.heads * self.attn.head_dim
    }
    fn kd(&self) -> usize {
        self.attn.kv_heads * self.attn.head_dim
    }
    fn swiglu(&self) -> bool {
        matches!(self.mlp, Mlp::SwiGlu { .. })
    }

    /// Plan one layer's activations for `batch` sequences of `seq` tokens; `attn_dropout`:
    /// keep the dropped attention probabilities.
    pub fn acts(&self, gpu: &Gpu, batch: usize, seq: usize, attn_dropout: bool) -> Result<BlockActs> {
        let (bt, h, i, qd, kd) = (batch * seq, self.hidden, self.inter, self.qd(), self.kd());
        let f = |s: &[usize]| gpu.zeros(s);
        let opt = |on: bool, s: &[usize]| if on { f(s).map(Some) } else { Ok(None) };
        let probs = batch * self.attn.heads * seq * seq;
        let (rope, gqa, ls) = (self.attn.rope, self.attn.gqa(), self.scale.is_some());
        Ok(BlockActs {
            n1: f(&[bt, h])?,
            st1: NormStats::new(gpu, &self.norm1, bt)?,
            q: f(&[bt, qd])?,
            k: f(&[bt, kd])?,
            v: f(&[bt, kd])?,
            qr: opt(rope, &[bt, qd])?,
            kr: opt(rope, &[bt, kd])?,
            krep: opt(gqa, &[bt, qd])?,
            vrep: opt(gqa, &[bt, qd])?,
            probs: f(&[probs])?,
            // Only written in training with attention dropout.
            probs_drop: if attn_dropout { f(&[probs])? } else { f(&[1])? },
            ctx: f(&[bt, qd])?,
            res1: f(&[bt, h])?,
            mid: f(&[bt, h])?,
            st2: NormStats::new(gpu, &self.norm2, bt)?,
            a1: f(&[bt, i])?,
            a2: opt(self.swiglu(), &[bt, i])?,
            inner: f(&[bt, i])?,
            o1: opt(ls, &[bt, h])?,
            o2: opt(ls, &[bt, h])?,
        })
    }

    /// The backward temporaries for `rows` tokens of a stack of these blocks.
    pub fn scratch(&self, gpu: &Gpu, rows: usize) -> Result<Scratch> {
        let (h, i, qd, kd) = (self.hidden, self.inter, self.qd(), self.kd());
        let f = |w: usize| gpu.zeros(&[rows, w]);
        let (rope, gqa) = (self.attn.rope, self.attn.gqa());
        let small = || gpu.zeros(&[1]);
        Ok(Scratch {
            dx: f(h)?,
            dx2: f(h)?,
            dres: f(h)?,
            dh: f(h)?,
            dtmp: f(h)?,
            dtmp2: if self.scale.is_some() { f(h)? } else { small()? },
            dls: if self.scale.is_some() { f(h)? } else { small()? },
            dctx: f(qd)?,
            dq: f(qd)?,
            dk: f(kd)?,
            dv: f(kd)?,
            dqr: if rope { f(qd)? } else { small()? },
            dkr: if rope { f(kd)? } else { small()? },
            dkf: if gqa { f(qd)? } else { small()? },
            dvf: if gqa { f(qd)? } else { small()? },
            d1: f(i)?,
            d2: f(i)?,
            d3: if self.swiglu() { f(i)? } else { small()? },
            ones: gpu.from_f32(&vec![1.0; rows], &[rows])?,
        })
    }

    /// `out = base + [λ ⊙] dropout(lin(inp))`; `keep` holds the branch for LayerScale's dλ.
    fn residual(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        lin: &Linear,
        inp: &Tensor,
        base: &Tensor,
        out: &Tensor,
        ls: Option<Scaled>,
        site: u64,
        d: &Drop,
        s: &Scratch,
    ) -> Result<()> {
        match ls {
            Some((lambda, keep)) => {
                lin.forward(rec, p, inp, keep, Act::None, None, false)?;
                if d.hidden() {
                    d.apply(rec, keep, &s.dtmp, site, false)?;
                    rec.copy(&s.dtmp, keep)?;
                }
                mul_cols(rec, keep, p.p(lambda), Some(base), out)
            }
            None => {
                rec.copy(base, out)?;
                if d.hidden() {
                    lin.forward(rec, p, inp, &s.dtmp, Act::None, None, false)?;
                    d.apply(rec, &s.dtmp, out, site, true)
                } else {
                    lin.forward(rec, p, inp, out, Act::None, None, true)
                }
            }
        }
    }

    fn scales<'a>(&self, a: &'a BlockActs) -> (Option<Scaled<'a>>, Option<Scaled<'a>>) {
        match (self.scale, &a.o1, &a.o2) {
            (Some((l1, l2)), Some(o1), Some(o2)) => (Some((l1, o1)), Some((l2, o2))),
            _ => (None, None),
        }
    }

    /// Record `out = block(x)` with the parameters `p`.
    pub fn forward(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        x: &Tensor,
        out: &Tensor,
        a: &BlockActs,
        s: &Scratch,
        ps: &Pass,
    ) -> Result<()> {
        let (d, l) = (ps.drop, ps.layer);
        let (ls1, ls2) = self.scales(a);
        let down = self.mlp.down();
        if self.post_norm {
            self.attn.forward(rec, p, x, a, ps)?;
            self.residual(rec, p, &self.attn.o, &a.ctx, x, &a.res1, ls1, site::attn_out(l), d, s)?;
            self.norm1.forward(rec, p, &a.res1, &a.n1, &a.st1)?;
            self.mlp.forward(rec, p, &a.n1, Some(&a.a1), a.a2.as_ref(), &a.a1, &a.inner)?;
            self.residual(rec, p, down, &a.inner, &a.n1, &a.mid, ls2, site::ffn_out(l), d, s)?;
            self.norm2.forward(rec, p, &a.mid, out, &a.st2)
        } else {
            self.norm1.forward(rec, p, x, &a.n1, &a.st1)?;
            self.attn.forward(rec, p, &a.n1, a, ps)?;
            self.residual(rec, p, &self.attn.o, &a.ctx, x, &a.res1, ls1, site::attn_out(l), d, s)?;
            self.norm2.forward(rec, p, &a.res1, &a.mid, &a.st2)?;
            self.mlp.forward(rec, p, &a.mid, Some(&a.a1), a.a2.as_ref(), &a.a1, &a.inner)?;
            self.residual(rec, p, down, &a.inner, &a.res1, out, ls2, site::ffn_out(l), d, s)
        }
    }

    /// Record the backward of [`Block::forward`] (the model's own parameters `p`): `dx` holds
    /// the gradient of the output on entry and that of the input `x` on return (`dx2` is the
    /// other carrier; the two may be swapped).
    pub fn backward(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        x: &Tensor,
        a: &BlockActs,
        s: &Scratch,
        dx: &mut Tensor,
        dx2: &mut Tensor,
        ps: &Pass,
    ) -> Result<()> {
        let (d, l) = (ps.drop, ps.layer);
        let (ls1, ls2) = self.scales(a);
        if self.post_norm {
            self.norm2.backward(rec, p, &a.mid, dx, &a.st2, &s.dres, false)?;
            rec.copy(&s.dres, &s.dh)?;
            let dout = d.back(rec, &s.dres, &s.dtmp, site::ffn_out(l))?;
            self.mlp.backward(rec, p, &a.n1, a, s, dout, (&s.dh, true))?;
            self.norm1.backward(rec, p, &a.res1, &s.dh, &a.st1, &s.dres, false)?;
            rec.copy(&s.dres, dx2)?;
            let dout = d.back(rec, &s.dres, &s.dtmp, site::attn_out(l))?;
            self.attn.backward(rec, p, x, a, s, ps, dout, (dx2, true))?;
            std::mem::swap(dx, dx2);
        } else {
            rec.copy(dx, dx2)?;
            let dm = match ls2 {
                Some((lambda, o2)) => layer_scale_backward(rec, p, lambda, dx, o2, s)?,
                None => &*dx,
            };
            let dout = d.back(rec, dm, &s.dtmp, site::ffn_out(l))?;
            self.mlp.backward(rec, p, &a.mid, a, s, dout, (&s.dh, false))?;
            self.norm2.backward(rec, p, &a.res1, &s.dh, &a.st2, dx2, true)?;
            rec.copy(dx2, dx)?;
            let da = match ls1 {
                Some((lambda, o1)) => layer_scale_backward(rec, p, lambda, dx2, o1, s)?,
                None => &*dx2,
            };
            let dout = d.back(rec, da, &s.dtmp, site::attn_out(l))?;
            self.attn.backward(rec, p, &a.n1, a, s, ps, dout, (&s.dh, false))?;
            self.norm1.backward(rec, p, x, &s.dh, &a.st1, dx, true)?;
        }
        Ok(())
    }
}

/// A LayerScale vector and the branch output it multiplies (kept for dλ).
type Scaled<'a> = (usize, &'a Tensor);

/// The buffers of incremental decoding for `chunk` new tokens (batch 1), shared by the layers.
pub struct DecodeBufs {
    pub x: Tensor,
    n: Tensor,
    st: NormStats,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    qr: Option<Tensor>,
    kr: Option<Tensor>,
    ctx: Tensor,
    a1: Tensor,
    a2: Option<Tensor>,
    inner: Tensor,
}

impl DecodeBufs {
    /// Buffers for up to `chunk` tokens of `block`'s stack.
    pub fn new(gpu: &Gpu, block: &Block, chunk: usize) -> Result<Self> {
        let (h, i, qd, kd) = (block.hidden, block.inter, block.qd(), block.kd());
        let f = |w: usize| gpu.zeros(&[chunk, w]);
        let rope = block.attn.rope;
        Ok(DecodeBufs {
            x: f(h)?,
            n: f(h)?,
            st: NormStats::new(gpu, &block.norm1, chunk)?,
            q: f(qd)?,
            k: f(kd)?,
            v: f(kd)?,
            qr: if rope { Some(f(qd)?) } else { None },
            kr: if rope { Some(f(kd)?) } else { None },
            ctx: f(qd)?,
            a1: f(i)?,
            a2: if block.swiglu() { Some(f(i)?) } else { None },
            inner: f(i)?,
        })
    }

    /// The same buffers cut to the first `t` rows.
    pub fn rows(&self, t: usize) -> Result<DecodeBufs> {
        let r = |a: &Tensor| a.narrow(0, &[t, a.cols()]);
        let ro = |a: &Option<Tensor>| a.as_ref().map(r).transpose();
        Ok(DecodeBufs {
            x: r(&self.x)?,
            n: r(&self.n)?,
            st: self.st.narrow(t)?,
            q: r(&self.q)?,
            k: r(&self.k)?,
            v: r(&self.v)?,
            qr: ro(&self.qr)?,
            kr: ro(&self.kr)?,
            ctx: r(&self.ctx)?,
            a1: r(&self.a1)?,
            a2: ro(&self.a2)?,
            inner: r(&self.inner)?,
        })
    }

    /// The last norm's output buffer and statistics (for the final norm before the head).
    pub fn norm_out(&self) -> (&Tensor, &NormStats) {
        (&self.n, &self.st)
    }
}

impl Block {
    /// Feed `t` new tokens (`b.x`, cut to `t` rows) through layer `l` of a causal pre-norm stack,
    /// storing their keys and values at `past` in `cache` and attending to every cached position.
    /// `table`: the RoPE table of positions `past..past + t`.
    pub fn decode(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        l: usize,
        b: &DecodeBufs,
        cache: &KvCache,
        table: Option<&Tensor>,
        past: usize,
    ) -> Result<()> {
        let (t, at) = (b.x.rows(), &self.attn);
        let (nh, nkv, hd) = (at.heads, at.kv_heads, at.head_dim);
        self.norm1.forward(rec, p, &b.x, &b.n, &b.st)?;
        for (lin, out) in [(&at.q, &b.q), (&at.k, &b.k), (&at.v, &b.v)] {
            lin.forward(rec, p, &b.n, out, Act::None, None, false)?;
        }
        if let (Some(qr), Some(kr), Some(table)) = (&b.qr, &b.kr, table) {
            rope(rec, &b.q, table, qr, nh, hd / 2, t, false)?;
            rope(rec, &b.k, table, kr, nkv, hd / 2, t, false)?;
        }
        let (q, k) = (b.qr.as_ref().unwrap_or(&b.q), b.kr.as_ref().unwrap_or(&b.k));
        cache.store(rec, l, k, &b.v, past)?;
        let (kc, vc) = cache.planes(l);
        let s = CachedShape { heads: nh, kv_heads: nkv, head_dim: hd, past, t };
        attention_cached(rec, &s, q, kc, vc, &b.ctx, at.scale())?;
        at.o.forward(rec, p, &b.ctx, &b.x, Act::None, None, true)?;
        self.norm2.forward(rec, p, &b.x, &b.n, &b.st)?;
        self.mlp.forward(rec, p, &b.n, None, b.a2.as_ref(), &b.a1, &b.inner)?;
        self.mlp.down().forward(rec, p, &b.inner, &b.x, Act::None, None, true)
    }
}
