//! The options of a fine-tuning run (`tramway finetune`), checked before any work, and what a
//! run reports.

use crate::error::{Error, Result};
use crate::optim::OptimConfig;
use std::path::PathBuf;

use super::*;

/// Everything `tramway finetune` needs.
#[derive(Clone, Debug)]
pub struct FinetuneOptions {
    pub task: TaskKind,
    pub model: PathBuf,
    pub train: PathBuf,
    pub evals: Vec<(String, PathBuf)>,
    pub text_column: String,
    pub label_column: String,
    pub optim: OptimConfig,
    pub batch_size: usize,
    /// Total steps (overrides `epochs`).
    pub steps: Option<u64>,
    pub epochs: f64,
    pub max_len: usize,
    pub eval_every: u64,
    pub save_every: u64,
    pub log_every: u64,
    /// Evaluate on at most this many examples per set (None: all).
    pub max_eval: Option<usize>,
    /// Batch size for evaluation (None: `batch_size`).
    pub eval_batch_size: Option<usize>,
    /// Side of the images a vision model sees (None: the folder's preprocessor size).
    pub image_size: Option<usize>,
    /// Write `out/final` (model + optimizer state) at the end.
    pub save_final: bool,
    pub out: PathBuf,
    pub resume: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
    pub progress: bool,
    /// Profile the run's second step (its first if it has one): every dispatch timed alone,
    /// the table written to this file (`TRAMWAY_PROFILE=FILE` when `None`).
    pub profile: Option<PathBuf>,
    /// Train LoRA adapters on a frozen base (causal LMs): checkpoints and `final/` are PEFT
    /// adapter folders for `--model`.
    pub lora: Option<crate::nn::lora::LoraConfig>,
    /// With `lora`: also write `final-merged/`, a full model folder with the adapters merged.
    pub merge: bool,
    /// Train only the classifier head on the frozen encoder (a linear probe).
    pub freeze_base: bool,
}

impl FinetuneOptions {
    /// Refuse every option that cannot make a sensible run, naming the flag and the range
    /// (the optimizer's settings included), before anything is read or computed.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, value: String, expected: &str| {
            Err(Error::BadSetting { name, value, expected: expected.to_string() })
        };
        if self.batch_size == 0 {
            return bad("--batch-size", "0".into(), "a positive number of examples per step");
        }
        if self.steps.is_none() && !(self.epochs.is_finite() && self.epochs > 0.0) {
            return bad("--epochs", self.epochs.to_string(), "a finite number of epochs > 0 (or --steps)");
        }
        let min_len = if self.task == TaskKind::CausalLm { 2 } else { 1 };
        if self.max_len < min_len {
            return bad("--max-len", self.max_len.to_string(), &format!("at least {min_len} tokens"));
        }
        if let Some(l) = &self.lora {
            l.validate()?;
            if self.task != TaskKind::CausalLm {
                return bad(
                    "--lora-rank",
                    l.rank.to_string(),
                    "a causal language model (--task causal-lm): LoRA fine-tuning of classifiers is not in the CLI yet",
                );
            }
        }
        if self.freeze_base && (self.task != TaskKind::TextClassification || self.lora.is_some()) {
            return bad(
                "--freeze-base",
                "true".into(),
                "a text classifier without --lora-rank (it trains the head alone on the frozen encoder)",
            );
        }
        if self.merge && !self.save_final {
            return bad("--merge", "true".into(), "final/ to merge: drop --no-save");
        }
        if self.merge && self.lora.is_none() {
            return bad(
                "--merge",
                "true".into(),
                "--lora-rank as well (a full fine-tune's final/ is already a full model)",
            );
        }
        if self.log_every == 0 {
            return bad("--log-every", "0".into(), "a positive number of steps");
        }
        if self.max_eval == Some(0) {
            return bad("--max-eval", "0".into(), "a positive number of examples (omit it to use every example)");
        }
        if self.eval_batch_size == Some(0) {
            return bad("--eval-batch-size", "0".into(), "a positive number of examples");
        }
        if let Some(s) = self.image_size.filter(|&s| s == 0 || s > crate::data::image::MAX_PREP_SIZE) {
            return bad(
                "--image-size",
                s.to_string(),
                &format!(
                    "a positive multiple of the model's patch size, at most {}",
                    crate::data::image::MAX_PREP_SIZE
                ),
            );
        }
        if self.evals.is_empty() {
            let given = [
                ("--eval-every", (self.eval_every > 0).then_some(self.eval_every as usize)),
                ("--max-eval", self.max_eval),
                ("--eval-batch-size", self.eval_batch_size),
            ];
            if let Some((flag, Some(v))) = given.into_iter().find(|(_, v)| v.is_some()) {
                return bad(flag, v.to_string(), "no value without an --eval NAME=PATH set: it would have no effect");
            }
        }
        let mut names: Vec<&str> = self.evals.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return bad("--eval", w[0].to_string(), "a different NAME for each evaluation set");
        }
        self.optim.validate()
    }
}

