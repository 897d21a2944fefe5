//! Layers with explicit forward and backward (llm.c style): no autograd tape. Each backward
//! accumulates (+=) into the gradient arena, so gradients of shared parameters add up.
//!
//! - this module: [`ParamSet`] (parameters and gradients in arenas) and [`Specs`], the builder
//!   that names each tensor as Hugging Face does and returns its id; training mode ([`Train`],
//!   [`Drop`]) and input noise ([`Noise`]);
//! - [`layers`]: `Linear`, `Norm`, the LM head over split tables, the K/V cache;
//! - [`block`]: attention, MLP and the transformer block (pre- or post-norm, RoPE, grouped-query
//!   attention, SwiGLU, LayerScale) with forward, backward and cached decoding.

pub mod block;
pub mod layers;
pub mod lora;

use crate::error::{model_err, Result};
use crate::gpu::{Arena, ArenaBuilder, Gpu, Part, Recorder, Tensor};
use crate::io::weights::{HostTensor, Weights};
use crate::ops::attention::AttnDropout;
use crate::ops::elementwise::activation_backward;
use crate::ops::elementwise::axpby;
use crate::ops::half::Half16;
use crate::ops::matmul::Act;
use crate::ops::rng::{dropout, normal, uniform, RngKey};
use safetensors::Dtype;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A model's parameter list as it is built: each layer adds its tensors under their Hugging Face
/// names and gets their ids back, so a name and its id cannot drift apart.
#[derive(Clone, Debug, Default)]
pub struct Specs {
    pub list: Vec<(String, Vec<usize>)>,
    /// Tensors that may be stored as row blocks (see [`ParamSet::new`]).
    pub split: Vec<usize>,
    /// LoRA adapters on the Linears it selects; the rest of the model frozen.
    pub lora: Option<lora::LoraConfig>,
    /// The first `--lora-targets` error met while adding Linears, (value, expected), reported
    /// by `load`.
    lora_error: Option<(String, String)>,
    /// Freeze everything but a classifier head (a linear probe), without adapters.
    pub freeze_base: bool,
    /// Tensors that may stay 16-bit when frozen: Linear weights and token tables (the kernels
    /// that read them unpack; see [`ParamSet::weight`]).
    half_ok: Vec<usize>,
}

