//! ViT image classifier (Hugging Face `ViTForImageClassification`), forward and backward.
//!
//! The patch embedding is a matmul of CPU-cut patches (`ops::patch::patchify`) with the
//! `Conv2d` weight viewed as `[hidden, channels * p * p]`; the CLS token and position
//! embeddings are added by `ops::patch::assemble`. Layers are pre-LayerNorm. A checkpoint
//! without a classifier (a backbone) gets one initialised like Hugging Face (normal 0.02).

use super::{Family, Run, TaskModel};
use crate::data::batch::ImageBatch;
use crate::error::model_err;
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::io::config::{heads, hidden_act, labels, Keys, MAX_IMAGE_SIZE, MAX_LAYERS, MAX_SIZE, MAX_TENSOR_ELEMENTS};
use crate::io::weights::{HostTensor, Weights};
use crate::nn::block::{Attention, Block, BlockActs, Mlp, Pass, Scratch};
use crate::nn::layers::{Layout, Linear, Norm, NormStats};
use crate::nn::{site, Drop, ParamSet, Specs, Train};
use crate::ops::cross_entropy::{cross_entropy, IGNORE_INDEX};
use crate::ops::embedding::{embedding, embedding_backward, EmbeddingIndex};
use crate::ops::matmul::{matmul, Act, MatView, Matmul};
use crate::ops::patch::{assemble, assemble_backward, patchify, position_map};
use crate::ops::reduce::colsum;

/// The vision architectures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisionKind {
    Vit,
    Dinov2,
}

/// The subset of a Hugging Face ViT or DINOv2 `config.json` tramway uses, validated.
#[derive(Clone, Debug)]
pub struct VitConfig {
    /// `vit` (ViTForImageClassification) or `dinov2` (Dinov2ForImageClassification: LayerScale,
    /// position embeddings interpolated to the input size, classifier on [CLS, mean patch]).
    pub kind: VisionKind,
    /// The side of the images fed to the model; `image_size` is the side the position
    /// embeddings were trained for (DINOv2 interpolates between the two; ViT needs them equal).
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub layer_norm_eps: f32,
    pub act: Act,
    pub hidden_dropout: f32,
    pub attention_dropout: f32,
    pub id2label: Vec<String>,
    pub raw: serde_json::Value,
}

impl VitConfig {
    /// Parse and validate a ViT `config.json`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let vision = |f| if let Family::Vision(k) = f { Some(k) } else { None };
        let (raw, kind) = super::read_config(file, text, vision, "a supported vision model (ViT, DINOv2)")?;
        let k = Keys::new(file, &raw)?;
        if k.boolean("use_swiglu_ffn")? == Some(true) {
            return model_err(file, "use_swiglu_ffn = true is not supported");
        }
        if k.boolean("qkv_bias")? == Some(false) {
            return model_err(file, "qkv_bias = false is not supported");
        }
        let (hidden_size, num_heads) = heads(&k, "hidden_size", "num_attention_heads")?;
        let dino = kind == VisionKind::Dinov2;
        let image_size = k.size("image_size", Some(if dino { 518 } else { 224 }), MAX_IMAGE_SIZE)?;
        let patch_size = k.size("patch_size", Some(if dino { 14 } else { 16 }), MAX_IMAGE_SIZE)?;
        if !image_size.is_multiple_of(patch_size) {
            return model_err(file, format!("image_size {image_size} is not a multiple of patch_size {patch_size}"));
        }
        let num_channels = k.size("num_channels", Some(3), MAX_IMAGE_SIZE)?;
        if num_channels != 3 {
            return model_err(
                file,
                format!("num_channels = {num_channels} is not supported: tramway feeds RGB images (expected 3)"),
            );
        }
        let act = hidden_act(&k)?;
        let intermediate_size = match kind {
            VisionKind::Dinov2 => {
                // Hugging Face: int(hidden_size * mlp_ratio).
                let ratio = k.float("mlp_ratio")?.unwrap_or(4.0);
                let inter = hidden_size as f64 * ratio;
                if !(ratio.is_finite() && inter >= 1.0 && inter <= MAX_TENSOR_ELEMENTS as f64) {
                    return k.range(
                        "mlp_ratio",
                        ratio,
                        &format!("a number > 0 (hidden_size {hidden_size} x mlp_ratio is the MLP width)"),
                    );
                }
                inter as usize
            }
            VisionKind::Vit => k.size("intermediate_size", None, MAX_SIZE)?,
        };
        let id2label = labels(&k)?;
        let h = ("hidden_size", hidden_size);
        let grid = image_size / patch_size;
        k.tensor("patch embedding", &[("num_channels x patch_size^2", num_channels * patch_size * patch_size), h])?;
        k.tensor("position embedding", &[("(image_size / patch_size)^2 + 1", grid * grid + 1), h])?;
        k.tensor("MLP", &[("intermediate size", intermediate_size), h])?;
        k.tensor("classifier", &[("number of labels", id2label.len()), ("2 x hidden_size", 2 * hidden_size)])?;
        Ok(VitConfig {
            kind,
            input_size: image_size,
            hidden_size,
            num_layers: k.size("num_hidden_layers", None, MAX_LAYERS)?,
            num_heads,
            intermediate_size,
            image_size,
            patch_size,
            num_channels,
            layer_norm_eps: k.eps("layer_norm_eps", if dino { 1e-6 } else { 1e-12 })?,
            act,
            hidden_dropout: k.prob("hidden_dropout_prob", 0.0)?,
            attention_dropout: k.prob("attention_probs_dropout_prob", 0.0)?,
            id2label,
            raw,
        })
    }
    /// Patches per side of the position-embedding grid (the trained size).
    pub fn pos_grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Patches per side of the input images.
    pub fn grid(&self) -> usize {
        self.input_size / self.patch_size
    }
    /// Tokens per image: the patches plus CLS.
    pub fn seq(&self) -> usize {
        self.grid() * self.grid() + 1
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }
}

