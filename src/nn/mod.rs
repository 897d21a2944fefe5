//! Layers with explicit forward and backward (llm.c style): no autograd tape. Each backward
//! accumulates (+=) into the gradient arena, so gradients of shared parameters add up.

use crate::error::Result;
use crate::gpu::{Arena, ArenaBuilder, Gpu, Recorder, Tensor};
use crate::ops::elementwise::activation_backward;
use crate::ops::matmul::{matmul, Act, Matmul};
use crate::ops::reduce::colsum;

/// Parameters and their gradients: two arenas with the same layout, tensors named by their
/// Hugging Face names.
pub struct ParamSet {
    pub params: Arena,
    pub grads: Arena,
}

impl ParamSet {
    /// Allocate zeroed parameters and gradients for `(name, shape)` in this order.
    pub fn new(gpu: &Gpu, specs: &[(String, Vec<usize>)]) -> Result<Self> {
        let mut b = ArenaBuilder::new();
        for (n, s) in specs {
            b.add(n.clone(), s);
        }
        Ok(ParamSet {
            params: b.build(gpu, "params")?,
            grads: b.build(gpu, "grads")?,
        })
    }
    /// Parameter `i`.
    pub fn p(&self, i: usize) -> &Tensor {
        self.params.get(i)
    }
    /// Gradient of parameter `i`.
    pub fn g(&self, i: usize) -> &Tensor {
        self.grads.get(i)
    }
    pub fn names(&self) -> &[String] {
        self.params.names()
    }
    pub fn len(&self) -> usize {
        self.params.tensors().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Index of the parameter called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names().iter().position(|n| n == name)
    }
    /// Number of scalar parameters.
    pub fn count(&self) -> usize {
        self.params.tensors().iter().map(|t| t.len()).sum()
    }
    /// Set every gradient to zero (a few clears, one per chunk).
    pub fn zero_grads(&self, rec: &mut Recorder) {
        for c in self.grads.chunks() {
            rec.zero(c);
        }
    }
}

/// `y = act(x W^T + b)`, or `y += ...` when `accumulate` (a residual add for free). `x` is
/// `[rows, in]`, `w` is `[out, in]` (Hugging Face `nn.Linear` layout). With an activation,
/// `pre` receives `x W^T + b` for the backward pass.
pub fn linear(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
    act: Act,
    pre: Option<&Tensor>,
    accumulate: bool,
) -> Result<()> {
    let x2 = x.reshape(&[x.len() / w.cols(), w.cols()])?;
    let y2 = y.reshape(&[x2.rows(), w.rows()])?;
    let mut mm = Matmul::new(&x2, false, w, true, &y2)?.bias(b).act(act);
    if let Some(p) = pre {
        mm = mm.store_pre(p);
    }
    if accumulate {
        mm = mm.accumulate(1.0);
    }
    matmul(rec, &mm)
}

/// Backward of [`linear`] without activation: `dw += dy^T x`, `db += colsum(dy)`, and
/// `dx (=|+=) dy W` when `dx` is given (`(tensor, accumulate)`).
pub fn linear_backward(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    db: &Tensor,
    dx: Option<(&Tensor, bool)>,
) -> Result<()> {
    let (out, inp) = (w.rows(), w.cols());
    let rows = dy.len() / out;
    let x2 = x.reshape(&[rows, inp])?;
    let dy2 = dy.reshape(&[rows, out])?;
    matmul(
        rec,
        &Matmul::new(&dy2, true, &x2, false, dw)?.accumulate(1.0),
    )?;
    colsum(rec, &dy2, rows, out, db, true, 1.0)?;
    if let Some((dx, acc)) = dx {
        let dx2 = dx.reshape(&[rows, inp])?;
        let mut mm = Matmul::new(&dy2, false, w, false, &dx2)?;
        if acc {
            mm = mm.accumulate(1.0);
        }
        matmul(rec, &mm)?;
    }
    Ok(())
}

/// Backward through an activation from its saved pre-activation: `dpre = dy * act'(pre)`.
pub fn act_backward(
    rec: &mut Recorder,
    pre: &Tensor,
    dy: &Tensor,
    dpre: &Tensor,
    act: Act,
) -> Result<()> {
    activation_backward(rec, pre, dy, dpre, act, false)
}
