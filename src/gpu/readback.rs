//! Explicit readback. Asynchronous so that the same code runs in a browser; native callers use
//! the `*_blocking` forms, which wait on the queue.

use super::{Gpu, Tensor};
use crate::error::{Error, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// A one-shot slot filled by wgpu's map callback.
struct Slot {
    value: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    waker: Option<Waker>,
}

struct MapFuture(Arc<Mutex<Slot>>);

impl Future for MapFuture {
    type Output = std::result::Result<(), wgpu::BufferAsyncError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.lock().unwrap();
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Gpu {
    /// Copy `t` to the CPU as raw 32-bit words.
    pub async fn read_words(&self, t: &Tensor) -> Result<Vec<u32>> {
        let bytes = t.bytes();
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(&t.buffer, t.offset, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        let slot = Arc::new(Mutex::new(Slot { value: None, waker: None }));
        let s2 = slot.clone();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let mut s = s2.lock().unwrap();
            s.value = Some(r);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.wait()?;
        let what = || format!("tensor {:?}", t.shape());
        MapFuture(slot).await.map_err(|e| Error::Readback { what: what(), message: e.to_string() })?;
        self.take_error("readback")?;
        let words = {
            let view =
                staging.get_mapped_range(..).map_err(|e| Error::Readback { what: what(), message: e.to_string() })?;
            bytemuck::cast_slice::<u8, u32>(&view).to_vec()
        };
        staging.unmap();
        Ok(words)
    }

    /// Copy an f32 tensor to the CPU.
    pub async fn read_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        Ok(self.read_words(t).await?.into_iter().map(f32::from_bits).collect())
    }

    /// [`Gpu::read_f32`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32_blocking(&self, t: &Tensor) -> Result<Vec<f32>> {
        pollster::block_on(self.read_f32(t))
    }

    /// [`Gpu::read_words`] as u32 values, blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_u32_blocking(&self, t: &Tensor) -> Result<Vec<u32>> {
        pollster::block_on(self.read_words(t))
    }
}
