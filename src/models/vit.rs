//! ViT image classifier (Hugging Face `ViTForImageClassification`), forward and backward.
//!
//! The patch embedding is a matmul of CPU-cut patches (`ops::patch::patchify`) with the
//! `Conv2d` weight viewed as `[hidden, channels * p * p]`; the CLS token and position
//! embeddings are added by `ops::patch::assemble`. Layers are pre-LayerNorm. A checkpoint
//! without a classifier (a backbone) gets one initialised like Hugging Face (normal 0.02).

use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::io::config::{VisionKind, VitConfig};
use crate::io::weights::{HostTensor, Weights};
use crate::nn::{act_backward, linear, linear_backward, site, Drop, Noise, ParamSet, Train};
use crate::ops::attention::{attention_backward_with, attention_with, AttnShape, HeadView};
use crate::ops::cross_entropy::{cross_entropy, IGNORE_INDEX};
use crate::ops::elementwise::{mul, mul_cols};
use crate::ops::embedding::{embedding, embedding_backward, EmbeddingIndex};
use crate::ops::matmul::{matmul, Act, MatView, Matmul};
use crate::ops::norm::{layernorm, norm_backward, NormGrads};
use crate::ops::patch::{assemble, assemble_backward, patchify, position_map};
use crate::ops::reduce::colsum;

struct LayerIdx {
    ln1_g: usize,
    ln1_b: usize,
    q_w: usize,
    q_b: usize,
    k_w: usize,
    k_b: usize,
    v_w: usize,
    v_b: usize,
    o_w: usize,
    o_b: usize,
    ln2_g: usize,
    ln2_b: usize,
    i_w: usize,
    i_b: usize,
    out_w: usize,
    out_b: usize,
    /// DINOv2's LayerScale vectors (after attention, after the MLP).
    ls1: Option<usize>,
    ls2: Option<usize>,
}

struct Idx {
    cls: usize,
    pos: usize,
    patch_w: usize,
    patch_b: usize,
    layers: Vec<LayerIdx>,
    ln_g: usize,
    ln_b: usize,
    head_w: usize,
    head_b: usize,
}

/// A ViT with a classification head, parameters and gradients on the GPU.
pub struct Vit {
    pub cfg: VitConfig,
    pub params: ParamSet,
    idx: Idx,
    /// `[seq, trained seq]`: trained position embeddings to the input's (ops::patch::position_map).
    pos_map: Tensor,
}

/// One batch of images, `[batch, channels, height, width]` already resized and normalised.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    pub batch: usize,
    pub pixels: Vec<f32>,
    pub labels: Option<Vec<u32>>,
}

struct LayerActs {
    ln1_mean: Tensor,
    ln1_rstd: Tensor,
    h1: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    probs: Tensor,
    probs_drop: Tensor,
    ctx: Tensor,
    res1: Tensor,
    ln2_mean: Tensor,
    ln2_rstd: Tensor,
    h2: Tensor,
    pre: Tensor,
    inter: Tensor,
    /// DINOv2: the attention and MLP outputs before LayerScale (for its gradient).
    o1: Tensor,
    o2: Tensor,
}

/// Activations for one batch size, planned once.
pub struct VitActs {
    batch: usize,
    train: std::cell::Cell<Option<Train>>,
    patches: Tensor,
    patch_out: Tensor,
    xs: Vec<Tensor>,
    layers: Vec<LayerActs>,
    ln_mean: Tensor,
    ln_rstd: Tensor,
    /// Final-LayerNorm output, `[batch * seq, hidden]`.
    pub hidden: Tensor,
    cls_rows: Tensor,
    cls_index: EmbeddingIndex,
    /// The CLS token's final hidden state, `[batch, hidden]`.
    pub cls: Tensor,
    pub logits: Tensor,
    pub loss: Tensor,
    labels: Tensor,
    dlogits: Tensor,
    dcls: Tensor,
    dhidden: Tensor,
    dx: Tensor,
    dx2: Tensor,
    dres: Tensor,
    dh: Tensor,
    dinter: Tensor,
    dpre: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    dctx: Tensor,
    dpe: Tensor,
    pos_full: Tensor,
    dpos_full: Tensor,
    /// DINOv2's head: pooling weights (0 on CLS, 1/patches elsewhere), the mean patch token.
    pool_w: Tensor,
    mean: Tensor,
    dmean: Tensor,
    dtmp: Tensor,
    dtmp2: Tensor,
}

