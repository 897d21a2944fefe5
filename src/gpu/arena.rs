//! Arenas: many tensors planned once and packed into a few buffers.
//!
//! Parameters, gradients and optimizer state each live in one arena, so that norms, perturbation,
//! restore and the optimizer update are a handful of dispatches over whole chunks instead of one
//! per tensor. A chunk never exceeds the adapter's storage-binding limit, so every chunk can be
//! bound whole; tensors start at 256-byte boundaries and the gaps stay zero.

use super::tensor::STORAGE_USAGE;
use super::{DType, Gpu, Tensor, ALIGN};
use crate::error::{Error, Result};

/// Collects tensor requests; [`ArenaBuilder::build`] allocates them.
#[derive(Default, Clone, Debug)]
pub struct ArenaBuilder {
    entries: Vec<(String, Vec<usize>)>,
    /// Override of the chunk size (bytes); tests use it to force several chunks.
    max_chunk: Option<u64>,
}

/// Tensors packed into chunks. Tensor `i` is the `i`-th request.
#[derive(Clone, Debug)]
pub struct Arena {
    names: Vec<String>,
    tensors: Vec<Tensor>,
    /// Each chunk as one flat f32 tensor covering the whole buffer (gaps included).
    chunks: Vec<Tensor>,
}

impl ArenaBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    /// Request a tensor; returns its index in the arena.
    pub fn add(&mut self, name: impl Into<String>, shape: &[usize]) -> usize {
        self.entries.push((name.into(), shape.to_vec()));
        self.entries.len() - 1
    }
    /// Cap chunk size below the adapter's limit (rounded down to 256 bytes).
    pub fn max_chunk_bytes(mut self, bytes: u64) -> Self {
        self.max_chunk = Some((bytes / ALIGN * ALIGN).max(ALIGN));
        self
    }

    /// Allocate the chunks. Every tensor must fit one binding.
    pub fn build(&self, gpu: &Gpu, label: &str) -> Result<Arena> {
        let limit = gpu.max_binding_bytes().min(self.max_chunk.unwrap_or(u64::MAX));
        // Plan: (chunk index, byte offset) per entry.
        let mut plan = Vec::with_capacity(self.entries.len());
        let mut sizes: Vec<u64> = vec![0];
        for (name, shape) in &self.entries {
            let bytes = shape.iter().product::<usize>() as u64 * 4;
            if bytes > limit {
                return Err(Error::Limit {
                    what: format!("arena {label}: tensor {name} {shape:?}"),
                    needed: bytes,
                    limit,
                    limit_name: "max_storage_buffer_binding_size",
                    hint: " bytes; this tensor cannot be bound whole on this adapter".into(),
                });
            }
            let cur = sizes.last_mut().unwrap();
            let start = cur.div_ceil(ALIGN) * ALIGN;
            if start + bytes > limit && *cur > 0 {
                sizes.push(0);
            }
            let cur = sizes.last_mut().unwrap();
            let start = cur.div_ceil(ALIGN) * ALIGN;
            *cur = start + bytes;
            plan.push((sizes.len() - 1, start));
        }
        let mut buffers = Vec::new();
        let mut chunks = Vec::new();
        for (i, &s) in sizes.iter().enumerate() {
            let size = s.max(4).div_ceil(ALIGN) * ALIGN;
            let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&format!("{label}[{i}]")),
                size,
                usage: STORAGE_USAGE,
                mapped_at_creation: false,
            });
            chunks.push(Tensor {
                buffer: buffer.clone(),
                offset: 0,
                shape: vec![(size / 4) as usize],
                dtype: DType::F32,
            });
            buffers.push(buffer);
        }
        let tensors = self
            .entries
            .iter()
            .zip(&plan)
            .map(|((_, shape), &(c, off))| Tensor {
                buffer: buffers[c].clone(),
                offset: off,
                shape: shape.clone(),
                dtype: DType::F32,
            })
            .collect();
        Ok(Arena { names: self.entries.iter().map(|e| e.0.clone()).collect(), tensors, chunks })
    }
}

impl Arena {
    /// The `i`-th requested tensor.
    pub fn get(&self, i: usize) -> &Tensor {
        &self.tensors[i]
    }
    /// The tensor requested under `name`.
    pub fn by_name(&self, name: &str) -> Option<&Tensor> {
        self.names.iter().position(|n| n == name).map(|i| &self.tensors[i])
    }
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }
    pub fn names(&self) -> &[String] {
        &self.names
    }
    /// The chunks, each a flat tensor over a whole buffer (gaps between tensors are zero).
    pub fn chunks(&self) -> &[Tensor] {
        &self.chunks
    }
    /// Elements over all chunks, gaps included.
    pub fn chunk_elems(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }
}
