//! BERT-family encoders (BERT, MiniLM, RoBERTa, XLM-R) with a sequence-classification head,
//! forward and backward written out layer by layer.
//!
//! Tensor names are Hugging Face's `*ForSequenceClassification` names (`bert.encoder.layer.0.…`,
//! `classifier.…`), so a saved model loads back in `transformers`. Base-model checkpoints
//! (no `bert.` prefix, no head) load too: a missing pooler or classifier is initialised like
//! Hugging Face does (normal, std 0.02; zero bias).

use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::io::config::{EncoderConfig, EncoderKind};
use crate::io::weights::{HostTensor, Weights};
use crate::nn::{act_backward, linear, linear_backward, site, Drop, Noise, ParamSet, Train};
use crate::ops::attention::{attention_backward_with, attention_with, AttnShape, HeadView};
use crate::ops::cross_entropy::{cross_entropy, IGNORE_INDEX};
use crate::ops::elementwise::axpby;
use crate::ops::embedding::{embedding, embedding_backward, embedding_backward_parts, embedding_parts, EmbeddingIndex};
use crate::ops::matmul::{matmul, Act, MatView, Matmul};
use crate::ops::norm::{layernorm, norm_backward, NormGrads};

struct LayerIdx {
    q_w: usize,
    q_b: usize,
    k_w: usize,
    k_b: usize,
    v_w: usize,
    v_b: usize,
    o_w: usize,
    o_b: usize,
    ln1_g: usize,
    ln1_b: usize,
    i_w: usize,
    i_b: usize,
    out_w: usize,
    out_b: usize,
    ln2_g: usize,
    ln2_b: usize,
}

struct Idx {
    word: usize,
    pos: usize,
    typ: usize,
    emb_g: usize,
    emb_b: usize,
    layers: Vec<LayerIdx>,
    head_w: usize,
    head_b: usize,
    out_w: usize,
    out_b: usize,
}

/// An encoder with a classification head, its parameters and gradients on the GPU.
pub struct Encoder {
    pub cfg: EncoderConfig,
    pub params: ParamSet,
    idx: Idx,
}

/// How a sentence embedding is taken from the last hidden states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the real (unpadded) tokens: sentence-transformers' default.
    Mean,
    /// The first token (`[CLS]` / `<s>`).
    Cls,
}

/// One batch of token sequences, row-major `[batch, seq]`.
#[derive(Clone, Debug)]
pub struct TextBatch {
    pub batch: usize,
    pub seq: usize,
    pub ids: Vec<u32>,
    /// 1 = real token, 0 = padding.
    pub mask: Vec<u32>,
    /// Segment ids (BERT); zeros when absent.
    pub types: Option<Vec<u32>>,
    /// One class id per sequence; needed for the loss and the backward pass.
    pub labels: Option<Vec<u32>>,
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
    emb_mean: Tensor,
    emb_rstd: Tensor,
    xs: Vec<Tensor>,
    layers: Vec<LayerActs>,
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
    dx: Tensor,
    dx2: Tensor,
    dres: Tensor,
    dh1: Tensor,
    dinter: Tensor,
    dpre: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    dctx: Tensor,
}

struct LayerActs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    probs: Tensor,
    probs_drop: Tensor,
    ctx: Tensor,
    res1: Tensor,
    ln1_mean: Tensor,
    ln1_rstd: Tensor,
    h1: Tensor,
    pre: Tensor,
    inter: Tensor,
    res2: Tensor,
    ln2_mean: Tensor,
    ln2_rstd: Tensor,
}

