//! tramway: fine-tune transformers on any GPU that wgpu reaches, with every forward and backward
//! kernel hand-written in WGSL.
//!
//! The crate is layered like the path of one training step (see ARCHITECTURE.md):
//! - [`gpu`]: adapter and device, tensors and arenas, the pipeline cache, the recorder that batches
//!   many dispatches into one submit, and explicit (async) readback;
//! - [`ops`]: one module per WGSL kernel family, each with shape checks and a plain-Rust reference
//!   in [`ops::reference`] that the tests compare against;
//! - [`session`]: a text model loaded from bytes, embedding and step-by-step fine-tuning, the
//!   same natively and in a browser (the `web/` package).
//!
//! The core compiles for `wasm32-unknown-unknown` (WebGPU): it uses no threads and no files;
//! native callers block on futures with the `*_blocking` helpers.
//!
//! ```
//! use tramway::ops::matmul::{matmul, Act, Matmul};
//! use tramway::{Gpu, GpuOptions};
//!
//! let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
//! let x = gpu.from_f32(&vec![0.5; 8 * 384], &[8, 384])?;
//! let w = gpu.from_f32(&vec![0.01; 1536 * 384], &[1536, 384])?; // HF Linear layout [out, in]
//! let b = gpu.zeros(&[1536])?;
//! let y = gpu.zeros(&[8, 1536])?;
//! let mut rec = gpu.recorder(); // many dispatches, one submit
//! matmul(&mut rec, &Matmul::new(&x, false, &w, true, &y)?.bias(&b).act(Act::GeluErf))?;
//! rec.submit()?;
//! let values = gpu.read_f32_blocking(&y)?; // explicit readback; `read_f32` is the async form
//! assert!((values[0] - 1.8673).abs() < 1e-3); // gelu(384 * 0.5 * 0.01 = 1.92)
//! # Ok::<(), tramway::Error>(())
//! ```

// Kernel wrappers take each bound tensor explicitly, as llm.c's layer functions take B, T, C:
// bundling them into structs would hide which buffer goes to which binding.
#![allow(clippy::too_many_arguments)]

pub mod data;
pub mod error;
pub mod gpu;
pub mod io;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod session;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions, Recorder, Tensor};