/// One evaluation result.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalResult {
    pub name: String,
    pub loss: f64,
    pub accuracy: f64,
    pub examples: usize,
}

/// What a run ends with.
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: u64,
    pub final_loss: f32,
    pub evals: Vec<EvalResult>,
    pub seconds: f64,
    /// The device memory the run planned.
    pub memory: MemoryPlan,
}

/// Device memory of a run by purpose, in bytes (buffers as allocated: tensors padded to 256
/// bytes, arenas' chunks whole).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemoryPlan {
    /// Parameters without gradients (a LoRA run's base model) and how many.
    pub frozen: u64,
    pub frozen_params: usize,
    /// Parameters that train and how many.
    pub trainable: u64,
    pub trainable_params: usize,
    pub gradients: u64,
    /// Moments, a sharpness-aware backup, a trust-region reference.
    pub optimizer: u64,
    /// The largest training batch's activations and scratch buffers (a language model's; 0
    /// where they are planned per batch shape as batches come).
    pub activations: u64,
}

impl MemoryPlan {
    /// The plan of a model's parameters, its optimizer and `activations` bytes.
    pub fn of(p: &crate::nn::ParamSet, opt: &crate::optim::Optimizer, activations: u64) -> Self {
        let (trainable, frozen) = p.bytes();
        let gradients = p.grads.chunks().iter().map(|c| c.bytes()).sum();
        let trainable_params = p.trainable_count();
        MemoryPlan {
            frozen,
            frozen_params: p.count() - trainable_params,
            trainable,
            trainable_params,
            gradients,
            optimizer: opt.state_bytes(),
            activations,
        }
    }
    pub fn total(&self) -> u64 {
        self.frozen + self.trainable + self.gradients + self.optimizer + self.activations
    }
    /// One line for the start of a run.
    pub fn describe(&self) -> String {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
        let per =
            |b: u64, n: usize| if n == 0 { String::new() } else { format!(", {:.2} B each", b as f64 / n as f64) };
        let m = |n: usize| format!("{:.2}M", n as f64 / 1e6);
        let mut s = format!("GPU memory planned: {} =", mib(self.total()));
        if self.frozen > 0 {
            s += &format!(
                " frozen weights {} ({} parameters{}) +",
                mib(self.frozen),
                m(self.frozen_params),
                per(self.frozen, self.frozen_params)
            );
        }
        s += &format!(
            " trainable {} ({}{}) + gradients {} + optimizer state {} + activations and scratch {}",
            mib(self.trainable),
            m(self.trainable_params),
            per(self.trainable, self.trainable_params),
            mib(self.gradients),
            mib(self.optimizer),
            if self.activations > 0 { mib(self.activations) } else { "(per batch shape)".into() }
        );
        s
    }
}

impl Summary {
    /// What `tramway finetune` prints at the end: steps, time and last loss, each evaluation
    /// (accuracy, or perplexity for a language model), where the model and plot went.
    pub fn describe(&self, o: &FinetuneOptions) -> String {
        let mut out = if self.steps == 0 {
            format!("no training steps (--steps 0): the starting model evaluated in {:.0} s\n", self.seconds)
        } else {
            format!("{} steps in {:.0} s, last training loss {:.4}\n", self.steps, self.seconds, self.final_loss)
        };
        for e in &self.evals {
            out += &if e.accuracy.is_nan() {
                format!(
                    "eval {:<20} perplexity {:.4}  loss {:.4}  ({} tokens)\n",
                    e.name,
                    e.loss.exp(),
                    e.loss,
                    e.examples
                )
            } else {
                format!(
                    "eval {:<20} accuracy {:.4}  loss {:.4}  ({} examples)\n",
                    e.name, e.accuracy, e.loss, e.examples
                )
            };
        }
        if o.save_final {
            out += &format!("model saved to {}\n", o.out.join("final").display());
        }
        out + &format!("plot: {}\n", o.out.join("plot.png").display())
    }
}
