//! Deterministic reductions (shaders/reduce.wgsl): sums, sums of squares, the global L2 norm of
//! a set of tensors or a whole arena, row means and column sums.

use super::{expect_len, expect_min, grid, slot, RB, WG, WG_REDUCE};
use crate::error::{shape_err, Result};
use crate::gpu::{Arena, KernelSpec, Params, Recorder, Tensor};

/// Elements summed by one workgroup in pass 1. Fixed for every device, so the summation order
/// (and the bits of the result) do not depend on the adapter. 16384: a MiniLM gradient norm
/// (22.7M floats) took 23-27 ms on lavapipe against 59-69 ms at 4096 (a quarter of the
/// workgroups, each with its tree's barriers).
pub const SPAN: u32 = 16384;

fn spec(entry: &'static str, square: bool, sqrt: bool, acc: bool) -> KernelSpec {
    KernelSpec::new("reduce", entry, 2)
        .u("WG", if matches!(entry, "partial" | "finish") { WG_REDUCE } else { WG })
        .u("SPAN", SPAN)
        .u("RB", RB)
        .b("SQUARE", square)
        .b("SQRT", sqrt)
        .b("ACC", acc)
}

/// What to compute over the inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// scale * sum
    Sum,
    /// scale * sum of squares
    SumSquares,
    /// sqrt(scale * sum of squares): the L2 norm when scale = 1
    L2Norm,
}

/// Reduce all elements of all `inputs` together into `out[out_off]` (written, or added to when
/// `accumulate`). Used for the global gradient norm over every parameter tensor.
pub fn reduce(
    rec: &mut Recorder,
    inputs: &[&Tensor],
    kind: Reduction,
    scale: f32,
    out: &Tensor,
    out_off: usize,
    accumulate: bool,
) -> Result<()> {
    expect_min("reduce", "out", out, out_off + 1)?;
    let gpu = rec.gpu();
    let square = kind != Reduction::Sum;
    let groups: Vec<usize> = inputs.iter().map(|t| t.len().div_ceil(SPAN as usize)).collect();
    let total: usize = groups.iter().sum();
    let parts = gpu.scratch(slot::REDUCE_PARTS, total.max(1))?;
    let k1 = gpu.kernel(&spec("partial", square, false, false))?;
    // Inputs of a length divisible by 4 (16-byte aligned, as every tensor is) read as vec4.
    let k4 = gpu.kernel(&KernelSpec { shader: "reduce4", ..spec("partial", square, false, false) })?;
    let mut at = 0;
    for (t, &g) in inputs.iter().zip(&groups) {
        if g == 0 {
            continue;
        }
        let k = if t.len().is_multiple_of(4) { &k4 } else { &k1 };
        rec.dispatch(k, Params::new().n(t.len()).u(0).n(at).u(0).f(1.0).u(0).u(0).u(0), &[t, &parts], grid(gpu, g)?)?;
        at += g;
    }
    if total == 0 {
        // Nothing to sum: the result is 0 (or unchanged when accumulating).
        if !accumulate {
            let z = gpu.dummy_tensor();
            let k2 = gpu.kernel(&spec("finish", false, false, false))?;
            return rec.dispatch(
                &k2,
                Params::new().u(0).u(0).n(out_off).u(0).f(scale).u(0).u(0).u(0),
                &[&z, out],
                [1, 1, 1],
            );
        }
        return Ok(());
    }
    let k2 = gpu.kernel(&spec("finish", false, kind == Reduction::L2Norm, accumulate))?;
    rec.dispatch(&k2, Params::new().n(total).u(0).n(out_off).u(0).f(scale).u(0).u(0).u(0), &[&parts, out], [1, 1, 1])
}

/// The global L2 norm of every chunk of an arena (gaps between tensors are zero).
pub fn arena_norm(rec: &mut Recorder, arena: &Arena, out: &Tensor, out_off: usize) -> Result<()> {
    let chunks: Vec<&Tensor> = arena.chunks().iter().collect();
    reduce(rec, &chunks, Reduction::L2Norm, 1.0, out, out_off, false)
}

/// `out[out_off + r] = scale * mean(x[r, :])` for each row of `x` viewed as `[rows, cols]`.
pub fn row_mean(
    rec: &mut Recorder,
    x: &Tensor,
    rows: usize,
    cols: usize,
    scale: f32,
    out: &Tensor,
    out_off: usize,
) -> Result<()> {
    expect_len("row_mean", "x", x, rows * cols)?;
    expect_min("row_mean", "out", out, out_off + rows)?;
    if cols == 0 {
        return shape_err("row_mean", "rows have no columns");
    }
    let gpu = rec.gpu();
    let k = gpu.kernel(&spec("row_mean", false, false, false))?;
    rec.dispatch(&k, Params::new().n(rows).u(0).n(out_off).n(cols).f(scale).u(0).u(0).u(0), &[x, out], grid(gpu, rows)?)
}

/// Column sums of `x` viewed as `[rows, cols]` into `out` (length cols), `out (+)= scale * sum`.
/// The bias gradient of a linear layer is `colsum(dy)`.
pub fn colsum(
    rec: &mut Recorder,
    x: &Tensor,
    rows: usize,
    cols: usize,
    out: &Tensor,
    accumulate: bool,
    scale: f32,
) -> Result<()> {
    expect_len("colsum", "x", x, rows * cols)?;
    expect_len("colsum", "out", out, cols)?;
    let gpu = rec.gpu();
    let nb = rows.div_ceil(RB as usize);
    if nb == 0 {
        return if accumulate {
            Ok(())
        } else {
            rec.zero(out);
            Ok(())
        };
    }
    let parts = gpu.scratch(slot::COLSUM, nb * cols)?;
    let k = gpu.kernel(&spec("colsum_partial", false, false, false))?;
    rec.dispatch(
        &k,
        Params::new().n(rows).u(0).u(0).n(cols).f(1.0).n(nb).u(0).u(0),
        &[x, &parts],
        [cols.div_ceil(WG as usize) as u32, nb as u32, 1],
    )?;
    colsum_finish(rec, &parts, 0, nb, cols, out, accumulate, scale)
}

/// Pass 2 of column sums: `out (+)= scale * sum over nblocks of parts[in_off + rb*cols + c]`.
pub(crate) fn colsum_finish(
    rec: &mut Recorder,
    parts: &Tensor,
    in_off: usize,
    nblocks: usize,
    cols: usize,
    out: &Tensor,
    accumulate: bool,
    scale: f32,
) -> Result<()> {
    let gpu = rec.gpu();
    let k = gpu.kernel(&spec("colsum_finish", false, false, accumulate))?;
    rec.dispatch(
        &k,
        Params::new().u(0).n(in_off).u(0).n(cols).f(scale).n(nblocks).u(0).u(0),
        &[parts, out],
        [cols.div_ceil(WG as usize) as u32, 1, 1],
    )
}
