//! What defines an optimizer: the base update ([`Base`]), the method around it ([`Method`],
//! TRAM's reference and normalisation), the learning-rate [`Schedule`], and [`OptimConfig`]
//! with its checks.

use crate::error::{Error, Result};
use crate::ops::kl::KlKind;

/// The base update applied with the final gradient.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Base {
    /// AdamW: decoupled weight decay, bias-corrected moments.
    AdamW { beta1: f32, beta2: f32, eps: f32, weight_decay: f32 },
    /// SGD as PyTorch's: L2 weight decay added to the gradient, optional (Nesterov) momentum.
    Sgd { momentum: f32, nesterov: bool, weight_decay: f32 },
}

impl Base {
    /// AdamW with PyTorch's defaults (0.9, 0.999, 1e-8) and no weight decay.
    pub fn adamw() -> Self {
        Base::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Where TRAM's reference output comes from (tram.md §1.3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TramRef {
    /// TRAM-x: the same model on noised input embeddings (train mode).
    Noise { std: f32, uniform: bool },
    /// TRAM-θ: an EMA copy of the parameters, `ref ← decay·ref + (1−decay)·θ_t`, run in eval
    /// mode: decay 0 is TRAM-θ_{t−1}, decay 1 is TRAM-θ_0 (the pre-trained model).
    Params { ema_decay: f32 },
}

/// How TRAM's divergence is normalised (tram.md §1.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KlNorm {
    /// The paper: mean KL per example (per token for LMs).
    Mean,
    /// The released code: additionally divided by the number of classes.
    ReferenceCode,
}

/// The method wrapped around the base update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Plain training: one forward and backward, then the base step.
    Plain,
    /// SAM: ε = ρ g / ‖g‖.
    Sam { rho: f32 },
    /// ASAM: ε = ρ T² g / ‖T g‖ with T = |θ| + η.
    Asam { rho: f32, eta: f32 },
    /// FSAM: ε = γ f⁻¹ g / sqrt(gᵀ f⁻¹ g), f = 1 + η g².
    Fsam { gamma: f32, eta: f32 },
    /// TRAM: ASAM (η = 0) whose radius is the KL distance d to a reference.
    Tram { reference: TramRef, adaptive: bool, kl: KlKind, kl_norm: KlNorm, tr_scale: f32 },
    /// TRAM-Fisher: FSAM whose gradient and Fisher come from a pass on noised inputs, then the
    /// second pass on clean inputs at θ + ε (tram.md §1.6, 2 forward / 2 backward).
    TramFisher { gamma: f32, eta: f32, std: f32, uniform: bool },
    /// R3F: loss = CE(f(x)) + λ KL(f(x + z), f(x)), gradient through both branches (the noised
    /// branch's embeddings detached). 2 forward / 1 backward.
    R3f { lambda: f32, std: f32, uniform: bool, kl: KlKind },
    /// TRPO (`ema_decay` 0: reference θ_{t−1}) and MESA (`ema_decay` 0.999): loss = CE +
    /// λ KL(p(·|x, θ_ref) ‖ p(·|x, θ)), reference without gradient. 2 forward / 1 backward.
    TrustRegion { lambda: f32, ema_decay: f32 },
}

impl Method {
    /// Forward and backward passes per step (tram.md §5.10).
    pub fn passes(&self) -> (usize, usize) {
        match self {
            Method::Plain => (1, 1),
            Method::Sam { .. } | Method::Asam { .. } | Method::Fsam { .. } | Method::TramFisher { .. } => (2, 2),
            Method::Tram { .. } => (3, 2),
            Method::R3f { .. } | Method::TrustRegion { .. } => (2, 1),
        }
    }
}

/// Learning-rate schedule over `total` steps with linear warmup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    Linear { warmup: u64, total: u64 },
    Cosine { warmup: u64, total: u64 },
    Polynomial { warmup: u64, total: u64, power: f32 },
}

impl Schedule {
    /// The multiplier of the base learning rate at `step` (0-based), as Hugging Face's
    /// schedulers compute it.
    pub fn factor(&self, step: u64) -> f32 {
        let warm = |w: u64| if w > 0 && step < w { Some(step as f32 / w as f32) } else { None };
        match *self {
            Schedule::Constant => 1.0,
            Schedule::Linear { warmup, total } => warm(warmup).unwrap_or_else(|| {
                ((total.saturating_sub(step)) as f32 / (total.saturating_sub(warmup)).max(1) as f32).max(0.0)
            }),
            Schedule::Cosine { warmup, total } => warm(warmup).unwrap_or_else(|| {
                let p = (step - warmup) as f32 / (total.saturating_sub(warmup)).max(1) as f32;
                (0.5 * (1.0 + (std::f32::consts::PI * p.min(1.0)).cos())).max(0.0)
            }),
            Schedule::Polynomial { warmup, total, power } => warm(warmup).unwrap_or_else(|| {
                let p = 1.0 - (step - warmup) as f32 / (total.saturating_sub(warmup)).max(1) as f32;
                p.max(0.0).powf(power)
            }),
        }
    }
}

