//! Vision-transformer token assembly (shaders/patch.wgsl) and CPU-side patch extraction.

use super::{expect_len, grid, WG};
use crate::error::{shape_err, Result};
use crate::gpu::{KernelSpec, Params, Recorder, Tensor};

/// `x[b] = [cls; pe[b]] + pos` for `batch` images of `seq - 1` patches, width `cols`.
pub fn assemble(
    rec: &mut Recorder,
    pe: &Tensor,
    cls: &Tensor,
    pos: &Tensor,
    x: &Tensor,
    batch: usize,
    seq: usize,
) -> Result<()> {
    let cols = cls.len();
    if seq < 1 {
        return shape_err("assemble", "a sequence needs at least the CLS token");
    }
    expect_len("assemble", "patch embeddings", pe, batch * (seq - 1) * cols)?;
    expect_len("assemble", "position embeddings", pos, seq * cols)?;
    expect_len("assemble", "x", x, batch * seq * cols)?;
    let gpu = rec.gpu();
    let k = gpu.kernel(&KernelSpec::new("patch", "assemble", 4).u("WG", WG))?;
    let p = Params::new().n(batch).n(seq).n(cols).u(0);
    rec.dispatch(&k, p, &[x, pe, pos, cls], grid(gpu, (seq * cols).div_ceil(WG as usize))?)
}

/// Backward of [`assemble`]: `dpe` written; `dpos` and `dcls` accumulated (+=).
pub fn assemble_backward(
    rec: &mut Recorder,
    dx: &Tensor,
    dpe: &Tensor,
    dcls: &Tensor,
    dpos: &Tensor,
    batch: usize,
    seq: usize,
) -> Result<()> {
    let cols = dcls.len();
    expect_len("assemble_backward", "dx", dx, batch * seq * cols)?;
    expect_len("assemble_backward", "dpe", dpe, batch * (seq - 1) * cols)?;
    expect_len("assemble_backward", "dpos", dpos, seq * cols)?;
    let gpu = rec.gpu();
    let k = gpu.kernel(&KernelSpec::new("patch", "assemble_backward", 4).u("WG", WG))?;
    let p = Params::new().n(batch).n(seq).n(cols).u(0);
    rec.dispatch(&k, p, &[dx, dpe, dpos, dcls], grid(gpu, (seq * cols).div_ceil(WG as usize))?)
}

/// Cut `[batch, channels, height, width]` pixels into `[batch * patches, channels * p * p]`
/// rows, patches in row-major grid order and each row ordered (channel, y, x) — the layout of
/// a `Conv2d(kernel = stride = p)` weight `[out, channels, p, p]`, so the patch embedding is a
/// matmul with that weight viewed as `[out, channels * p * p]`.
pub fn patchify(
    pixels: &[f32],
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    p: usize,
) -> Result<Vec<f32>> {
    if p == 0 || !height.is_multiple_of(p) || !width.is_multiple_of(p) {
        return shape_err("patchify", format!("image {height}x{width} is not a multiple of the patch size {p}"));
    }
    if pixels.len() != batch * channels * height * width {
        return shape_err("patchify", format!("{} pixel values for {batch}x{channels}x{height}x{width}", pixels.len()));
    }
    let (gh, gw) = (height / p, width / p);
    let row = channels * p * p;
    let mut out = vec![0f32; batch * gh * gw * row];
    for b in 0..batch {
        for gy in 0..gh {
            for gx in 0..gw {
                let o = ((b * gh + gy) * gw + gx) * row;
                for c in 0..channels {
                    for y in 0..p {
                        let src = ((b * channels + c) * height + gy * p + y) * width + gx * p;
                        let dst = o + (c * p + y) * p;
                        out[dst..dst + p].copy_from_slice(&pixels[src..src + p]);
                    }
                }
            }
        }
    }
    Ok(out)
}
