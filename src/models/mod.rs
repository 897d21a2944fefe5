//! Models with explicit forward and backward, built from [`crate::nn`] and [`crate::ops`].

pub mod encoder;
pub mod gpt2;
pub mod llama;
pub mod vit;
