//! Frozen 16-bit weights (shaders/half.wgsl): a bf16 or f16 tensor kept packed on the device,
//! two values per u32, in row blocks that each fit one binding; unpacked to f32 by the kernels
//! that read it (into a scratch buffer just before a matmul, or while gathering embedding
//! rows). Packing is exact for values that came from a 16-bit file.

use super::{grid, WG};
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, KernelSpec, Params, Recorder, Tensor};

/// A 16-bit tensor on the device: row blocks `(first row, rows, packed words)`.
#[derive(Clone, Debug)]
pub struct Half16 {
    pub shape: Vec<usize>,
    pub bf16: bool,
    pub parts: Vec<(usize, usize, Tensor)>,
}

/// Pack f32 values (each exactly a bf16 or f16 value) two per word, the even one low.
pub fn pack(data: &[f32], bf16: bool) -> Vec<u32> {
    let bits = |v: f32| -> u32 {
        if bf16 {
            half::bf16::from_f32(v).to_bits() as u32
        } else {
            half::f16::from_f32(v).to_bits() as u32
        }
    };
    data.chunks(2).map(|c| bits(c[0]) | (c.get(1).map(|&v| bits(v)).unwrap_or(0) << 16)).collect()
}

/// The inverse of [`pack`] for `n` values.
pub fn unpack_host(words: &[u32], n: usize, bf16: bool) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (words[i / 2] >> (16 * (i % 2))) as u16;
            if bf16 {
                half::bf16::from_bits(h).to_f32()
            } else {
                half::f16::from_bits(h).to_f32()
            }
        })
        .collect()
}

impl Half16 {
    /// Upload `data` (shape `shape`, values exactly representable) in row blocks of at most
    /// the device's binding size.
    pub fn upload(gpu: &Gpu, data: &[f32], shape: &[usize], bf16: bool) -> Result<Self> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return shape_err("half", format!("{} values for shape {shape:?}", data.len()));
        }
        let cols = *shape.last().unwrap_or(&1).max(&1);
        let rows = n / cols;
        // Even rows per block keep every block's first element on a word boundary.
        let per = ((gpu.max_binding_bytes() as usize / 2) / cols).max(2) & !1;
        if rows == 0 {
            return shape_err("half", format!("an empty tensor {shape:?}"));
        }
        let mut parts = Vec::new();
        let mut r0 = 0;
        while r0 < rows {
            let nr = per.min(rows - r0);
            let words = pack(&data[r0 * cols..(r0 + nr) * cols], bf16);
            parts.push((r0, nr, gpu.from_u32(&words, &[words.len()])?));
            r0 += nr;
        }
        Ok(Half16 { shape: shape.to_vec(), bf16, parts })
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|(_, _, t)| t.bytes()).sum()
    }

    /// Record `out = rows r0 .. r0 + out.len() / cols` unpacked to f32 (they must lie in one
    /// block, or span whole blocks from a block start).
    pub fn unpack_rows(&self, rec: &mut Recorder, r0: usize, out: &Tensor) -> Result<()> {
        let cols = self.cols();
        let nrows = out.len() / cols.max(1);
        let gpu = rec.gpu();
        let k = gpu.kernel(&KernelSpec::new("half", "unpack", 3).u("WG", WG).b("BF16", self.bf16))?;
        let d = gpu.dummy_tensor();
        let mut done = 0;
        for (b0, bn, words) in &self.parts {
            let (lo, hi) = ((r0 + done).max(*b0), (r0 + nrows).min(b0 + bn));
            if lo >= hi || lo != r0 + done {
                continue;
            }
            let n = (hi - lo) * cols;
            let dst = out.narrow(done * cols, &[n])?;
            let p = Params::new().n(n).n((lo - b0) * cols).u(0).u(0).u(0).u(0).u(0).u(0);
            rec.dispatch(&k, p, &[words, &d, &dst], grid(gpu, n.div_ceil(WG as usize))?)?;
            done += hi - lo;
        }
        if done != nrows {
            return shape_err("half", format!("rows {r0}..{} of {:?} not unpacked", r0 + nrows, self.shape));
        }
        Ok(())
    }

    /// Record the embedding gather `out[r, :] = self[ids[r], :]`.
    pub fn gather(&self, rec: &mut Recorder, ids: &Tensor, out: &Tensor) -> Result<()> {
        let cols = self.cols();
        let rows = ids.len();
        if out.len() != rows * cols {
            return shape_err("embedding", format!("out has {} values; expected {rows} x {cols}", out.len()));
        }
        let gpu = rec.gpu();
        let k = gpu.kernel(&KernelSpec::new("half", "gather", 3).u("WG", WG).b("BF16", self.bf16))?;
        let cg = cols.div_ceil(WG as usize);
        for (b0, bn, words) in &self.parts {
            let p = Params::new().u(0).u(0).n(rows).n(cols).n(*bn).n(cg).n(*b0).u(0);
            rec.dispatch(&k, p, &[words, ids, out], grid(gpu, rows * cg)?)?;
        }
        Ok(())
    }

    /// The values back on the host (f32).
    pub async fn read(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let cols = self.cols();
        let mut out = Vec::with_capacity(self.numel());
        for (_, bn, words) in &self.parts {
            let w = gpu.read_words(words).await?;
            out.extend(unpack_host(&w, bn * cols, self.bf16));
        }
        Ok(out)
    }
}
