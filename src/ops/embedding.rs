//! Embedding gather and its deterministic scatter-add backward (shaders/embedding.wgsl).

use super::{expect_len, grid, WG};
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, KernelSpec, Params, Part, Recorder, Tensor};

/// The grouping of a batch's token positions by id that the backward needs, built on the CPU
/// when the batch is uploaded: distinct ids, where each one's positions start, and positions
/// sorted by id (ascending within an id, so the summation order is fixed).
pub struct EmbeddingIndex {
    /// `[uniq (u) | starts (u + 1) | perm (n)]` as one u32 tensor.
    pub tensor: Tensor,
    pub n: usize,
    pub uniq: usize,
    /// The distinct ids, ascending (to find the ones inside each block of a split table).
    pub ids: Vec<u32>,
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
        Ok(EmbeddingIndex { tensor, n: ids.len(), uniq, ids: w[..uniq].to_vec() })
    }
}

fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec::new("embedding", entry, 3).u("WG", WG)
}

/// `out[r, :] = w[ids[r], :]`; `w` is `[vocab, dim]`, `ids` `[rows]` u32, `out` `[rows, dim]`.
pub fn embedding(rec: &mut Recorder, w: &Tensor, ids: &Tensor, out: &Tensor) -> Result<()> {
    embedding_parts(rec, &[Part { row0: 0, tensor: w.clone() }], ids, out)
}

/// [`embedding`] from a table stored as row blocks (see [`crate::gpu::ArenaBuilder::add_split`]):
/// one dispatch per block, each writing the rows whose id it holds.
pub fn embedding_parts(rec: &mut Recorder, w: &[Part], ids: &Tensor, out: &Tensor) -> Result<()> {
    let Some(first) = w.first() else { return shape_err("embedding", "empty embedding table") };
    let dim = first.tensor.cols();
    let rows = ids.len();
    expect_len("embedding", "out", out, rows * dim)?;
    let gpu = rec.gpu();
    let cg = dim.div_ceil(WG as usize);
    let k = gpu.kernel(&spec("forward"))?;
    for part in w {
        let t = &part.tensor;
        if t.cols() != dim || t.rows() == 0 {
            return shape_err("embedding", format!("table block {:?} does not match width {dim}", t.shape()));
        }
        let p = Params::new().n(rows).n(dim).n(t.rows()).n(cg).n(part.row0).u(0).u(0).u(0);
        rec.dispatch(&k, p, &[t, ids, out], grid(gpu, rows * cg)?)?;
    }
    Ok(())
}

/// `dw[id, :] += sum of dout[r, :] over rows r with ids[r] = id`, in a fixed order.
pub fn embedding_backward(rec: &mut Recorder, dout: &Tensor, index: &EmbeddingIndex, dw: &Tensor) -> Result<()> {
    embedding_backward_parts(rec, dout, index, &[Part { row0: 0, tensor: dw.clone() }])
}

/// [`embedding_backward`] into a gradient stored as row blocks: each block sums the distinct
/// ids it holds.
pub fn embedding_backward_parts(rec: &mut Recorder, dout: &Tensor, index: &EmbeddingIndex, dw: &[Part]) -> Result<()> {
    let Some(first) = dw.first() else { return shape_err("embedding_backward", "empty gradient table") };
    let dim = first.tensor.cols();
    expect_len("embedding_backward", "dout", dout, index.n * dim)?;
    let gpu = rec.gpu();
    let cg = dim.div_ceil(WG as usize);
    let k = gpu.kernel(&spec("backward"))?;
    for part in dw {
        let (r0, r1) = (part.row0 as u32, (part.row0 + part.tensor.rows()) as u32);
        let u0 = index.ids.partition_point(|&id| id < r0);
        let u1 = index.ids.partition_point(|&id| id < r1);
        if u1 == u0 {
            continue;
        }
        let p = Params::new().n(index.n).n(dim).n(part.tensor.rows()).n(cg).n(part.row0).n(index.uniq).n(u0).n(u1 - u0);
        rec.dispatch(&k, p, &[dout, &index.tensor, &part.tensor], grid(gpu, (u1 - u0) * cg)?)?;
    }
    Ok(())
}