impl Specs {
    /// Add a tensor; returns its id.
    pub fn add(&mut self, name: impl Into<String>, shape: &[usize]) -> usize {
        self.list.push((name.into(), shape.to_vec()));
        self.list.len() - 1
    }
    /// Add a tensor that may exceed one binding (a token table): stored as row blocks.
    pub fn add_split(&mut self, name: impl Into<String>, shape: &[usize]) -> usize {
        let i = self.add(name, shape);
        self.split.push(i);
        self.half_ok.push(i);
        i
    }
    /// Specs of a model built as `b` says: LoRA adapters (`None`: every parameter trains),
    /// or a frozen base under a trainable head.
    pub fn for_build(b: &crate::models::Build) -> Self {
        Specs { lora: b.lora.clone(), freeze_base: b.freeze_base, ..Default::default() }
    }
    /// An `nn.Linear` `name.weight` `[out, inp]` (and `name.bias` `[out]`).
    pub fn linear(&mut self, name: &str, out: usize, inp: usize, bias: bool) -> layers::Linear {
        let w = self.add(format!("{name}.weight"), &[out, inp]);
        let b = bias.then(|| self.add(format!("{name}.bias"), &[out]));
        self.half_ok.push(w);
        let lora = self.adapter(name, out, inp);
        layers::Linear { w, b, layout: layers::Layout::OutIn, lora }
    }
    /// A GPT-2 `Conv1D` `name.weight` `[inp, out]` and `name.bias` `[out]`.
    pub fn conv1d(&mut self, name: &str, inp: usize, out: usize) -> layers::Linear {
        let w = self.add(format!("{name}.weight"), &[inp, out]);
        let b = Some(self.add(format!("{name}.bias"), &[out]));
        self.half_ok.push(w);
        let lora = self.adapter(name, out, inp);
        layers::Linear { w, b, layout: layers::Layout::InOut { cols: None }, lora }
    }
    /// The adapter tensors of Linear `name` when the LoRA config selects it.
    fn adapter(&mut self, name: &str, out: usize, inp: usize) -> Option<lora::LoraIds> {
        let cfg = self.lora.clone()?;
        match cfg.wants(name) {
            Ok(true) => {
                let (an, bn) = lora::adapter_names(name);
                let a = self.add(an, &[cfg.rank, inp]);
                let b = self.add(bn, &[out, cfg.rank]);
                Some(lora::LoraIds { a, b, rank: cfg.rank, scale: cfg.scale(), dropout: cfg.dropout })
            }
            Ok(false) => None,
            Err(crate::error::Error::BadSetting { value, expected, .. }) => {
                self.lora_error.get_or_insert((value, expected));
                None
            }
            Err(e) => {
                self.lora_error.get_or_insert((String::new(), e.to_string()));
                None
            }
        }
    }
    /// A LayerNorm with weight and bias tensors of width `h`.
    pub fn layer_norm(&mut self, weight: &str, bias: &str, h: usize, eps: f32) -> layers::Norm {
        let g = self.add(weight, &[h]);
        let b = Some(self.add(bias, &[h]));
        layers::Norm { g, b, rms: false, eps }
    }
    /// An RMSNorm with a weight of width `h`.
    pub fn rms_norm(&mut self, weight: &str, h: usize, eps: f32) -> layers::Norm {
        layers::Norm { g: self.add(weight, &[h]), b: None, rms: true, eps }
    }
    /// Allocate the parameters and fill them from `w` (see [`ParamSet::load`]). With LoRA,
    /// the adapters (initialised as PEFT does) and a task head train, the rest is frozen.
    pub fn load(&self, gpu: &Gpu, w: &Weights, prefix: &str, optional_from: usize, seed: u64) -> Result<ParamSet> {
        if let Some((value, expected)) = &self.lora_error {
            let (value, expected) = (value.clone(), expected.clone());
            return Err(crate::error::Error::BadSetting { name: "--lora-targets", value, expected });
        }
        if let Some(l) = &self.lora {
            if !self.list.iter().any(|(n, _)| lora::is_adapter(n)) {
                return model_err(
                    &w.file,
                    match &l.modules {
                        Some(m) => {
                            format!("none of the adapter's modules ({}) is a Linear of this model", m.join(", "))
                        }
                        None => "no Linear of this model matches --lora-targets".to_string(),
                    },
                );
            }
        }
        let in_file = |name: &str| {
            let short = name.strip_prefix(prefix).unwrap_or(name);
            w.tensors.contains_key(name) || w.tensors.contains_key(short)
        };
        // Frozen: everything but adapters, a classifier head, and whatever is initialised here
        // (a head or pooler the checkpoint lacks must learn, not stay random).
        let frozen: Vec<bool> = if self.lora.is_some() || self.freeze_base {
            self.list.iter().map(|(n, _)| !lora::is_adapter(n) && !lora::is_head(n) && in_file(n)).collect()
        } else {
            vec![false; self.list.len()]
        };
        if frozen.iter().all(|&f| f) {
            return model_err(&w.file, "--freeze-base leaves nothing to train: this model has no classifier head");
        }
        // A frozen Linear weight or token table stored as bf16/f16 stays 16-bit on the device.
        // A Linear weight is unpacked whole before its matmul, so it must fit one binding in
        // f32 (otherwise it stays f32 and the arena names it); tables are read by row blocks.
        let limit = gpu.max_binding_bytes();
        let half: Vec<bool> = (0..self.list.len())
            .map(|i| {
                let (name, shape) = &self.list[i];
                let short = name.strip_prefix(prefix).unwrap_or(name);
                let dtype = w.tensors.get(name.as_str()).or_else(|| w.tensors.get(short)).map(|t| t.dtype);
                let fits = self.split.contains(&i) || shape.iter().product::<usize>() as u64 * 4 <= limit;
                frozen[i] && fits && self.half_ok.contains(&i) && matches!(dtype, Some(Dtype::BF16 | Dtype::F16))
            })
            .collect();
        let mut set =
            ParamSet::load_frozen(gpu, &self.list, w, prefix, optional_from, &self.split, &frozen, &half, seed)?;
        set.lora_dropout = self.lora.as_ref().map(|l| l.dropout > 0.0).unwrap_or(false);
        Ok(set)
    }
    pub fn len(&self) -> usize {
        self.list.len()
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Parameters and their gradients: two arenas with the same layout, tensors named by their
/// Hugging Face names; and, with LoRA, the frozen base weights in a third arena without
/// gradients or optimizer state. Parameter ids (`p(i)`, `names()[i]`) count every tensor;
/// `params`/`grads` hold the trainable ones (all of them without LoRA, in the same order), the
/// arenas the optimizer updates.
pub struct ParamSet {
    pub params: Arena,
    pub grads: Arena,
    /// Frozen tensors (LoRA's base model), shared with reference copies.
    pub frozen: Option<Arena>,
    /// Frozen tensors kept 16-bit (a bf16/f16 checkpoint's Linear weights and token tables).
    half: Vec<Half16>,
    /// Where each parameter id lives.
    slots: Arc<Vec<Slot>>,
    names: Arc<Vec<String>>,
    /// The dtype each parameter had in the file it came from (F32 when initialised here), so
    /// a saved model keeps them.
    pub dtypes: Vec<Dtype>,
    lora_scratch: lora::SharedScratch,
    /// Tensors stored as row blocks (token tables), by id.
    tables: Vec<bool>,
    /// Whether the adapters use dropout (it needs two more scratch buffers).
    lora_dropout: bool,
    /// Whether each gradient may hold a contribution since the last [`ParamSet::zero_grads`]
    /// (shared by the sets that share `grads`): the first writer of a step may store its
    /// values instead of adding them to the cleared ones ([`ParamSet::g_first`]).
    written: Arc<Vec<AtomicBool>>,
}

/// Where a parameter id lives: its index in the trainable or the frozen arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Train(usize),
    Frozen(usize),
    Half(usize),
}

impl ParamSet {
    /// Allocate zeroed parameters and gradients for `(name, shape)` in this order. The tensors
    /// listed in `split` may be stored as row blocks when they exceed one binding (the model
    /// reaches them through [`ParamSet::parts`]).
    pub fn new(gpu: &Gpu, specs: &[(String, Vec<usize>)], split: &[usize]) -> Result<Self> {
        Self::new_frozen(gpu, specs, split, &vec![false; specs.len()], &[])
    }