impl Encoder {
    /// The canonical `(name, shape)` list, in arena order.
    fn specs(cfg: &EncoderConfig) -> Vec<(String, Vec<usize>)> {
        let (h, i, p) = (cfg.hidden_size, cfg.intermediate_size, cfg.prefix());
        let mut v: Vec<(String, Vec<usize>)> = vec![
            (format!("{p}embeddings.word_embeddings.weight"), vec![cfg.vocab_size, h]),
            (format!("{p}embeddings.position_embeddings.weight"), vec![cfg.max_position_embeddings, h]),
            (format!("{p}embeddings.token_type_embeddings.weight"), vec![cfg.type_vocab_size, h]),
            (format!("{p}embeddings.LayerNorm.weight"), vec![h]),
            (format!("{p}embeddings.LayerNorm.bias"), vec![h]),
        ];
        for l in 0..cfg.num_layers {
            let n = |s: &str| format!("{p}encoder.layer.{l}.{s}");
            for (name, shape) in [
                ("attention.self.query.weight", vec![h, h]),
                ("attention.self.query.bias", vec![h]),
                ("attention.self.key.weight", vec![h, h]),
                ("attention.self.key.bias", vec![h]),
                ("attention.self.value.weight", vec![h, h]),
                ("attention.self.value.bias", vec![h]),
                ("attention.output.dense.weight", vec![h, h]),
                ("attention.output.dense.bias", vec![h]),
                ("attention.output.LayerNorm.weight", vec![h]),
                ("attention.output.LayerNorm.bias", vec![h]),
                ("intermediate.dense.weight", vec![i, h]),
                ("intermediate.dense.bias", vec![i]),
                ("output.dense.weight", vec![h, i]),
                ("output.dense.bias", vec![h]),
                ("output.LayerNorm.weight", vec![h]),
                ("output.LayerNorm.bias", vec![h]),
            ] {
                v.push((n(name), shape));
            }
        }
        let c = cfg.num_labels();
        let (hw, hb, ow, ob) = match cfg.kind {
            EncoderKind::Bert => (
                format!("{p}pooler.dense.weight"),
                format!("{p}pooler.dense.bias"),
                "classifier.weight".into(),
                "classifier.bias".into(),
            ),
            EncoderKind::Roberta => (
                "classifier.dense.weight".into(),
                "classifier.dense.bias".into(),
                "classifier.out_proj.weight".into(),
                "classifier.out_proj.bias".into(),
            ),
        };
        v.push((hw, vec![h, h]));
        v.push((hb, vec![h]));
        v.push((ow, vec![c, h]));
        v.push((ob, vec![c]));
        v
    }

