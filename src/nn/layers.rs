//! The layers every model is built from: [`Linear`] (either weight layout, optional bias, a
//! column block of a fused weight), [`Norm`] (LayerNorm or RMSNorm), the LM head over a split
//! table, and the K/V cache of incremental decoding. A layer holds parameter ids into a
//! [`ParamSet`]; forward reads the set it is given (the model's, or a reference copy), backward
//! accumulates (+=) into the model's gradients.

use super::lora::LoraIds;
use super::ParamSet;
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Part, Recorder, Tensor};
use crate::ops::matmul::{matmul, Act, MatView, Matmul};
use crate::ops::norm::{layernorm, norm_backward, rmsnorm, NormGrads};
use crate::ops::reduce::colsum;

/// How a [`Linear`]'s weight is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `nn.Linear`: `[out, in]`, `y = x W^T + b`.
    OutIn,
    /// GPT-2's `Conv1D`: `[in, out]`, `y = x W + b`; `cols` (first, count) selects a column
    /// block of a fused weight (`c_attn`'s Q, K and V), with the same block of the bias.
    InOut { cols: Option<(usize, usize)> },
}

/// `y = act(x W + b)` with parameter ids into a [`ParamSet`], plus `s (x A^T) B^T` with a
/// LoRA adapter (see [`super::lora`]).
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub w: usize,
    pub b: Option<usize>,
    pub layout: Layout,
    pub lora: Option<LoraIds>,
}

/// A plain (batch 1) matmul of strided views: `C (+)= A . B`.
pub(crate) fn mm<'a>(m: usize, n: usize, k: usize, a: MatView<'a>, b: MatView<'a>, c: MatView<'a>) -> Matmul<'a> {
    Matmul { m, n, k, batch: 1, batch_inner: 1, a, b, c, bias: None, act: Act::None, pre: None, alpha: 1.0, beta: None }
}

/// A row-major view of `t` from element `off`, rows `rs` apart, columns `cs` apart.
pub(crate) fn view(t: &Tensor, off: usize, rs: usize, cs: usize) -> MatView<'_> {
    MatView { t, off, rs, cs, bo: 0, bi: 0 }
}

impl Linear {
    /// An `OutIn` weight as `[out, in]` whatever its stored shape (a `Conv2d` patch projection
    /// `[out, channels, p, p]` is a linear map of flattened patches); others as stored.
    fn weight(&self, w: &Tensor) -> Result<Tensor> {
        match (self.layout, w.shape().first()) {
            (Layout::OutIn, Some(&out)) if w.shape().len() > 2 => w.reshape(&[out, w.len() / out.max(1)]),
            _ => Ok(w.clone()),
        }
    }

    /// The (first column, columns, stored columns) of an `InOut` weight `[in, out]`.
    fn block(&self, w: &Tensor) -> (usize, usize, usize) {
        let out = w.cols();
        match self.layout {
            Layout::InOut { cols: Some((c0, n)) } => (c0, n, out),
            _ => (0, out, out),
        }
    }

    /// (first output column, columns, input width) of this Linear.
    fn dims(&self, w: &Tensor) -> (usize, usize, usize) {
        match self.layout {
            Layout::OutIn => (0, w.rows(), w.cols()),
            Layout::InOut { .. } => {
                let (c0, n, _) = self.block(w);
                (c0, n, w.rows())
            }
        }
    }

