//! LoRA (Hu et al. 2021, as Hugging Face PEFT defines it) on any [`Linear`]: `y = x W^T + b +
//! s . (x A^T) B^T` with `A` `[r, in]`, `B` `[out, r]` and `s = alpha / r`. The base weight and
//! bias are frozen (no gradient, no optimizer state); `A` starts uniform in ±1/sqrt(in) (PEFT's
//! Kaiming-uniform with a = sqrt 5) and `B` at zero, so the adapted model starts as the base.
//!
//! Adapters are named like PEFT's (`NAME.lora_A.weight`, `NAME.lora_B.weight` beside the base
//! `NAME.weight`), so a saved adapter file is PEFT's once its names get the `base_model.model.`
//! prefix. A GPT-2 `c_attn` (Q, K and V in one `Conv1D`) carries one adapter whose `B` rows are
//! split between the three column blocks, as PEFT adapts the fused weight.

use super::layers::{mm, view, Linear};
use super::ParamSet;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder, Tensor};
use std::sync::{Arc, Mutex};

/// What a Linear does in its block, the unit `--lora-targets` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];
    pub fn name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }
    /// Parse a comma-separated list (`q,k,v,o,up,down,gate`); `all` is every one.
    pub fn parse_list(s: &str) -> Result<Vec<Target>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                out.extend(Target::ALL);
                continue;
            }
            match Target::ALL.iter().find(|t| t.name() == part) {
                Some(t) => out.push(*t),
                None => {
                    return Err(Error::BadSetting {
                        name: "--lora-targets",
                        value: s.to_string(),
                        expected: "a comma-separated list of q, k, v, o, gate, up, down (or all)".into(),
                    })
                }
            }
        }
        out.sort_by_key(|t| *t as u8);
        out.dedup();
        if out.is_empty() {
            return Err(Error::BadSetting {
                name: "--lora-targets",
                value: s.to_string(),
                expected: "at least one of q, k, v, o, gate, up, down".into(),
            });
        }
        Ok(out)
    }
}

/// The roles of a Linear called `name` (its Hugging Face module name, without `.weight`), in
/// every family tramway reads; `None` for Linears that are not in a block (heads, patch
/// projections). GPT-2's fused `c_attn` is Q, K and V at once.
pub fn roles_of(name: &str) -> Option<&'static [Target]> {
    const TABLE: &[(&str, &[Target])] = &[
        // GPT-2 (Conv1D)
        (".attn.c_attn", &[Target::Q, Target::K, Target::V]),
        (".attn.c_proj", &[Target::O]),
        (".mlp.c_fc", &[Target::Up]),
        (".mlp.c_proj", &[Target::Down]),
        // LLaMA, Qwen2
        (".self_attn.q_proj", &[Target::Q]),
        (".self_attn.k_proj", &[Target::K]),
        (".self_attn.v_proj", &[Target::V]),
        (".self_attn.o_proj", &[Target::O]),
        (".mlp.gate_proj", &[Target::Gate]),
        (".mlp.up_proj", &[Target::Up]),
        (".mlp.down_proj", &[Target::Down]),
        // BERT, RoBERTa, ViT
        (".attention.self.query", &[Target::Q]),
        (".attention.self.key", &[Target::K]),
        (".attention.self.value", &[Target::V]),
        (".attention.attention.query", &[Target::Q]),
        (".attention.attention.key", &[Target::K]),
        (".attention.attention.value", &[Target::V]),
        (".attention.output.dense", &[Target::O]),
        (".intermediate.dense", &[Target::Up]),
        (".output.dense", &[Target::Down]),
    ];
    TABLE.iter().find(|(suffix, _)| name.ends_with(suffix)).map(|(_, r)| *r)
}

/// Which Linears get adapters and their size.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
    /// Dropout on each adapter's input while training (PEFT's `lora_dropout`).
    pub dropout: f32,
    /// The roles adapted (`--lora-targets`).
    pub targets: Vec<Target>,
    /// Exactly these Linears (module names without `.weight`) instead of `targets`: an
    /// adapter read from a file.
    pub modules: Option<Vec<String>>,
    /// rsLoRA's scale `alpha / sqrt(rank)`.
    pub rslora: bool,
}

