//! Kernel wrappers: one module per shader family. Each function checks shapes and bounds (the
//! shaders run without runtime checks, so nothing out of range may reach them), picks the
//! kernel variant and records the dispatches. [`reference`] holds the CPU oracles.

pub mod attention;
pub mod cross_entropy;
pub mod decoder;
pub mod elementwise;
pub mod embedding;
pub mod half;
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

/// A quick check that a device computes: a matmul with bias and GELU (the register-blocked and
/// the tiled family), a softmax and a sum, against the CPU, with ragged sizes. What `tramway
/// info` runs on every adapter to say which ones work.
pub async fn self_check(gpu: &Gpu) -> Result<()> {
    use matmul::{matmul_with, Act, Matmul, MatmulPath};
    let (m, n, k) = (7usize, 9usize, 13usize);
    let val = |i: usize, s: f32| (i as f32 * 0.37 + s).sin() * 0.5;
    let a: Vec<f32> = (0..m * k).map(|i| val(i, 0.1)).collect();
    let b: Vec<f32> = (0..k * n).map(|i| val(i, 1.3)).collect();
    let bias: Vec<f32> = (0..n).map(|i| val(i, 2.1)).collect();
    let (at, bt, biast) = (gpu.from_f32(&a, &[m, k])?, gpu.from_f32(&b, &[k, n])?, gpu.from_f32(&bias, &[n])?);
    let mut want = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|t| a[i * k + t] as f64 * b[t * n + j] as f64).sum::<f64>() + bias[j] as f64;
            want[i * n + j] = reference::gelu_erf(s);
        }
    }
    for path in [MatmulPath::Register, MatmulPath::Subgroup, MatmulPath::Tiled] {
        let c = gpu.zeros(&[m, n])?;
        let mut rec = gpu.recorder();
        matmul_with(&mut rec, &Matmul::new(&at, false, &bt, false, &c)?.bias(&biast).act(Act::GeluErf), path)?;
        rec.submit()?;
        let got = gpu.read_f32(&c).await?;
        // f32 over k = 13 terms and the erf approximation: 1e-5 is ample, a wrong kernel is far off.
        let off = |i: usize| {
            let d = (got[i] as f64 - want[i]).abs();
            d.is_nan() || d > 1e-5 + 1e-5 * want[i].abs()
        };
        if let Some(i) = (0..m * n).find(|&i| off(i)) {
            return Err(Error::Gpu {
                context: format!("self-check ({path:?} matmul)"),
                message: format!("element {i} is {} but the CPU computes {}", got[i], want[i]),
            });
        }
    }
    let x = gpu.from_f32(&a, &[a.len()])?;
    let out = gpu.zeros(&[1])?;
    let mut rec = gpu.recorder();
    reduce::reduce(&mut rec, &[&x], reduce::Reduction::Sum, 1.0, &out, 0, false)?;
    rec.submit()?;
    let sum = gpu.read_f32(&out).await?[0] as f64;
    let want: f64 = a.iter().map(|&v| v as f64).sum();
    if (sum - want).abs() > 1e-5 * (1.0 + want.abs()) {
        return Err(Error::Gpu {
            context: "self-check (sum)".into(),
            message: format!("{sum} but the CPU computes {want}"),
        });
    }
    Ok(())
}
