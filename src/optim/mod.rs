//! Optimizers, all on the GPU: base updates (AdamW, SGD), learning-rate schedules, global-norm
//! clipping, and the sharpness-aware and trust-region methods of ../shared/docs/tram.md
//! (SAM, ASAM, FSAM, TRAM-x, TRAM-θ_{t-1}, TRAM-θ_0, TRAM-EMA).
//!
//! A whole step — every forward and backward pass, the KL radius, the ascent, the restore, the
//! reference update and the base update — is recorded into one recorder and runs as one
//! submit. Scalars the step needs (‖g‖, ‖T g‖, d) stay in a small GPU buffer; they come back
//! only when [`Optimizer::metrics`] is called.

mod config;
mod spec;
pub use config::{Base, KlNorm, Method, OptimConfig, Schedule, TramRef};
pub use spec::{OptimSpec, METHOD_NAMES};

use crate::error::{shape_err, Result};
use crate::gpu::{Arena, Gpu, KernelSpec, Params, Recorder, Tensor};
use crate::io::weights::{HostTensor, Weights};
use crate::models::TrainModel;
use crate::nn::{Noise, ParamSet, Train};
use crate::ops::kl::{kl_backward, kl_mean, KlKind};
use crate::ops::reduce::{reduce, Reduction, SPAN};
use crate::ops::rng::RngKey;
use crate::ops::{grid, WG_REDUCE};

/// Slots of the scalar buffer.
pub mod slot {
    /// Global L2 norm of the gradient used by the base step (after the ascent, g̃).
    pub const GRAD_NORM: usize = 0;
    /// Σ a_i g_i² of the ascent (its square root is the denominator).
    pub const ASCENT: usize = 1;
    /// The trust-region distance d (TRAM), after `tr_scale` and the normalisation.
    pub const D: usize = 2;
    /// L2 norm of the parameters after the step's update.
    pub const PARAM_NORM: usize = 3;
    /// The step's loss (copied by the finite guard, so one readback has every scalar).
    pub const LOSS: usize = 4;
    /// The first step (1-based) at which a guarded quantity was not finite; 0 while all were.
    pub const BAD_STEP: usize = 5;
    /// Which quantities were not finite at [`BAD_STEP`]: bit `s` for slot `s` (0..[`LOSS`]),
    /// bit 7 for the loss.
    pub const BAD_WHAT: usize = 6;
    /// Number of slots.
    pub const LEN: usize = 8;

    /// The names of the quantities flagged in a [`BAD_WHAT`] bit mask, in slot order.
    pub fn names(mask: u32) -> Vec<&'static str> {
        let all = [
            (7, "loss"),
            (GRAD_NORM, "gradient norm"),
            (ASCENT, "ascent denominator (the SAM/ASAM/TRAM radius)"),
            (D, "TRAM trust-region distance d"),
            (PARAM_NORM, "updated parameters (their norm)"),
        ];
        all.iter().filter(|(bit, _)| mask & (1 << bit) != 0).map(|(_, n)| *n).collect()
    }
}

/// `kl_backward`'s coefficient and row weights for λ times the mean row KL: over the scored
/// tokens of a language model (weights summing to 1), or over all rows.
fn mean_kl_coef(model: &dyn TrainModel, lambda: f32) -> (f32, Option<&Tensor>) {
    match model.row_weights() {
        Some(w) => (lambda, Some(w)),
        None => (lambda / model.logits().rows() as f32, None),
    }
}

/// Optimizer state on the GPU, laid out like the parameters.
pub struct Optimizer {
    pub cfg: OptimConfig,
    /// Steps taken.
    pub step: u64,
    m: Arena,
    v: Option<Arena>,
    backup: Option<Arena>,
    reference: Option<ParamSet>,
    scal: Tensor,
    parts: Tensor,
    cur_logits: Option<Tensor>,
    /// `[loss, count]` of the first pass (the loss at θ, what a step reports).
    loss1: Tensor,
}