impl LoraConfig {
    /// Adapters of `rank` on the Linears of `targets`, scale `alpha / rank`.
    pub fn new(rank: usize, alpha: f32, targets: Vec<Target>) -> Self {
        LoraConfig { rank, alpha, dropout: 0.0, targets, modules: None, rslora: false }
    }
    /// `alpha / rank`, PEFT's scaling (`alpha / sqrt(rank)` with rsLoRA).
    pub fn scale(&self) -> f32 {
        if self.rslora {
            self.alpha / (self.rank as f32).sqrt()
        } else {
            self.alpha / self.rank as f32
        }
    }
    /// Refuse a rank of 0 or a non-finite alpha.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::BadSetting {
                name: "--lora-rank",
                value: "0".into(),
                expected: "a positive rank (8 or 16 are usual)".into(),
            });
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::BadSetting {
                name: "--lora-alpha",
                value: self.alpha.to_string(),
                expected: "a positive finite number (PEFT's default is 8; 2 x rank is usual)".into(),
            });
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::BadSetting {
                name: "--lora-dropout",
                value: self.dropout.to_string(),
                expected: "a probability in [0, 1) (0.05 or 0.1 are usual)".into(),
            });
        }
        if self.targets.is_empty() {
            return Err(Error::BadSetting {
                name: "--lora-targets",
                value: String::new(),
                expected: "at least one of q, k, v, o, gate, up, down".into(),
            });
        }
        Ok(())
    }
    /// Whether the Linear `name` gets an adapter. A fused weight (GPT-2's `c_attn`) is adapted
    /// whole: selecting only some of its roles is an error rather than a silent superset.
    pub fn wants(&self, name: &str) -> Result<bool> {
        if let Some(m) = &self.modules {
            return Ok(m.iter().any(|x| x == name));
        }
        let Some(roles) = roles_of(name) else { return Ok(false) };
        let chosen = roles.iter().filter(|r| self.targets.contains(r)).count();
        if chosen > 0 && chosen < roles.len() {
            let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
            return Err(Error::BadSetting {
                name: "--lora-targets",
                value: self.targets.iter().map(|t| t.name()).collect::<Vec<_>>().join(","),
                expected: format!("all of {} or none: {name} holds them in one weight", names.join(", ")),
            });
        }
        Ok(chosen > 0)
    }
}

/// The adapter of one Linear: parameter ids of `A` `[r, in]` and `B` `[out, r]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraIds {
    pub a: usize,
    pub b: usize,
    pub rank: usize,
    pub scale: f32,
    pub dropout: f32,
}

/// PEFT's names of an adapter on the Linear `name`.
pub fn adapter_names(name: &str) -> (String, String) {
    (format!("{name}.lora_A.weight"), format!("{name}.lora_B.weight"))
}

/// Whether `name` is a tensor PEFT trains beside the adapters for a task head
/// (`modules_to_save` of a sequence-classification model: `classifier`, `score`).
pub fn is_head(name: &str) -> bool {
    ["classifier.", "score."].iter().any(|p| name.starts_with(p))
}

/// Whether `name` is an adapter tensor.
pub fn is_adapter(name: &str) -> bool {
    name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight")
}

/// Scratch buffers of the adapters' `[rows, r]` intermediates, shared by every adapter of a
/// model (their dispatches run one after another). They only grow; an outgrown buffer is kept
/// so nothing recorded earlier loses its memory.
#[derive(Debug, Default)]
pub struct Scratch {
    bufs: Mutex<Vec<Vec<Tensor>>>,
    /// The training mode of the pass being recorded (LoRA dropout is on in training only,
    /// its masks keyed like every dropout's so the backward regenerates them).
    train: Mutex<Option<super::Train>>,
}

