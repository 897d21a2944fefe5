//! Models with explicit forward and backward, built from [`crate::nn`]'s layers and blocks.

pub mod encoder;
pub mod gpt2;
pub mod llama;
pub mod lm;
pub mod vit;
