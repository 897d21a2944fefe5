//! Reading and writing Hugging Face model folders. The parsers work on bytes and strings (so
//! they run in a browser too); [`hf`]'s `*_dir` functions read files and are native only.

pub mod adapter;
pub mod config;
pub mod hf;
pub mod weights;
