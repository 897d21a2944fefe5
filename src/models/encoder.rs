//! BERT-family encoders (BERT, MiniLM, RoBERTa, XLM-R) with a sequence-classification head,
//! forward and backward written out layer by layer.
//!
//! Tensor names are Hugging Face's `*ForSequenceClassification` names (`bert.encoder.layer.0.…`,
//! `classifier.…`), so a saved model loads back in `transformers`. Base-model checkpoints
//! (no `bert.` prefix, no head) load too: a missing pooler or classifier is initialised like
//! Hugging Face does (normal, std 0.02; zero bias).

use super::{Family, Run, TaskModel};
use crate::data::batch::TextBatch;
use crate::error::model_err;
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::io::config::{heads, hidden_act, labels, Keys, MAX_LAYERS, MAX_POSITIONS, MAX_SIZE};
use crate::io::weights::{HostTensor, Weights};
use crate::nn::block::{Attention, Block, BlockActs, Mlp, Pass, Scratch};
use crate::nn::layers::{Linear, Norm, NormStats};
use crate::nn::{act_backward, site, Drop, ParamSet, Specs, Train};
use crate::ops::cross_entropy::{cross_entropy, IGNORE_INDEX};
use crate::ops::elementwise::axpby;
use crate::ops::embedding::{embedding, embedding_backward, embedding_backward_parts, EmbeddingIndex};
use crate::ops::matmul::{matmul, Act, MatView, Matmul};

/// Which embedding/position scheme and head naming the checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderKind {
    /// BERT / MiniLM: positions 0..T, token types, `bert.pooler` + `classifier`.
    Bert,
    /// RoBERTa / XLM-R: positions start after `pad_token_id`, skip padding; head is
    /// `classifier.dense` + `classifier.out_proj`.
    Roberta,
}

/// The subset of a Hugging Face encoder config tramway uses, validated.
#[derive(Clone, Debug)]
pub struct EncoderConfig {
    pub kind: EncoderKind,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub act: Act,
    pub pad_token_id: u32,
    pub hidden_dropout: f32,
    pub attention_dropout: f32,
    /// Label names by id; its length is the number of classes.
    pub id2label: Vec<String>,
    /// The raw JSON, kept so a saved model writes back every key it was given.
    pub raw: serde_json::Value,
}

impl EncoderConfig {
    /// Parse and validate `config.json` text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let encoder = |f| if let Family::Encoder(k) = f { Some(k) } else { None };
        let (raw, kind) = super::read_config(file, text, encoder, "a supported encoder (BERT, RoBERTa, XLM-R)")?;
        let k = Keys::new(file, &raw)?;
        let (hidden_size, num_heads) = heads(&k, "hidden_size", "num_attention_heads")?;
        let act = hidden_act(&k)?;
        if let Some(p) = k.string("position_embedding_type")? {
            if p != "absolute" {
                return model_err(
                    file,
                    format!("position_embedding_type {p:?} is not supported (expected \"absolute\")"),
                );
            }
        }
        let id2label = labels(&k)?;
        let pad_token_id = match k.token_id("pad_token_id")? {
            Some(p) => p,
            None if kind == EncoderKind::Roberta => 1,
            None => 0,
        };
        let vocab_size = k.size("vocab_size", None, MAX_SIZE)?;
        let num_layers = k.size("num_hidden_layers", None, MAX_LAYERS)?;
        let intermediate_size = k.size("intermediate_size", None, MAX_SIZE)?;
        let max_position_embeddings = k.size("max_position_embeddings", None, MAX_POSITIONS)?;
        // 0 token types (some converted checkpoints) means the one type every model has.
        let type_vocab_size = match k.uint("type_vocab_size")? {
            Some(0) => 1,
            _ => k.size("type_vocab_size", Some(2), MAX_SIZE)?,
        };
        let h = ("hidden_size", hidden_size);
        k.tensor("word embedding", &[("vocab_size", vocab_size), h])?;
        k.tensor("position embedding", &[("max_position_embeddings", max_position_embeddings), h])?;
        k.tensor("token type embedding", &[("type_vocab_size", type_vocab_size), h])?;
        k.tensor("MLP", &[("intermediate_size", intermediate_size), h])?;
        k.tensor("classifier", &[("number of labels", id2label.len()), h])?;
        Ok(EncoderConfig {
            kind,
            model_type: raw["model_type"].as_str().unwrap_or_default().to_string(),
            vocab_size,
            hidden_size,
            num_layers,
            num_heads,
            intermediate_size,
            max_position_embeddings,
            type_vocab_size,
            layer_norm_eps: k.eps("layer_norm_eps", 1e-12)?,
            act,
            pad_token_id,
            hidden_dropout: k.prob("hidden_dropout_prob", 0.1)?,
            attention_dropout: k.prob("attention_probs_dropout_prob", 0.1)?,
            id2label,
            raw,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }
    /// Prefix of the encoder's tensor names in HF checkpoints (`bert.`, `roberta.`).
    pub fn prefix(&self) -> &'static str {
        match self.kind {
            EncoderKind::Bert => "bert.",
            EncoderKind::Roberta => "roberta.",
        }
    }
}

