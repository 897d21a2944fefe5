//! Elementwise kernels: add, mul, scale, axpy (shaders/elementwise.wgsl) and activations
//! (GELU erf/tanh, tanh) forward and backward (shaders/activation.wgsl).

use super::{expect_len, grid, WG};
use crate::error::Result;
use crate::gpu::{Def, KernelSpec, Params, Recorder, Tensor};
use crate::ops::matmul::Act;

fn ew(
    rec: &mut Recorder,
    entry: &'static str,
    has: (&'static str, bool),
    ts: [&Tensor; 3],
    n: usize,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    let gpu = rec.gpu();
    let vec4 = n.is_multiple_of(4);
    let spec = KernelSpec::new("elementwise", entry, 3)
        .u("WG", WG)
        .u("VW", if vec4 { 4 } else { 1 })
        .def("VT", Def::Ty(if vec4 { "vec4<f32>" } else { "f32" }))
        .b(has.0, has.1)
        .b(if has.0 == "HAS_X" { "HAS_Y" } else { "HAS_X" }, true);
    let k = gpu.kernel(&spec)?;
    let units = if vec4 { n / 4 } else { n };
    let g = grid(gpu, units.div_ceil(WG as usize))?;
    rec.dispatch(&k, Params::new().n(n).f(alpha).f(beta).u(0), &ts, g)
}

/// `z = alpha * x + beta * y`.
pub fn add(rec: &mut Recorder, x: &Tensor, y: &Tensor, z: &Tensor, alpha: f32, beta: f32) -> Result<()> {
    expect_len("add", "x", x, z.len())?;
    expect_len("add", "y", y, z.len())?;
    ew(rec, "add", ("HAS_Y", true), [x, y, z], z.len(), alpha, beta)
}

/// `z = x * v[column] (+ y)`: each column of `x` (viewed `[rows, v.len()]`) scaled by one
/// entry of `v` (LayerScale), plus `y` when given.
pub fn mul_cols(rec: &mut Recorder, x: &Tensor, v: &Tensor, y: Option<&Tensor>, z: &Tensor) -> Result<()> {
    let cols = v.len();
    expect_len("mul_cols", "x", x, z.len())?;
    if cols == 0 || !z.len().is_multiple_of(cols) {
        return crate::error::shape_err("mul_cols", format!("{} elements are not rows of {cols} columns", z.len()));
    }
    if let Some(y) = y {
        expect_len("mul_cols", "y", y, z.len())?;
    }
    let gpu = rec.gpu();
    let vec4 = cols.is_multiple_of(4);
    let spec = KernelSpec::new("elementwise", "mulcol", 4)
        .u("WG", WG)
        .u("VW", if vec4 { 4 } else { 1 })
        .def("VT", Def::Ty(if vec4 { "vec4<f32>" } else { "f32" }))
        .b("HAS_Y", y.is_some())
        .b("HAS_X", true);
    let k = gpu.kernel(&spec)?;
    let d = gpu.dummy_tensor();
    let n = z.len();
    let units = if vec4 { n / 4 } else { n };
    let g = grid(gpu, units.div_ceil(WG as usize))?;
    rec.dispatch(&k, Params::new().n(n).f(1.0).f(1.0).n(cols), &[x, y.unwrap_or(&d), z, v], g)
}

/// `z = alpha * x` (out of place).
pub fn scale(rec: &mut Recorder, x: &Tensor, z: &Tensor, alpha: f32) -> Result<()> {
    expect_len("scale", "x", x, z.len())?;
    let d = rec.gpu().dummy_tensor();
    ew(rec, "add", ("HAS_Y", false), [x, &d, z], z.len(), alpha, 0.0)
}

/// `z = alpha * x * y` (elementwise product).
pub fn mul(rec: &mut Recorder, x: &Tensor, y: &Tensor, z: &Tensor, alpha: f32) -> Result<()> {
    expect_len("mul", "x", x, z.len())?;
    expect_len("mul", "y", y, z.len())?;
    ew(rec, "mul", ("HAS_Y", true), [x, y, z], z.len(), alpha, 0.0)
}

/// `y = alpha * x + beta * y` in place (axpy with beta = 1).
pub fn axpby(rec: &mut Recorder, alpha: f32, x: &Tensor, beta: f32, y: &Tensor) -> Result<()> {
    expect_len("axpby", "x", x, y.len())?;
    let d = rec.gpu().dummy_tensor();
    ew(rec, "axpby", ("HAS_X", true), [x, y, &d], y.len(), alpha, beta)
}

/// `y = beta * y` in place.
pub fn scale_inplace(rec: &mut Recorder, y: &Tensor, beta: f32) -> Result<()> {
    let d = rec.gpu().dummy_tensor();
    ew(rec, "axpby", ("HAS_X", false), [&d, y, &d], y.len(), 0.0, beta)
}

fn form(op: &'static str, act: Act) -> Result<u32> {
    match act {
        Act::None => crate::error::shape_err(op, "no activation given (Act::None)"),
        a => Ok(a.code()),
    }
}

/// `y = act(x)`.
pub fn activation(rec: &mut Recorder, x: &Tensor, y: &Tensor, act: Act) -> Result<()> {
    expect_len("activation", "x", x, y.len())?;
    let f = form("activation", act)?;
    let gpu = rec.gpu();
    let k = gpu.kernel(&KernelSpec::new("activation", "forward", 3).u("WG", WG).u("FORM", f).b("ACC", false))?;
    let d = gpu.dummy_tensor();
    rec.dispatch(&k, Params::new().n(x.len()), &[x, &d, y], grid(gpu, x.len().div_ceil(WG as usize))?)
}

/// `dx = dy * act'(x)` from the pre-activation `x`, or `dx += ...` when `accumulate`.
pub fn activation_backward(
    rec: &mut Recorder,
    x: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    act: Act,
    accumulate: bool,
) -> Result<()> {
    expect_len("activation_backward", "x", x, dx.len())?;
    let f = form("activation_backward", act)?;
    expect_len("activation_backward", "dy", dy, dx.len())?;
    let gpu = rec.gpu();
    let k = gpu.kernel(&KernelSpec::new("activation", "backward", 3).u("WG", WG).u("FORM", f).b("ACC", accumulate))?;
    rec.dispatch(&k, Params::new().n(x.len()), &[x, dy, dx], grid(gpu, x.len().div_ceil(WG as usize))?)
}
