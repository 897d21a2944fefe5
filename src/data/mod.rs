//! Turning user data into batches on the CPU (native only): text through `tokenizer.json`,
//! labelled tables, images.

#[cfg(not(target_arch = "wasm32"))]
pub mod image;
#[cfg(not(target_arch = "wasm32"))]
pub mod table;
#[cfg(not(target_arch = "wasm32"))]
pub mod text;