    /// Build the model from a config and its weights (see the module docs for what may be
    /// missing). `seed` initialises a missing head.
    pub fn load(gpu: &Gpu, cfg: EncoderConfig, w: &Weights, seed: u64) -> Result<Self> {
        let specs = Self::specs(&cfg);
        let params = ParamSet::load(gpu, &specs, w, cfg.prefix(), specs.len() - 4, &[0], seed)?;
        let mut k = 0;
        let mut next = || {
            k += 1;
            k - 1
        };
        let (word, pos, typ, emb_g, emb_b) = (next(), next(), next(), next(), next());
        let layers = (0..cfg.num_layers)
            .map(|_| LayerIdx {
                q_w: next(),
                q_b: next(),
                k_w: next(),
                k_b: next(),
                v_w: next(),
                v_b: next(),
                o_w: next(),
                o_b: next(),
                ln1_g: next(),
                ln1_b: next(),
                i_w: next(),
                i_b: next(),
                out_w: next(),
                out_b: next(),
                ln2_g: next(),
                ln2_b: next(),
            })
            .collect();
        let idx =
            Idx { word, pos, typ, emb_g, emb_b, layers, head_w: next(), head_b: next(), out_w: next(), out_b: next() };
        Ok(Encoder { cfg, params, idx })
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
        let (bt, h, i) = (batch * seq, c.hidden_size, c.intermediate_size);
        if batch == 0 || seq == 0 {
            return shape_err("encoder", "empty batch");
        }
        let f = |shape: &[usize]| gpu.zeros(shape);
        let layers = (0..c.num_layers)
            .map(|_| {
                Ok(LayerActs {
                    q: f(&[bt, h])?,
                    k: f(&[bt, h])?,
                    v: f(&[bt, h])?,
                    probs: f(&[batch * c.num_heads * seq * seq])?,
                    // Only written in training with attention dropout.
                    probs_drop: if c.attention_dropout > 0.0 {
                        f(&[batch * c.num_heads * seq * seq])?
                    } else {
                        f(&[1])?
                    },
                    ctx: f(&[bt, h])?,
                    res1: f(&[bt, h])?,
                    ln1_mean: f(&[bt])?,
                    ln1_rstd: f(&[bt])?,
                    h1: f(&[bt, h])?,
                    pre: f(&[bt, i])?,
                    inter: f(&[bt, i])?,
                    res2: f(&[bt, h])?,
                    ln2_mean: f(&[bt])?,
                    ln2_rstd: f(&[bt])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
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
            emb_mean: f(&[bt])?,
            emb_rstd: f(&[bt])?,
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
            dx: f(&[bt, h])?,
            dx2: f(&[bt, h])?,
            dres: f(&[bt, h])?,
            dh1: f(&[bt, h])?,
            dinter: f(&[bt, i])?,
            dpre: f(&[bt, i])?,
            dq: f(&[bt, h])?,
            dk: f(&[bt, h])?,
            dv: f(&[bt, h])?,
            dctx: f(&[bt, h])?,
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
        if b.batch != acts.batch || b.seq != acts.seq {
            return shape_err(
                "encoder",
                format!(
                    "batch is {}x{} but the activations were planned for {}x{}",
                    b.batch, b.seq, acts.batch, acts.seq
                ),
            );
        }
        if b.ids.len() != n || b.mask.len() != n {
            return shape_err(
                "encoder",
                format!("ids ({}) and mask ({}) must have batch x seq = {n} entries", b.ids.len(), b.mask.len()),
            );
        }
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

    fn shape(&self, a: &EncoderActs) -> AttnShape {
        AttnShape { batch: a.batch, seq: a.seq, heads: self.cfg.num_heads, head_dim: self.cfg.head_dim() }
    }

    /// Record the forward pass: logits, and the loss (with dlogits ready for the backward)
    /// when `with_loss` (the batch must have labels). `train` turns dropout on (hidden and
    /// attention probabilities, as configured); `None` is evaluation mode.
    pub fn forward(&self, rec: &mut Recorder, a: &EncoderActs, with_loss: bool, train: Option<Train>) -> Result<()> {
        self.forward_with(rec, a, with_loss, train, &self.params, None)
    }

    /// [`Encoder::forward`] with another parameter set of the same layout (a trust-region
    /// reference copy) and optional noise added to the word embeddings (TRAM-x, R3F): the
    /// noise is `N(0, std^2)` (or uniform in `[-std, std]`) drawn from `noise.key`.
    pub fn forward_with(
        &self,
        rec: &mut Recorder,
        a: &EncoderActs,
        with_loss: bool,
        train: Option<Train>,
        params: &ParamSet,
        noise: Option<Noise>,
    ) -> Result<()> {
        let (p, x) = (params, &self.idx);
        let c = &self.cfg;
        a.train.set(train);
        let d = Drop::new(train, c.hidden_dropout, c.attention_dropout);
        let bt = a.batch * a.seq;
        let eps = c.layer_norm_eps;
        embedding_parts(rec, p.parts(x.word), &a.ids, &a.emb_sum)?;
        if let Some(n) = noise {
            n.fill(rec, &a.dres)?;
            axpby(rec, 1.0, &a.dres, 1.0, &a.emb_sum)?;
        }
        embedding(rec, p.p(x.pos), &a.pos, &a.dres)?;
        axpby(rec, 1.0, &a.dres, 1.0, &a.emb_sum)?;
        embedding(rec, p.p(x.typ), &a.types, &a.dres)?;
        axpby(rec, 1.0, &a.dres, 1.0, &a.emb_sum)?;
        let ln_out = if d.hidden() { &a.dres } else { &a.xs[0] };
        layernorm(rec, &a.emb_sum, p.p(x.emb_g), p.p(x.emb_b), ln_out, &a.emb_mean, &a.emb_rstd, eps)?;
        d.apply(rec, ln_out, &a.xs[0], site::EMB, false)?;
        let s = self.shape(a);
        let scale = 1.0 / (c.head_dim() as f32).sqrt();
        for (l, (li, la)) in x.layers.iter().zip(&a.layers).enumerate() {
            let xin = &a.xs[l];
            linear(rec, xin, p.p(li.q_w), p.p(li.q_b), &la.q, Act::None, None, false)?;
            linear(rec, xin, p.p(li.k_w), p.p(li.k_b), &la.k, Act::None, None, false)?;
            linear(rec, xin, p.p(li.v_w), p.p(li.v_b), &la.v, Act::None, None, false)?;
            let (q, k, v) = (HeadView::dense(&la.q, &s), HeadView::dense(&la.k, &s), HeadView::dense(&la.v, &s));
            let drop = d.attn(site::attn(l), &la.probs_drop);
            attention_with(
                rec,
                &s,
                q,
                k,
                v,
                HeadView::dense(&la.ctx, &s),
                &la.probs,
                Some(&a.mask),
                false,
                scale,
                drop,
            )?;
            // res1 = x + dropout(ctx Wo^T + bo); without dropout the matmul adds into res1 itself.
            rec.copy(xin, &la.res1)?;
            if d.hidden() {
                linear(rec, &la.ctx, p.p(li.o_w), p.p(li.o_b), &a.dq, Act::None, None, false)?;
                d.apply(rec, &a.dq, &la.res1, site::attn_out(l), true)?;
            } else {
                linear(rec, &la.ctx, p.p(li.o_w), p.p(li.o_b), &la.res1, Act::None, None, true)?;
            }
            layernorm(rec, &la.res1, p.p(li.ln1_g), p.p(li.ln1_b), &la.h1, &la.ln1_mean, &la.ln1_rstd, eps)?;
            linear(rec, &la.h1, p.p(li.i_w), p.p(li.i_b), &la.inter, c.act, Some(&la.pre), false)?;
            rec.copy(&la.h1, &la.res2)?;
            if d.hidden() {
                linear(rec, &la.inter, p.p(li.out_w), p.p(li.out_b), &a.dk, Act::None, None, false)?;
                d.apply(rec, &a.dk, &la.res2, site::ffn_out(l), true)?;
            } else {
                linear(rec, &la.inter, p.p(li.out_w), p.p(li.out_b), &la.res2, Act::None, None, true)?;
            }
            layernorm(rec, &la.res2, p.p(li.ln2_g), p.p(li.ln2_b), &a.xs[l + 1], &la.ln2_mean, &la.ln2_rstd, eps)?;
        }
        let last = a.xs[c.num_layers].reshape(&[bt, c.hidden_size])?;
        embedding(rec, &last, &a.cls_rows, &a.cls)?;
        let (hin, hmid) = self.head_inputs(a, &d);
        d.apply_if(rec, self.cfg.kind == EncoderKind::Roberta, &a.cls, hin, site::HEAD_IN)?;
        linear(rec, hin, p.p(x.head_w), p.p(x.head_b), &a.head_h, Act::Tanh, Some(&a.head_pre), false)?;
        d.apply(rec, &a.head_h, hmid, site::HEAD_MID, false)?;
        linear(rec, hmid, p.p(x.out_w), p.p(x.out_b), &a.logits, Act::None, None, false)?;
        if with_loss {
            cross_entropy(rec, &a.logits, &a.labels, &a.loss, Some(&a.dlogits), IGNORE_INDEX, 1.0)?;
        }
        Ok(())
    }

    /// The tensors feeding the head's two linears: the (possibly dropped) CLS state and the
    /// (possibly dropped) tanh output. RoBERTa drops both, BERT only the pooled output.
    fn head_inputs<'a>(&self, a: &'a EncoderActs, d: &Drop) -> (&'a Tensor, &'a Tensor) {
        let hin = if d.hidden() && self.cfg.kind == EncoderKind::Roberta { &a.cls_drop } else { &a.cls };
        let hmid = if d.hidden() { &a.head_drop } else { &a.head_h };
        (hin, hmid)
    }

    /// Record the backward pass of the mean loss, accumulating (+=) into the gradients.
    /// Call after [`Encoder::forward`] with `with_loss`, in the same or a later recorder; the
    /// dropout masks of that forward are regenerated from its [`Train`] keys.
    pub fn backward(&self, rec: &mut Recorder, a: &EncoderActs) -> Result<()> {
        self.backward_from(rec, a, &a.dlogits, true)
    }

    /// The backward pass from a given gradient of the logits. `word_grad = false` leaves the
    /// word-embedding table out (a branch whose embeddings were detached, as R3F's noised one).
    pub fn backward_from(&self, rec: &mut Recorder, a: &EncoderActs, dlogits: &Tensor, word_grad: bool) -> Result<()> {
        let (p, x) = (&self.params, &self.idx);
        let c = &self.cfg;
        let Some(index) = &a.index else {
            return shape_err("encoder", "backward before a batch was uploaded");
        };
        let d = Drop::new(a.train.get(), c.hidden_dropout, c.attention_dropout);
        let g = |i: usize| p.g(i);
        let (hin, hmid) = self.head_inputs(a, &d);
        linear_backward(rec, hmid, p.p(x.out_w), dlogits, g(x.out_w), g(x.out_b), Some((&a.d_head_h, false)))?;
        let dh = d.back(rec, &a.d_head_h, &a.d_cls, site::HEAD_MID)?;
        act_backward(rec, &a.head_pre, dh, &a.d_head_pre, Act::Tanh)?;
        linear_backward(rec, hin, p.p(x.head_w), &a.d_head_pre, g(x.head_w), g(x.head_b), Some((&a.d_head_h, false)))?;
        let dcls = if self.cfg.kind == EncoderKind::Roberta {
            d.back(rec, &a.d_head_h, &a.d_cls, site::HEAD_IN)?
        } else {
            &a.d_head_h
        };
        let (mut dx, mut dx2) = (a.dx.clone(), a.dx2.clone());
        rec.zero(&dx);
        embedding_backward(rec, dcls, &index[3], &dx)?;
        let s = self.shape(a);
        let scale = 1.0 / (c.head_dim() as f32).sqrt();
        for (l, (li, la)) in x.layers.iter().zip(&a.layers).enumerate().rev() {
            let xin = &a.xs[l];
            let ng = NormGrads { dx: &a.dres, accumulate_dx: false, dgamma: g(li.ln2_g), dbeta: Some(g(li.ln2_b)) };
            norm_backward(rec, &la.res2, p.p(li.ln2_g), &dx, Some(&la.ln2_mean), &la.ln2_rstd, &ng)?;
            rec.copy(&a.dres, &a.dh1)?;
            let dout = d.back(rec, &a.dres, &a.dq, site::ffn_out(l))?;
            linear_backward(rec, &la.inter, p.p(li.out_w), dout, g(li.out_w), g(li.out_b), Some((&a.dinter, false)))?;
            act_backward(rec, &la.pre, &a.dinter, &a.dpre, c.act)?;
            linear_backward(rec, &la.h1, p.p(li.i_w), &a.dpre, g(li.i_w), g(li.i_b), Some((&a.dh1, true)))?;
            let ng = NormGrads { dx: &a.dres, accumulate_dx: false, dgamma: g(li.ln1_g), dbeta: Some(g(li.ln1_b)) };
            norm_backward(rec, &la.res1, p.p(li.ln1_g), &a.dh1, Some(&la.ln1_mean), &la.ln1_rstd, &ng)?;
            rec.copy(&a.dres, &dx2)?;
            let dout = d.back(rec, &a.dres, &a.dq, site::attn_out(l))?;
            linear_backward(rec, &la.ctx, p.p(li.o_w), dout, g(li.o_w), g(li.o_b), Some((&a.dctx, false)))?;
            let (q, k, v) = (HeadView::dense(&la.q, &s), HeadView::dense(&la.k, &s), HeadView::dense(&la.v, &s));
            let (dq, dk, dv) = (HeadView::dense(&a.dq, &s), HeadView::dense(&a.dk, &s), HeadView::dense(&a.dv, &s));
            let drop = d.attn(site::attn(l), &la.probs_drop);
            let dctx = HeadView::dense(&a.dctx, &s);
            attention_backward_with(rec, &s, q, k, v, &la.probs, dctx, dq, dk, dv, scale, false, drop)?;
            linear_backward(rec, xin, p.p(li.q_w), &a.dq, g(li.q_w), g(li.q_b), Some((&dx2, true)))?;
            linear_backward(rec, xin, p.p(li.k_w), &a.dk, g(li.k_w), g(li.k_b), Some((&dx2, true)))?;
            linear_backward(rec, xin, p.p(li.v_w), &a.dv, g(li.v_w), g(li.v_b), Some((&dx2, true)))?;
            std::mem::swap(&mut dx, &mut dx2);
        }
        let dln = d.back(rec, &dx, &dx2, site::EMB)?;
        let ng = NormGrads { dx: &a.dres, accumulate_dx: false, dgamma: g(x.emb_g), dbeta: Some(g(x.emb_b)) };
        norm_backward(rec, &a.emb_sum, p.p(x.emb_g), dln, Some(&a.emb_mean), &a.emb_rstd, &ng)?;
        if word_grad {
            embedding_backward_parts(rec, &a.dres, &index[0], self.params.grad_parts(x.word))?;
        }
        embedding_backward(rec, &a.dres, &index[1], g(x.pos))?;
        embedding_backward(rec, &a.dres, &index[2], g(x.typ))?;
        Ok(())
    }
}

/// The encoder as the optimizer drives it (see [`crate::optim::Task`]).
pub type EncoderTask<'a> = crate::optim::Task<'a, Encoder>;

impl crate::optim::TaskModel for Encoder {
    type Acts = EncoderActs;
    fn params(&self) -> &ParamSet {
        &self.params
    }
    fn forward_acts(
        &self,
        rec: &mut Recorder,
        acts: &EncoderActs,
        with_loss: bool,
        train: Option<Train>,
        params: &ParamSet,
        noise: Option<Noise>,
    ) -> Result<()> {
        self.forward_with(rec, acts, with_loss, train, params, noise)
    }
    fn backward_acts(&self, rec: &mut Recorder, acts: &EncoderActs, dlogits: &Tensor, input_grad: bool) -> Result<()> {
        self.backward_from(rec, acts, dlogits, input_grad)
    }
    fn outputs(acts: &EncoderActs) -> (&Tensor, &Tensor, &Tensor) {
        (&acts.logits, &acts.loss, &acts.dlogits)
    }
}
