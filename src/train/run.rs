//! A run's model and activations: loading a folder for a task (its head fitted to the labels),
//! batches uploaded per shape, one optimizer step, evaluation, saving.

use super::lm::{CausalLm, LmActs};
use crate::data::batch::LmBatch;
use crate::data::batch::{ImageBatch, TextBatch};
use crate::data::image::ImagePrep;
use crate::data::text::TextTokenizer;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::hf::{read_weights, save_folder};
use crate::io::weights::Weights;
use crate::models::encoder::EncoderConfig;
use crate::models::encoder::{read_encoder_config, save_encoder};
use crate::models::encoder::{Encoder, EncoderActs, EncoderTask};
use crate::models::lm::LmTask;
use crate::models::vit::VitConfig;
use crate::models::vit::{Vit, VitActs, VitTask};
use crate::models::TaskModel;
use crate::optim::Optimizer;
use std::collections::HashMap;
use std::path::Path;

use super::*;

/// The model of a run with what turns examples into its input. (One per run: the variants'
/// size difference does not matter.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Net {
    Text { model: Encoder, tok: TextTokenizer },
    Image { model: Vit, prep: ImagePrep },
    Lm { model: CausalLm, tok: TextTokenizer },
}

/// Activations per batch shape (a second set for R3F's noised branch); a few per run.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Acts {
    Text(EncoderActs, Option<EncoderActs>),
    Image(VitActs, Option<VitActs>),
    Lm(LmActs, Option<LmActs>),
}

/// A loaded model: config with labels, weights, and input preparation.
pub(crate) struct Loaded {
    pub(crate) net: Net,
    pub(crate) labels: LabelMap,
}

/// What to do with a classifier's head when loading it for training.
#[derive(Clone, Copy)]
pub(crate) enum Head<'a> {
    /// Keep it as it is (evaluation, prediction).
    Keep,
    /// Train on these labels: keep the head when they fit it ([`LabelMap::fit`]), else
    /// re-initialise it for them (refused when `resume`: a checkpoint's head is never dropped).
    Train { labels: &'a [String], resume: bool },
}

/// Fit a classifier's `id2label` to the training labels (see [`Head`]); a re-initialised head
/// drops the checkpoint's `classifier.*` tensors and says so in one line.
pub(crate) fn fit_head(id2label: &mut Vec<String>, weights: &mut Weights, head: Head) -> Result<LabelMap> {
    let Head::Train { labels, resume } = head else {
        return Ok(LabelMap { names: id2label.clone(), by_index: false });
    };
    let has_head = weights.tensors.keys().any(|k| k.starts_with("classifier."));
    if has_head {
        if let Some(map) = LabelMap::fit(id2label, labels) {
            return Ok(map);
        }
        if resume {
            return Err(Error::Model {
                file: weights.file.clone(),
                message: format!(
                    "the checkpoint's labels ({}) do not fit the training data's ({}): a resumed run keeps its head",
                    id2label.join(", "),
                    labels.join(", ")
                ),
            });
        }
        eprintln!(
            "note: the model's labels ({}) are neither the data's labels ({}) nor class indices 0..{}: \
             the classification head is re-initialised for the data's labels",
            id2label.join(", "),
            labels.join(", "),
            id2label.len().saturating_sub(1)
        );
        weights.tensors.retain(|k, _| !k.starts_with("classifier."));
    }
    // No head (a base checkpoint) or a new one: the data's labels name the classes.
    *id2label = labels.to_vec();
    Ok(LabelMap { names: id2label.clone(), by_index: false })
}

