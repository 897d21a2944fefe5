//! The engine test-suite, one binary so it links once.
//! - Kernels: every kernel against its CPU reference (f64 accumulation) on random inputs,
//!   including sizes that are not a multiple of any tile, size 1 and long reductions; every
//!   backward reference against central finite differences.
//! - Models: logits, loss and every parameter gradient against PyTorch fixtures
//!   (tests/fixtures, written by tools/make_fixtures.py).
//!
//! Tolerances are stated where they are used.

mod attention;
mod decoder;
mod dropout;
mod elementwise;
mod embedding;
mod encoder;
mod finetune;
mod fuzz;
mod gpt2;
mod gpu;
mod guarantees;
mod kl;
mod llama;
mod lora;
mod loss;
mod matmul;
mod norm;
mod optim;
mod portability;
mod qwen2;
mod real_models;
mod reduce;
mod rng;
mod session;
mod softmax;
mod vit;

use std::sync::OnceLock;
use tramway::models::TaskModel;
use tramway::{Gpu, GpuOptions, Recorder, Tensor};

/// One device for the whole test binary (tests run on several threads and share it).
pub fn gpu() -> &'static Gpu {
    static G: OnceLock<Gpu> = OnceLock::new();
    G.get_or_init(|| Gpu::new_blocking(GpuOptions::from_env().unwrap()).expect("a GPU adapter (lavapipe on CI)"))
}

/// SplitMix64: deterministic test data without a rand dependency.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

pub fn up(data: &[f32]) -> Tensor {
    gpu().from_f32(data, &[data.len()]).unwrap()
}
pub fn up_shape(data: &[f32], shape: &[usize]) -> Tensor {
    gpu().from_f32(data, shape).unwrap()
}
pub fn down(t: &Tensor) -> Vec<f32> {
    gpu().read_f32_blocking(t).unwrap()
}
pub fn rec() -> Recorder<'static> {
    gpu().recorder()
}

/// Assert |got - want| <= atol + rtol * |want| elementwise, reporting the worst element.
#[track_caller]
pub fn close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        assert!(g.is_finite(), "{what}[{i}] = {g} is not finite (want {w})");
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!("{what}: element {i} is {} but the reference is {} (atol {atol}, rtol {rtol})", got[i], want[i]);
    }
}

/// Step for finite differences: a power of two, so x +- h is exact in f32 for |x| < 2^13.
pub const FD_H: f32 = 1.0 / 1024.0;

/// Check an analytic gradient `grad` of the scalar `f` at `x` by central differences on up to
/// `samples` coordinates. Central differences with h = 2^-10 have truncation error ~h^2 f'''/6
/// (about 1e-7 for these smooth functions), so 1e-5 + 1e-4 relative is a strict bound.
#[track_caller]
pub fn fd_check(what: &str, x: &[f32], grad: &[f64], samples: usize, f: impl Fn(&[f32]) -> f64) {
    let mut r = Rng::new(x.len() as u64 ^ 0x5eed);
    let n = x.len();
    for s in 0..samples.min(n) {
        let i = if n <= samples { s } else { r.below(n) };
        let mut xp = x.to_vec();
        xp[i] += FD_H;
        let mut xm = x.to_vec();
        xm[i] -= FD_H;
        let fd = (f(&xp) - f(&xm)) / (2.0 * FD_H as f64);
        let tol = 1e-5 + 1e-4 * fd.abs().max(grad[i].abs());
        assert!((fd - grad[i]).abs() <= tol, "{what}: d/dx[{i}] analytic {} vs finite difference {fd}", grad[i]);
    }
}

/// Weighted sum <w, y>: a scalar loss whose gradient with respect to y is w.
pub fn dot(w: &[f32], y: &[f64]) -> f64 {
    w.iter().zip(y).map(|(&a, &b)| a as f64 * b).sum()
}