    /// [`ParamSet::new`] with the tensors marked in `frozen` in an arena of their own, without
    /// gradients.
    /// `half` marks frozen tensors that will be given as 16-bit (not allocated here).
    pub fn new_frozen(
        gpu: &Gpu,
        specs: &[(String, Vec<usize>)],
        split: &[usize],
        frozen: &[bool],
        half: &[bool],
    ) -> Result<Self> {
        let (mut train, mut fro) = (ArenaBuilder::new(), ArenaBuilder::new());
        let mut slots = Vec::with_capacity(specs.len());
        let mut halves = 0;
        for (i, (n, s)) in specs.iter().enumerate() {
            if half.get(i).copied().unwrap_or(false) {
                slots.push(Slot::Half(halves));
                halves += 1;
                continue;
            }
            let is_frozen = frozen.get(i).copied().unwrap_or(false);
            let b = if is_frozen { &mut fro } else { &mut train };
            let local = if split.contains(&i) { b.add_split(n.clone(), s) } else { b.add(n.clone(), s) };
            slots.push(if is_frozen { Slot::Frozen(local) } else { Slot::Train(local) });
        }
        let any_frozen = slots.iter().any(|s| matches!(s, Slot::Frozen(_)));
        Ok(ParamSet {
            params: train.build(gpu, "params")?,
            grads: train.build(gpu, "grads")?,
            frozen: if any_frozen { Some(fro.build(gpu, "frozen")?) } else { None },
            half: Vec::new(),
            slots: Arc::new(slots),
            names: Arc::new(specs.iter().map(|(n, _)| n.clone()).collect()),
            dtypes: vec![Dtype::F32; specs.len()],
            lora_scratch: Default::default(),
            tables: (0..specs.len()).map(|i| split.contains(&i)).collect(),
            lora_dropout: false,
            written: Arc::new((0..specs.len()).map(|_| AtomicBool::new(false)).collect()),
        })
    }

    /// Allocate `specs` and fill them from `w`, where each name may also appear without
    /// `prefix` (a base-model checkpoint). Tensors from index `optional_from` on (a task head)
    /// may be missing: their weights are initialised like Hugging Face's (normal, std 0.02,
    /// drawn from `seed`), their biases stay zero. LoRA adapters are always initialised here,
    /// as PEFT does (`A` uniform in ±1/sqrt(in), `B` zero).
    pub fn load(
        gpu: &Gpu,
        specs: &[(String, Vec<usize>)],
        w: &Weights,
        prefix: &str,
        optional_from: usize,
        split: &[usize],
        seed: u64,
    ) -> Result<Self> {
        Self::load_frozen(gpu, specs, w, prefix, optional_from, split, &vec![false; specs.len()], &[], seed)
    }

