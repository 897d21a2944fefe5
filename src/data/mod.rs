//! Turning user data into batches on the CPU: the batch types ([`batch`]), text through
//! `tokenizer.json` (on bytes: builds for wasm), labelled tables and images (files: native
//! only).

pub mod batch;
#[cfg(not(target_arch = "wasm32"))]
pub mod image;
#[cfg(not(target_arch = "wasm32"))]
pub mod table;
pub mod text;
