//! Turning user data into batches on the CPU: text through `tokenizer.json` (native only).

#[cfg(not(target_arch = "wasm32"))]
pub mod table;
#[cfg(not(target_arch = "wasm32"))]
pub mod text;
