//! LayerNorm and RMSNorm over the last dimension, forward and backward
//! (shaders/layernorm.wgsl, parameter gradients finished by reduce.wgsl::colsum_finish).

use super::{expect_len, grid, slot, RB, WG};
use crate::error::{shape_err, Result};
use crate::gpu::{KernelSpec, Params, Recorder, Tensor};
use crate::ops::reduce::colsum_finish;

fn spec(entry: &'static str, rms: bool, acc: bool) -> KernelSpec {
    KernelSpec::new("layernorm", entry, 6).u("WG", WG).u("RB", RB).b("RMS", rms).b("ACC", acc)
}

fn dims(x: &Tensor, gamma: &Tensor) -> Result<(usize, usize)> {
    let cols = x.cols();
    if cols == 0 || gamma.len() != cols {
        return shape_err(
            "layernorm",
            format!("x {:?} and gamma {:?}: gamma must have the last dimension's size", x.shape(), gamma.shape()),
        );
    }
    Ok((x.rows(), cols))
}

/// LayerNorm forward: `y = (x - mean) * rstd * gamma + beta`, saving per-row `mean` and `rstd`.
pub fn layernorm(
    rec: &mut Recorder,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    eps: f32,
) -> Result<()> {
    let (rows, cols) = dims(x, gamma)?;
    expect_len("layernorm", "beta", beta, cols)?;
    expect_len("layernorm", "y", y, x.len())?;
    expect_len("layernorm", "mean", mean, rows)?;
    expect_len("layernorm", "rstd", rstd, rows)?;
    let gpu = rec.gpu();
    let k = gpu.kernel(&spec("forward", false, false))?;
    rec.dispatch(&k, Params::new().n(rows).n(cols).f(eps).u(0), &[x, gamma, beta, y, mean, rstd], grid(gpu, rows)?)
}

/// RMSNorm forward: `y = x * rstd * gamma`, saving per-row `rstd`.
pub fn rmsnorm(rec: &mut Recorder, x: &Tensor, gamma: &Tensor, y: &Tensor, rstd: &Tensor, eps: f32) -> Result<()> {
    let (rows, cols) = dims(x, gamma)?;
    expect_len("rmsnorm", "y", y, x.len())?;
    expect_len("rmsnorm", "rstd", rstd, rows)?;
    let gpu = rec.gpu();
    let k = gpu.kernel(&spec("forward", true, false))?;
    let d = gpu.dummy_tensor();
    rec.dispatch(&k, Params::new().n(rows).n(cols).f(eps).u(0), &[x, gamma, &d, y, &d, rstd], grid(gpu, rows)?)
}

/// Gradients of a norm layer. `dx` is written (or added to, when `accumulate_dx`); `dgamma` and
/// `dbeta` are always accumulated (+=), like every parameter gradient, and both `None` for a
/// frozen norm (LoRA), whose parameter gradients are then not computed.
pub struct NormGrads<'a> {
    pub dx: &'a Tensor,
    pub accumulate_dx: bool,
    pub dgamma: Option<&'a Tensor>,
    /// LayerNorm only.
    pub dbeta: Option<&'a Tensor>,
}

/// LayerNorm backward (`mean` given) or RMSNorm backward (`mean` = None).
pub fn norm_backward(
    rec: &mut Recorder,
    x: &Tensor,
    gamma: &Tensor,
    dy: &Tensor,
    mean: Option<&Tensor>,
    rstd: &Tensor,
    g: &NormGrads,
) -> Result<()> {
    let (rows, cols) = dims(x, gamma)?;
    let rms = mean.is_none();
    expect_len("norm_backward", "dy", dy, x.len())?;
    expect_len("norm_backward", "dx", g.dx, x.len())?;
    expect_len("norm_backward", "rstd", rstd, rows)?;
    if let Some(dg) = g.dgamma {
        expect_len("norm_backward", "dgamma", dg, cols)?;
    }
    if let Some(m) = mean {
        expect_len("norm_backward", "mean", m, rows)?;
    }
    if !rms && g.dbeta.is_none() != g.dgamma.is_none() {
        return shape_err("norm_backward", "LayerNorm backward needs dbeta with dgamma (or neither: frozen)");
    }
    let gpu = rec.gpu();
    let d = gpu.dummy_tensor();
    let mean_t = mean.unwrap_or(&d);
    let nb = rows.div_ceil(RB as usize);
    let p = Params::new().n(rows).n(cols).f(0.0).n(nb);
    let k = gpu.kernel(&spec("backward_dx", rms, g.accumulate_dx))?;
    rec.dispatch(&k, p.clone(), &[x, gamma, dy, g.dx, mean_t, rstd], grid(gpu, rows)?)?;
    let Some(dgamma) = g.dgamma else { return Ok(()) };
    if rows == 0 {
        return Ok(());
    }
    let parts = gpu.scratch(slot::COLSUM, 2 * nb * cols)?;
    let k = gpu.kernel(&spec("backward_params", rms, false))?;
    rec.dispatch(&k, p, &[x, gamma, dy, &parts, mean_t, rstd], [cols.div_ceil(WG as usize) as u32, nb as u32, 1])?;
    colsum_finish(rec, &parts, 0, nb, cols, dgamma, true, 1.0)?;
    if let Some(db) = g.dbeta {
        if !rms {
            colsum_finish(rec, &parts, nb * cols, nb, cols, db, true, 1.0)?;
        }
    }
    Ok(())
}
