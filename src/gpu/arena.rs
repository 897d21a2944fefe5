//! Arenas: many tensors planned once and packed into a few buffers.
//!
//! Parameters, gradients and optimizer state each live in one arena, so that norms, perturbation,
//! restore and the optimizer update are a handful of dispatches over whole chunks instead of one
//! per tensor. A chunk never exceeds the adapter's storage-binding limit, so every chunk can be
//! bound whole; tensors start at 256-byte boundaries and the gaps stay zero.
//!
//! A tensor larger than one binding (a 250k-token embedding table, GPT-2's tied `wte`) can be
//! requested with [`ArenaBuilder::add_split`]: it is stored as row blocks ([`Part`]s), each in a
//! binding of its own, and only code that handles the parts (embedding gather/scatter, a tied
//! LM head) may use it. Everything that works on whole chunks (norms, the optimizer) is unaffected.

use super::tensor::STORAGE_USAGE;
use super::{DType, Gpu, Tensor, ALIGN};
use crate::error::{Error, Result};

/// Collects tensor requests; [`ArenaBuilder::build`] allocates them.
#[derive(Default, Clone, Debug)]
pub struct ArenaBuilder {
    /// (name, shape, may be split into row blocks)
    entries: Vec<(String, Vec<usize>, bool)>,
    /// Override of the chunk size (bytes); tests use it to force several chunks.
    max_chunk: Option<u64>,
}

/// Tensors packed into chunks. Tensor `i` is the `i`-th request.
#[derive(Clone, Debug)]
pub struct Arena {
    layout: ArenaBuilder,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    /// Row blocks of each tensor (one block unless it was split).
    parts: Vec<Vec<Part>>,
    /// Each chunk as one flat f32 tensor covering the whole buffer (gaps included).
    chunks: Vec<Tensor>,
}

/// A block of rows `row0..row0 + tensor.rows()` of a tensor stored in several bindings.
#[derive(Clone, Debug)]
pub struct Part {
    pub row0: usize,
    pub tensor: Tensor,
}

impl ArenaBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    /// Request a tensor; returns its index in the arena.
    pub fn add(&mut self, name: impl Into<String>, shape: &[usize]) -> usize {
        self.entries.push((name.into(), shape.to_vec(), false));
        self.entries.len() - 1
    }
    /// Request a tensor that may be stored as row blocks when it exceeds one binding (its users
    /// must go through [`Arena::parts`]).
    pub fn add_split(&mut self, name: impl Into<String>, shape: &[usize]) -> usize {
        self.entries.push((name.into(), shape.to_vec(), true));
        self.entries.len() - 1
    }
    /// Cap chunk size below the adapter's limit (rounded down to 256 bytes).
    pub fn max_chunk_bytes(mut self, bytes: u64) -> Self {
        self.max_chunk = Some((bytes / ALIGN * ALIGN).max(ALIGN));
        self
    }

    /// Allocate the chunks. Every tensor must fit one binding, unless it was added with
    /// [`ArenaBuilder::add_split`] and one row fits.
    pub fn build(&self, gpu: &Gpu, label: &str) -> Result<Arena> {
        let limit = gpu.max_binding_bytes().min(self.max_chunk.unwrap_or(u64::MAX));
        // Plan: per entry, its blocks as (first row, rows, chunk index, byte offset).
        let mut plan: Vec<Vec<(usize, usize, usize, u64)>> = Vec::with_capacity(self.entries.len());
        let mut sizes: Vec<u64> = vec![0];
        for (name, shape, split) in &self.entries {
            let bytes = shape.iter().product::<usize>() as u64 * 4;
            let cols = *shape.last().unwrap_or(&1) as u64;
            let rows = (bytes / 4).checked_div(cols).unwrap_or(0);
            let blocks: Vec<(usize, usize)> = if bytes <= limit {
                vec![(0, rows as usize)]
            } else if *split && cols * 4 <= limit && shape.len() >= 2 {
                let per = (limit / (cols * 4)) as usize;
                (0..rows as usize).step_by(per).map(|r0| (r0, per.min(rows as usize - r0))).collect()
            } else {
                return Err(Error::Limit {
                    what: format!("arena {label}: tensor {name} {shape:?}"),
                    needed: if *split { cols * 4 } else { bytes },
                    limit,
                    limit_name: "max_storage_buffer_binding_size",
                    hint: if *split {
                        " bytes for one row; this tensor cannot be stored on this adapter".into()
                    } else {
                        " bytes; this tensor cannot be bound whole on this adapter".into()
                    },
                });
            };
            let mut placed = Vec::with_capacity(blocks.len());
            for (r0, n) in blocks {
                let bytes = n as u64 * cols * 4;
                let cur = sizes.last_mut().unwrap();
                let start = cur.div_ceil(ALIGN) * ALIGN;
                if start + bytes > limit && *cur > 0 {
                    sizes.push(0);
                }
                let cur = sizes.last_mut().unwrap();
                let start = cur.div_ceil(ALIGN) * ALIGN;
                *cur = start + bytes;
                placed.push((r0, n, sizes.len() - 1, start));
            }
            plan.push(placed);
        }
        let mut buffers = Vec::new();
        let mut chunks = Vec::new();
        for (i, &s) in sizes.iter().enumerate() {
            let size = s.max(4).div_ceil(ALIGN) * ALIGN;
            gpu.count_allocation(size);
            let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&format!("{label}[{i}]")),
                size,
                usage: STORAGE_USAGE,
                mapped_at_creation: false,
            });
            let live = std::sync::Arc::new(());
            chunks.push(Tensor {
                buffer: buffer.clone(),
                offset: 0,
                shape: vec![(size / 4) as usize],
                dtype: DType::F32,
                live: live.clone(),
            });
            buffers.push((buffer, live));
        }
        let parts = self
            .entries
            .iter()
            .zip(&plan)
            .map(|((_, shape, _), blocks)| {
                blocks
                    .iter()
                    .map(|&(row0, n, c, off)| {
                        let mut part_shape = shape.clone();
                        if blocks.len() > 1 {
                            // Split tensors are 2-D-like: rows of the last dimension.
                            part_shape = vec![n, *shape.last().unwrap()];
                        }
                        Part {
                            row0,
                            tensor: Tensor {
                                buffer: buffers[c].0.clone(),
                                offset: off,
                                shape: part_shape,
                                dtype: DType::F32,
                                live: buffers[c].1.clone(),
                            },
                        }
                    })
                    .collect()
            })
            .collect();
        Ok(Arena {
            layout: self.clone(),
            names: self.entries.iter().map(|e| e.0.clone()).collect(),
            shapes: self.entries.iter().map(|e| e.1.clone()).collect(),
            parts,
            chunks,
        })
    }
}