/// What a step reports when asked (one small readback).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    pub loss: f32,
    pub grad_norm: f32,
    /// TRAM's trust-region distance (0 for other methods).
    pub d: f32,
    /// L2 norm of the parameters after the last update.
    pub param_norm: f32,
    /// The first step at which a guarded quantity was NaN or infinite, and which ones.
    pub nonfinite: Option<(u64, Vec<&'static str>)>,
}

/// An optim.wgsl kernel for a chunk of `n` elements: the kernels read vec4, which arena chunks
/// (multiples of 64 floats) always allow.
fn optim_spec(entry: &'static str, n: usize, mode: u32, use_d: bool) -> Result<KernelSpec> {
    if !n.is_multiple_of(4) {
        return shape_err("optim", format!("a chunk of {n} elements (the optimizer kernels read vec4)"));
    }
    let span = span_of(entry);
    Ok(KernelSpec::new("optim", entry, 6).u("WG", WG_REDUCE).u("SPAN", span).u("MODE", mode).b("USE_D", use_d))
}

/// Elements one workgroup of an optimizer update (or the ascent) writes, summing the updated
/// w² for the guard. 4096: at 16384 the AdamW update ran 2x slower on lavapipe (fewer, longer
/// workgroups over four arrays), while the read-only ascent sum gains from long spans, as the
/// norms do (`reduce::SPAN`).
const UPDATE_SPAN: u32 = 4096;

/// The span of an optim.wgsl entry point: the read-only ascent sum takes the reductions' span.
fn span_of(entry: &str) -> u32 {
    if entry == "ascent_partial" {
        SPAN
    } else {
        UPDATE_SPAN
    }
}