impl Vit {
    fn specs(cfg: &VitConfig) -> Vec<(String, Vec<usize>)> {
        let (h, i, p, c) = (cfg.hidden_size, cfg.intermediate_size, cfg.patch_size, cfg.num_channels);
        let dino = cfg.kind == VisionKind::Dinov2;
        let pre = if dino { "dinov2" } else { "vit" };
        let g = cfg.pos_grid();
        let mut v: Vec<(String, Vec<usize>)> = vec![
            (format!("{pre}.embeddings.cls_token"), vec![1, 1, h]),
            (format!("{pre}.embeddings.position_embeddings"), vec![1, g * g + 1, h]),
            (format!("{pre}.embeddings.patch_embeddings.projection.weight"), vec![h, c, p, p]),
            (format!("{pre}.embeddings.patch_embeddings.projection.bias"), vec![h]),
        ];
        if dino {
            // Used only for masked-image modelling: no gradient in classification.
            v.push(("dinov2.embeddings.mask_token".into(), vec![1, h]));
        }
        let names: [&str; 16] = if dino {
            [
                "norm1.weight",
                "norm1.bias",
                "attention.attention.query.weight",
                "attention.attention.query.bias",
                "attention.attention.key.weight",
                "attention.attention.key.bias",
                "attention.attention.value.weight",
                "attention.attention.value.bias",
                "attention.output.dense.weight",
                "attention.output.dense.bias",
                "norm2.weight",
                "norm2.bias",
                "mlp.fc1.weight",
                "mlp.fc1.bias",
                "mlp.fc2.weight",
                "mlp.fc2.bias",
            ]
        } else {
            [
                "layernorm_before.weight",
                "layernorm_before.bias",
                "attention.attention.query.weight",
                "attention.attention.query.bias",
                "attention.attention.key.weight",
                "attention.attention.key.bias",
                "attention.attention.value.weight",
                "attention.attention.value.bias",
                "attention.output.dense.weight",
                "attention.output.dense.bias",
                "layernorm_after.weight",
                "layernorm_after.bias",
                "intermediate.dense.weight",
                "intermediate.dense.bias",
                "output.dense.weight",
                "output.dense.bias",
            ]
        };
        let shapes = [
            vec![h],
            vec![h],
            vec![h, h],
            vec![h],
            vec![h, h],
            vec![h],
            vec![h, h],
            vec![h],
            vec![h, h],
            vec![h],
            vec![h],
            vec![h],
            vec![i, h],
            vec![i],
            vec![h, i],
            vec![h],
        ];
        for l in 0..cfg.num_layers {
            for (name, shape) in names.iter().zip(&shapes) {
                v.push((format!("{pre}.encoder.layer.{l}.{name}"), shape.clone()));
            }
            if dino {
                v.push((format!("dinov2.encoder.layer.{l}.layer_scale1.lambda1"), vec![h]));
                v.push((format!("dinov2.encoder.layer.{l}.layer_scale2.lambda1"), vec![h]));
            }
        }
        v.push((format!("{pre}.layernorm.weight"), vec![h]));
        v.push((format!("{pre}.layernorm.bias"), vec![h]));
        v.push(("classifier.weight".into(), vec![cfg.num_labels(), if dino { 2 * h } else { h }]));
        v.push(("classifier.bias".into(), vec![cfg.num_labels()]));
        v
    }