    /// `y (+)= act(x W + b)`; with an activation, `pre` receives `x W + b` for the backward.
    /// With a LoRA adapter, its term joins before the activation.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        x: &Tensor,
        y: &Tensor,
        act: Act,
        pre: Option<&Tensor>,
        accumulate: bool,
    ) -> Result<()> {
        let w = &self.weight(&p.weight(rec, self.w)?)?;
        let Some(l) = self.lora else { return self.base_forward(rec, p, w, x, y, act, pre, accumulate) };
        let dims = self.dims(w);
        if act == Act::None {
            self.base_forward(rec, p, w, x, y, Act::None, None, accumulate)?;
            return self.lora_forward(rec, p, &l, x, y, dims);
        }
        if accumulate {
            return shape_err("linear", "an activation cannot accumulate into its output");
        }
        let scratch;
        let z = match pre {
            Some(pre) => pre,
            None => {
                scratch = super::lora::pre_scratch(rec, p, y.len())?;
                &scratch
            }
        };
        self.base_forward(rec, p, w, x, z, Act::None, None, false)?;
        self.lora_forward(rec, p, &l, x, z, dims)?;
        crate::ops::elementwise::activation(rec, z, y, act)
    }

    #[allow(clippy::too_many_arguments)]
    fn base_forward(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        w: &Tensor,
        x: &Tensor,
        y: &Tensor,
        act: Act,
        pre: Option<&Tensor>,
        accumulate: bool,
    ) -> Result<()> {
        match self.layout {
            Layout::OutIn => {
                let x2 = x.reshape(&[x.len() / w.cols(), w.cols()])?;
                let y2 = y.reshape(&[x2.rows(), w.rows()])?;
                let mut op = Matmul::new(&x2, false, w, true, &y2)?.act(act);
                if let Some(b) = self.b {
                    op = op.bias(p.p(b));
                }
                if let Some(pre) = pre {
                    op = op.store_pre(pre);
                }
                if accumulate {
                    op = op.accumulate(1.0);
                }
                matmul(rec, &op)
            }
            Layout::InOut { .. } => {
                let (c0, n, out) = self.block(w);
                let inp = w.rows();
                let rows = x.len() / inp;
                let mut op = mm(rows, n, inp, view(x, 0, inp, 1), view(w, c0, out, 1), view(y, 0, n, 1));
                op.bias = self.b.map(|b| (p.p(b), c0));
                op.act = act;
                op.pre = pre.map(|p| (p, 0));
                if accumulate {
                    op.beta = Some(1.0);
                }
                matmul(rec, &op)
            }
        }
    }

    /// Backward (no activation): `dW += dy^T x` (its layout), `db += colsum(dy)` (each only
    /// when it trains), and `dx (=|+=) dy W^T` when `dx` is given (`(tensor, accumulate)`);
    /// a LoRA adapter's gradients and its share of `dx` on top. `ones` (`[rows]` of 1) serves a
    /// column block's bias gradient.
    pub fn backward(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        x: &Tensor,
        dy: &Tensor,
        dx: Option<(&Tensor, bool)>,
        ones: &Tensor,
    ) -> Result<()> {
        let w = &self.weight(&p.weight(rec, self.w)?)?;
        // The first dW of the step stores; later ones (a tied or shared weight, a second
        // backward pass) add.
        let dw = match p.g_first(self.w) {
            Some((g, add)) => Some((self.weight(g)?, add)),
            None => None,
        };
        match self.layout {
            Layout::OutIn => {
                let (out, inp) = (w.rows(), w.cols());
                let rows = dy.len() / out;
                let x2 = x.reshape(&[rows, inp])?;
                let dy2 = dy.reshape(&[rows, out])?;
                if let Some((dw, add)) = &dw {
                    let mut op = Matmul::new(&dy2, true, &x2, false, dw)?;
                    op.beta = add.then_some(1.0);
                    matmul(rec, &op)?;
                }
                if let Some(db) = self.b.and_then(|b| p.g(b)) {
                    colsum(rec, &dy2, rows, out, db, true, 1.0)?;
                }
                if let Some((dx, acc)) = dx {
                    let dx2 = dx.reshape(&[rows, inp])?;
                    let mut op = Matmul::new(&dy2, false, w, false, &dx2)?;
                    if acc {
                        op = op.accumulate(1.0);
                    }
                    matmul(rec, &op)?;
                }
            }
            Layout::InOut { .. } => {
                let (c0, n, out) = self.block(w);
                let inp = w.rows();
                let rows = x.len() / inp;
                if let Some((dw, add)) = &dw {
                    let mut gw = mm(inp, n, rows, view(x, 0, 1, inp), view(dy, 0, n, 1), view(dw, c0, out, 1));
                    gw.beta = add.then_some(1.0);
                    matmul(rec, &gw)?;
                }
                if let Some(db) = self.b.and_then(|b| p.g(b)) {
                    let mut gb = mm(1, n, rows, view(ones, 0, rows, 1), view(dy, 0, n, 1), view(db, c0, n, 1));
                    gb.beta = Some(1.0);
                    matmul(rec, &gb)?;
                }
                if let Some((dx, acc)) = dx {
                    let mut gx = mm(rows, inp, n, view(dy, 0, n, 1), view(w, c0, 1, out), view(dx, 0, inp, 1));
                    if acc {
                        gx.beta = Some(1.0);
                    }
                    matmul(rec, &gx)?;
                }
            }
        }
        if let Some(l) = self.lora {
            self.lora_backward(rec, p, &l, x, dy, dx.map(|d| d.0), self.dims(w))?;
        }
        Ok(())
    }
}