impl Optimizer {
    /// Allocate the state for `params` (moments, backup, reference copy as the method needs).
    /// A TRAM-θ reference starts as a copy of the current (pre-trained) parameters.
    pub fn new(gpu: &Gpu, params: &ParamSet, cfg: OptimConfig) -> Result<Self> {
        let m = params.like(gpu, "optim.m")?;
        let v = match cfg.base {
            Base::AdamW { .. } => Some(params.like(gpu, "optim.v")?),
            Base::Sgd { .. } => None,
        };
        let backup = match cfg.method {
            Method::Plain | Method::R3f { .. } | Method::TrustRegion { .. } => None,
            _ => Some(params.like(gpu, "optim.backup")?),
        };
        let reference = match cfg.method {
            Method::Tram { reference: TramRef::Params { .. }, .. } | Method::TrustRegion { .. } => {
                let r = params.with_values(params.like(gpu, "optim.reference")?);
                let mut rec = gpu.recorder();
                for (src, dst) in params.params.chunks().iter().zip(r.params.chunks()) {
                    rec.copy(src, dst)?;
                }
                rec.submit()?;
                Some(r)
            }
            _ => None,
        };
        // Partial sums of the updates (the widest use of `parts`; the ascent's are fewer).
        let groups: usize = params.params.chunks().iter().map(|c| c.len().div_ceil(UPDATE_SPAN as usize)).sum();
        Ok(Optimizer {
            cfg,
            step: 0,
            m,
            v,
            backup,
            reference,
            scal: gpu.zeros(&[slot::LEN])?,
            parts: gpu.zeros(&[groups.max(1)])?,
            cur_logits: None,
            loss1: gpu.zeros(&[2])?,
        })
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f32 {
        self.cfg.lr * self.cfg.schedule.factor(self.step)
    }

    fn train(&self, pass: u64) -> Train {
        Train { seed: self.cfg.seed, step: self.step * 4 + pass }
    }

    /// Record one full step on the batch the model holds: every pass, the ascent, the
    /// restore and the base update. Nothing is read back.
    pub fn step(&mut self, rec: &mut Recorder, model: &dyn TrainModel) -> Result<()> {
        let p = model.params();
        p.zero_grads(rec);
        match self.cfg.method {
            Method::Plain => {
                model.forward(rec, p, Some(self.train(0)), None)?;
                rec.copy(model.loss(), &self.loss1)?;
                model.backward(rec)?;
            }
            Method::Sam { rho } => self.sharpness_step(rec, model, 0, 0.0, rho, false)?,
            Method::Asam { rho, eta } => self.sharpness_step(rec, model, 1, eta, rho, false)?,
            Method::Fsam { gamma, eta } => self.sharpness_step(rec, model, 2, eta, gamma, false)?,
            Method::Tram { adaptive, .. } => {
                self.sharpness_step(rec, model, if adaptive { 1 } else { 0 }, 0.0, 1.0, true)?
            }
            Method::TramFisher { gamma, eta, .. } => self.sharpness_step(rec, model, 2, eta, gamma, false)?,
            Method::R3f { lambda, std, uniform, kl } => {
                let Some((aux_logits, aux_dlogits)) = model.aux() else {
                    return shape_err("optim", "R3F needs a model with an auxiliary activation set");
                };
                model.forward(rec, p, Some(self.train(0)), None)?;
                rec.copy(model.loss(), &self.loss1)?;
                model.forward_aux(rec, p, Some(self.train(1)), Some(Noise { std, uniform, key: self.noise_key() }))?;
                let (coef, w) = mean_kl_coef(model, lambda);
                // The clean branch adds the KL gradient to its CE gradient; the noised branch
                // gets the KL gradient alone.
                rec.zero(aux_dlogits);
                kl_backward(rec, aux_logits, model.logits(), model.dlogits(), Some(aux_dlogits), kl, coef, true, w)?;
                model.backward(rec)?;
                model.backward_aux(rec)?;
            }
            Method::TrustRegion { lambda, .. } => {
                let r = self.reference.as_ref().expect("reference allocated");
                model.forward(rec, r, None, None)?;
                let cur = self.logits_buffer(rec.gpu(), model.logits())?;
                rec.copy(model.logits(), &cur)?;
                model.forward(rec, p, Some(self.train(0)), None)?;
                rec.copy(model.loss(), &self.loss1)?;
                let (coef, w) = mean_kl_coef(model, lambda);
                kl_backward(rec, &cur, model.logits(), model.dlogits(), None, KlKind::Forward, coef, true, w)?;
                model.backward(rec)?;
                self.update_reference(rec, p)?;
            }
        }
        self.base_update(rec, p)?;
        self.guard(rec, p)?;
        self.step += 1;
        Ok(())
    }

    /// The finite guard (shaders/guard.wgsl), last in the step's submit: the parameters' norm
    /// from the base update's partial sums, then a check of every scalar of the step; the first
    /// non-finite one is recorded with its step on the GPU and read with the next
    /// [`Optimizer::metrics`].
    fn guard(&self, rec: &mut Recorder, p: &ParamSet) -> Result<()> {
        let groups: usize = p.params.chunks().iter().map(|c| c.len().div_ceil(UPDATE_SPAN as usize)).sum();
        reduce_prefix(rec, &self.parts, groups, &self.scal, slot::PARAM_NORM, true)?;
        let k = rec.gpu().kernel(&KernelSpec::new("guard", "finite_guard", 2))?;
        let prm = Params::new().n(self.step as usize + 1).n(slot::LOSS).n(slot::BAD_STEP).n(slot::BAD_WHAT);
        rec.dispatch(&k, prm, &[&self.loss1, &self.scal], [1, 1, 1])
    }

    /// Pass 1 at θ; (TRAM) the reference pass and d; ascent to θ + ε; pass at θ + ε; restore.
    fn sharpness_step(
        &mut self,
        rec: &mut Recorder,
        model: &dyn TrainModel,
        mode: u32,
        eta: f32,
        radius: f32,
        tram: bool,
    ) -> Result<()> {
        let gpu = rec.gpu();
        let p = model.params();
        let noise = match self.cfg.method {
            Method::TramFisher { std, uniform, .. } => Some(Noise { std, uniform, key: self.noise_key() }),
            _ => None,
        };
        model.forward(rec, p, Some(self.train(0)), noise)?;
        rec.copy(model.loss(), &self.loss1)?;
        model.backward(rec)?;
        if let Method::Tram { reference, kl, kl_norm, tr_scale, .. } = self.cfg.method {
            let logits = model.logits();
            let cur = self.logits_buffer(gpu, logits)?;
            rec.copy(logits, &cur)?;
            match reference {
                TramRef::Noise { std, uniform } => {
                    model.forward(rec, p, Some(self.train(1)), Some(Noise { std, uniform, key: self.noise_key() }))?;
                }
                TramRef::Params { .. } => {
                    let r = self.reference.as_ref().expect("reference allocated for TRAM-θ");
                    model.forward(rec, r, None, None)?;
                }
            }
            let scale = match kl_norm {
                KlNorm::Mean => tr_scale,
                KlNorm::ReferenceCode => tr_scale / logits.cols() as f32,
            };
            // d = D(reference ‖ current) with the reference as the first (target) argument.
            // The mean over rows (over a language model's real tokens).
            kl_mean(rec, model.logits(), &cur, &self.scal, slot::D, kl, scale, model.row_weights())?;
        }
        self.ascend(rec, p, mode, eta, radius, tram)?;
        p.zero_grads(rec);
        model.forward(rec, p, Some(self.train(2)), None)?;
        model.backward(rec)?;
        // Restore θ bitwise from the backup.
        let backup = self.backup.as_ref().expect("backup allocated");
        for (b, w) in backup.chunks().iter().zip(p.params.chunks()) {
            rec.copy(b, w)?;
        }
        // TRAM-θ: the reference moves towards θ_t (the restored, unperturbed parameters)
        // before the base step (tram.md §1.3.3).
        self.update_reference(rec, p)
    }

    /// `ref ← decay·ref + (1 − decay)·θ` (a bitwise copy for decay 0, nothing for decay 1).
    fn update_reference(&self, rec: &mut Recorder, p: &ParamSet) -> Result<()> {
        let decay = match self.cfg.method {
            Method::Tram { reference: TramRef::Params { ema_decay }, .. } | Method::TrustRegion { ema_decay, .. } => {
                ema_decay
            }
            _ => return Ok(()),
        };
        let Some(r) = &self.reference else { return Ok(()) };
        for (w, rc) in p.params.chunks().iter().zip(r.params.chunks()) {
            if decay == 0.0 {
                rec.copy(w, rc)?;
            } else if decay < 1.0 {
                crate::ops::elementwise::axpby(rec, 1.0 - decay, w, decay, rc)?;
            }
        }
        Ok(())
    }

    /// The key of this step's input noise.
    fn noise_key(&self) -> RngKey {
        RngKey { seed: self.cfg.seed ^ 0x7a3d_0000_0000_0000, offset: self.step }
    }

    /// A buffer shaped like `logits`, kept across steps, for a copy of one pass's logits.
    fn logits_buffer(&mut self, gpu: &Gpu, logits: &Tensor) -> Result<Tensor> {
        if self.cur_logits.as_ref().map(|t| t.shape() != logits.shape()).unwrap_or(true) {
            self.cur_logits = Some(gpu.zeros(logits.shape())?);
        }
        Ok(self.cur_logits.clone().unwrap())
    }

    /// θ_old ← θ; θ ← θ + r a ⊙ g / sqrt(Σ a g²), the radius r read from the GPU for TRAM.
    pub fn ascend(
        &mut self,
        rec: &mut Recorder,
        p: &ParamSet,
        mode: u32,
        eta: f32,
        radius: f32,
        use_d: bool,
    ) -> Result<()> {
        let gpu = rec.gpu();
        let backup = match &self.backup {
            Some(b) => b,
            None => return shape_err("optim", "this method has no ascent"),
        };
        let dummy = gpu.dummy_tensor();
        let mut at = 0;
        for (w, g) in p.params.chunks().iter().zip(p.grads.chunks()) {
            let k1 = gpu.kernel(&optim_spec("ascent_partial", w.len(), mode, false)?)?;
            let groups = w.len().div_ceil(span_of("ascent_partial") as usize);
            let prm = ascent_params(w.len(), mode, 0, at, eta, 0.0);
            rec.dispatch(&k1, prm, &[w, g, &dummy, &dummy, &self.scal, &self.parts], grid(gpu, groups)?)?;
            at += groups;
        }
        reduce_prefix(rec, &self.parts, at, &self.scal, slot::ASCENT, false)?;
        for ((w, g), b) in p.params.chunks().iter().zip(p.grads.chunks()).zip(backup.chunks()) {
            let k2 = gpu.kernel(&optim_spec("ascent", w.len(), mode, use_d)?)?;
            let prm = ascent_params(w.len(), mode, slot::ASCENT, slot::D, eta, radius);
            let groups = grid(gpu, (w.len() / 4).div_ceil(WG_REDUCE as usize))?;
            rec.dispatch(&k2, prm, &[w, g, b, &dummy, &self.scal, &dummy], groups)?;
        }
        Ok(())
    }

    /// Clip (when configured) and apply the base update with the current gradients.
    fn base_update(&mut self, rec: &mut Recorder, p: &ParamSet) -> Result<()> {
        let gpu = rec.gpu();
        let grads: Vec<&Tensor> = p.grads.chunks().iter().collect();
        reduce(rec, &grads, Reduction::L2Norm, 1.0, &self.scal, slot::GRAD_NORM, false)?;
        let lr = self.lr();
        let clip = self.cfg.clip.unwrap_or(0.0);
        let t = (self.step + 1) as i32;
        // Each chunk's partial sums of w^2 go to `parts` from offset `at` (for the guard).
        let mut at = 0;
        for (i, (w, g)) in p.params.chunks().iter().zip(p.grads.chunks()).enumerate() {
            let m = &self.m.chunks()[i];
            let spans = w.len().div_ceil(UPDATE_SPAN as usize);
            let groups = grid(gpu, spans)?;
            match self.cfg.base {
                Base::AdamW { beta1, beta2, eps, weight_decay } => {
                    let v = &self.v.as_ref().expect("adam state").chunks()[i];
                    let prm = Params::new()
                        .n(w.len())
                        .u(0)
                        .n(slot::GRAD_NORM)
                        .n(at)
                        .f(lr)
                        .f(beta1)
                        .f(beta2)
                        .f(eps)
                        .f(weight_decay)
                        .f(1.0 - beta1.powi(t))
                        .f(1.0 - beta2.powi(t))
                        .f(clip)
                        .f(0.0)
                        .f(0.0)
                        .f(0.0)
                        .u(0);
                    let k = gpu.kernel(&optim_spec("adamw", w.len(), 0, false)?)?;
                    rec.dispatch(&k, prm, &[w, g, m, v, &self.scal, &self.parts], groups)?;
                }
                Base::Sgd { momentum, nesterov, weight_decay } => {
                    let prm = Params::new()
                        .n(w.len())
                        .u(if self.step == 0 { 1 } else { 0 })
                        .n(slot::GRAD_NORM)
                        .n(at)
                        .f(lr)
                        .f(0.0)
                        .f(0.0)
                        .f(0.0)
                        .f(weight_decay)
                        .f(1.0)
                        .f(1.0)
                        .f(clip)
                        .f(0.0)
                        .f(0.0)
                        .f(momentum)
                        .u(nesterov as u32);
                    let d = gpu.dummy_tensor();
                    let k = gpu.kernel(&optim_spec("sgd", w.len(), 0, false)?)?;
                    rec.dispatch(&k, prm, &[w, g, m, &d, &self.scal, &self.parts], groups)?;
                }
            }
            at += spans;
        }
        Ok(())
    }

    /// Read the last step's scalars back (one small readback): its loss at θ, the gradient
    /// norm, d, the parameters' norm, and the finite guard's record of the whole run.
    pub async fn metrics(&self, gpu: &Gpu) -> Result<Metrics> {
        let s = gpu.read_f32(&self.scal).await?;
        let d = if matches!(self.cfg.method, Method::Tram { .. }) { s[slot::D] } else { 0.0 };
        let nonfinite =
            (s[slot::BAD_STEP] != 0.0).then(|| (s[slot::BAD_STEP] as u64, slot::names(s[slot::BAD_WHAT] as u32)));
        Ok(Metrics {
            loss: s[slot::LOSS],
            grad_norm: s[slot::GRAD_NORM],
            d,
            param_norm: s[slot::PARAM_NORM],
            nonfinite,
        })
    }

    /// The state a resumed run needs, as named tensors (`m.<param>`, `v.<param>`,
    /// `ref.<param>`); with [`Optimizer::step`] and the config (which holds the seed every
    /// dropout and noise key derives from) it continues the run bitwise.
    pub async fn state(&self, gpu: &Gpu, params: &ParamSet) -> Result<Vec<(String, HostTensor)>> {
        let mut out = Vec::new();
        let mut list = vec![("m", &self.m)];
        if let Some(v) = &self.v {
            list.push(("v", v));
        }
        if let Some(r) = &self.reference {
            list.push(("ref", &r.params));
        }
        for (prefix, arena) in list {
            for (i, n) in params.params.names().iter().enumerate() {
                let data = arena.read(gpu, i).await?;
                let shape = arena.shape(i).to_vec();
                out.push((format!("{prefix}.{n}"), HostTensor { shape, data, dtype: safetensors::Dtype::F32 }));
            }
        }
        Ok(out)
    }

    /// Restore what [`Optimizer::state`] saved, and the step count.
    pub fn load_state(&mut self, gpu: &Gpu, params: &ParamSet, w: &Weights, step: u64) -> Result<()> {
        let put = |prefix: &str, arena: &Arena| -> Result<()> {
            for (i, n) in params.params.names().iter().enumerate() {
                arena.write(gpu, i, &w.get(&format!("{prefix}.{n}"), arena.shape(i))?.data)?;
            }
            Ok(())
        };
        put("m", &self.m)?;
        if let Some(v) = &self.v {
            put("v", v)?;
        }
        if let Some(r) = &self.reference {
            put("ref", &r.params)?;
        }
        self.step = step;
        Ok(())
    }

    /// Bytes of the optimizer's per-parameter state on the device: moments, the backup of a
    /// sharpness-aware step, a trust-region reference copy.
    pub fn state_bytes(&self) -> u64 {
        let sum = |a: &Arena| a.chunks().iter().map(|c| c.bytes()).sum::<u64>();
        sum(&self.m)
            + self.v.as_ref().map(sum).unwrap_or(0)
            + self.backup.as_ref().map(sum).unwrap_or(0)
            + self.reference.as_ref().map(|r| sum(&r.params)).unwrap_or(0)
    }

    /// The GPU scalar buffer (see [`slot`]).
    pub fn scalars(&self) -> &Tensor {
        &self.scal
    }

    /// The parameter backup (θ before the last ascent), for tests and inspection.
    pub fn backup(&self) -> Option<&Arena> {
        self.backup.as_ref()
    }
}

/// Parameters of the ascent kernels (the optim.wgsl `Params` layout; base-update fields 0).
fn ascent_params(n: usize, mode: u32, s_in: usize, s_out: usize, eta: f32, radius: f32) -> Params {
    let mut p = Params::new().n(n).u(mode).n(s_in).n(s_out);
    for _ in 0..8 {
        p = p.f(0.0);
    }
    p.f(eta).f(radius).f(0.0).u(0)
}

/// `out[slot] = sum of the first n values of parts` (its square root when `sqrt`).
fn reduce_prefix(rec: &mut Recorder, parts: &Tensor, n: usize, out: &Tensor, slot: usize, sqrt: bool) -> Result<()> {
    let gpu = rec.gpu();
    let k = gpu.kernel(
        &KernelSpec::new("reduce", "finish", 2)
            .u("WG", WG_REDUCE)
            .u("SPAN", SPAN)
            .u("RB", crate::ops::RB)
            .b("SQUARE", false)
            .b("SQRT", sqrt)
            .b("ACC", false),
    )?;
    rec.dispatch(&k, Params::new().n(n).u(0).n(slot).u(0).f(1.0).u(0).u(0).u(0), &[parts, out], [1, 1, 1])
}
