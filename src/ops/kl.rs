//! KL divergence between two logit tensors (shaders/kl.wgsl): forward, reverse, symmetric; per
//! row, its mean, and its gradient with respect to either side.

use super::reduce::{reduce, Reduction};
use super::{expect_len, expect_min, grid, slot, WG};
use crate::error::{shape_err, Result};
use crate::gpu::{KernelSpec, Params, Recorder, Tensor};

/// Which divergence, with P the reference (target) logits and Q the current ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KlKind {
    /// KL(p || q)
    Forward,
    /// KL(q || p)
    Reverse,
    /// KL(p || q) + KL(q || p)
    Symmetric,
}

impl KlKind {
    fn code(self) -> u32 {
        match self {
            KlKind::Forward => 0,
            KlKind::Reverse => 1,
            KlKind::Symmetric => 2,
        }
    }
}

fn spec(entry: &'static str, kind: KlKind, acc: bool, has_dp: bool, weighted: bool) -> KernelSpec {
    KernelSpec::new("kl", entry, 5)
        .u("WG", WG)
        .u("MODE", kind.code())
        .b("ACC", acc)
        .b("HAS_DP", has_dp)
        .b("WEIGHTED", weighted)
}

fn check_weights(op: &'static str, p: &Tensor, weights: Option<&Tensor>) -> Result<()> {
    match weights {
        Some(w) => expect_len(op, "row weights", w, p.rows()),
        None => Ok(()),
    }
}

fn check(p: &Tensor, q: &Tensor) -> Result<()> {
    if p.shape() != q.shape() || p.cols() == 0 {
        return shape_err(
            "kl",
            format!("logits {:?} and {:?} must have the same non-empty shape", p.shape(), q.shape()),
        );
    }
    Ok(())
}

/// `out[r]` = divergence of row r, times `weights[r]` when given.
pub fn kl_rows(
    rec: &mut Recorder,
    p: &Tensor,
    q: &Tensor,
    out: &Tensor,
    kind: KlKind,
    weights: Option<&Tensor>,
) -> Result<()> {
    check(p, q)?;
    expect_len("kl_rows", "out", out, p.rows())?;
    check_weights("kl_rows", p, weights)?;
    let gpu = rec.gpu();
    let d = gpu.dummy_tensor();
    let k = gpu.kernel(&spec("rows", kind, false, false, weights.is_some()))?;
    let prm = Params::new().n(p.rows()).n(p.cols()).u(0).u(0).f(1.0).u(0).u(0).u(0);
    rec.dispatch(&k, prm, &[p, q, out, &d, weights.unwrap_or(&d)], grid(gpu, p.rows())?)
}

/// `out[out_off]` = scale * the mean over rows of the divergence, or, with row `weights`
/// (summing to 1, e.g. a language model's real tokens), scale * sum_r weights[r] * KL_r.
#[allow(clippy::too_many_arguments)]
pub fn kl_mean(
    rec: &mut Recorder,
    p: &Tensor,
    q: &Tensor,
    out: &Tensor,
    out_off: usize,
    kind: KlKind,
    scale: f32,
    weights: Option<&Tensor>,
) -> Result<()> {
    check(p, q)?;
    expect_min("kl_mean", "out", out, out_off + 1)?;
    let rows = rec.gpu().scratch(slot::KL_ROWS, p.rows())?;
    kl_rows(rec, p, q, &rows, kind, weights)?;
    let s = if weights.is_some() { scale } else { scale / p.rows() as f32 };
    reduce(rec, &[&rows], Reduction::Sum, s, out, out_off, false)
}

/// Gradient of `coef * sum over rows of KL_row` (each row times `weights[r]` when given) with
/// respect to the current logits Q (into `dq`) and, when `dp` is given, the reference logits P.
/// Written, or added when `accumulate`.
#[allow(clippy::too_many_arguments)]
pub fn kl_backward(
    rec: &mut Recorder,
    p: &Tensor,
    q: &Tensor,
    dq: &Tensor,
    dp: Option<&Tensor>,
    kind: KlKind,
    coef: f32,
    accumulate: bool,
    weights: Option<&Tensor>,
) -> Result<()> {
    check(p, q)?;
    expect_len("kl_backward", "dq", dq, q.len())?;
    if let Some(t) = dp {
        expect_len("kl_backward", "dp", t, p.len())?;
    }
    check_weights("kl_backward", p, weights)?;
    let gpu = rec.gpu();
    let d = gpu.dummy_tensor();
    let k = gpu.kernel(&spec("backward", kind, accumulate, dp.is_some(), weights.is_some()))?;
    let prm = Params::new().n(p.rows()).n(p.cols()).u(0).u(0).f(coef).u(0).u(0).u(0);
    rec.dispatch(&k, prm, &[p, q, weights.unwrap_or(&d), dq, dp.unwrap_or(&d)], grid(gpu, p.rows())?)
}