/// LayerNorm (`b` its bias) or RMSNorm (no mean, no bias).
#[derive(Clone, Copy, Debug)]
pub struct Norm {
    pub g: usize,
    pub b: Option<usize>,
    pub rms: bool,
    pub eps: f32,
}

/// What a [`Norm`]'s backward needs from its forward: per-row mean (LayerNorm) and 1/σ.
pub struct NormStats {
    pub mean: Option<Tensor>,
    pub rstd: Tensor,
}

impl NormStats {
    /// Statistics buffers for `rows` rows of `norm`.
    pub fn new(gpu: &Gpu, norm: &Norm, rows: usize) -> Result<Self> {
        Ok(NormStats { mean: if norm.rms { None } else { Some(gpu.zeros(&[rows])?) }, rstd: gpu.zeros(&[rows])? })
    }
    /// The first `rows` rows (decoding a chunk).
    pub fn narrow(&self, rows: usize) -> Result<Self> {
        Ok(NormStats {
            mean: self.mean.as_ref().map(|m| m.narrow(0, &[rows])).transpose()?,
            rstd: self.rstd.narrow(0, &[rows])?,
        })
    }
}

impl Norm {
    /// `y = norm(x)`, keeping the statistics in `st`.
    pub fn forward(&self, rec: &mut Recorder, p: &ParamSet, x: &Tensor, y: &Tensor, st: &NormStats) -> Result<()> {
        match (self.rms, self.b, &st.mean) {
            (false, Some(b), Some(mean)) => layernorm(rec, x, p.p(self.g), p.p(b), y, mean, &st.rstd, self.eps),
            (true, None, _) => rmsnorm(rec, x, p.p(self.g), y, &st.rstd, self.eps),
            _ => shape_err("norm", "a LayerNorm needs a bias and a mean buffer; an RMSNorm neither"),
        }
    }

    /// `dx (=|+=) d norm(x) / dx . dy`; `dγ`, `dβ` accumulate into the gradients.
    pub fn backward(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        x: &Tensor,
        dy: &Tensor,
        st: &NormStats,
        dx: &Tensor,
        accumulate: bool,
    ) -> Result<()> {
        let ng = NormGrads { dx, accumulate_dx: accumulate, dgamma: p.g(self.g), dbeta: self.b.and_then(|b| p.g(b)) };
        norm_backward(rec, x, p.p(self.g), dy, st.mean.as_ref(), &st.rstd, &ng)
    }
}

/// Rows of a 16-bit table unpacked per matmul of the LM head (bounds its scratch).
pub(crate) const HEAD_CHUNK: usize = 4096;

/// The row chunks `(first, rows)` a 16-bit head is unpacked in: at most [`HEAD_CHUNK`] rows and
/// one binding of f32, never across two of the table's blocks.
fn head_chunks(gpu: &Gpu, h: &crate::ops::half::Half16, nv: usize, d: usize) -> Vec<(usize, usize)> {
    let per = HEAD_CHUNK.min((gpu.max_binding_bytes() as usize / (4 * d.max(1))).max(1));
    let mut out = Vec::new();
    for (b0, bn, _) in &h.parts {
        let end = (b0 + bn).min(nv);
        let mut c0 = *b0;
        while c0 < end {
            let n = per.min(end - c0);
            out.push((c0, n));
            c0 += n;
        }
    }
    out
}

/// The LM head over parameter `i` of `p` (see [`lm_head`]), whatever its storage: a 16-bit
/// table is unpacked [`HEAD_CHUNK`] rows at a time.
pub fn lm_head_of(rec: &mut Recorder, p: &ParamSet, i: usize, x: &Tensor, row0: usize, logits: &Tensor) -> Result<()> {
    let Some(h) = p.half(i) else { return lm_head(rec, p.parts(i), x, row0, logits) };
    let (rows, nv, d) = (logits.rows(), logits.cols(), x.cols());
    for (c0, n) in head_chunks(rec.gpu(), h, nv, d) {
        let t = p.lora_scratch(rec.gpu(), 4, n * d)?;
        h.unpack_rows(rec, c0, &t)?;
        matmul(rec, &mm(rows, n, d, view(x, row0 * d, d, 1), view(&t, 0, 1, d), view(logits, c0, nv, 1)))?;
    }
    Ok(())
}

