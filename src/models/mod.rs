//! Models with explicit forward and backward, each a composition of [`crate::nn`]'s layers and
//! blocks: a family's file holds its `config.json` reader, its embeddings and head, and the
//! names of its tensors.
//!
//! [`FAMILIES`] is the one table from a config's `model_type` to what reads it: add a family by
//! writing its file and one line here.

pub mod encoder;
pub mod gpt2;
pub mod llama;
pub mod lm;
pub mod qwen2;
pub mod vit;

use crate::error::{model_err, Result};
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::io::weights::Weights;
use crate::nn::{Noise, ParamSet, Train};
pub use encoder::{Encoder, EncoderKind};
pub use vit::VisionKind;

/// Builds a causal LM from its config text (`file` names it in errors) and weights.
pub type LoadLm = fn(&Gpu, &str, &str, &Weights, &Build) -> Result<lm::CausalLm>;

/// How a model is built beyond its config and weights.
#[derive(Clone, Debug, Default)]
pub struct Build {
    /// Seeds whatever is initialised here (a new head, LoRA's `A`).
    pub seed: u64,
    /// LoRA adapters on the Linears it selects; the base model frozen.
    pub lora: Option<crate::nn::lora::LoraConfig>,
    /// Freeze everything but a classifier head (a linear probe of the frozen features).
    pub freeze_base: bool,
}

/// What a `model_type` is.
#[derive(Clone, Copy)]
pub enum Family {
    /// A text encoder with a sequence-classification head ([`encoder::Encoder`]).
    Encoder(EncoderKind),
    /// A vision transformer with an image-classification head ([`vit::Vit`]).
    Vision(VisionKind),
    /// A causal language model ([`lm::CausalLm`]) and its family's loader.
    CausalLm(LoadLm),
}

/// Every supported `model_type`.
pub const FAMILIES: &[(&str, Family)] = &[
    ("bert", Family::Encoder(EncoderKind::Bert)),
    ("roberta", Family::Encoder(EncoderKind::Roberta)),
    ("xlm-roberta", Family::Encoder(EncoderKind::Roberta)),
    ("camembert", Family::Encoder(EncoderKind::Roberta)),
    ("vit", Family::Vision(VisionKind::Vit)),
    ("dinov2", Family::Vision(VisionKind::Dinov2)),
    ("gpt2", Family::CausalLm(gpt2::from_config)),
    ("llama", Family::CausalLm(llama::from_config)),
    ("qwen2", Family::CausalLm(qwen2::from_config)),
];

/// The family of `model_type` (from a config `file`); an error lists the supported ones.
pub fn family(file: &str, model_type: Option<&str>) -> Result<Family> {
    let supported = || FAMILIES.iter().map(|(t, _)| format!("{t:?}")).collect::<Vec<_>>().join(", ");
    match model_type {
        Some(t) => match FAMILIES.iter().find(|(name, _)| *name == t) {
            Some((_, f)) => Ok(*f),
            None => model_err(file, format!("model_type {t:?} is not supported (tramway reads {})", supported())),
        },
        None => model_err(file, format!("model_type is missing (expected one of {})", supported())),
    }
}

/// The family of a `config.json` text.
pub fn family_of_config(file: &str, text: &str) -> Result<Family> {
    let v: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return model_err(file, format!("not valid JSON: {e}")),
    };
    family(file, v.get("model_type").and_then(|m| m.as_str()))
}

/// A `config.json` text parsed (a JSON object) and what `pick` takes from the family its
/// `model_type` names; a family `pick` refuses is an error saying the model is not `what`.
pub(crate) fn read_config<K>(
    file: &str,
    text: &str,
    pick: impl Fn(Family) -> Option<K>,
    what: &str,
) -> Result<(serde_json::Value, K)> {
    let raw = crate::io::config::Keys::parse(file, text)?;
    let t = raw.get("model_type").and_then(|m| m.as_str()).map(str::to_string);
    match pick(family(file, t.as_deref())?) {
        Some(k) => Ok((raw, k)),
        None => model_err(file, format!("model_type {:?} is not {what}", t.unwrap_or_default())),
    }
}