/// Everything that defines an optimizer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimConfig {
    pub base: Base,
    pub method: Method,
    pub lr: f32,
    pub schedule: Schedule,
    /// Global-norm clipping of the final gradient (None: off).
    pub clip: Option<f32>,
    /// Seeds dropout masks and noise.
    pub seed: u64,
}

impl OptimConfig {
    /// Refuse settings that cannot make a sensible run (NaN or infinite numbers, negative
    /// rates, probabilities outside their range), naming the command-line flag of each.
    pub fn validate(&self) -> Result<()> {
        fn check(name: &'static str, v: f32, ok: bool, expected: &str) -> Result<()> {
            if v.is_finite() && ok {
                Ok(())
            } else {
                Err(Error::BadSetting { name, value: v.to_string(), expected: expected.to_string() })
            }
        }
        check("--lr", self.lr, self.lr >= 0.0, "a finite learning rate >= 0")?;
        if let Some(c) = self.clip {
            check("--clip", c, c > 0.0, "a finite gradient-norm bound > 0 (0 turns clipping off)")?;
        }
        match self.base {
            Base::AdamW { beta1, beta2, eps, weight_decay } => {
                check("beta1", beta1, (0.0..1.0).contains(&beta1), "a value in [0, 1)")?;
                check("beta2", beta2, (0.0..1.0).contains(&beta2), "a value in [0, 1)")?;
                check("eps", eps, eps > 0.0, "a finite value > 0")?;
                check("--weight-decay", weight_decay, weight_decay >= 0.0, "a finite value >= 0")?;
            }
            Base::Sgd { momentum, weight_decay, .. } => {
                check("--momentum", momentum, (0.0..1.0).contains(&momentum), "a value in [0, 1)")?;
                check("--weight-decay", weight_decay, weight_decay >= 0.0, "a finite value >= 0")?;
            }
        }
        let positive = "a finite value > 0";
        let non_negative = "a finite value >= 0";
        let noise = |std: f32| check("--noise-std", std, std > 0.0, positive);
        match self.method {
            Method::Plain => {}
            Method::Sam { rho } => check("--rho", rho, rho > 0.0, positive)?,
            Method::Asam { rho, eta } => {
                check("--rho", rho, rho > 0.0, positive)?;
                check("--eta", eta, eta >= 0.0, non_negative)?;
            }
            Method::Fsam { gamma, eta } => {
                check("--gamma", gamma, gamma > 0.0, positive)?;
                check("--eta", eta, eta >= 0.0, non_negative)?;
            }
            Method::Tram { reference, tr_scale, .. } => {
                check("--tr-scale", tr_scale, tr_scale > 0.0, positive)?;
                match reference {
                    TramRef::Noise { std, .. } => noise(std)?,
                    TramRef::Params { ema_decay } => {
                        check("--ema-decay", ema_decay, (0.0..=1.0).contains(&ema_decay), "a value in [0, 1]")?
                    }
                }
            }
            Method::TramFisher { gamma, eta, std, .. } => {
                check("--gamma", gamma, gamma > 0.0, positive)?;
                check("--eta", eta, eta >= 0.0, non_negative)?;
                noise(std)?;
            }
            Method::R3f { lambda, std, .. } => {
                check("--lambda", lambda, lambda >= 0.0, non_negative)?;
                noise(std)?;
            }
            Method::TrustRegion { lambda, ema_decay } => {
                check("--lambda", lambda, lambda >= 0.0, non_negative)?;
                check("--ema-decay", ema_decay, (0.0..=1.0).contains(&ema_decay), "a value in [0, 1]")?;
            }
        }
        Ok(())
    }

    /// The command-line name of the method (`adamw`, `sam`, `tram-x`, ...).
    pub fn name(&self) -> &'static str {
        match self.method {
            Method::Plain => match self.base {
                Base::AdamW { .. } => "adamw",
                Base::Sgd { .. } => "sgd",
            },
            Method::Sam { .. } => "sam",
            Method::Asam { .. } => "asam",
            Method::Fsam { .. } => "fsam",
            Method::Tram { reference: TramRef::Noise { .. }, .. } => "tram-x",
            Method::Tram { reference: TramRef::Params { ema_decay: 0.0 }, .. } => "tram-prev",
            Method::Tram { reference: TramRef::Params { ema_decay: 1.0 }, .. } => "tram-init",
            Method::Tram { .. } => "tram-ema",
            Method::TramFisher { .. } => "tram-fisher",
            Method::R3f { .. } => "r3f",
            Method::TrustRegion { ema_decay: 0.0, .. } => "trpo",
            Method::TrustRegion { .. } => "mesa",
        }
    }
}
