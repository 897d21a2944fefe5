//! Tensors: a range of a GPU buffer with a shape. No data lives on the CPU.

use super::{Gpu, ALIGN};
use crate::error::{Error, Result};
use std::sync::Arc;

/// Element type. Both are 4 bytes; `U32` holds token ids, targets and masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    U32,
}

/// A contiguous, row-major array in a GPU buffer: (buffer, byte offset, shape).
///
/// Cloning is cheap and aliases the same memory. A tensor is bound to kernels as exactly its
/// own byte range, so two tensors of one arena never overlap in a dispatch.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) offset: u64,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
    /// Held by every tensor (and view) of the buffer: once the last one is dropped, the next
    /// submit releases the device's cached bind groups that bind the buffer (see
    /// `recorder::BindCache`), and with them the buffer.
    pub(crate) live: Arc<()>,
}

impl Tensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Size in bytes (4 per element).
    pub fn bytes(&self) -> u64 {
        self.len() as u64 * 4
    }
    /// The same memory seen with another shape of equal element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.len() {
            return Err(Error::Shape {
                op: "reshape",
                message: format!("cannot view {:?} ({} elements) as {:?} ({n})", self.shape, self.len(), shape),
            });
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }
    /// The elements `start..start + len(shape)` of this tensor as a tensor of `shape` (same
    /// memory). A view that a kernel binds must start on the adapter's storage-offset alignment
    /// (256 bytes on most; `start = 0` always does); copies only need 4-byte alignment.
    pub fn narrow(&self, start: usize, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if start.checked_add(n).is_none_or(|end| end > self.len()) {
            return Err(Error::Shape {
                op: "narrow",
                message: format!("elements {start}..{} of {:?} ({} elements)", start + n, self.shape, self.len()),
            });
        }
        Ok(Tensor { offset: self.offset + start as u64 * 4, shape: shape.to_vec(), ..self.clone() })
    }
    /// Size of the last dimension (1 for a scalar).
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
    /// Product of all but the last dimension.
    pub fn rows(&self) -> usize {
        self.len() / self.cols().max(1)
    }
    /// Whether both are the same range of the same buffer.
    pub fn same_memory(&self, o: &Tensor) -> bool {
        self.buffer == o.buffer && self.offset == o.offset && self.len() == o.len()
    }
    /// The binding for this tensor's byte range (at least 4 bytes: WebGPU refuses empty ones).
    pub(crate) fn binding(&self) -> wgpu::BufferBinding<'_> {
        wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.bytes().max(4)),
        }
    }
}

pub(crate) const STORAGE_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

impl Gpu {
    /// Refuse a tensor that cannot be bound whole on this adapter.
    pub(crate) fn check_binding(&self, what: &str, bytes: u64) -> Result<()> {
        let limit = self.max_binding_bytes();
        if bytes > limit {
            return Err(Error::Limit {
                what: what.to_string(),
                needed: bytes,
                limit,
                limit_name: "max_storage_buffer_binding_size",
                hint: " bytes; split the tensor (e.g. by rows) or use an adapter with larger bindings".into(),
            });
        }
        Ok(())
    }

    fn alloc(&self, shape: &[usize], dtype: DType, label: &str) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let bytes = n as u64 * 4;
        self.check_binding(&format!("tensor {label} {shape:?}"), bytes)?;
        let size = bytes.max(4).div_ceil(ALIGN) * ALIGN;
        self.count_allocation(size);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        });
        Ok(Tensor { buffer, offset: 0, shape: shape.to_vec(), dtype, live: Arc::new(()) })
    }

    /// A zero-filled f32 tensor in its own buffer.
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        self.alloc(shape, DType::F32, "tensor")
    }
    /// A zero-filled u32 tensor in its own buffer.
    pub fn zeros_u32(&self, shape: &[usize]) -> Result<Tensor> {
        self.alloc(shape, DType::U32, "tensor_u32")
    }
    /// An f32 tensor holding `data` (its length must match `shape`).
    pub fn from_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let t = self.alloc(shape, DType::F32, "tensor")?;
        self.write_f32(&t, data)?;
        Ok(t)
    }
    /// A u32 tensor holding `data`.
    pub fn from_u32(&self, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        let t = self.alloc(shape, DType::U32, "tensor_u32")?;
        self.write_u32(&t, data)?;
        Ok(t)
    }
    /// Overwrite a tensor's contents. The write lands before the next submit's commands.
    pub fn write_f32(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        self.write_bytes(t, bytemuck::cast_slice(data), data.len())
    }
    /// Overwrite a u32 tensor's contents.
    pub fn write_u32(&self, t: &Tensor, data: &[u32]) -> Result<()> {
        self.write_bytes(t, bytemuck::cast_slice(data), data.len())
    }
    fn write_bytes(&self, t: &Tensor, bytes: &[u8], n: usize) -> Result<()> {
        if n != t.len() {
            return Err(Error::Shape {
                op: "upload",
                message: format!("{n} values given for a tensor of shape {:?} ({} elements)", t.shape, t.len()),
            });
        }
        if n > 0 {
            self.queue.write_buffer(&t.buffer, t.offset, bytes);
        }
        Ok(())
    }
}