/// Load `dir` as `kind`, its classifier head fitted to `head`; `image_size` overrides the
/// input side of a vision model.
pub(crate) fn load_net(
    gpu: &Gpu,
    kind: TaskKind,
    dir: &Path,
    head: Head,
    max_len: usize,
    image_size: Option<usize>,
    seed: u64,
    lora: Option<&crate::nn::lora::LoraConfig>,
    freeze_base: bool,
) -> Result<Loaded> {
    if lora.is_some() && kind != TaskKind::CausalLm {
        return Err(Error::BadSetting {
            name: "--lora-rank",
            value: lora.map(|l| l.rank.to_string()).unwrap_or_default(),
            expected: "a causal language model (LoRA fine-tuning of classifiers is not in the CLI yet)".into(),
        });
    }
    let mut weights: Weights = if kind == TaskKind::CausalLm { Weights::default() } else { read_weights(dir)? };
    match kind {
        TaskKind::TextClassification => {
            let mut cfg: EncoderConfig = read_encoder_config(dir)?;
            weights.check_layers(cfg.num_layers, "num_hidden_layers")?;
            let labels = fit_head(&mut cfg.id2label, &mut weights, head)?;
            if max_len > cfg.max_position_embeddings {
                return Err(Error::BadSetting {
                    name: "--max-len",
                    value: max_len.to_string(),
                    expected: format!("at most the model's max_position_embeddings ({})", cfg.max_position_embeddings),
                });
            }
            let tok = TextTokenizer::from_dir(dir, max_len, cfg.pad_token_id)?;
            let model =
                Encoder::load_with(gpu, cfg, &weights, &crate::models::Build { seed, lora: None, freeze_base })?;
            Ok(Loaded { net: Net::Text { model, tok }, labels })
        }
        TaskKind::ImageClassification => {
            let p = dir.join("config.json");
            let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
            let mut cfg = VitConfig::parse(&p.display().to_string(), &text)?;
            weights.check_layers(cfg.num_layers, "num_hidden_layers")?;
            let labels = fit_head(&mut cfg.id2label, &mut weights, head)?;
            let mut prep = ImagePrep::from_dir(dir, cfg.image_size.min(224))?;
            if let Some(s) = image_size {
                if s == 0 || !s.is_multiple_of(cfg.patch_size) {
                    return Err(Error::BadSetting {
                        name: "--image-size",
                        value: s.to_string(),
                        expected: format!("a positive multiple of the patch size {}", cfg.patch_size),
                    });
                }
                prep.size = s;
                prep.shortest_edge = None;
            }
            cfg.input_size = prep.size;
            let model = Vit::load(gpu, cfg, &weights, seed)?;
            Ok(Loaded { net: Net::Image { model, prep }, labels })
        }
        TaskKind::CausalLm => {
            let model = CausalLm::load_with(
                gpu,
                dir,
                &crate::models::Build { seed, lora: lora.cloned(), ..Default::default() },
            )?;
            if max_len < 2 || max_len > model.max_positions() {
                return Err(Error::BadSetting {
                    name: "--max-len",
                    value: max_len.to_string(),
                    expected: format!("a block length between 2 and the model's {} positions", model.max_positions()),
                });
            }
            let tok = TextTokenizer::from_dir(dir, model.max_positions(), model.pad_id())?;
            Ok(Loaded { net: Net::Lm { model, tok }, labels: LabelMap { names: Vec::new(), by_index: false } })
        }
    }
}

pub(crate) struct Run<'a> {
    pub(crate) gpu: &'a Gpu,
    pub(crate) net: Net,
    pub(crate) labels: LabelMap,
    pub(crate) acts: HashMap<(usize, usize), Acts>,
    pub(crate) needs_aux: bool,
    /// The LoRA adapters being trained (a causal LM's), if any.
    pub(crate) lora: Option<crate::nn::lora::LoraConfig>,
}

