//! Fused softmax cross-entropy (shaders/cross_entropy.wgsl).

use super::{expect_len, expect_min, grid, slot, WG};
use crate::error::Result;
use crate::gpu::{KernelSpec, Params, Recorder, Tensor};

/// Hugging Face's ignore index (-100) as the u32 bit pattern targets carry.
pub const IGNORE_INDEX: u32 = -100i32 as u32;

/// Mean cross-entropy of `logits` `[rows, classes]` against `targets` (`[rows]` u32) over the
/// rows whose target is not `ignore` (targets >= classes are ignored too; validate them when
/// loading data). Writes `out[0] = loss`, `out[1] = counted rows`. When `dlogits` is given it
/// receives `dscale * (softmax - onehot) / count` (0 on ignored rows).
pub fn cross_entropy(
    rec: &mut Recorder,
    logits: &Tensor,
    targets: &Tensor,
    out: &Tensor,
    dlogits: Option<&Tensor>,
    ignore: u32,
    dscale: f32,
) -> Result<()> {
    let (rows, cols) = (logits.rows(), logits.cols());
    expect_len("cross_entropy", "targets", targets, rows)?;
    expect_min("cross_entropy", "out", out, 2)?;
    if let Some(d) = dlogits {
        expect_len("cross_entropy", "dlogits", d, logits.len())?;
    }
    let gpu = rec.gpu();
    let rowloss = gpu.scratch(slot::CE_ROWS, 2 * rows.max(1))?;
    let d = gpu.dummy_tensor();
    let p = Params::new().n(rows).n(cols).u(ignore).u(0).f(dscale).u(0).u(0).u(0);
    let spec = |e| KernelSpec::new("cross_entropy", e, 5).u("WG", WG);
    let k = gpu.kernel(&spec("rows"))?;
    rec.dispatch(&k, p.clone(), &[logits, targets, &rowloss, out, &d], grid(gpu, rows)?)?;
    let k = gpu.kernel(&spec("finish"))?;
    rec.dispatch(&k, p.clone(), &[logits, targets, &rowloss, out, &d], [1, 1, 1])?;
    if let Some(dl) = dlogits {
        let k = gpu.kernel(&spec("grad"))?;
        rec.dispatch(&k, p, &[logits, targets, &rowloss, out, dl], grid(gpu, rows)?)?;
    }
    Ok(())
}