/// Parameter ids outside the blocks.
struct Idx {
    word: usize,
    pos: usize,
    typ: usize,
    emb_norm: Norm,
    /// BERT's pooler / RoBERTa's `classifier.dense`, then the output projection.
    head: Linear,
    out: Linear,
}

/// An encoder with a classification head, its parameters and gradients on the GPU.
pub struct Encoder {
    pub cfg: EncoderConfig,
    pub params: ParamSet,
    idx: Idx,
    blocks: Vec<Block>,
}

/// How a sentence embedding is taken from the last hidden states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the real (unpadded) tokens: sentence-transformers' default.
    Mean,
    /// The first token (`[CLS]` / `<s>`).
    Cls,
}

/// Every activation the backward needs, planned once per batch shape and reused.
pub struct EncoderActs {
    batch: usize,
    train: std::cell::Cell<Option<Train>>,
    seq: usize,
    ids: Tensor,
    pos: Tensor,
    types: Tensor,
    mask: Tensor,
    labels: Tensor,
    cls_rows: Tensor,
    index: Option<[EmbeddingIndex; 4]>,
    emb_sum: Tensor,
    emb_st: NormStats,
    xs: Vec<Tensor>,
    layers: Vec<BlockActs>,
    cls: Tensor,
    cls_drop: Tensor,
    head_pre: Tensor,
    head_h: Tensor,
    head_drop: Tensor,
    /// `[batch, num_labels]`
    pub logits: Tensor,
    /// `[loss, counted rows]`
    pub loss: Tensor,
    dlogits: Tensor,
    d_head_h: Tensor,
    d_head_pre: Tensor,
    d_cls: Tensor,
    s: Scratch,
}

impl Encoder {
    /// Build the model from a config and its weights (see the module docs for what may be
    /// missing). `seed` initialises a missing head.
    pub fn load(gpu: &Gpu, cfg: EncoderConfig, w: &Weights, seed: u64) -> Result<Self> {
        Self::load_with(gpu, cfg, w, &super::Build { seed, ..Default::default() })
    }