/// [`lm_head_backward`] over parameter `i` of `p`, whatever its storage (a frozen table gets
/// no gradient).
pub fn lm_head_backward_of(
    rec: &mut Recorder,
    p: &ParamSet,
    i: usize,
    x: &Tensor,
    dlogits: &Tensor,
    dx: &Tensor,
) -> Result<()> {
    let Some(h) = p.half(i) else { return lm_head_backward(rec, p.parts(i), p.grad_parts(i), x, dlogits, dx) };
    let (rows, nv, d) = (dlogits.rows(), dlogits.cols(), x.cols());
    for (c0, n) in head_chunks(rec.gpu(), h, nv, d) {
        let t = p.lora_scratch(rec.gpu(), 4, n * d)?;
        h.unpack_rows(rec, c0, &t)?;
        let mut gx = mm(rows, d, n, view(dlogits, c0, nv, 1), view(&t, 0, d, 1), view(dx, 0, d, 1));
        if c0 > 0 {
            gx.beta = Some(1.0);
        }
        matmul(rec, &gx)?;
    }
    Ok(())
}

/// The LM head on a `[vocab, h]` table stored as row blocks: `logits[:, r0..r0+n] = x . block^T`
/// for each block (`x` `[rows, h]`, `logits` `[rows, vocab]`), on the rows of `x` from `row0`
/// on (as many as `logits` has).
pub fn lm_head(rec: &mut Recorder, w: &[Part], x: &Tensor, row0: usize, logits: &Tensor) -> Result<()> {
    let (rows, nv) = (logits.rows(), logits.cols());
    let h = x.cols();
    for part in w {
        let n = part.tensor.rows();
        let (xv, wv, lv) = (view(x, row0 * h, h, 1), view(&part.tensor, 0, 1, h), view(logits, part.row0, nv, 1));
        matmul(rec, &mm(rows, n, h, xv, wv, lv))?;
    }
    Ok(())
}

/// Backward of [`lm_head`] (from row 0): `dx = dlogits . W` (written) and
/// `dW += dlogits^T . x` (when the table trains), per block.
pub fn lm_head_backward(
    rec: &mut Recorder,
    w: &[Part],
    dw: Option<&[Part]>,
    x: &Tensor,
    dlogits: &Tensor,
    dx: &Tensor,
) -> Result<()> {
    let (rows, nv) = (dlogits.rows(), dlogits.cols());
    let h = x.cols();
    for (i, part) in w.iter().enumerate() {
        let n = part.tensor.rows();
        let mut gx = mm(rows, h, n, view(dlogits, part.row0, nv, 1), view(&part.tensor, 0, h, 1), view(dx, 0, h, 1));
        if part.row0 > 0 {
            gx.beta = Some(1.0);
        }
        matmul(rec, &gx)?;
        if let Some(gpart) = dw.and_then(|d| d.get(i)) {
            let mut gw =
                mm(n, h, rows, view(dlogits, part.row0, 1, nv), view(x, 0, h, 1), view(&gpart.tensor, 0, h, 1));
            gw.beta = Some(1.0);
            matmul(rec, &gw)?;
        }
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
    pub fn new(gpu: &Gpu, layers: usize, capacity: usize, chunk: usize, width: usize) -> Result<Self> {
        if capacity == 0 || chunk == 0 {
            return shape_err("decoder", format!("capacity {capacity} and chunk {chunk} must be positive"));
        }
        let plane = || (0..layers).map(|_| gpu.zeros(&[capacity, width])).collect::<Result<Vec<_>>>();
        Ok(KvCache { k: plane()?, v: plane()?, width, capacity, chunk: chunk.min(capacity), len: 0 })
    }
    /// Check that `ids` fit (1..=chunk of them, within the capacity and the vocabulary);
    /// returns the position of the first.
    pub fn begin(&self, ids: &[u32], vocab: usize) -> Result<usize> {
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
    pub fn store(&self, rec: &mut Recorder, l: usize, k: &Tensor, v: &Tensor, past: usize) -> Result<()> {
        let n = k.len();
        rec.copy(k, &self.k[l].narrow(past * self.width, &[n])?)?;
        rec.copy(v, &self.v[l].narrow(past * self.width, &[n])?)
    }
    pub fn planes(&self, l: usize) -> (&Tensor, &Tensor) {
        (&self.k[l], &self.v[l])
    }
    pub fn advance(&mut self, t: usize) {
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