impl Run<'_> {
    pub(crate) fn text_batch(
        &self,
        tok: &TextTokenizer,
        texts: &[&str],
        labels: Option<Vec<u32>>,
    ) -> Result<TextBatch> {
        // Lengths rounded up to a multiple of 8 so a few activation plans serve every batch.
        let mut b = tok.encode_rounded(texts, 8)?;
        b.labels = labels;
        Ok(b)
    }

    /// Upload examples `idx` of `data` into the activations planned for their shape (planned
    /// once per shape); returns that shape's key.
    pub(crate) fn upload(&mut self, data: &Dataset, idx: &[usize]) -> Result<(usize, usize)> {
        let labels = idx.iter().map(|&i| self.labels.id(data.label(i))).collect::<Option<Vec<u32>>>();
        let gpu = self.gpu;
        match (&self.net, data) {
            (Net::Text { model, tok }, Dataset::Text(rows)) => {
                let texts: Vec<&str> = idx.iter().map(|&i| rows[i].text.as_str()).collect();
                let b = self.text_batch(tok, &texts, labels)?;
                let key = (b.batch, b.seq);
                if !self.acts.contains_key(&key) {
                    let main = model.acts(gpu, b.batch, b.seq)?;
                    let aux = if self.needs_aux { Some(model.acts(gpu, b.batch, b.seq)?) } else { None };
                    self.acts.insert(key, Acts::Text(main, aux));
                }
                if let Some(Acts::Text(main, aux)) = self.acts.get_mut(&key) {
                    model.upload(gpu, main, &b)?;
                    if let Some(a) = aux {
                        model.upload(gpu, a, &b)?;
                    }
                }
                Ok(key)
            }
            (Net::Image { model, prep }, Dataset::Images(set)) => {
                let mut pixels = Vec::with_capacity(idx.len() * 3 * prep.size * prep.size);
                for &i in idx {
                    pixels.extend(set.pixels(i, prep)?);
                }
                let b = ImageBatch { batch: idx.len(), pixels, labels };
                let key = (b.batch, 0);
                if !self.acts.contains_key(&key) {
                    let main = model.acts(gpu, b.batch)?;
                    let aux = if self.needs_aux { Some(model.acts(gpu, b.batch)?) } else { None };
                    self.acts.insert(key, Acts::Image(main, aux));
                }
                if let Some(Acts::Image(main, aux)) = self.acts.get_mut(&key) {
                    model.upload(gpu, main, &b)?;
                    if let Some(a) = aux {
                        model.upload(gpu, a, &b)?;
                    }
                }
                Ok(key)
            }
            (Net::Lm { model, .. }, Dataset::Blocks(blocks)) => {
                let seq = idx.iter().map(|&i| blocks[i].len()).max().unwrap_or(2);
                let mut b = LmBatch { batch: idx.len(), seq, ids: Vec::new(), mask: Vec::new() };
                for &i in idx {
                    let blk = &blocks[i];
                    b.ids.extend_from_slice(blk);
                    b.ids.extend(std::iter::repeat_n(model.pad_id(), seq - blk.len()));
                    b.mask.extend(std::iter::repeat_n(1, blk.len()));
                    b.mask.extend(std::iter::repeat_n(0, seq - blk.len()));
                }
                let key = (b.batch, b.seq);
                if !self.acts.contains_key(&key) {
                    let main = model.acts(gpu, b.batch, b.seq)?;
                    let aux = if self.needs_aux { Some(model.acts(gpu, b.batch, b.seq)?) } else { None };
                    self.acts.insert(key, Acts::Lm(main, aux));
                }
                if let Some(Acts::Lm(main, aux)) = self.acts.get_mut(&key) {
                    model.upload(gpu, main, &b)?;
                    if let Some(a) = aux {
                        model.upload(gpu, a, &b)?;
                    }
                }
                Ok(key)
            }
            _ => Err(Error::BadSetting {
                name: "--task",
                value: format!("{:?}", self.kind()),
                expected: "data of the model's kind (text files for text models, images for vision models)".into(),
            }),
        }
    }

    /// Create a language model's activations for its largest training batch (`batch` blocks
    /// of the longest block) before the first step, so the memory plan is known at the start.
    /// Other models plan theirs per batch shape as batches come.
    pub(crate) fn plan_acts(&mut self, data: &Dataset, batch: usize) -> Result<()> {
        if let (Net::Lm { model, .. }, Dataset::Blocks(blocks)) = (&self.net, data) {
            let seq = blocks.iter().map(|b| b.len()).max().unwrap_or(2);
            let key = (batch.min(blocks.len()).max(1), seq);
            model.params.reserve_scratch(self.gpu, key.0 * key.1)?;
            if !self.acts.contains_key(&key) {
                let main = model.acts(self.gpu, key.0, key.1)?;
                let aux = if self.needs_aux { Some(model.acts(self.gpu, key.0, key.1)?) } else { None };
                self.acts.insert(key, Acts::Lm(main, aux));
            }
        }
        Ok(())
    }

    pub(crate) fn kind(&self) -> TaskKind {
        match self.net {
            Net::Text { .. } => TaskKind::TextClassification,
            Net::Image { .. } => TaskKind::ImageClassification,
            Net::Lm { .. } => TaskKind::CausalLm,
        }
    }

    /// One optimizer step on the batch uploaded under `key`.
    pub(crate) fn step(&self, opt: &mut Optimizer, rec: &mut crate::gpu::Recorder, key: (usize, usize)) -> Result<()> {
        match (&self.net, &self.acts[&key]) {
            (Net::Text { model, .. }, Acts::Text(acts, aux)) => {
                opt.step(rec, &EncoderTask { model, acts, aux: aux.as_ref() })
            }
            (Net::Image { model, .. }, Acts::Image(acts, aux)) => {
                opt.step(rec, &VitTask { model, acts, aux: aux.as_ref() })
            }
            (Net::Lm { model, .. }, Acts::Lm(acts, aux)) => opt.step(rec, &LmTask { model, acts, aux: aux.as_ref() }),
            _ => unreachable!("activations are planned by the same net"),
        }
    }

    /// Forward (no dropout) on `key`; returns (logits, loss) tensors.
    pub(crate) fn forward(
        &self,
        rec: &mut crate::gpu::Recorder,
        key: (usize, usize),
        with_loss: bool,
    ) -> Result<(&crate::gpu::Tensor, &crate::gpu::Tensor)> {
        match (&self.net, &self.acts[&key]) {
            (Net::Text { model, .. }, Acts::Text(acts, _)) => {
                model.forward(rec, acts, with_loss, None)?;
                Ok((&acts.logits, &acts.loss))
            }
            (Net::Image { model, .. }, Acts::Image(acts, _)) => {
                model.forward(rec, acts, with_loss, None)?;
                Ok((&acts.logits, &acts.loss))
            }
            (Net::Lm { model, .. }, Acts::Lm(acts, _)) => {
                model.forward(rec, acts, with_loss, None)?;
                Ok((&acts.logits, &acts.loss))
            }
            _ => unreachable!("activations are planned by the same net"),
        }
    }

    pub(crate) fn num_labels(&self) -> usize {
        self.labels.names.len()
    }

    pub(crate) fn params(&self) -> &crate::nn::ParamSet {
        match &self.net {
            Net::Text { model, .. } => &model.params,
            Net::Image { model, .. } => &model.params,
            Net::Lm { model, .. } => &model.params,
        }
    }

    /// Write the model as a Hugging Face folder (tokenizer files copied from `source`; a
    /// vision model gets the preprocessor_config.json of the size it was trained at).
    pub(crate) fn save(&self, dir: &Path, source: &Path) -> Result<()> {
        match &self.net {
            Net::Text { model, .. } => save_encoder(self.gpu, model, dir, Some(source)),
            Net::Image { model, prep } => {
                let state = pollster::block_on(model.state(self.gpu))?;
                let pre = serde_json::to_string_pretty(&prep.config_json()).unwrap_or_default().into_bytes();
                save_folder(dir, &state, &model.config_json(), Some(source), &[("preprocessor_config.json", pre)])
            }
            Net::Lm { model, .. } => match &self.lora {
                Some(lora) => {
                    let base = source.display().to_string();
                    crate::io::adapter::save_adapter(self.gpu, &model.params, lora, dir, &base, "CAUSAL_LM")?;
                    crate::io::hf::copy_side_files(source, dir)
                }
                None => {
                    let state = pollster::block_on(model.state(self.gpu))?;
                    save_folder(dir, &state, &model.config, Some(source), &[])
                }
            },
        }
    }

    /// A LoRA run's model with its adapters merged, as a full Hugging Face folder.
    pub(crate) fn save_merged(&self, dir: &Path, source: &Path) -> Result<()> {
        match &self.net {
            Net::Lm { model, .. } => {
                let state = pollster::block_on(model.merged_state(self.gpu))?;
                save_folder(dir, &state, &model.config, Some(source), &[])
            }
            _ => self.save(dir, source),
        }
    }

    pub(crate) fn evaluate(&mut self, name: &str, data: &Dataset, batch: usize) -> Result<EvalResult> {
        if self.kind() == TaskKind::CausalLm {
            // Perplexity: the token-weighted mean next-token loss over every block.
            let (mut nll, mut count) = (0f64, 0f64);
            let all: Vec<usize> = (0..data.len()).collect();
            for chunk in all.chunks(batch) {
                let key = self.upload(data, chunk)?;
                let gpu = self.gpu;
                let mut rec = gpu.recorder();
                let (_, l) = self.forward(&mut rec, key, true)?;
                rec.submit()?;
                let l = gpu.read_f32_blocking(l)?;
                nll += l[0] as f64 * l[1] as f64;
                count += l[1] as f64;
            }
            let loss = nll / count.max(1.0);
            finite_eval(name, loss)?;
            return Ok(EvalResult { name: name.to_string(), loss, accuracy: f64::NAN, examples: count as usize });
        }
        let (mut loss, mut correct, mut n) = (0.0f64, 0usize, 0usize);
        let all: Vec<usize> = (0..data.len()).collect();
        for chunk in all.chunks(batch) {
            let key = self.upload(data, chunk)?;
            let gpu = self.gpu;
            let mut rec = gpu.recorder();
            let (logits, l) = self.forward(&mut rec, key, true)?;
            rec.submit()?;
            let logits = gpu.read_f32_blocking(logits)?;
            let l = gpu.read_f32_blocking(l)?;
            finite_eval(name, l[0] as f64)?;
            if logits.iter().any(|v| !v.is_finite()) {
                finite_eval(name, f64::NAN)?;
            }
            let c = self.num_labels();
            for (row, &i) in logits.chunks(c).zip(chunk) {
                let arg = row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best });
                correct += (Some(arg as u32) == self.labels.id(data.label(i))) as usize;
            }
            loss += l[0] as f64 * chunk.len() as f64;
            n += chunk.len();
        }
        Ok(EvalResult {
            name: name.to_string(),
            loss: loss / n.max(1) as f64,
            accuracy: correct as f64 / n.max(1) as f64,
            examples: n,
        })
    }
}

/// An evaluation whose loss or outputs are NaN or infinite is an error, never a number to report.
pub(crate) fn finite_eval(name: &str, loss: f64) -> Result<()> {
    if loss.is_finite() {
        return Ok(());
    }
    Err(Error::Gpu {
        context: format!("evaluation of {name}"),
        message: "the model's outputs or loss are NaN or infinite (its weights or configuration are not usable)".into(),
    })
}