    /// Build the model from a config and its weights (names with or without `vit.`).
    pub fn load(gpu: &Gpu, cfg: VitConfig, w: &Weights, seed: u64) -> Result<Self> {
        let dino = cfg.kind == VisionKind::Dinov2;
        if !dino && cfg.input_size != cfg.image_size {
            return shape_err(
                "vit",
                format!("a ViT takes {0}x{0} images (image_size), not {1}x{1}", cfg.image_size, cfg.input_size),
            );
        }
        if !cfg.input_size.is_multiple_of(cfg.patch_size) {
            return shape_err(
                "vit",
                format!("input size {} is not a multiple of the patch size {}", cfg.input_size, cfg.patch_size),
            );
        }
        let specs = Self::specs(&cfg);
        let params = ParamSet::load(gpu, &specs, w, if dino { "dinov2." } else { "vit." }, specs.len() - 2, &[], seed)?;
        let (g0, g1) = (cfg.pos_grid(), cfg.grid());
        let pos_map = gpu.from_f32(&position_map(g0, g1), &[g1 * g1 + 1, g0 * g0 + 1])?;
        let mut k = 0;
        let mut next = || {
            k += 1;
            k - 1
        };
        let (cls, pos, patch_w, patch_b) = (next(), next(), next(), next());
        if dino {
            next(); // mask_token
        }
        let layers = (0..cfg.num_layers)
            .map(|_| LayerIdx {
                ln1_g: next(),
                ln1_b: next(),
                q_w: next(),
                q_b: next(),
                k_w: next(),
                k_b: next(),
                v_w: next(),
                v_b: next(),
                o_w: next(),
                o_b: next(),
                ln2_g: next(),
                ln2_b: next(),
                i_w: next(),
                i_b: next(),
                out_w: next(),
                out_b: next(),
                ls1: dino.then(&mut next),
                ls2: dino.then(&mut next),
            })
            .collect();
        let idx =
            Idx { cls, pos, patch_w, patch_b, layers, ln_g: next(), ln_b: next(), head_w: next(), head_b: next() };
        Ok(Vit { cfg, params, idx, pos_map })
    }

    /// Every parameter under its Hugging Face name, in the dtype it was loaded in.
    pub async fn state(&self, gpu: &Gpu) -> Result<Vec<(String, HostTensor)>> {
        self.params.state(gpu).await
    }

    /// `config.json` for saving: the loaded config with the classification architecture and
    /// this model's labels.
    pub fn config_json(&self) -> serde_json::Value {
        let arch = match self.cfg.kind {
            VisionKind::Vit => "ViTForImageClassification",
            VisionKind::Dinov2 => "Dinov2ForImageClassification",
        };
        crate::io::config::with_labels(&self.cfg.raw, arch, &self.cfg.id2label)
    }