    /// [`ParamSet::load`] with the tensors marked in `frozen` kept without gradients.
    #[allow(clippy::too_many_arguments)]
    pub fn load_frozen(
        gpu: &Gpu,
        specs: &[(String, Vec<usize>)],
        w: &Weights,
        prefix: &str,
        optional_from: usize,
        split: &[usize],
        frozen: &[bool],
        half: &[bool],
        seed: u64,
    ) -> Result<Self> {
        let mut set = Self::new_frozen(gpu, specs, split, frozen, half)?;
        let mut halves = Vec::new();
        for (i, (name, shape)) in specs.iter().enumerate() {
            if half.get(i).copied().unwrap_or(false) {
                let short = name.strip_prefix(prefix).unwrap_or(name);
                let n = if w.tensors.contains_key(name.as_str()) { name.as_str() } else { short };
                let t = w.get(n, shape)?;
                halves.push(Half16::upload(gpu, &t.data, shape, t.dtype == Dtype::BF16)?);
                set.dtypes[i] = t.dtype;
                continue;
            }
            let short = name.strip_prefix(prefix).unwrap_or(name);
            if name.ends_with(".lora_A.weight") {
                let bound = 1.0 / (shape[1] as f64).sqrt();
                let n: usize = shape.iter().product();
                let data: Vec<f32> = crate::ops::reference::uniform(n, seed, i as u64, -bound, bound)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect();
                set.write(gpu, i, &data)?;
                continue;
            }
            if lora::is_adapter(name) {
                continue;
            }
            match [name.as_str(), short].into_iter().find(|n| w.tensors.contains_key(*n)) {
                Some(n) => {
                    let t = w.get(n, shape)?;
                    set.write(gpu, i, &t.data)?;
                    set.dtypes[i] = t.dtype;
                }
                None if i >= optional_from => {
                    if name.ends_with("weight") {
                        let n: usize = shape.iter().product();
                        let data: Vec<f32> = crate::ops::reference::normal(n, seed, i as u64, 0.0, 0.02)
                            .into_iter()
                            .map(|v| v as f32)
                            .collect();
                        set.write(gpu, i, &data)?;
                    }
                }
                None => {
                    return model_err(
                        &w.file,
                        format!("tensor {name} (or {short}) is missing (expected shape {shape:?})"),
                    )
                }
            }
        }
        set.half = halves;
        Ok(set)
    }

    /// The arena and index of parameter `i` (`None`: a 16-bit tensor).
    fn slot(&self, i: usize) -> Option<(&Arena, usize)> {
        match self.slots[i] {
            Slot::Train(j) => Some((&self.params, j)),
            Slot::Frozen(j) => Some((self.frozen.as_ref().expect("a frozen slot has its arena"), j)),
            Slot::Half(_) => None,
        }
    }

    /// Parameter `i` when it is kept 16-bit.
    pub fn half(&self, i: usize) -> Option<&Half16> {
        match self.slots[i] {
            Slot::Half(j) => Some(&self.half[j]),
            _ => None,
        }
    }

    /// Write parameter `i` from the host (not a frozen 16-bit one).
    pub fn write(&self, gpu: &Gpu, i: usize, data: &[f32]) -> Result<()> {
        match self.slot(i) {
            Some((a, j)) => a.write(gpu, j, data),
            None => crate::error::shape_err("params", format!("{} is frozen in 16 bits", self.names[i])),
        }
    }

    /// Read parameter `i` back (f32).
    pub async fn read(&self, gpu: &Gpu, i: usize) -> Result<Vec<f32>> {
        match self.slot(i) {
            Some((a, j)) => a.read(gpu, j).await,
            None => self.half(i).expect("a 16-bit slot").read(gpu).await,
        }
    }