impl Scratch {
    /// Buffer `slot` (0, 1: the `[rows, r]` intermediates; 2: a pre-activation) with at least
    /// `n` elements, as a flat tensor of exactly `n`.
    pub(crate) fn set_train(&self, t: Option<super::Train>) {
        *self.train.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    pub(crate) fn train(&self) -> Option<super::Train> {
        *self.train.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, gpu: &Gpu, slot: usize, n: usize) -> Result<Tensor> {
        let mut bufs = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        if bufs.len() <= slot {
            bufs.resize_with(slot + 1, Vec::new);
        }
        let list = &mut bufs[slot];
        if list.last().map(|t| t.len() < n).unwrap_or(true) {
            list.push(gpu.zeros(&[n.max(1)])?);
        }
        list.last().expect("just pushed").narrow(0, &[n])
    }
}

/// Shared by a model's parameter set and its reference copies.
pub type SharedScratch = Arc<Scratch>;

impl Linear {
    /// `y += s . (x A^T) B_blk^T` for the output columns `c0..c0+n` (`x` `[rows, in]`, `y`
    /// `[rows, n]`).
    pub(crate) fn lora_forward(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        l: &LoraIds,
        x: &Tensor,
        y: &Tensor,
        (c0, n, inp): (usize, usize, usize),
    ) -> Result<()> {
        let rows = x.len() / inp;
        let r = l.rank;
        let t = p.lora_scratch(rec.gpu(), 0, rows * r)?;
        let (a, b) = (p.p(l.a), p.p(l.b));
        let xd = dropped_input(rec, p, l, x)?;
        let x = xd.as_ref().unwrap_or(x);
        rec_mm(rec, mm(rows, r, inp, view(x, 0, inp, 1), view(a, 0, 1, inp), view(&t, 0, r, 1)), 1.0, false)?;
        rec_mm(rec, mm(rows, n, r, view(&t, 0, r, 1), view(b, c0 * r, 1, r), view(y, 0, n, 1)), l.scale, true)
    }