    /// [`Encoder::load`] as `b` says (LoRA adapters; the classifier head then trains whole,
    /// as PEFT's `modules_to_save`).
    pub fn load_with(gpu: &Gpu, cfg: EncoderConfig, w: &Weights, b: &super::Build) -> Result<Self> {
        let c = &cfg;
        let (h, i, p, eps) = (c.hidden_size, c.intermediate_size, c.prefix(), c.layer_norm_eps);
        let mut s = Specs::for_build(b);
        let word = s.add_split(format!("{p}embeddings.word_embeddings.weight"), &[c.vocab_size, h]);
        let pos = s.add(format!("{p}embeddings.position_embeddings.weight"), &[c.max_position_embeddings, h]);
        let typ = s.add(format!("{p}embeddings.token_type_embeddings.weight"), &[c.type_vocab_size, h]);
        let emb_norm =
            s.layer_norm(&format!("{p}embeddings.LayerNorm.weight"), &format!("{p}embeddings.LayerNorm.bias"), h, eps);
        let mut blocks = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let n = |x: &str| format!("{p}encoder.layer.{l}.{x}");
            let q = s.linear(&n("attention.self.query"), h, h, true);
            let k = s.linear(&n("attention.self.key"), h, h, true);
            let v = s.linear(&n("attention.self.value"), h, h, true);
            let o = s.linear(&n("attention.output.dense"), h, h, true);
            let norm1 =
                s.layer_norm(&n("attention.output.LayerNorm.weight"), &n("attention.output.LayerNorm.bias"), h, eps);
            let up = s.linear(&n("intermediate.dense"), i, h, true);
            let down = s.linear(&n("output.dense"), h, i, true);
            let norm2 = s.layer_norm(&n("output.LayerNorm.weight"), &n("output.LayerNorm.bias"), h, eps);
            let (heads, head_dim) = (c.num_heads, c.head_dim());
            let attn = Attention { q, k, v, o, heads, kv_heads: heads, head_dim, causal: false, rope: false };
            blocks.push(Block::new(attn, Mlp::Act { up, down, act: c.act }, (norm1, norm2), h, i).post_norm());
        }
        let head_from = s.len();
        let (head, out) = match c.kind {
            EncoderKind::Bert => (format!("{p}pooler.dense"), "classifier".to_string()),
            EncoderKind::Roberta => ("classifier.dense".to_string(), "classifier.out_proj".to_string()),
        };
        let head = s.linear(&head, h, h, true);
        let out = s.linear(&out, c.num_labels(), h, true);
        let params = s.load(gpu, w, p, head_from, b.seed)?;
        Ok(Encoder { params, idx: Idx { word, pos, typ, emb_norm, head, out }, blocks, cfg })
    }

    /// Every parameter under its Hugging Face name, in the dtype it was loaded in.
    pub async fn state(&self, gpu: &Gpu) -> Result<Vec<(String, HostTensor)>> {
        self.params.state(gpu).await
    }

    /// `config.json` for a saved model: the original keys, with this head's architecture
    /// and labels.
    pub fn config_json(&self) -> serde_json::Value {
        let v = &self.cfg.raw;
        let arch = match (self.cfg.kind, self.cfg.model_type.as_str()) {
            (EncoderKind::Bert, _) => "BertForSequenceClassification",
            (EncoderKind::Roberta, "xlm-roberta") => "XLMRobertaForSequenceClassification",
            (EncoderKind::Roberta, _) => "RobertaForSequenceClassification",
        };
        crate::io::config::with_labels(v, arch, &self.cfg.id2label)
    }

    /// Plan the activations for batches of `batch` sequences of `seq` tokens.
    pub fn acts(&self, gpu: &Gpu, batch: usize, seq: usize) -> Result<EncoderActs> {
        let c = &self.cfg;
        let (bt, h) = (batch * seq, c.hidden_size);
        if batch == 0 || seq == 0 {
            return shape_err("encoder", "empty batch");
        }
        let f = |shape: &[usize]| gpu.zeros(shape);
        let layers =
            self.blocks.iter().map(|b| b.acts(gpu, batch, seq, c.attention_dropout > 0.0)).collect::<Result<_>>()?;
        let nl = c.num_labels();
        Ok(EncoderActs {
            batch,
            train: Default::default(),
            seq,
            ids: gpu.zeros_u32(&[bt])?,
            pos: gpu.zeros_u32(&[bt])?,
            types: gpu.zeros_u32(&[bt])?,
            mask: gpu.zeros_u32(&[bt])?,
            labels: gpu.zeros_u32(&[batch])?,
            cls_rows: gpu.from_u32(&(0..batch as u32).map(|b| b * seq as u32).collect::<Vec<_>>(), &[batch])?,
            index: None,
            emb_sum: f(&[bt, h])?,
            emb_st: NormStats::new(gpu, &self.idx.emb_norm, bt)?,
            xs: (0..=c.num_layers).map(|_| f(&[bt, h])).collect::<Result<_>>()?,
            layers,
            cls: f(&[batch, h])?,
            cls_drop: f(&[batch, h])?,
            head_pre: f(&[batch, h])?,
            head_h: f(&[batch, h])?,
            head_drop: f(&[batch, h])?,
            logits: f(&[batch, nl])?,
            loss: f(&[2])?,
            dlogits: f(&[batch, nl])?,
            d_head_h: f(&[batch, h])?,
            d_head_pre: f(&[batch, h])?,
            d_cls: f(&[batch, h])?,
            s: self.blocks[0].scratch(gpu, bt)?,
        })
    }

    /// The logits of the last forward, `[batch, num_labels]`.
    pub fn logits<'a>(&self, a: &'a EncoderActs) -> &'a Tensor {
        &a.logits
    }

    /// Position ids as Hugging Face computes them: `0..seq` for BERT; for RoBERTa, padding
    /// tokens get `pad` and real tokens `pad + 1 + (their index among real tokens)`.
    pub fn position_ids(&self, ids: &[u32], batch: usize, seq: usize) -> Vec<u32> {
        match self.cfg.kind {
            EncoderKind::Bert => (0..batch * seq).map(|i| (i % seq) as u32).collect(),
            EncoderKind::Roberta => {
                let pad = self.cfg.pad_token_id;
                let mut out = vec![pad; batch * seq];
                for b in 0..batch {
                    let mut n = 0;
                    for t in 0..seq {
                        if ids[b * seq + t] != pad {
                            n += 1;
                            out[b * seq + t] = pad + n;
                        }
                    }
                }
                out
            }
        }
    }

    /// Check a batch against the model and upload it into `acts`.
    pub fn upload(&self, gpu: &Gpu, acts: &mut EncoderActs, b: &TextBatch) -> Result<()> {
        let c = &self.cfg;
        let n = b.batch * b.seq;
        super::check_tokens("encoder", (acts.batch, acts.seq), (b.batch, b.seq), &b.ids, &b.mask)?;
        let types = b.types.clone().unwrap_or_else(|| vec![0; n]);
        let pos = self.position_ids(&b.ids, b.batch, b.seq);
        let checks: [(&str, &[u32], usize, &str); 3] = [
            ("token id", &b.ids, c.vocab_size, "vocab_size"),
            ("token type id", &types, c.type_vocab_size, "type_vocab_size"),
            ("position", &pos, c.max_position_embeddings, "max_position_embeddings"),
        ];
        for (what, v, limit, key) in checks {
            if let Some((i, &x)) = v.iter().enumerate().find(|(_, &x)| x as usize >= limit) {
                return shape_err("encoder", format!("{what} {x} at position {i} is not below {key} = {limit}"));
            }
        }
        gpu.write_u32(&acts.ids, &b.ids)?;
        gpu.write_u32(&acts.pos, &pos)?;
        gpu.write_u32(&acts.types, &types)?;
        gpu.write_u32(&acts.mask, &b.mask)?;
        if let Some(l) = &b.labels {
            if l.len() != b.batch {
                return shape_err("encoder", format!("{} labels for a batch of {}", l.len(), b.batch));
            }
            if let Some(&bad) = l.iter().find(|&&x| x as usize >= c.num_labels()) {
                return shape_err(
                    "encoder",
                    format!("label {bad} is not below the number of classes {}", c.num_labels()),
                );
            }
            gpu.write_u32(&acts.labels, l)?;
        }
        let cls: Vec<u32> = (0..b.batch as u32).map(|i| i * b.seq as u32).collect();
        acts.index = Some([
            EmbeddingIndex::upload(gpu, &b.ids, c.vocab_size)?,
            EmbeddingIndex::upload(gpu, &pos, c.max_position_embeddings)?,
            EmbeddingIndex::upload(gpu, &types, c.type_vocab_size)?,
            EmbeddingIndex::upload(gpu, &cls, n)?,
        ]);
        Ok(())
    }

    /// Sentence embeddings of a batch (inference): the last hidden states pooled per sequence
    /// on the GPU (`Pooling::Mean` over real tokens, or the first token), then L2-normalised
    /// when `normalize`. One submit and one small readback.
    pub async fn embed(
        &self,
        gpu: &Gpu,
        batch: &TextBatch,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let (b, t, h) = (batch.batch, batch.seq, self.cfg.hidden_size);
        let mut acts = self.acts(gpu, b, t)?;
        let unlabeled = TextBatch { labels: None, ..batch.clone() };
        self.upload(gpu, &mut acts, &unlabeled)?;
        let mut rec = gpu.recorder();
        self.forward(&mut rec, &acts, false, None)?;
        let pooled = match pooling {
            Pooling::Cls => acts.cls.clone(),
            Pooling::Mean => {
                // out[b] = sum_t w[b, t] x[b, t, :] with w = mask / count: a batched 1 x T x H matmul.
                let mut w = vec![0f32; b * t];
                for (row, m) in w.chunks_mut(t).zip(batch.mask.chunks(t)) {
                    let n = m.iter().filter(|&&v| v != 0).count().max(1) as f32;
                    for (x, &v) in row.iter_mut().zip(m) {
                        *x = if v != 0 { 1.0 / n } else { 0.0 };
                    }
                }
                let wt = gpu.from_f32(&w, &[b, t])?;
                let out = gpu.zeros(&[b, h])?;
                let last = &acts.xs[self.cfg.num_layers];
                let mm = Matmul {
                    m: 1,
                    n: h,
                    k: t,
                    batch: b,
                    batch_inner: 1,
                    a: MatView { t: &wt, off: 0, rs: t, cs: 1, bo: t, bi: 0 },
                    b: MatView { t: last, off: 0, rs: h, cs: 1, bo: t * h, bi: 0 },
                    c: MatView { t: &out, off: 0, rs: h, cs: 1, bo: h, bi: 0 },
                    bias: None,
                    act: Act::None,
                    pre: None,
                    alpha: 1.0,
                    beta: None,
                };
                matmul(&mut rec, &mm)?;
                out
            }
        };
        rec.submit()?;
        let flat = gpu.read_f32(&pooled).await?;
        Ok(flat
            .chunks(h)
            .map(|v| {
                let mut v = v.to_vec();
                if normalize {
                    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
                    v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
                }
                v
            })
            .collect())
    }

    fn pass<'a>(&self, a: &'a EncoderActs, d: &'a Drop, layer: usize) -> Pass<'a> {
        Pass { batch: a.batch, seq: a.seq, mask: Some(&a.mask), table: None, drop: d, layer }
    }

    /// The tensors feeding the head's two linears: the (possibly dropped) CLS state and the
    /// (possibly dropped) tanh output. RoBERTa drops both, BERT only the pooled output.
    fn head_inputs<'a>(&self, a: &'a EncoderActs, d: &Drop) -> (&'a Tensor, &'a Tensor) {
        let hin = if d.hidden() && self.cfg.kind == EncoderKind::Roberta { &a.cls_drop } else { &a.cls };
        let hmid = if d.hidden() { &a.head_drop } else { &a.head_h };
        (hin, hmid)
    }
}