/// Parameter ids outside the blocks.
struct Idx {
    cls: usize,
    pos: usize,
    /// The `Conv2d` patch projection as a linear map of flattened patches.
    patch: Linear,
    norm: Norm,
    /// The classifier (DINOv2: over `[CLS, mean of patch tokens]`).
    head: Linear,
}

/// A ViT with a classification head, parameters and gradients on the GPU.
pub struct Vit {
    pub cfg: VitConfig,
    pub params: ParamSet,
    idx: Idx,
    blocks: Vec<Block>,
    /// `[seq, trained seq]`: trained position embeddings to the input's (ops::patch::position_map).
    pos_map: Tensor,
}

/// Activations for one batch size, planned once.
pub struct VitActs {
    batch: usize,
    train: std::cell::Cell<Option<Train>>,
    patches: Tensor,
    patch_out: Tensor,
    xs: Vec<Tensor>,
    layers: Vec<BlockActs>,
    st: NormStats,
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
    dpe: Tensor,
    pos_full: Tensor,
    dpos_full: Tensor,
    /// DINOv2's head: pooling weights (0 on CLS, 1/patches elsewhere), the mean patch token.
    pool_w: Tensor,
    mean: Tensor,
    dmean: Tensor,
    s: Scratch,
}

impl Vit {
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
        let c = &cfg;
        let (h, i, ps, eps) = (c.hidden_size, c.intermediate_size, c.patch_size, c.layer_norm_eps);
        let pre = if dino { "dinov2" } else { "vit" };
        let g = c.pos_grid();
        let mut s = Specs::default();
        let cls = s.add(format!("{pre}.embeddings.cls_token"), &[1, 1, h]);
        let pos = s.add(format!("{pre}.embeddings.position_embeddings"), &[1, g * g + 1, h]);
        let patch_w =
            s.add(format!("{pre}.embeddings.patch_embeddings.projection.weight"), &[h, c.num_channels, ps, ps]);
        let patch_b = s.add(format!("{pre}.embeddings.patch_embeddings.projection.bias"), &[h]);
        if dino {
            // Used only for masked-image modelling: no gradient in classification.
            s.add("dinov2.embeddings.mask_token", &[1, h]);
        }
        let [n1, n2, up, down] = if dino {
            ["norm1", "norm2", "mlp.fc1", "mlp.fc2"]
        } else {
            ["layernorm_before", "layernorm_after", "intermediate.dense", "output.dense"]
        };
        let mut blocks = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let n = |x: &str| format!("{pre}.encoder.layer.{l}.{x}");
            let norm1 = s.layer_norm(&n(&format!("{n1}.weight")), &n(&format!("{n1}.bias")), h, eps);
            let q = s.linear(&n("attention.attention.query"), h, h, true);
            let k = s.linear(&n("attention.attention.key"), h, h, true);
            let v = s.linear(&n("attention.attention.value"), h, h, true);
            let o = s.linear(&n("attention.output.dense"), h, h, true);
            let norm2 = s.layer_norm(&n(&format!("{n2}.weight")), &n(&format!("{n2}.bias")), h, eps);
            let up = s.linear(&n(up), i, h, true);
            let down = s.linear(&n(down), h, i, true);
            let scale = dino.then(|| (s.add(n("layer_scale1.lambda1"), &[h]), s.add(n("layer_scale2.lambda1"), &[h])));
            let (heads, head_dim) = (c.num_heads, c.head_dim());
            let attn = Attention { q, k, v, o, heads, kv_heads: heads, head_dim, causal: false, rope: false };
            let mlp = Mlp::Act { up, down, act: c.act };
            blocks.push(Block::new(attn, mlp, (norm1, norm2), h, i).layer_scale(scale));
        }
        let norm = s.layer_norm(&format!("{pre}.layernorm.weight"), &format!("{pre}.layernorm.bias"), h, eps);
        let head_w = s.add("classifier.weight", &[c.num_labels(), if dino { 2 * h } else { h }]);
        let head_b = s.add("classifier.bias", &[c.num_labels()]);
        let params = s.load(gpu, w, if dino { "dinov2." } else { "vit." }, head_w, seed)?;
        let (g0, g1) = (c.pos_grid(), c.grid());
        let pos_map = gpu.from_f32(&position_map(g0, g1), &[g1 * g1 + 1, g0 * g0 + 1])?;
        let patch = Linear { w: patch_w, b: Some(patch_b), layout: Layout::OutIn, lora: None };
        let head = Linear { w: head_w, b: Some(head_b), layout: Layout::OutIn, lora: None };
        let idx = Idx { cls, pos, patch, norm, head };
        Ok(Vit { cfg, params, idx, blocks, pos_map })
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
        let (s, h) = (c.seq(), c.hidden_size);
        let (bs, np) = (batch * s, batch * (s - 1));
        let row = c.num_channels * c.patch_size * c.patch_size;
        let f = |shape: &[usize]| gpu.zeros(shape);
        let layers =
            self.blocks.iter().map(|b| b.acts(gpu, batch, s, c.attention_dropout > 0.0)).collect::<Result<_>>()?;
        let rows: Vec<u32> = (0..batch as u32).map(|b| b * s as u32).collect();
        Ok(VitActs {
            batch,
            train: Default::default(),
            patches: f(&[np, row])?,
            patch_out: f(&[np, h])?,
            xs: (0..=c.num_layers).map(|_| f(&[bs, h])).collect::<Result<_>>()?,
            layers,
            st: NormStats::new(gpu, &self.idx.norm, bs)?,
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
            dpe: f(&[np, h])?,
            pos_full: f(&[s, h])?,
            dpos_full: f(&[s, h])?,
            pool_w: gpu.from_f32(
                &(0..batch * s).map(|k| if k % s == 0 { 0.0 } else { 1.0 / (s - 1) as f32 }).collect::<Vec<_>>(),
                &[batch, s],
            )?,
            mean: f(&[batch, h])?,
            dmean: f(&[batch, h])?,
            s: self.blocks[0].scratch(gpu, bs)?,
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

    fn pass<'a>(&self, a: &'a VitActs, d: &'a Drop, layer: usize) -> Pass<'a> {
        Pass { batch: a.batch, seq: self.cfg.seq(), mask: None, table: None, drop: d, layer }
    }
}

/// The vit as the optimizer drives it (see [`crate::models::Task`]).
pub type VitTask<'a> = crate::models::Task<'a, Vit>;

impl TaskModel for Vit {
    type Acts = VitActs;
    fn params(&self) -> &ParamSet {
        &self.params
    }
    /// [`Vit::forward`] with another parameter set of the same layout and optional noise added
    /// to the patch-projection output, before the CLS token and positions (TRAM-x for vision:
    /// tram.md §1.3.2 leaves the point open; this is the patch analogue of token embeddings).
    fn forward_acts(&self, rec: &mut Recorder, a: &VitActs, run: Run) -> Result<()> {
        let Run { params, with_loss, train, noise } = run;
        let (p, x, c) = (params, &self.idx, &self.cfg);
        a.train.set(train);
        let d = Drop::new(train, c.hidden_dropout, c.attention_dropout);
        x.patch.forward(rec, p, &a.patches, &a.patch_out, Act::None, None, false)?;
        if let Some(n) = noise {
            n.fill(rec, &a.dpe)?;
            crate::ops::elementwise::axpby(rec, 1.0, &a.dpe, 1.0, &a.patch_out)?;
        }
        let x0 = if d.hidden() { &a.s.dres } else { &a.xs[0] };
        // The input's position embeddings: one matmul with the (interpolation) map.
        let pos = p.p(x.pos).reshape(&[self.pos_map.cols(), c.hidden_size])?;
        matmul(rec, &Matmul::new(&self.pos_map, false, &pos, false, &a.pos_full)?)?;
        assemble(rec, &a.patch_out, p.p(x.cls), &a.pos_full, x0, a.batch, c.seq())?;
        d.apply(rec, x0, &a.xs[0], site::EMB, false)?;
        for (l, (blk, la)) in self.blocks.iter().zip(&a.layers).enumerate() {
            blk.forward(rec, p, &a.xs[l], &a.xs[l + 1], la, &a.s, &self.pass(a, &d, l))?;
        }
        x.norm.forward(rec, p, &a.xs[c.num_layers], &a.hidden, &a.st)?;
        embedding(rec, &a.hidden, &a.cls_rows, &a.cls)?;
        if c.kind == VisionKind::Dinov2 {
            // logits = [cls, mean of patch tokens] W^T + b, as two matmuls on the halves of W.
            let (b, h, s_) = (a.batch, c.hidden_size, c.seq());
            matmul(rec, &self.pool_mm(&a.pool_w, &a.hidden, &a.mean, b, s_, h))?;
            let (w, nl) = (p.p(x.head.w), c.num_labels());
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
                    bias: (half == 0).then_some((p.p(x.head.b.expect("a classifier bias")), 0)),
                    act: Act::None,
                    pre: None,
                    alpha: 1.0,
                    beta: (half != 0).then_some(1.0),
                };
                matmul(rec, &m)?;
            }
        } else {
            x.head.forward(rec, p, &a.cls, &a.logits, Act::None, None, false)?;
        }
        if with_loss {
            cross_entropy(rec, &a.logits, &a.labels, &a.loss, Some(&a.dlogits), IGNORE_INDEX, 1.0)?;
        }
        Ok(())
    }
    /// The backward pass from a given gradient of the logits; `patch_grad = false` leaves the
    /// patch projection out (a branch whose patch embeddings were detached, as R3F's noised one).
    fn backward_acts(&self, rec: &mut Recorder, a: &VitActs, dlogits: &Tensor, patch_grad: bool) -> Result<()> {
        let (p, x, c) = (&self.params, &self.idx, &self.cfg);
        let d = Drop::new(a.train.get(), c.hidden_dropout, c.attention_dropout);
        let g = |i: usize| p.grad(i);
        rec.zero(&a.dhidden);
        if c.kind == VisionKind::Dinov2 {
            let (b, h, s_, nl) = (a.batch, c.hidden_size, c.seq(), c.num_labels());
            let (w, gw) = (p.p(x.head.w), g(x.head.w)?);
            colsum(rec, dlogits, b, nl, g(x.head.b.expect("a classifier bias"))?, true, 1.0)?;
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
            x.head.backward(rec, p, &a.cls, dlogits, Some((&a.dcls, false)), &a.s.ones)?;
        }
        embedding_backward(rec, &a.dcls, &a.cls_index, &a.dhidden)?;
        let (mut dx, mut dx2) = (a.s.dx.clone(), a.s.dx2.clone());
        x.norm.backward(rec, p, &a.xs[c.num_layers], &a.dhidden, &a.st, &dx, false)?;
        for (l, (blk, la)) in self.blocks.iter().zip(&a.layers).enumerate().rev() {
            blk.backward(rec, p, &a.xs[l], la, &a.s, &mut dx, &mut dx2, &self.pass(a, &d, l))?;
        }
        let demb = d.back(rec, &dx, &dx2, site::EMB)?;
        rec.zero(&a.dpos_full);
        assemble_backward(rec, demb, &a.dpe, g(x.cls)?, &a.dpos_full, a.batch, c.seq())?;
        let gpos = g(x.pos)?.reshape(&[self.pos_map.cols(), c.hidden_size])?;
        matmul(rec, &Matmul::new(&self.pos_map, true, &a.dpos_full, false, &gpos)?.accumulate(1.0))?;
        if patch_grad {
            x.patch.backward(rec, p, &a.patches, &a.dpe, None, &a.s.ones)?;
        }
        Ok(())
    }
    fn outputs(acts: &VitActs) -> (&Tensor, &Tensor, &Tensor) {
        (&acts.logits, &acts.loss, &acts.dlogits)
    }
}