impl Arena {
    /// The `i`-th requested tensor. Panics for a tensor that was split into several bindings:
    /// only code written for [`Arena::parts`] may request splittable tensors.
    pub fn get(&self, i: usize) -> &Tensor {
        match &self.parts[i][..] {
            [one] => &one.tensor,
            p => panic!("tensor {} is stored in {} row blocks; use Arena::parts", self.names[i], p.len()),
        }
    }
    /// The row blocks of the `i`-th tensor (one block unless it exceeded a binding).
    pub fn parts(&self, i: usize) -> &[Part] {
        &self.parts[i]
    }
    /// The full shape of the `i`-th tensor.
    pub fn shape(&self, i: usize) -> &[usize] {
        &self.shapes[i]
    }
    /// Elements of the `i`-th tensor.
    pub fn numel(&self, i: usize) -> usize {
        self.shapes[i].iter().product()
    }
    /// The tensor requested under `name` (whole; see [`Arena::get`]).
    pub fn by_name(&self, name: &str) -> Option<&Tensor> {
        self.names.iter().position(|n| n == name).map(|i| self.get(i))
    }
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
    pub fn names(&self) -> &[String] {
        &self.names
    }
    /// The plan this arena was built from: building it again gives an arena of the same layout.
    pub fn layout(&self) -> &ArenaBuilder {
        &self.layout
    }
    /// The chunks, each a flat tensor over a whole buffer (gaps between tensors are zero).
    pub fn chunks(&self) -> &[Tensor] {
        &self.chunks
    }
    /// Elements over all chunks, gaps included.
    pub fn chunk_elems(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }
    /// Upload the `i`-th tensor (all its row blocks) from row-major `data`.
    pub fn write(&self, gpu: &Gpu, i: usize, data: &[f32]) -> Result<()> {
        if data.len() != self.numel(i) {
            return Err(Error::Shape {
                op: "arena write",
                message: format!("{}: {} values for shape {:?}", self.names[i], data.len(), self.shapes[i]),
            });
        }
        let mut at = 0;
        for p in &self.parts[i] {
            let n = p.tensor.len();
            gpu.write_f32(&p.tensor, &data[at..at + n])?;
            at += n;
        }
        Ok(())
    }
    /// Read the `i`-th tensor back (its row blocks concatenated).
    pub async fn read(&self, gpu: &Gpu, i: usize) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.numel(i));
        for p in &self.parts[i] {
            out.extend(gpu.read_f32(&p.tensor).await?);
        }
        Ok(out)
    }
    /// [`Arena::read`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_blocking(&self, gpu: &Gpu, i: usize) -> Result<Vec<f32>> {
        pollster::block_on(self.read(gpu, i))
    }
}
