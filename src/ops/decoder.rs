//! LLaMA-style decoder pieces (shaders/decoder.wgsl): rotary position embedding, the repeat of
//! grouped-query K/V heads, and SwiGLU, each with its backward.

use super::{expect_len, grid, WG};
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, KernelSpec, Params, Recorder, Tensor};

fn spec(entry: &'static str, bindings: u32) -> KernelSpec {
    KernelSpec::new("decoder", entry, bindings).u("WG", WG)
}

/// The cos/sin table of RoPE for positions `0..seq`: `[seq, half]` cosines then `[seq, half]`
/// sines of `pos * theta^(-2j / (2 half))`, computed in f64 (Hugging Face's inv_freq layout).
pub fn rope_table(seq: usize, half: usize, theta: f64) -> Vec<f32> {
    rope_table_from(0, seq, half, theta)
}

/// [`rope_table`] for the `seq` positions `start..start + seq` (row `r` holds position
/// `start + r`): the table of a chunk fed to a K/V-cached decoder.
pub fn rope_table_from(start: usize, seq: usize, half: usize, theta: f64) -> Vec<f32> {
    let mut out = vec![0f32; 2 * seq * half];
    for r in 0..seq {
        for j in 0..half {
            let inv = 1.0 / theta.powf((2 * j) as f64 / (2 * half) as f64);
            let a = (start + r) as f64 * inv;
            out[r * half + j] = a.cos() as f32;
            out[(seq + r) * half + j] = a.sin() as f32;
        }
    }
    out
}

/// Rotate `x` `[rows, heads, 2 half]` (rows = batch x seq, position = row % seq) into `out`;
/// `inverse` rotates back (the backward pass: the rotation is orthogonal).
pub fn rope(
    rec: &mut Recorder,
    x: &Tensor,
    table: &Tensor,
    out: &Tensor,
    heads: usize,
    half: usize,
    seq: usize,
    inverse: bool,
) -> Result<()> {
    let pairs = x.len() / 2;
    if heads == 0
        || half == 0
        || seq == 0
        || !x.len().is_multiple_of(2 * half * heads)
        || !(x.len() / (2 * half * heads)).is_multiple_of(seq)
    {
        return shape_err("rope", format!("{:?} is not [batch x {seq}, {heads} heads, {}]", x.shape(), 2 * half));
    }
    expect_len("rope", "out", out, x.len())?;
    expect_len("rope", "table", table, 2 * seq * half)?;
    let gpu = rec.gpu();
    let k = gpu.kernel(&spec("rope", 5))?;
    let d = gpu.dummy_tensor();
    let p = Params::new().n(pairs).n(heads).n(half).n(seq).u(1).f(if inverse { -1.0 } else { 1.0 }).u(0).u(0);
    rec.dispatch(&k, p, &[x, table, out, &d, &d], grid(gpu, pairs.div_ceil(WG as usize))?)
}

fn check_repeat(
    op: &'static str,
    full: &Tensor,
    kv: &Tensor,
    heads: usize,
    kv_heads: usize,
    dim: usize,
) -> Result<usize> {
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) || dim == 0 || !full.len().is_multiple_of(heads * dim) {
        return shape_err(
            op,
            format!("{heads} heads cannot share {kv_heads} K/V heads of {dim} (tensor {:?})", full.shape()),
        );
    }
    let rows = full.len() / (heads * dim);
    expect_len(op, "kv", kv, rows * kv_heads * dim)?;
    Ok(heads / kv_heads)
}

/// `out[r, h, :] = x[r, h / group, :]`: `x` `[rows, kv_heads, dim]` to `out` `[rows, heads, dim]`.
pub fn repeat_heads(
    rec: &mut Recorder,
    x: &Tensor,
    out: &Tensor,
    heads: usize,
    kv_heads: usize,
    dim: usize,
) -> Result<()> {
    let group = check_repeat("repeat_heads", out, x, heads, kv_heads, dim)?;
    let gpu = rec.gpu();
    let k = gpu.kernel(&spec("repeat_forward", 5))?;
    let d = gpu.dummy_tensor();
    let p = Params::new().n(out.len()).n(heads).n(dim).u(1).n(group).f(1.0).u(0).u(0);
    rec.dispatch(&k, p, &[x, &d, out, &d, &d], grid(gpu, out.len().div_ceil(WG as usize))?)
}

/// Backward of [`repeat_heads`]: `dx[r, k, :] = sum over the group of dy[r, k*group + g, :]`.
pub fn repeat_heads_backward(
    rec: &mut Recorder,
    dy: &Tensor,
    dx: &Tensor,
    heads: usize,
    kv_heads: usize,
    dim: usize,
) -> Result<()> {
    let group = check_repeat("repeat_heads_backward", dy, dx, heads, kv_heads, dim)?;
    let gpu = rec.gpu();
    let k = gpu.kernel(&spec("repeat_backward", 5))?;
    let d = gpu.dummy_tensor();
    let p = Params::new().n(dx.len()).n(heads).n(dim).u(1).n(group).f(1.0).u(0).u(0);
    rec.dispatch(&k, p, &[dy, &d, dx, &d, &d], grid(gpu, dx.len().div_ceil(WG as usize))?)
}

/// `out = silu(g) * u`.
pub fn swiglu(rec: &mut Recorder, g: &Tensor, u: &Tensor, out: &Tensor) -> Result<()> {
    expect_len("swiglu", "u", u, g.len())?;
    expect_len("swiglu", "out", out, g.len())?;
    let gpu = rec.gpu();
    let k = gpu.kernel(&spec("swiglu_forward", 5))?;
    let d = gpu.dummy_tensor();
    let p = Params::new().n(g.len()).u(0).u(0).u(1).u(1).f(1.0).u(0).u(0);
    rec.dispatch(&k, p, &[g, u, out, &d, &d], grid(gpu, g.len().div_ceil(WG as usize))?)
}

/// Backward of [`swiglu`]: `dg = dy * u * silu'(g)`, `du = dy * silu(g)`.
pub fn swiglu_backward(
    rec: &mut Recorder,
    g: &Tensor,
    u: &Tensor,
    dy: &Tensor,
    dg: &Tensor,
    du: &Tensor,
) -> Result<()> {
    for (name, t) in [("u", u), ("dy", dy), ("dg", dg), ("du", du)] {
        expect_len("swiglu_backward", name, t, g.len())?;
    }
    let gpu: &Gpu = rec.gpu();
    let k = gpu.kernel(&spec("swiglu_backward", 5))?;
    let p = Params::new().n(g.len()).u(0).u(0).u(1).u(1).f(1.0).u(0).u(0);
    rec.dispatch(&k, p, &[g, u, dy, dg, du], grid(gpu, g.len().div_ceil(WG as usize))?)
}
