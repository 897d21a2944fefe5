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

/// Rows of at most this many columns run one invocation per row on CPU adapters
/// ([`SoftmaxPath::auto`]); longer ones keep a workgroup per row.
pub const ROW_KERNEL_MAX_COLS: usize = 4096;

/// How softmax rows map to invocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxPath {
    /// One workgroup per row, a tree reduction in workgroup memory: for GPUs.
    Workgroup,
    /// One invocation per row, serial loops: for CPU drivers, where a workgroup barrier is a
    /// coroutine switch (on lavapipe the attention softmax of a MiniLM step took 3-4x longer
    /// as `Workgroup`; BENCHMARKS.md).
    Row,
}

impl SoftmaxPath {
    /// `Row` on CPU adapters for rows up to [`ROW_KERNEL_MAX_COLS`], else `Workgroup`.
    pub fn auto(gpu: &crate::gpu::Gpu, cols: usize) -> Self {
        if gpu.adapter_info().device_type == wgpu::DeviceType::Cpu && cols <= ROW_KERNEL_MAX_COLS {
            SoftmaxPath::Row
        } else {
            SoftmaxPath::Workgroup
        }
    }

    fn entry(self, forward: bool) -> &'static str {
        match (self, forward) {
            (SoftmaxPath::Workgroup, true) => "forward",
            (SoftmaxPath::Workgroup, false) => "backward",
            (SoftmaxPath::Row, true) => "forward_rows",
            (SoftmaxPath::Row, false) => "backward_rows",
        }
    }

    fn grid(self, gpu: &crate::gpu::Gpu, rows: usize) -> Result<[u32; 3]> {
        match self {
            SoftmaxPath::Workgroup => grid(gpu, rows),
            SoftmaxPath::Row => grid(gpu, rows.div_ceil(64)),
        }
    }
}

/// `y = softmax(scale * x + mask)` row by row, on the adapter's [`SoftmaxPath`].
pub fn softmax(rec: &mut Recorder, x: &Tensor, y: &Tensor, scale: f32, m: &SoftmaxMask) -> Result<()> {
    let path = SoftmaxPath::auto(rec.gpu(), x.cols());
    softmax_with(rec, x, y, scale, m, path)
}

/// [`softmax`] on the given path.
pub fn softmax_with(
    rec: &mut Recorder,
    x: &Tensor,
    y: &Tensor,
    scale: f32,
    m: &SoftmaxMask,
    path: SoftmaxPath,
) -> Result<()> {
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
    let k = gpu.kernel(&spec(path.entry(true), m))?;
    let p = Params::new().n(rows).n(cols).n(m.tq).n(m.heads).f(scale).n(cols.saturating_sub(m.tq)).u(0).u(0);
    rec.dispatch(&k, p, &[x, m.mask.unwrap_or(&d), y, &d], path.grid(gpu, rows)?)
}

/// `dx = scale * y * (dy - sum(dy * y))` row by row (y is the softmax output), on the adapter's
/// [`SoftmaxPath`].
pub fn softmax_backward(rec: &mut Recorder, y: &Tensor, dy: &Tensor, dx: &Tensor, scale: f32) -> Result<()> {
    let path = SoftmaxPath::auto(rec.gpu(), y.cols());
    softmax_backward_with(rec, y, dy, dx, scale, path)
}

/// [`softmax_backward`] on the given path.
pub fn softmax_backward_with(
    rec: &mut Recorder,
    y: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    scale: f32,
    path: SoftmaxPath,
) -> Result<()> {
    expect_len("softmax_backward", "dy", dy, y.len())?;
    expect_len("softmax_backward", "dx", dx, y.len())?;
    let gpu = rec.gpu();
    let d = gpu.dummy_tensor();
    let k = gpu.kernel(&spec(path.entry(false), &SoftmaxMask::none()))?;
    let p = Params::new().n(y.rows()).n(y.cols()).u(1).u(1).f(scale).u(0).u(0).u(0);
    rec.dispatch(&k, p, &[y, &d, dx, dy], path.grid(gpu, y.rows())?)
}