/// Read and validate `<dir>/config.json` (native).
#[cfg(not(target_arch = "wasm32"))]
pub fn read_encoder_config(dir: &std::path::Path) -> Result<EncoderConfig> {
    let p = dir.join("config.json");
    let bytes = crate::io::hf::read(&p)?;
    EncoderConfig::parse(&p.display().to_string(), &String::from_utf8_lossy(&bytes))
}

/// Save an encoder as a Hugging Face folder (native): `config.json`, `model.safetensors`
/// (original tensor names and dtypes) and the tokenizer files of `source` (the folder it was
/// loaded from), if given.
#[cfg(not(target_arch = "wasm32"))]
pub fn save_encoder(gpu: &Gpu, model: &Encoder, dir: &std::path::Path, source: Option<&std::path::Path>) -> Result<()> {
    let state = pollster::block_on(model.state(gpu))?;
    crate::io::hf::save_folder(dir, &state, &model.config_json(), source, &[])
}

/// The encoder as the optimizer drives it (see [`crate::models::Task`]).
pub type EncoderTask<'a> = crate::models::Task<'a, Encoder>;

impl TaskModel for Encoder {
    type Acts = EncoderActs;
    fn params(&self) -> &ParamSet {
        &self.params
    }
    /// [`Encoder::forward`] with another parameter set of the same layout (a trust-region
    /// reference copy) and optional noise added to the word embeddings (TRAM-x, R3F): the
    /// noise is `N(0, std^2)` (or uniform in `[-std, std]`) drawn from `noise.key`.
    fn forward_acts(&self, rec: &mut Recorder, a: &EncoderActs, run: Run) -> Result<()> {
        let Run { params, with_loss, train, noise } = run;
        let (p, x, c, s) = (params, &self.idx, &self.cfg, &a.s);
        a.train.set(train);
        p.set_lora_train(train);
        let d = Drop::new(train, c.hidden_dropout, c.attention_dropout);
        let bt = a.batch * a.seq;
        p.gather_rows(rec, x.word, &a.ids, &a.emb_sum)?;
        if let Some(n) = noise {
            n.fill(rec, &s.dres)?;
            axpby(rec, 1.0, &s.dres, 1.0, &a.emb_sum)?;
        }
        embedding(rec, p.p(x.pos), &a.pos, &s.dres)?;
        axpby(rec, 1.0, &s.dres, 1.0, &a.emb_sum)?;
        embedding(rec, p.p(x.typ), &a.types, &s.dres)?;
        axpby(rec, 1.0, &s.dres, 1.0, &a.emb_sum)?;
        let ln_out = if d.hidden() { &s.dres } else { &a.xs[0] };
        x.emb_norm.forward(rec, p, &a.emb_sum, ln_out, &a.emb_st)?;
        d.apply(rec, ln_out, &a.xs[0], site::EMB, false)?;
        for (l, (blk, la)) in self.blocks.iter().zip(&a.layers).enumerate() {
            blk.forward(rec, p, &a.xs[l], &a.xs[l + 1], la, s, &self.pass(a, &d, l))?;
        }
        let last = a.xs[c.num_layers].reshape(&[bt, c.hidden_size])?;
        embedding(rec, &last, &a.cls_rows, &a.cls)?;
        let (hin, hmid) = self.head_inputs(a, &d);
        d.apply_if(rec, self.cfg.kind == EncoderKind::Roberta, &a.cls, hin, site::HEAD_IN)?;
        x.head.forward(rec, p, hin, &a.head_h, Act::Tanh, Some(&a.head_pre), false)?;
        d.apply(rec, &a.head_h, hmid, site::HEAD_MID, false)?;
        x.out.forward(rec, p, hmid, &a.logits, Act::None, None, false)?;
        if with_loss {
            cross_entropy(rec, &a.logits, &a.labels, &a.loss, Some(&a.dlogits), IGNORE_INDEX, 1.0)?;
        }
        Ok(())
    }
    /// The backward pass from a given gradient of the logits. `word_grad = false` leaves the
    /// word-embedding table out (a branch whose embeddings were detached, as R3F's noised one).
    fn backward_acts(&self, rec: &mut Recorder, a: &EncoderActs, dlogits: &Tensor, word_grad: bool) -> Result<()> {
        let (p, x, c, s) = (&self.params, &self.idx, &self.cfg, &a.s);
        p.set_lora_train(a.train.get());
        let Some(index) = &a.index else {
            return shape_err("encoder", "backward before a batch was uploaded");
        };
        let d = Drop::new(a.train.get(), c.hidden_dropout, c.attention_dropout);
        let (hin, hmid) = self.head_inputs(a, &d);
        x.out.backward(rec, p, hmid, dlogits, Some((&a.d_head_h, false)), &s.ones)?;
        let dh = d.back(rec, &a.d_head_h, &a.d_cls, site::HEAD_MID)?;
        act_backward(rec, &a.head_pre, dh, &a.d_head_pre, Act::Tanh)?;
        x.head.backward(rec, p, hin, &a.d_head_pre, Some((&a.d_head_h, false)), &s.ones)?;
        let dcls = if self.cfg.kind == EncoderKind::Roberta {
            d.back(rec, &a.d_head_h, &a.d_cls, site::HEAD_IN)?
        } else {
            &a.d_head_h
        };
        let (mut dx, mut dx2) = (s.dx.clone(), s.dx2.clone());
        rec.zero(&dx);
        embedding_backward(rec, dcls, &index[3], &dx)?;
        for (l, (blk, la)) in self.blocks.iter().zip(&a.layers).enumerate().rev() {
            blk.backward(rec, p, &a.xs[l], la, s, &mut dx, &mut dx2, &self.pass(a, &d, l))?;
        }
        let dln = d.back(rec, &dx, &dx2, site::EMB)?;
        x.emb_norm.backward(rec, p, &a.emb_sum, dln, &a.emb_st, &s.dres, false)?;
        if let Some(table) = self.params.grad_parts(x.word).filter(|_| word_grad) {
            embedding_backward_parts(rec, &s.dres, &index[0], table)?;
        }
        for (i, t) in [(1, x.pos), (2, x.typ)] {
            if let Some(g) = p.g(t) {
                embedding_backward(rec, &s.dres, &index[i], g)?;
            }
        }
        Ok(())
    }
    fn outputs(acts: &EncoderActs) -> (&Tensor, &Tensor, &Tensor) {
        (&acts.logits, &acts.loss, &acts.dlogits)
    }
}