/// `raw` (a loaded config.json) with `architectures = [arch]`.
pub(crate) fn with_architecture(raw: &serde_json::Value, arch: &str) -> serde_json::Value {
    let mut v = raw.clone();
    if let Some(m) = v.as_object_mut() {
        m.insert("architectures".into(), serde_json::json!([arch]));
    }
    v
}

/// Check a token batch (`batch` x `seq`, `ids` and `mask`) against the activations' planned
/// shape; `op` names the model in errors.
pub(crate) fn check_tokens(
    op: &'static str,
    planned: (usize, usize),
    (batch, seq): (usize, usize),
    ids: &[u32],
    mask: &[u32],
) -> Result<()> {
    let n = batch * seq;
    if (batch, seq) != planned {
        let (pb, ps) = planned;
        return crate::error::shape_err(
            op,
            format!("batch is {batch}x{seq} but the activations were planned for {pb}x{ps}"),
        );
    }
    if ids.len() != n || mask.len() != n {
        let (i, m) = (ids.len(), mask.len());
        return crate::error::shape_err(op, format!("ids ({i}) and mask ({m}) must have batch x seq = {n} entries"));
    }
    Ok(())
}

/// A causal LM from its config text and weights, whatever its family.
pub fn load_causal_lm(gpu: &Gpu, file: &str, text: &str, w: &Weights, seed: u64) -> Result<lm::CausalLm> {
    load_causal_lm_with(gpu, file, text, w, &Build { seed, ..Default::default() })
}

/// [`load_causal_lm`] as `b` says.
pub fn load_causal_lm_with(gpu: &Gpu, file: &str, text: &str, w: &Weights, b: &Build) -> Result<lm::CausalLm> {
    match family_of_config(file, text)? {
        Family::CausalLm(load) => load(gpu, file, text, w, b),
        _ => model_err(file, "this model is not a causal language model"),
    }
}

/// A model as the optimizer drives it: forward passes with a chosen parameter set and optional
/// input noise, and a backward pass of the last forward's loss. One model + one batch's
/// activations; the batch is uploaded before the step.
pub trait TrainModel {
    /// The trainable parameters and their gradients.
    fn params(&self) -> &ParamSet;
    /// Record a forward pass with loss (labels uploaded) using `params`.
    fn forward(&self, rec: &mut Recorder, params: &ParamSet, train: Option<Train>, noise: Option<Noise>) -> Result<()>;
    /// Record the backward pass of the last forward's loss (+= into the gradients).
    fn backward(&self, rec: &mut Recorder) -> Result<()>;
    /// The logits written by the last forward.
    fn logits(&self) -> &Tensor;
    /// `[loss, count]` written by the last forward.
    fn loss(&self) -> &Tensor;
    /// The gradient of the loss w.r.t. the logits, written by the last forward (regularisers
    /// add theirs into it before [`TrainModel::backward`]).
    fn dlogits(&self) -> &Tensor;
    /// Per-row weights of the logits for the KL terms (TRAM's d, R3F, TRPO/MESA), summing to 1:
    /// a language model's real tokens (padding excluded). `None`: every row counts the same.
    fn row_weights(&self) -> Option<&Tensor> {
        None
    }
    /// R3F's second branch: a forward on a separate activation set that stays alive for
    /// [`TrainModel::backward_aux`]. Models without one refuse R3F.
    fn forward_aux(
        &self,
        _rec: &mut Recorder,
        _params: &ParamSet,
        _train: Option<Train>,
        _noise: Option<Noise>,
    ) -> Result<()> {
        no_aux()
    }
    /// Logits and logit-gradient buffer of the auxiliary branch.
    fn aux(&self) -> Option<(&Tensor, &Tensor)> {
        None
    }
    /// Backward of the auxiliary branch from its logit gradient, leaving out the embedding
    /// table the noise was added to (its input was detached).
    fn backward_aux(&self, _rec: &mut Recorder) -> Result<()> {
        no_aux()
    }
}

fn no_aux() -> Result<()> {
    crate::error::shape_err("optim", "this model has no auxiliary activation set (needed by R3F)")
}