    /// Backward of [`Linear::lora_forward`] from `dy` `[rows, n]`: `dB_blk += s dy^T t`,
    /// `dA += s u^T x` and `dx += s u A` with `t = x A^T`, `u = dy B_blk`.
    pub(crate) fn lora_backward(
        &self,
        rec: &mut Recorder,
        p: &ParamSet,
        l: &LoraIds,
        x: &Tensor,
        dy: &Tensor,
        dx: Option<&Tensor>,
        (c0, n, inp): (usize, usize, usize),
    ) -> Result<()> {
        let rows = x.len() / inp;
        let r = l.rank;
        let gpu = rec.gpu();
        let (t, u) = (p.lora_scratch(gpu, 0, rows * r)?, p.lora_scratch(gpu, 1, rows * r)?);
        let (a, b) = (p.p(l.a), p.p(l.b));
        // With dropout the adapter saw mask(x): the same mask, regenerated from its key.
        let key = dropout_key(p, l);
        let xd = dropped_input(rec, p, l, x)?;
        let x = xd.as_ref().unwrap_or(x);
        rec_mm(rec, mm(rows, r, inp, view(x, 0, inp, 1), view(a, 0, 1, inp), view(&t, 0, r, 1)), 1.0, false)?;
        rec_mm(rec, mm(rows, r, n, view(dy, 0, n, 1), view(b, c0 * r, r, 1), view(&u, 0, r, 1)), 1.0, false)?;
        if let Some(db) = p.g(l.b) {
            rec_mm(rec, mm(n, r, rows, view(dy, 0, 1, n), view(&t, 0, r, 1), view(db, c0 * r, r, 1)), l.scale, true)?;
        }
        if let Some(da) = p.g(l.a) {
            rec_mm(rec, mm(r, inp, rows, view(&u, 0, 1, r), view(x, 0, inp, 1), view(da, 0, inp, 1)), l.scale, true)?;
        }
        match (dx, key) {
            (Some(dx), None) => rec_mm(
                rec,
                mm(rows, inp, r, view(&u, 0, r, 1), view(a, 0, inp, 1), view(dx, 0, inp, 1)),
                l.scale,
                true,
            )?,
            (Some(dx), Some(key)) => {
                let tmp = p.lora_scratch(gpu, 6, rows * inp)?;
                rec_mm(
                    rec,
                    mm(rows, inp, r, view(&u, 0, r, 1), view(a, 0, inp, 1), view(&tmp, 0, inp, 1)),
                    l.scale,
                    false,
                )?;
                crate::ops::rng::dropout(rec, &tmp, dx, l.dropout, key, true)?;
            }
            (None, _) => {}
        }
        Ok(())
    }
}

/// The dropout key of an adapter's input in the pass being recorded (training, dropout > 0).
fn dropout_key(p: &ParamSet, l: &LoraIds) -> Option<crate::ops::rng::RngKey> {
    let t = p.lora_train()?;
    // Sites 0xE_0000 + A's id: apart from the layers' (1 + 3 l ...) and the head's (0xF_FFF0).
    (l.dropout > 0.0).then(|| t.key(0xE_0000 + l.a as u64))
}

/// `dropout(x)` in a scratch when the adapter's dropout is on, else `None` (use `x`).
fn dropped_input(rec: &mut Recorder, p: &ParamSet, l: &LoraIds, x: &Tensor) -> Result<Option<Tensor>> {
    let Some(key) = dropout_key(p, l) else { return Ok(None) };
    let xd = p.lora_scratch(rec.gpu(), 5, x.len())?;
    crate::ops::rng::dropout(rec, x, &xd, l.dropout, key, false)?;
    Ok(Some(xd))
}

/// Record `C (+)= alpha . A B`.
fn rec_mm(rec: &mut Recorder, mut op: crate::ops::matmul::Matmul, alpha: f32, accumulate: bool) -> Result<()> {
    op.alpha = alpha;
    if accumulate {
        op.beta = Some(1.0);
    }
    crate::ops::matmul::matmul(rec, &op)
}

/// The pre-activation scratch of an adapted Linear with a fused activation and no `pre`
/// buffer of its own.
pub(crate) fn pre_scratch(rec: &Recorder, p: &ParamSet, n: usize) -> Result<Tensor> {
    p.lora_scratch(rec.gpu(), 2, n)
}

/// A model's state with every adapter merged into its base weight and dropped: what a full
/// model folder holds (`--merge`). `linears` are the model's Linears (their layouts tell how
/// a weight is stored); each merged weight keeps its dtype.
pub fn merged_state(
    mut state: Vec<(String, crate::io::weights::HostTensor)>,
    names: &[String],
    linears: &[&Linear],
) -> Vec<(String, crate::io::weights::HostTensor)> {
    let mut done = Vec::new();
    for lin in linears {
        let Some(l) = lin.lora else { continue };
        if done.contains(&lin.w) {
            continue; // GPT-2's Q, K and V blocks: one weight, one adapter
        }
        done.push(lin.w);
        let find = |n: &str| state.iter().position(|(x, _)| x == n);
        let (Some(wi), Some(ai), Some(bi)) = (find(&names[lin.w]), find(&names[l.a]), find(&names[l.b])) else {
            continue;
        };
        let (a, b) = (state[ai].1.data.clone(), state[bi].1.data.clone());
        let out = state[bi].1.shape[0];
        let inp = state[ai].1.shape[1];
        let in_out = matches!(lin.layout, super::layers::Layout::InOut { .. });
        merge_into(&mut state[wi].1.data, &a, &b, l.rank, l.scale, (out, inp), in_out);
    }
    state.retain(|(n, _)| !is_adapter(n));
    state
}

/// Merge an adapter into its base weight on the host: `W += s . B A` for an `[out, in]`
/// weight, `W += s . (B A)^T` for a GPT-2 `Conv1D` `[in, out]` (`in_out`). f64 accumulation.
pub fn merge_into(
    w: &mut [f32],
    a: &[f32],
    b: &[f32],
    rank: usize,
    scale: f32,
    (out, inp): (usize, usize),
    in_out: bool,
) {
    for o in 0..out {
        for i in 0..inp {
            let d: f64 = (0..rank).map(|k| b[o * rank + k] as f64 * a[k * inp + i] as f64).sum();
            let at = if in_out { i * out + o } else { o * inp + i };
            w[at] = (w[at] as f64 + scale as f64 * d) as f32;
        }
    }
}
