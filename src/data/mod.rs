//! Turning user data into batches on the CPU (native only): text through `tokenizer.json`,
//! labelled tables, images. Text works
//! on bytes and builds for wasm; tables and images read files (native only).

#[cfg(not(target_arch = "wasm32"))]
pub mod image;
#[cfg(not(target_arch = "wasm32"))]
pub mod table;
pub mod text;
