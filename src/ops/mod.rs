//! Kernel wrappers: one module per shader family. Each function checks shapes and bounds (the
//! shaders run without runtime checks, so nothing out of range may reach them), picks the
//! kernel variant and records the dispatches. [`reference`] holds the CPU oracles.

pub mod attention;
pub mod cross_entropy;
pub mod decoder;
pub mod elementwise;
pub mod embedding;
pub mod kl;
pub mod matmul;
pub mod norm;
pub mod patch;
pub mod reduce;
pub mod reference;
pub mod rng;
pub mod softmax;

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, Gpu, Tensor};

/// Invocations per workgroup for row- and element-wise kernels. A power of two (tree
/// reductions) within WebGPU's default limit of 256.
pub(crate) const WG: u32 = 64;
/// Invocations per workgroup for flat reductions.
pub(crate) const WG_REDUCE: u32 = 256;
/// Rows per block in two-pass column sums (bias, LayerNorm parameter gradients). Fixed, not
/// tuned per device, so results are the same on every adapter.
pub(crate) const RB: u32 = 64;

/// Scratch slots (see `Gpu::scratch`): one per intermediate that can be alive at once.
pub(crate) mod slot {
    pub const COLSUM: u32 = 1;
    pub const CE_ROWS: u32 = 3;
    pub const KL_ROWS: u32 = 4;
    pub const ATT_DP: u32 = 5;
    pub const ATT_DS: u32 = 6;
    pub const REDUCE_PARTS: u32 = 7;
}

pub(crate) fn grid(gpu: &Gpu, groups: usize) -> Result<[u32; 3]> {
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    if groups as u64 > max as u64 * max as u64 {
        return Err(Error::Limit {
            what: "a dispatch".into(),
            needed: groups as u64,
            limit: max as u64 * max as u64,
            limit_name: "max_compute_workgroups_per_dimension squared",
            hint: " workgroups".into(),
        });
    }
    Ok(grid_1d(groups as u32, max))
}

/// Check that `t` holds exactly `n` elements.
pub(crate) fn expect_len(op: &'static str, name: &str, t: &Tensor, n: usize) -> Result<()> {
    if t.len() != n {
        return Err(Error::Shape {
            op,
            message: format!("{name} has shape {:?} ({} elements), expected {n} elements", t.shape(), t.len()),
        });
    }
    Ok(())
}

/// Check that `t` holds at least `n` elements.
pub(crate) fn expect_min(op: &'static str, name: &str, t: &Tensor, n: usize) -> Result<()> {
    if t.len() < n {
        return Err(Error::Shape {
            op,
            message: format!("{name} has shape {:?} ({} elements), needs at least {n}", t.shape(), t.len()),
        });
    }
    Ok(())
}

/// Refuse sizes that do not fit the u32 indices of the shaders.
pub(crate) fn fits_u32(op: &'static str, n: usize) -> Result<()> {
    if n > u32::MAX as usize {
        return Err(Error::Shape { op, message: format!("size {n} exceeds the 32-bit index range") });
    }
    Ok(())
}
