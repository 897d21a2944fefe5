//! Softmax over the last dimension with padding and causal masks (shaders/softmax.wgsl).

use super::{expect_len, grid, WG};
use crate::error::{shape_err, Result};
use crate::gpu::{KernelSpec, Params, Recorder, Tensor};

/// How rows map to masks. Rows are `[batch * heads, tq]`; a key-padding `mask` is `[batch, cols]`
/// u32 (1 = attend, 0 = padding); `causal` hides keys `j > i + (cols - tq)`.
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxMask<'a> {
    pub mask: Option<&'a Tensor>,
    pub causal: bool,
    pub tq: usize,
    pub heads: usize,
}

impl SoftmaxMask<'_> {
    /// No masking: every row stands alone.
    pub fn none() -> Self {
        SoftmaxMask { mask: None, causal: false, tq: 1, heads: 1 }
    }
}

fn spec(entry: &'static str, m: &SoftmaxMask) -> KernelSpec {
    KernelSpec::new("softmax", entry, 4).u("WG", WG).b("HAS_MASK", m.mask.is_some()).b("CAUSAL", m.causal)
}

/// `y = softmax(scale * x + mask)` row by row.
pub fn softmax(rec: &mut Recorder, x: &Tensor, y: &Tensor, scale: f32, m: &SoftmaxMask) -> Result<()> {
    expect_len("softmax", "y", y, x.len())?;
    let (rows, cols) = (x.rows(), x.cols());
    if m.tq == 0 || m.heads == 0 || rows % (m.tq * m.heads) != 0 {
        return shape_err("softmax", format!("{rows} rows are not a multiple of tq {} x heads {}", m.tq, m.heads));
    }
    if m.causal && m.tq > cols {
        return shape_err("softmax", format!("causal mask needs tq {} <= keys {cols}", m.tq));
    }
    let gpu = rec.gpu();
    let d = gpu.dummy_tensor();
    if let Some(mask) = m.mask {
        expect_len("softmax", "mask", mask, rows / m.tq / m.heads * cols)?;
    }
    let k = gpu.kernel(&spec("forward", m))?;
    let p = Params::new().n(rows).n(cols).n(m.tq).n(m.heads).f(scale).n(cols.saturating_sub(m.tq)).u(0).u(0);
    rec.dispatch(&k, p, &[x, m.mask.unwrap_or(&d), y, &d], grid(gpu, rows)?)
}

/// `dx = scale * y * (dy - sum(dy * y))` row by row (y is the softmax output).
pub fn softmax_backward(rec: &mut Recorder, y: &Tensor, dy: &Tensor, dx: &Tensor, scale: f32) -> Result<()> {
    expect_len("softmax_backward", "dy", dy, y.len())?;
    expect_len("softmax_backward", "dx", dx, y.len())?;
    let gpu = rec.gpu();
    let d = gpu.dummy_tensor();
    let k = gpu.kernel(&spec("backward", &SoftmaxMask::none()))?;
    let p = Params::new().n(y.rows()).n(y.cols()).u(1).u(1).f(scale).u(0).u(0).u(0);
    rec.dispatch(&k, p, &[y, &d, dx, dy], grid(gpu, y.rows())?)
}
