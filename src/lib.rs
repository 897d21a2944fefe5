//! tramway: fine-tune transformers on any GPU that wgpu reaches, with every forward and backward
//! kernel hand-written in WGSL.
//!
//! The crate is layered like the path of one training step (see ARCHITECTURE.md):
//! - [`gpu`]: adapter and device, tensors and arenas, the pipeline cache, the recorder that batches
//!   many dispatches into one submit, and explicit (async) readback;
//! - [`ops`]: one module per WGSL kernel family, each with shape checks and a plain-Rust reference
//!   in [`ops::reference`] that the tests compare against.
//!
//! The core compiles for `wasm32-unknown-unknown` (WebGPU): it uses no threads and no files;
//! native callers block on futures with the `*_blocking` helpers.

// Kernel wrappers take each bound tensor explicitly, as llm.c's layer functions take B, T, C:
// bundling them into structs would hide which buffer goes to which binding.
#![allow(clippy::too_many_arguments)]

pub mod error;
pub mod gpu;
pub mod ops;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions, Recorder, Tensor};
