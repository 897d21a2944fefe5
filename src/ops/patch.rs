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

/// PyTorch's bicubic interpolation weights (`interpolate(mode="bicubic", align_corners=False)`
/// with an explicit `scale_factor`, A = -0.75, edge indices clamped) along one axis: `[out, in]`.
fn bicubic_axis(n_in: usize, n_out: usize, scale_factor: f64) -> Vec<f64> {
    const A: f64 = -0.75;
    let c1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let mut w = vec![0.0; n_out * n_in];
    for o in 0..n_out {
        let src = (o as f64 + 0.5) / scale_factor - 0.5;
        let i0 = src.floor();
        let t = src - i0;
        let coef = [c2(t + 1.0), c1(t), c1(1.0 - t), c2(2.0 - t)];
        for (k, c) in coef.iter().enumerate() {
            let idx = (i0 as i64 - 1 + k as i64).clamp(0, n_in as i64 - 1) as usize;
            w[o * n_in + idx] += c;
        }
    }
    w
}

/// The map from trained position embeddings (`old_grid`² patches + CLS) to the ones an input of
/// `new_grid`² patches uses, as Hugging Face's DINOv2 computes them: the CLS position is kept,
/// the patch grid is resized bicubically with scale factor `(new_grid + 0.1) / old_grid` (its
/// +0.1 included); an identity when the grids agree. Row-major `[new² + 1, old² + 1]`, so the
/// positions are one matmul and their gradient one transposed matmul.
pub fn position_map(old_grid: usize, new_grid: usize) -> Vec<f32> {
    let (no, nn) = (old_grid * old_grid + 1, new_grid * new_grid + 1);
    let mut m = vec![0f32; nn * no];
    if old_grid == new_grid {
        for i in 0..nn {
            m[i * no + i] = 1.0;
        }
        return m;
    }
    let scale = (new_grid as f64 + 0.1) / old_grid as f64;
    let w = bicubic_axis(old_grid, new_grid, scale);
    m[0] = 1.0;
    for oy in 0..new_grid {
        for ox in 0..new_grid {
            let row = 1 + oy * new_grid + ox;
            for iy in 0..old_grid {
                for ix in 0..old_grid {
                    let v = w[oy * old_grid + iy] * w[ox * old_grid + ix];
                    if v != 0.0 {
                        m[row * no + 1 + iy * old_grid + ix] = v as f32;
                    }
                }
            }
        }
    }
    m
}