/// How one forward pass runs.
#[derive(Clone, Copy)]
pub struct Run<'a> {
    /// The parameters to run with: the model's own, or another set of the same layout (a
    /// trust-region reference copy).
    pub params: &'a ParamSet,
    /// Also compute the loss and dlogits (the batch holds labels or targets).
    pub with_loss: bool,
    /// Training mode: dropout on, its masks keyed by this.
    pub train: Option<Train>,
    /// Noise added to the input embeddings (TRAM-x, R3F).
    pub noise: Option<Noise>,
}

/// A model with per-batch activation sets, as [`Task`] drives it.
pub trait TaskModel {
    type Acts;
    fn params(&self) -> &ParamSet;
    /// Forward on `acts` as `run` says.
    fn forward_acts(&self, rec: &mut Recorder, acts: &Self::Acts, run: Run) -> Result<()>;
    /// Backward from `dlogits`; `input_grad = false` leaves out the table the noise was added
    /// to (word embeddings, patch projection).
    fn backward_acts(&self, rec: &mut Recorder, acts: &Self::Acts, dlogits: &Tensor, input_grad: bool) -> Result<()>;
    /// (logits, `[loss, count]`, dlogits) of an activation set.
    fn outputs(acts: &Self::Acts) -> (&Tensor, &Tensor, &Tensor);
    /// Record the forward pass with the model's own parameters: logits, and the loss (with
    /// dlogits ready for the backward) when `with_loss` (the batch must have labels or
    /// targets). `train` turns dropout on, keyed by its seed and step.
    fn forward(&self, rec: &mut Recorder, acts: &Self::Acts, with_loss: bool, train: Option<Train>) -> Result<()> {
        self.forward_acts(rec, acts, Run { params: self.params(), with_loss, train, noise: None })
    }
    /// Record the backward pass of the last forward's mean loss, accumulating (+=) into the
    /// gradients; dropout masks of that forward are regenerated from its keys.
    fn backward(&self, rec: &mut Recorder, acts: &Self::Acts) -> Result<()> {
        self.backward_acts(rec, acts, Self::outputs(acts).2, true)
    }
    /// See [`TrainModel::row_weights`].
    fn row_weights(_acts: &Self::Acts) -> Option<&Tensor> {
        None
    }
}

/// A model with one batch's activations, as the optimizer drives it. `aux` is a second
/// activation set holding the same batch, needed by R3F's second branch.
pub struct Task<'a, M: TaskModel> {
    pub model: &'a M,
    pub acts: &'a M::Acts,
    pub aux: Option<&'a M::Acts>,
}

impl<M: TaskModel> TrainModel for Task<'_, M> {
    fn params(&self) -> &ParamSet {
        self.model.params()
    }
    fn forward(&self, rec: &mut Recorder, params: &ParamSet, train: Option<Train>, noise: Option<Noise>) -> Result<()> {
        self.model.forward_acts(rec, self.acts, Run { params, with_loss: true, train, noise })
    }
    fn backward(&self, rec: &mut Recorder) -> Result<()> {
        self.model.backward_acts(rec, self.acts, M::outputs(self.acts).2, true)
    }
    fn logits(&self) -> &Tensor {
        M::outputs(self.acts).0
    }
    fn loss(&self) -> &Tensor {
        M::outputs(self.acts).1
    }
    fn dlogits(&self) -> &Tensor {
        M::outputs(self.acts).2
    }
    fn row_weights(&self) -> Option<&Tensor> {
        M::row_weights(self.acts)
    }
    fn forward_aux(
        &self,
        rec: &mut Recorder,
        params: &ParamSet,
        train: Option<Train>,
        noise: Option<Noise>,
    ) -> Result<()> {
        match self.aux {
            Some(aux) => self.model.forward_acts(rec, aux, Run { params, with_loss: false, train, noise }),
            None => crate::error::shape_err("optim", "R3F needs Task::aux (a second activation set with the batch)"),
        }
    }
    fn aux(&self) -> Option<(&Tensor, &Tensor)> {
        self.aux.map(|a| {
            let (logits, _, dlogits) = M::outputs(a);
            (logits, dlogits)
        })
    }
    fn backward_aux(&self, rec: &mut Recorder) -> Result<()> {
        match self.aux {
            Some(aux) => self.model.backward_acts(rec, aux, M::outputs(aux).2, false),
            None => crate::error::shape_err("optim", "R3F needs Task::aux"),
        }
    }
}