    /// Parameter `i` as an f32 tensor of its shape: itself, or a 16-bit one unpacked into a
    /// scratch buffer (valid until the next 16-bit weight is unpacked).
    pub fn weight(&self, rec: &mut Recorder, i: usize) -> Result<Tensor> {
        match self.half(i) {
            None => Ok(self.p(i).clone()),
            Some(h) => {
                let t = self.lora_scratch(rec.gpu(), 3, h.numel())?;
                h.unpack_rows(rec, 0, &t)?;
                t.reshape(&h.shape)
            }
        }
    }

    /// Every parameter under its name, read back from the GPU, in the dtype it was loaded in.
    pub async fn state(&self, gpu: &Gpu) -> Result<Vec<(String, HostTensor)>> {
        let mut out = Vec::with_capacity(self.len());
        for (i, name) in self.names().iter().enumerate() {
            let data = self.read(gpu, i).await?;
            out.push((name.clone(), HostTensor { shape: self.shape(i).to_vec(), data, dtype: self.dtypes[i] }));
        }
        Ok(out)
    }
    /// Parameter `i`. A frozen 16-bit tensor gives its packed words: read those through
    /// [`ParamSet::weight`] or [`ParamSet::half`].
    pub fn p(&self, i: usize) -> &Tensor {
        match self.slot(i) {
            Some((a, j)) => a.get(j),
            None => &self.half(i).expect("a 16-bit slot").parts[0].2,
        }
    }
    /// Gradient of parameter `i`; `None` when it is frozen. Counts as a write of it for
    /// [`ParamSet::g_first`] (the caller may add to it).
    pub fn g(&self, i: usize) -> Option<&Tensor> {
        match self.slots[i] {
            Slot::Train(j) => {
                // Whoever asks may add to it: later writers of the step must add too.
                self.written[i].store(true, Ordering::Relaxed);
                Some(self.grads.get(j))
            }
            Slot::Frozen(_) | Slot::Half(_) => None,
        }
    }
    /// Gradient of parameter `i` for a writer that can either store or add (a matmul's
    /// epilogue), and whether it must add: false for the first writer since
    /// [`ParamSet::zero_grads`], which then skips reading the cleared gradient back (a
    /// Linear's dW is most of a step's gradient bytes; PyTorch likewise assigns a `.grad`
    /// that is None). Every other access ([`ParamSet::g`]) counts as a write.
    pub fn g_first(&self, i: usize) -> Option<(&Tensor, bool)> {
        match self.slots[i] {
            Slot::Train(j) => Some((self.grads.get(j), self.written[i].swap(true, Ordering::Relaxed))),
            Slot::Frozen(_) | Slot::Half(_) => None,
        }
    }
    /// Gradient of parameter `i`, or an error naming it when it is frozen (for passes that
    /// have no frozen variant).
    pub fn grad(&self, i: usize) -> Result<&Tensor> {
        match self.g(i) {
            Some(g) => Ok(g),
            None => crate::error::shape_err(
                "backward",
                format!("{} is frozen; this model cannot train with it frozen", self.names[i]),
            ),
        }
    }
    /// Whether parameter `i` trains (has a gradient).
    pub fn trains(&self, i: usize) -> bool {
        matches!(self.slots[i], Slot::Train(_))
    }
    /// Shape of parameter `i`.
    pub fn shape(&self, i: usize) -> &[usize] {
        match self.slot(i) {
            Some((a, j)) => a.shape(j),
            None => &self.half(i).expect("a 16-bit slot").shape,
        }
    }
    /// Row blocks of parameter `i` (see [`ParamSet::new`]); none for a 16-bit tensor (see
    /// [`ParamSet::gather_rows`] and [`layers::lm_head_of`]).
    pub fn parts(&self, i: usize) -> &[Part] {
        match self.slot(i) {
            Some((a, j)) => a.parts(j),
            None => &[],
        }
    }
    /// Record the embedding gather `out[r, :] = table_i[ids[r], :]`, whatever its storage.
    pub fn gather_rows(&self, rec: &mut Recorder, i: usize, ids: &Tensor, out: &Tensor) -> Result<()> {
        match self.half(i) {
            Some(h) => h.gather(rec, ids, out),
            None => crate::ops::embedding::embedding_parts(rec, self.parts(i), ids, out),
        }
    }
    /// Row blocks of the gradient of parameter `i`; `None` when it is frozen.
    pub fn grad_parts(&self, i: usize) -> Option<&[Part]> {
        match self.slots[i] {
            Slot::Train(j) => Some(self.grads.parts(j)),
            Slot::Frozen(_) | Slot::Half(_) => None,
        }
    }
    /// Every parameter's name, by id.
    pub fn names(&self) -> &[String] {
        &self.names
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    /// Number of scalar parameters that train (all of them without LoRA).
    pub fn trainable_count(&self) -> usize {
        (0..self.params.len()).map(|i| self.params.numel(i)).sum()
    }
    /// Bytes the parameters take on the GPU: (trainable, frozen).
    pub fn bytes(&self) -> (u64, u64) {
        let sum = |a: &Arena| a.chunks().iter().map(|c| c.bytes()).sum::<u64>();
        let half: u64 = self.half.iter().map(|h| h.bytes()).sum();
        (sum(&self.params), self.frozen.as_ref().map(sum).unwrap_or(0) + half)
    }
    /// Record passes in training mode `t` (LoRA dropout on) or evaluation mode (`None`).
    pub fn set_lora_train(&self, t: Option<Train>) {
        self.lora_scratch.set_train(t)
    }
    pub(crate) fn lora_train(&self) -> Option<Train> {
        self.lora_scratch.train()
    }
    /// Allocate now the scratch buffers that batches of `rows` rows will use (LoRA's
    /// intermediates, 16-bit weights unpacked), so a memory plan made after this is whole.
    pub fn reserve_scratch(&self, gpu: &Gpu, rows: usize) -> Result<()> {
        let (mut r, mut inp, mut out) = (0, 0, 0);
        for (i, n) in self.names.iter().enumerate() {
            let s = self.shape(i);
            if n.ends_with(".lora_A.weight") {
                r = r.max(s[0]);
                inp = inp.max(s[1]);
            } else if n.ends_with(".lora_B.weight") {
                out = out.max(s[0]);
            }
        }
        let mut need = vec![(0, rows * r), (1, rows * r), (2, rows * out)];
        if self.lora_dropout {
            need.extend([(5, rows * inp), (6, rows * inp)]);
        }
        for (i, h) in self.half.iter().enumerate() {
            let id = self.slots.iter().position(|s| *s == Slot::Half(i)).unwrap_or(0);
            if self.tables[id] {
                let d = *h.shape.last().unwrap_or(&1);
                let per = layers::HEAD_CHUNK.min((gpu.max_binding_bytes() as usize / (4 * d.max(1))).max(1));
                need.push((4, per * d));
            } else {
                need.push((3, h.numel()));
            }
        }
        for (slot, n) in need.into_iter().filter(|&(_, n)| n > 0) {
            self.lora_scratch(gpu, slot, n)?;
        }
        Ok(())
    }
    /// A LoRA scratch buffer (see [`lora::Scratch`]).
    pub(crate) fn lora_scratch(&self, gpu: &Gpu, slot: usize, n: usize) -> Result<Tensor> {
        self.lora_scratch.get(gpu, slot, n)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Index of the parameter called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names().iter().position(|n| n == name)
    }
    /// Number of scalar parameters (frozen ones included).
    pub fn count(&self) -> usize {
        (0..self.len()).map(|i| self.shape(i).iter().product::<usize>()).sum()
    }
    /// Set every gradient to zero (a few clears, one per chunk).
    pub fn zero_grads(&self, rec: &mut Recorder) {
        for c in self.grads.chunks() {
            rec.zero(c);
        }
        for w in self.written.iter() {
            w.store(false, Ordering::Relaxed);
        }
    }
}

/// Backward through an activation from its saved pre-activation: `dpre = dy * act'(pre)`.
pub fn act_backward(rec: &mut Recorder, pre: &Tensor, dy: &Tensor, dpre: &Tensor, act: Act) -> Result<()> {
    activation_backward(rec, pre, dy, dpre, act, false)
}

/// Training mode: dropout on, masks keyed by (seed, step, site) so the backward pass
/// regenerates them and a resumed run draws the same ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Train {
    pub seed: u64,
    pub step: u64,
}

impl Train {
    /// The stream of one dropout site at this step.
    pub fn key(&self, site: u64) -> RngKey {
        RngKey { seed: self.seed, offset: (self.step << 20) | site }
    }
}

/// Dropout sites of a layer stack (the `site` part of [`Train::key`]).
pub mod site {
    pub const EMB: u64 = 0;
    pub const HEAD_IN: u64 = 0xF_FFF0;
    pub const HEAD_MID: u64 = 0xF_FFF1;
    pub fn attn(layer: usize) -> u64 {
        1 + 3 * layer as u64
    }
    pub fn attn_out(layer: usize) -> u64 {
        2 + 3 * layer as u64
    }
    pub fn ffn_out(layer: usize) -> u64 {
        3 + 3 * layer as u64
    }
}

/// The dropout in force for one pass: probabilities are 0 in evaluation mode.
pub struct Drop {
    train: Option<Train>,
    hidden: f32,
    attn: f32,
}

impl Drop {
    pub fn new(train: Option<Train>, hidden: f32, attn: f32) -> Self {
        match train {
            Some(_) => Drop { train, hidden, attn },
            None => Drop { train, hidden: 0.0, attn: 0.0 },
        }
    }
    /// Whether hidden-state dropout is active.
    pub fn hidden(&self) -> bool {
        self.hidden > 0.0
    }
    fn key(&self, site: u64) -> RngKey {
        self.train.map(|t| t.key(site)).unwrap_or(RngKey { seed: 0, offset: site })
    }
    /// `out = dropout(x)`, or `out += dropout(x)` when `accumulate`. With dropout off this is
    /// `out += x`, a copy, or nothing when `x` is `out`.
    pub fn apply(&self, rec: &mut Recorder, x: &Tensor, out: &Tensor, site: u64, accumulate: bool) -> Result<()> {
        if self.hidden() {
            dropout(rec, x, out, self.hidden, self.key(site), accumulate)
        } else if accumulate {
            axpby(rec, 1.0, x, 1.0, out)
        } else if x.same_memory(out) {
            Ok(())
        } else {
            rec.copy(x, out)
        }
    }
    /// `out = dropout(x)` when `enabled` and hidden dropout is on; otherwise nothing (the
    /// caller then reads `x` directly).
    pub fn apply_if(&self, rec: &mut Recorder, enabled: bool, x: &Tensor, out: &Tensor, site: u64) -> Result<()> {
        if enabled && self.hidden() {
            dropout(rec, x, out, self.hidden, self.key(site), false)?;
        }
        Ok(())
    }
    /// Backward of a hidden dropout: the gradient through the mask, in `scratch`; or `dy`
    /// itself when dropout is off.
    pub fn back<'t>(&self, rec: &mut Recorder, dy: &'t Tensor, scratch: &'t Tensor, site: u64) -> Result<&'t Tensor> {
        if self.hidden() {
            dropout(rec, dy, scratch, self.hidden, self.key(site), false)?;
            Ok(scratch)
        } else {
            Ok(dy)
        }
    }
    /// Attention-probability dropout for `attention_with`, when on.
    pub fn attn<'t>(&self, site: u64, dropped: &'t Tensor) -> Option<AttnDropout<'t>> {
        (self.attn > 0.0).then(|| AttnDropout { p: self.attn, key: self.key(site), dropped })
    }
}

