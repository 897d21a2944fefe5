//! Embedding gather and its deterministic scatter-add backward (shaders/embedding.wgsl).

use super::{expect_len, grid, WG};
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, KernelSpec, Params, Recorder, Tensor};

/// The grouping of a batch's token positions by id that the backward needs, built on the CPU
/// when the batch is uploaded: distinct ids, where each one's positions start, and positions
/// sorted by id (ascending within an id, so the summation order is fixed).
pub struct EmbeddingIndex {
    /// `[uniq (u) | starts (u + 1) | perm (n)]` as one u32 tensor.
    pub tensor: Tensor,
    pub n: usize,
    pub uniq: usize,
}

impl EmbeddingIndex {
    /// The packed index words for `ids` (CPU only; see [`EmbeddingIndex::upload`]).
    pub fn words(ids: &[u32]) -> (Vec<u32>, usize) {
        let mut perm: Vec<u32> = (0..ids.len() as u32).collect();
        perm.sort_by_key(|&i| (ids[i as usize], i));
        let mut uniq = Vec::new();
        let mut starts = Vec::new();
        for (j, &pos) in perm.iter().enumerate() {
            let id = ids[pos as usize];
            if uniq.last() != Some(&id) {
                uniq.push(id);
                starts.push(j as u32);
            }
        }
        starts.push(ids.len() as u32);
        let u = uniq.len();
        let mut w = uniq;
        w.extend(starts);
        w.extend(perm);
        (w, u)
    }

    /// Build and upload the index for `ids`; every id must be below `vocab`.
    pub fn upload(gpu: &Gpu, ids: &[u32], vocab: usize) -> Result<Self> {
        if let Some((pos, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return shape_err(
                "embedding",
                format!("token id {id} at position {pos} is outside the vocabulary of {vocab}"),
            );
        }
        let (w, uniq) = Self::words(ids);
        let tensor = gpu.from_u32(&w, &[w.len()])?;
        Ok(EmbeddingIndex { tensor, n: ids.len(), uniq })
    }
}

fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec::new("embedding", entry, 3).u("WG", WG)
}

/// `out[r, :] = w[ids[r], :]`; `w` is `[vocab, dim]`, `ids` `[rows]` u32, `out` `[rows, dim]`.
pub fn embedding(rec: &mut Recorder, w: &Tensor, ids: &Tensor, out: &Tensor) -> Result<()> {
    let (vocab, dim) = (w.rows(), w.cols());
    let rows = ids.len();
    expect_len("embedding", "out", out, rows * dim)?;
    if vocab == 0 {
        return shape_err("embedding", "empty embedding table");
    }
    let gpu = rec.gpu();
    let cg = dim.div_ceil(WG as usize);
    let k = gpu.kernel(&spec("forward"))?;
    let p = Params::new().n(rows).n(dim).n(vocab).n(cg).u(0).u(0).u(0).u(0);
    rec.dispatch(&k, p, &[w, ids, out], grid(gpu, rows * cg)?)
}

/// `dw[id, :] += sum of dout[r, :] over rows r with ids[r] = id`, in a fixed order.
pub fn embedding_backward(rec: &mut Recorder, dout: &Tensor, index: &EmbeddingIndex, dw: &Tensor) -> Result<()> {
    let dim = dw.cols();
    expect_len("embedding_backward", "dout", dout, index.n * dim)?;
    let gpu = rec.gpu();
    let cg = dim.div_ceil(WG as usize);
    let k = gpu.kernel(&spec("backward"))?;
    let (u, n) = (index.uniq, index.n);
    let p = Params::new().n(n).n(dim).n(dw.rows()).n(cg).u(0).n(u).n(2 * u + 1).n(u);
    rec.dispatch(&k, p, &[dout, &index.tensor, dw], grid(gpu, u * cg)?)
}
