//! Counter-based random numbers and dropout (shaders/rng.wgsl).
//!
//! A stream is named by `(seed, offset)`: the offset is where the caller puts (step, tensor,
//! pass), so any stream can be regenerated exactly, e.g. the dropout mask in the backward pass.

use super::{expect_len, grid, WG};
use crate::error::{shape_err, Result};
use crate::gpu::{KernelSpec, Params, Recorder, Tensor};

/// The key of one random stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RngKey {
    pub seed: u64,
    pub offset: u64,
}

fn run(
    rec: &mut Recorder,
    entry: &'static str,
    acc: bool,
    x: &Tensor,
    out: &Tensor,
    key: RngKey,
    a: f32,
    b: f32,
    c: f32,
) -> Result<()> {
    let gpu = rec.gpu();
    let k = gpu.kernel(&KernelSpec::new("rng", entry, 2).u("WG", WG).b("ACC", acc))?;
    let n = out.len();
    let p = Params::new()
        .n(n)
        .u(key.seed as u32)
        .u((key.seed >> 32) as u32)
        .u(key.offset as u32)
        .u((key.offset >> 32) as u32)
        .f(a)
        .f(b)
        .f(c);
    rec.dispatch(&k, p, &[x, out], grid(gpu, n.div_ceil(4).div_ceil(WG as usize))?)
}

/// Fill `out` with uniform values in `[lo, hi)`.
pub fn uniform(rec: &mut Recorder, out: &Tensor, key: RngKey, lo: f32, hi: f32) -> Result<()> {
    let d = rec.gpu().dummy_tensor();
    run(rec, "fill_uniform", false, &d, out, key, lo, hi, 0.0)
}

/// Fill `out` with normal values of the given mean and standard deviation.
pub fn normal(rec: &mut Recorder, out: &Tensor, key: RngKey, mean: f32, std: f32) -> Result<()> {
    let d = rec.gpu().dummy_tensor();
    run(rec, "fill_normal", false, &d, out, key, mean, std, 0.0)
}

/// Inverted dropout with drop probability `p`: `out = keep ? x / (1 - p) : 0`, the mask given
/// by `key`. The backward is the same call on the gradient with the same key (`accumulate`
/// adds into `out`).
pub fn dropout(rec: &mut Recorder, x: &Tensor, out: &Tensor, p: f32, key: RngKey, accumulate: bool) -> Result<()> {
    expect_len("dropout", "out", out, x.len())?;
    if !(0.0..1.0).contains(&p) {
        return shape_err("dropout", format!("drop probability {p} must be in [0, 1)"));
    }
    run(rec, "dropout", accumulate, x, out, key, p, 0.0, 1.0 / (1.0 - p))
}