    /// Plan activations for batches of `batch` images.
    pub fn acts(&self, gpu: &Gpu, batch: usize) -> Result<VitActs> {
        let c = &self.cfg;
        if batch == 0 {
            return shape_err("vit", "empty batch");
        }
        let (s, h, i) = (c.seq(), c.hidden_size, c.intermediate_size);
        let dino = c.kind == VisionKind::Dinov2;
        let (bs, np) = (batch * s, batch * (s - 1));
        let row = c.num_channels * c.patch_size * c.patch_size;
        let f = |shape: &[usize]| gpu.zeros(shape);
        let layers = (0..c.num_layers)
            .map(|_| {
                Ok(LayerActs {
                    ln1_mean: f(&[bs])?,
                    ln1_rstd: f(&[bs])?,
                    h1: f(&[bs, h])?,
                    q: f(&[bs, h])?,
                    k: f(&[bs, h])?,
                    v: f(&[bs, h])?,
                    probs: f(&[batch * c.num_heads * s * s])?,
                    probs_drop: if c.attention_dropout > 0.0 { f(&[batch * c.num_heads * s * s])? } else { f(&[1])? },
                    ctx: f(&[bs, h])?,
                    res1: f(&[bs, h])?,
                    ln2_mean: f(&[bs])?,
                    ln2_rstd: f(&[bs])?,
                    h2: f(&[bs, h])?,
                    pre: f(&[bs, i])?,
                    inter: f(&[bs, i])?,
                    o1: if dino { f(&[bs, h])? } else { f(&[1])? },
                    o2: if dino { f(&[bs, h])? } else { f(&[1])? },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<u32> = (0..batch as u32).map(|b| b * s as u32).collect();
        Ok(VitActs {
            batch,
            train: Default::default(),
            patches: f(&[np, row])?,
            patch_out: f(&[np, h])?,
            xs: (0..=c.num_layers).map(|_| f(&[bs, h])).collect::<Result<_>>()?,
            layers,
            ln_mean: f(&[bs])?,
            ln_rstd: f(&[bs])?,
            hidden: f(&[bs, h])?,
            cls_rows: gpu.from_u32(&rows, &[batch])?,
            cls_index: EmbeddingIndex::upload(gpu, &rows, bs)?,
            cls: f(&[batch, h])?,
            logits: f(&[batch, c.num_labels()])?,
            loss: f(&[2])?,
            labels: gpu.zeros_u32(&[batch])?,
            dlogits: f(&[batch, c.num_labels()])?,
            dcls: f(&[batch, h])?,
            dhidden: f(&[bs, h])?,
            dx: f(&[bs, h])?,
            dx2: f(&[bs, h])?,
            dres: f(&[bs, h])?,
            dh: f(&[bs, h])?,
            dinter: f(&[bs, i])?,
            dpre: f(&[bs, i])?,
            dq: f(&[bs, h])?,
            dk: f(&[bs, h])?,
            dv: f(&[bs, h])?,
            dctx: f(&[bs, h])?,
            dpe: f(&[np, h])?,
            pos_full: f(&[s, h])?,
            dpos_full: f(&[s, h])?,
            pool_w: gpu.from_f32(
                &(0..batch * s).map(|k| if k % s == 0 { 0.0 } else { 1.0 / (s - 1) as f32 }).collect::<Vec<_>>(),
                &[batch, s],
            )?,
            mean: f(&[batch, h])?,
            dmean: f(&[batch, h])?,
            dtmp: f(&[bs, h])?,
            dtmp2: f(&[bs, h])?,
        })
    }

    /// Check a batch and upload its patches (and labels).
    pub fn upload(&self, gpu: &Gpu, a: &mut VitActs, b: &ImageBatch) -> Result<()> {
        let c = &self.cfg;
        if b.batch != a.batch {
            return shape_err("vit", format!("batch of {} images but activations planned for {}", b.batch, a.batch));
        }
        let patches = patchify(&b.pixels, b.batch, c.num_channels, c.input_size, c.input_size, c.patch_size)?;
        gpu.write_f32(&a.patches, &patches)?;
        if let Some(l) = &b.labels {
            if l.len() != b.batch {
                return shape_err("vit", format!("{} labels for a batch of {}", l.len(), b.batch));
            }
            if let Some(&bad) = l.iter().find(|&&x| x as usize >= c.num_labels()) {
                return shape_err("vit", format!("label {bad} is not below the number of classes {}", c.num_labels()));
            }
            gpu.write_u32(&a.labels, l)?;
        }
        Ok(())
    }

    /// `out[b] = w[b] · hidden[b]`: per image, a weighted sum of its `s` token rows (the mean
    /// over patch tokens when `w` is 0 on CLS and 1/patches elsewhere).
    fn pool_mm<'t>(
        &self,
        w: &'t Tensor,
        hidden: &'t Tensor,
        out: &'t Tensor,
        b: usize,
        s: usize,
        h: usize,
    ) -> Matmul<'t> {
        Matmul {
            m: 1,
            n: h,
            k: s,
            batch: b,
            batch_inner: 1,
            a: MatView { t: w, off: 0, rs: s, cs: 1, bo: s, bi: 0 },
            b: MatView { t: hidden, off: 0, rs: h, cs: 1, bo: s * h, bi: 0 },
            c: MatView { t: out, off: 0, rs: h, cs: 1, bo: h, bi: 0 },
            bias: None,
            act: Act::None,
            pre: None,
            alpha: 1.0,
            beta: None,
        }
    }

    /// Image embeddings (inference): the CLS token's final hidden state (after the last
    /// LayerNorm: Hugging Face's `pooler_output` for Dinov2Model), L2-normalised when asked.
    pub async fn embed(&self, gpu: &Gpu, batch: &ImageBatch, normalize: bool) -> Result<Vec<Vec<f32>>> {
        let mut acts = self.acts(gpu, batch.batch)?;
        self.upload(gpu, &mut acts, &ImageBatch { labels: None, ..batch.clone() })?;
        let mut rec = gpu.recorder();
        self.forward(&mut rec, &acts, false, None)?;
        rec.submit()?;
        let flat = gpu.read_f32(&acts.cls).await?;
        Ok(flat
            .chunks(self.cfg.hidden_size)
            .map(|v| {
                let n =
                    if normalize { v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12) } else { 1.0 };
                v.iter().map(|x| (*x as f64 / n) as f32).collect()
            })
            .collect())
    }

    fn shape(&self, a: &VitActs) -> AttnShape {
        AttnShape { batch: a.batch, seq: self.cfg.seq(), heads: self.cfg.num_heads, head_dim: self.cfg.head_dim() }
    }

    fn patch_weight(&self) -> Result<Tensor> {
        let h = self.cfg.hidden_size;
        self.params.p(self.idx.patch_w).reshape(&[h, self.params.p(self.idx.patch_w).len() / h])
    }

    /// Record the forward pass (and the loss with dlogits when `with_loss`). `train` turns
    /// dropout on (embeddings, attention probabilities, both residual branches).
    pub fn forward(&self, rec: &mut Recorder, a: &VitActs, with_loss: bool, train: Option<Train>) -> Result<()> {
        self.forward_with(rec, a, with_loss, train, &self.params, None)
    }

    /// [`Vit::forward`] with another parameter set of the same layout and optional noise added
    /// to the patch-projection output, before the CLS token and positions (TRAM-x for vision:
    /// tram.md §1.3.2 leaves the point open; this is the patch analogue of token embeddings).
    pub fn forward_with(
        &self,
        rec: &mut Recorder,
        a: &VitActs,
        with_loss: bool,
        train: Option<Train>,
        params: &ParamSet,
        noise: Option<Noise>,
    ) -> Result<()> {
        let (p, x, c) = (params, &self.idx, &self.cfg);
        a.train.set(train);
        let d = Drop::new(train, c.hidden_dropout, c.attention_dropout);
        let eps = c.layer_norm_eps;
        let pw = p.p(x.patch_w).reshape(&[c.hidden_size, p.p(x.patch_w).len() / c.hidden_size])?;
        linear(rec, &a.patches, &pw, p.p(x.patch_b), &a.patch_out, Act::None, None, false)?;
        if let Some(n) = noise {
            n.fill(rec, &a.dpe)?;
            crate::ops::elementwise::axpby(rec, 1.0, &a.dpe, 1.0, &a.patch_out)?;
        }
        let x0 = if d.hidden() { &a.dres } else { &a.xs[0] };
        // The input's position embeddings: one matmul with the (interpolation) map.
        let pos = p.p(x.pos).reshape(&[self.pos_map.cols(), c.hidden_size])?;
        matmul(rec, &Matmul::new(&self.pos_map, false, &pos, false, &a.pos_full)?)?;
        assemble(rec, &a.patch_out, p.p(x.cls), &a.pos_full, x0, a.batch, c.seq())?;
        d.apply(rec, x0, &a.xs[0], site::EMB, false)?;
        let s = self.shape(a);
        let scale = 1.0 / (c.head_dim() as f32).sqrt();
        for (l, (li, la)) in x.layers.iter().zip(&a.layers).enumerate() {
            let xin = &a.xs[l];
            layernorm(rec, xin, p.p(li.ln1_g), p.p(li.ln1_b), &la.h1, &la.ln1_mean, &la.ln1_rstd, eps)?;
            linear(rec, &la.h1, p.p(li.q_w), p.p(li.q_b), &la.q, Act::None, None, false)?;
            linear(rec, &la.h1, p.p(li.k_w), p.p(li.k_b), &la.k, Act::None, None, false)?;
            linear(rec, &la.h1, p.p(li.v_w), p.p(li.v_b), &la.v, Act::None, None, false)?;
            let (q, k, v) = (HeadView::dense(&la.q, &s), HeadView::dense(&la.k, &s), HeadView::dense(&la.v, &s));
            let drop = d.attn(site::attn(l), &la.probs_drop);
            attention_with(rec, &s, q, k, v, HeadView::dense(&la.ctx, &s), &la.probs, None, false, scale, drop)?;
            if let Some(ls1) = li.ls1 {
                // res1 = x + λ1 ⊙ dropout(o1), keeping o1 (after dropout) for dλ1.
                linear(rec, &la.ctx, p.p(li.o_w), p.p(li.o_b), &la.o1, Act::None, None, false)?;
                if d.hidden() {
                    d.apply(rec, &la.o1, &a.dq, site::attn_out(l), false)?;
                    rec.copy(&a.dq, &la.o1)?;
                }
                mul_cols(rec, &la.o1, p.p(ls1), Some(xin), &la.res1)?;
            } else {
                rec.copy(xin, &la.res1)?;
                if d.hidden() {
                    linear(rec, &la.ctx, p.p(li.o_w), p.p(li.o_b), &a.dq, Act::None, None, false)?;
                    d.apply(rec, &a.dq, &la.res1, site::attn_out(l), true)?;
                } else {
                    linear(rec, &la.ctx, p.p(li.o_w), p.p(li.o_b), &la.res1, Act::None, None, true)?;
                }
            }
            layernorm(rec, &la.res1, p.p(li.ln2_g), p.p(li.ln2_b), &la.h2, &la.ln2_mean, &la.ln2_rstd, eps)?;
            linear(rec, &la.h2, p.p(li.i_w), p.p(li.i_b), &la.inter, c.act, Some(&la.pre), false)?;
            if let Some(ls2) = li.ls2 {
                linear(rec, &la.inter, p.p(li.out_w), p.p(li.out_b), &la.o2, Act::None, None, false)?;
                if d.hidden() {
                    d.apply(rec, &la.o2, &a.dk, site::ffn_out(l), false)?;
                    rec.copy(&a.dk, &la.o2)?;
                }
                mul_cols(rec, &la.o2, p.p(ls2), Some(&la.res1), &a.xs[l + 1])?;
            } else {
                rec.copy(&la.res1, &a.xs[l + 1])?;
                if d.hidden() {
                    linear(rec, &la.inter, p.p(li.out_w), p.p(li.out_b), &a.dk, Act::None, None, false)?;
                    d.apply(rec, &a.dk, &a.xs[l + 1], site::ffn_out(l), true)?;
                } else {
                    linear(rec, &la.inter, p.p(li.out_w), p.p(li.out_b), &a.xs[l + 1], Act::None, None, true)?;
                }
            }
        }
        layernorm(rec, &a.xs[c.num_layers], p.p(x.ln_g), p.p(x.ln_b), &a.hidden, &a.ln_mean, &a.ln_rstd, eps)?;
        embedding(rec, &a.hidden, &a.cls_rows, &a.cls)?;
        if c.kind == VisionKind::Dinov2 {
            // logits = [cls, mean of patch tokens] W^T + b, as two matmuls on the halves of W.
            let (b, h, s_) = (a.batch, c.hidden_size, c.seq());
            matmul(rec, &self.pool_mm(&a.pool_w, &a.hidden, &a.mean, b, s_, h))?;
            let (w, nl) = (p.p(x.head_w), c.num_labels());
            for (half, input) in [(0, &a.cls), (h, &a.mean)] {
                let wv = MatView { t: w, off: half, rs: 1, cs: 2 * h, bo: 0, bi: 0 };
                let m = Matmul {
                    m: b,
                    n: nl,
                    k: h,
                    batch: 1,
                    batch_inner: 1,
                    a: MatView::row_major(input, b, h),
                    b: wv,
                    c: MatView::row_major(&a.logits, b, nl),
                    bias: (half == 0).then_some((p.p(x.head_b), 0)),
                    act: Act::None,
                    pre: None,
                    alpha: 1.0,
                    beta: (half != 0).then_some(1.0),
                };
                matmul(rec, &m)?;
            }
        } else {
            linear(rec, &a.cls, p.p(x.head_w), p.p(x.head_b), &a.logits, Act::None, None, false)?;
        }
        if with_loss {
            cross_entropy(rec, &a.logits, &a.labels, &a.loss, Some(&a.dlogits), IGNORE_INDEX, 1.0)?;
        }
        Ok(())
    }

    /// Record the backward pass of the mean loss, accumulating (+=) into the gradients; dropout
    /// masks of the forward are regenerated from its keys.
    pub fn backward(&self, rec: &mut Recorder, a: &VitActs) -> Result<()> {
        self.backward_from(rec, a, &a.dlogits, true)
    }

    /// The backward pass from a given gradient of the logits; `patch_grad = false` leaves the
    /// patch projection out (a branch whose patch embeddings were detached, as R3F's noised one).
    pub fn backward_from(&self, rec: &mut Recorder, a: &VitActs, dlogits: &Tensor, patch_grad: bool) -> Result<()> {
        let (p, x, c) = (&self.params, &self.idx, &self.cfg);
        let d = Drop::new(a.train.get(), c.hidden_dropout, c.attention_dropout);
        let g = |i: usize| p.g(i);
        rec.zero(&a.dhidden);
        if c.kind == VisionKind::Dinov2 {
            let (b, h, s_, nl) = (a.batch, c.hidden_size, c.seq(), c.num_labels());
            let (w, gw) = (p.p(x.head_w), g(x.head_w));
            colsum(rec, dlogits, b, nl, g(x.head_b), true, 1.0)?;
            for (half, input, dinput) in [(0, &a.cls, &a.dcls), (h, &a.mean, &a.dmean)] {
                // dW[:, half..half+h] += dlogits^T input ; dinput = dlogits W[:, half..half+h]
                let dw = Matmul {
                    m: nl,
                    n: h,
                    k: b,
                    batch: 1,
                    batch_inner: 1,
                    a: MatView::row_major(dlogits, b, nl).t(),
                    b: MatView::row_major(input, b, h),
                    c: MatView { t: gw, off: half, rs: 2 * h, cs: 1, bo: 0, bi: 0 },
                    bias: None,
                    act: Act::None,
                    pre: None,
                    alpha: 1.0,
                    beta: Some(1.0),
                };
                matmul(rec, &dw)?;
                let di = Matmul {
                    m: b,
                    n: h,
                    k: nl,
                    batch: 1,
                    batch_inner: 1,
                    a: MatView::row_major(dlogits, b, nl),
                    b: MatView { t: w, off: half, rs: 2 * h, cs: 1, bo: 0, bi: 0 },
                    c: MatView::row_major(dinput, b, h),
                    bias: None,
                    act: Act::None,
                    pre: None,
                    alpha: 1.0,
                    beta: None,
                };
                matmul(rec, &di)?;
            }
            // Every patch row of image b receives dmean[b] / patches: pool_w^T (s x 1) . dmean (1 x h).
            let spread = Matmul {
                m: s_,
                n: h,
                k: 1,
                batch: b,
                batch_inner: 1,
                a: MatView { t: &a.pool_w, off: 0, rs: 1, cs: 1, bo: s_, bi: 0 },
                b: MatView { t: &a.dmean, off: 0, rs: h, cs: 1, bo: h, bi: 0 },
                c: MatView { t: &a.dhidden, off: 0, rs: h, cs: 1, bo: s_ * h, bi: 0 },
                bias: None,
                act: Act::None,
                pre: None,
                alpha: 1.0,
                beta: Some(1.0),
            };
            matmul(rec, &spread)?;
        } else {
            linear_backward(rec, &a.cls, p.p(x.head_w), dlogits, g(x.head_w), g(x.head_b), Some((&a.dcls, false)))?;
        }
        embedding_backward(rec, &a.dcls, &a.cls_index, &a.dhidden)?;
        let (mut dx, mut dx2) = (a.dx.clone(), a.dx2.clone());
        let ng = NormGrads { dx: &dx, accumulate_dx: false, dgamma: g(x.ln_g), dbeta: Some(g(x.ln_b)) };
        norm_backward(rec, &a.xs[c.num_layers], p.p(x.ln_g), &a.dhidden, Some(&a.ln_mean), &a.ln_rstd, &ng)?;
        let s = self.shape(a);
        let scale = 1.0 / (c.head_dim() as f32).sqrt();
        for (l, (li, la)) in x.layers.iter().zip(&a.layers).enumerate().rev() {
            let xin = &a.xs[l];
            // x_{l+1} = res1 + [λ2 ⊙] dropout(mlp(ln2(res1)))
            rec.copy(&dx, &a.dres)?;
            let dmlp = match li.ls2 {
                Some(ls2) => layer_scale_backward(rec, &dx, &la.o2, p.p(ls2), g(ls2), &a.dtmp, &a.dtmp2)?,
                None => &dx,
            };
            let dout = d.back(rec, dmlp, &a.dq, site::ffn_out(l))?;
            linear_backward(rec, &la.inter, p.p(li.out_w), dout, g(li.out_w), g(li.out_b), Some((&a.dinter, false)))?;
            act_backward(rec, &la.pre, &a.dinter, &a.dpre, c.act)?;
            linear_backward(rec, &la.h2, p.p(li.i_w), &a.dpre, g(li.i_w), g(li.i_b), Some((&a.dh, false)))?;
            let ng = NormGrads { dx: &a.dres, accumulate_dx: true, dgamma: g(li.ln2_g), dbeta: Some(g(li.ln2_b)) };
            norm_backward(rec, &la.res1, p.p(li.ln2_g), &a.dh, Some(&la.ln2_mean), &la.ln2_rstd, &ng)?;
            // res1 = x + dropout(attn(ln1(x)))
            rec.copy(&a.dres, &dx2)?;
            let dattn = match li.ls1 {
                Some(ls1) => layer_scale_backward(rec, &a.dres, &la.o1, p.p(ls1), g(ls1), &a.dtmp, &a.dtmp2)?,
                None => &a.dres,
            };
            let dout = d.back(rec, dattn, &a.dq, site::attn_out(l))?;
            linear_backward(rec, &la.ctx, p.p(li.o_w), dout, g(li.o_w), g(li.o_b), Some((&a.dctx, false)))?;
            let (q, k, v) = (HeadView::dense(&la.q, &s), HeadView::dense(&la.k, &s), HeadView::dense(&la.v, &s));
            let (dq, dk, dv) = (HeadView::dense(&a.dq, &s), HeadView::dense(&a.dk, &s), HeadView::dense(&a.dv, &s));
            let drop = d.attn(site::attn(l), &la.probs_drop);
            let dctx = HeadView::dense(&a.dctx, &s);
            attention_backward_with(rec, &s, q, k, v, &la.probs, dctx, dq, dk, dv, scale, false, drop)?;
            linear_backward(rec, &la.h1, p.p(li.q_w), &a.dq, g(li.q_w), g(li.q_b), Some((&a.dh, false)))?;
            linear_backward(rec, &la.h1, p.p(li.k_w), &a.dk, g(li.k_w), g(li.k_b), Some((&a.dh, true)))?;
            linear_backward(rec, &la.h1, p.p(li.v_w), &a.dv, g(li.v_w), g(li.v_b), Some((&a.dh, true)))?;
            let ng = NormGrads { dx: &dx2, accumulate_dx: true, dgamma: g(li.ln1_g), dbeta: Some(g(li.ln1_b)) };
            norm_backward(rec, xin, p.p(li.ln1_g), &a.dh, Some(&la.ln1_mean), &la.ln1_rstd, &ng)?;
            std::mem::swap(&mut dx, &mut dx2);
        }
        let demb = d.back(rec, &dx, &dx2, site::EMB)?;
        rec.zero(&a.dpos_full);
        assemble_backward(rec, demb, &a.dpe, g(x.cls), &a.dpos_full, a.batch, c.seq())?;
        let gpos = g(x.pos).reshape(&[self.pos_map.cols(), c.hidden_size])?;
        matmul(rec, &Matmul::new(&self.pos_map, true, &a.dpos_full, false, &gpos)?.accumulate(1.0))?;
        let dw = g(x.patch_w).reshape(&[c.hidden_size, g(x.patch_w).len() / c.hidden_size])?;
        if patch_grad {
            linear_backward(rec, &a.patches, &self.patch_weight()?, &a.dpe, &dw, g(x.patch_b), None)?;
        }
        Ok(())
    }
}

/// Backward of `out = λ ⊙ o` (+ residual): `dλ += colsum(dy ⊙ o)`; returns `do = λ ⊙ dy`
/// (in `tmp`).
fn layer_scale_backward<'t>(
    rec: &mut Recorder,
    dy: &Tensor,
    o: &Tensor,
    lambda: &Tensor,
    dlambda: &Tensor,
    tmp: &'t Tensor,
    tmp2: &Tensor,
) -> Result<&'t Tensor> {
    let h = lambda.len();
    mul(rec, dy, o, tmp2, 1.0)?;
    colsum(rec, tmp2, dy.len() / h, h, dlambda, true, 1.0)?;
    mul_cols(rec, dy, lambda, None, tmp)?;
    Ok(tmp)
}

/// The vit as the optimizer drives it (see [`crate::optim::Task`]).
pub type VitTask<'a> = crate::optim::Task<'a, Vit>;

impl crate::optim::TaskModel for Vit {
    type Acts = VitActs;
    fn params(&self) -> &ParamSet {
        &self.params
    }
    fn forward_acts(
        &self,
        rec: &mut Recorder,
        acts: &VitActs,
        with_loss: bool,
        train: Option<Train>,
        params: &ParamSet,
        noise: Option<Noise>,
    ) -> Result<()> {
        self.forward_with(rec, acts, with_loss, train, params, noise)
    }
    fn backward_acts(&self, rec: &mut Recorder, acts: &VitActs, dlogits: &Tensor, input_grad: bool) -> Result<()> {
        self.backward_from(rec, acts, dlogits, input_grad)
    }
    fn outputs(acts: &VitActs) -> (&Tensor, &Tensor, &Tensor) {
        (&acts.logits, &acts.loss, &acts.dlogits)
    }
}