/// Random input noise (TRAM-x, R3F): `N(0, std^2)` or uniform in `[-std, std]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Noise {
    pub std: f32,
    pub uniform: bool,
    pub key: RngKey,
}

impl Noise {
    /// Fill `out` with this noise.
    pub fn fill(&self, rec: &mut Recorder, out: &Tensor) -> Result<()> {
        if self.uniform {
            uniform(rec, out, self.key, -self.std, self.std)
        } else {
            normal(rec, out, self.key, 0.0, self.std)
        }
    }
}

impl ParamSet {
    /// A zeroed arena with exactly the parameters' layout (optimizer state, backups,
    /// reference copies), so chunk `i` of each lines up element by element.
    pub fn like(&self, gpu: &Gpu, label: &str) -> Result<Arena> {
        self.params.layout().build(gpu, label)
    }

    /// Another parameter set with this layout whose values live in `params` (e.g. a
    /// trust-region reference copy) and which shares this set's gradient arena.
    pub fn with_values(&self, params: Arena) -> ParamSet {
        ParamSet {
            params,
            grads: self.grads.clone(),
            frozen: self.frozen.clone(),
            half: self.half.clone(),
            slots: self.slots.clone(),
            names: self.names.clone(),
            dtypes: self.dtypes.clone(),
            lora_scratch: self.lora_scratch.clone(),
            tables: self.tables.clone(),
            lora_dropout: self.lora_dropout,
            written: self.written.clone(),
        }
    }
}
