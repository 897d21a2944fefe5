//! In-memory sessions on a text encoder (BERT, RoBERTa/XLM-R, MiniLM): load a Hugging Face
//! model from bytes, embed sentences, fine-tune a classifier one step at a time with any
//! optimizer, and classify. No files and no threads, so the same code runs natively and in a
//! browser: the `web/` package wraps [`TextSession`] for JavaScript, and `web/test.sh` checks
//! that a browser's WebGPU gives the numbers this code gives natively.
//!
//! ```no_run
//! # async fn demo(gpu: tramway::Gpu, config: &[u8], weights: &[u8], tokenizer: &[u8]) -> tramway::Result<()> {
//! use tramway::optim::{Method, OptimConfig, Schedule};
//! use tramway::session::{SessionOptions, TextModelBytes, TextSession};
//! let files = TextModelBytes { config, weights, tokenizer };
//! let mut s = TextSession::open(gpu, &files, &SessionOptions::default())?;
//! let e = s.embed(&["a sentence", "another one"]).await?; // mean-pooled, unit length
//! let (base, method) = Method::preset("tram-x")?;
//! let cfg = OptimConfig { base, method, lr: 1e-4, schedule: Schedule::Constant, clip: Some(1.0), seed: 1 };
//! s.start_training(&["neg".to_string(), "pos".to_string()], cfg)?;
//! let m = s.step(&["awful", "lovely"], &["neg", "pos"]).await?; // m.loss, m.d (TRAM's distance)
//! let p = s.classify(&["just great"]).await?; // probabilities per class
//! # Ok(()) }
//! ```

use crate::data::batch::TextBatch;
use crate::data::text::TextTokenizer;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::weights::Weights;
use crate::models::encoder::EncoderConfig;
use crate::models::encoder::{Encoder, EncoderActs, EncoderTask, Pooling};
use crate::models::TaskModel;
use crate::optim::{Metrics, OptimConfig, Optimizer};
use std::collections::HashMap;

/// The three files of a Hugging Face text model, as bytes.
pub struct TextModelBytes<'a> {
    pub config: &'a [u8],
    pub weights: &'a [u8],
    pub tokenizer: &'a [u8],
}

/// How a session loads its model.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Tokens per text at most (special tokens included); at most the model's
    /// `max_position_embeddings`.
    pub max_len: usize,
    /// Keep only the first `layers` transformer layers (a smaller, faster model for slow
    /// adapters: the later layers' weights are dropped); `None` keeps all.
    pub layers: Option<usize>,
    /// Seeds a new classification head.
    pub seed: u64,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { max_len: 128, layers: None, seed: 1 }
    }
}

/// A text encoder on a GPU with its tokenizer; after [`TextSession::start_training`], a
/// classifier head and optimizer state.
pub struct TextSession {
    gpu: Gpu,
    cfg: EncoderConfig,
    weights: Weights,
    tok: TextTokenizer,
    model: Encoder,
    seed: u64,
    opt: Option<Optimizer>,
    /// Activation sets by (batch, sequence length).
    acts: HashMap<(usize, usize), EncoderActs>,
}

impl TextSession {
    /// Load a model from its files' bytes (errors name `config.json`, `model.safetensors` or
    /// `tokenizer.json`).
    pub fn open(gpu: Gpu, files: &TextModelBytes, o: &SessionOptions) -> Result<Self> {
        let text = std::str::from_utf8(files.config)
            .map_err(|e| Error::Model { file: "config.json".into(), message: format!("not UTF-8 text: {e}") })?;
        let mut cfg = EncoderConfig::parse("config.json", text)?;
        let mut weights = Weights::parse("model.safetensors", files.weights)?;
        if let Some(n) = o.layers {
            if n == 0 || n > cfg.num_layers {
                return Err(Error::BadSetting {
                    name: "layers",
                    value: n.to_string(),
                    expected: format!("between 1 and the model's {} layers", cfg.num_layers),
                });
            }
            weights.tensors.retain(|name, _| Weights::layer_of(name).is_none_or(|l| l < n));
            cfg.num_layers = n;
            if let Some(m) = cfg.raw.as_object_mut() {
                m.insert("num_hidden_layers".into(), n.into());
            }
        }
        weights.check_layers(cfg.num_layers, "num_hidden_layers")?;
        if o.max_len < 2 || o.max_len > cfg.max_position_embeddings {
            return Err(Error::BadSetting {
                name: "max_len",
                value: o.max_len.to_string(),
                expected: format!(
                    "between 2 and the model's max_position_embeddings ({})",
                    cfg.max_position_embeddings
                ),
            });
        }
        let tok = TextTokenizer::from_bytes("tokenizer.json", files.tokenizer, o.max_len, cfg.pad_token_id)?;
        let model = Encoder::load(&gpu, cfg.clone(), &weights, o.seed)?;
        Ok(TextSession { gpu, cfg, weights, tok, model, seed: o.seed, opt: None, acts: HashMap::new() })
    }

    /// The device the session runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    /// The model's configuration (after `layers`; with the training labels once training).
    pub fn config(&self) -> &EncoderConfig {
        &self.model.cfg
    }
    /// The class names of the head.
    pub fn labels(&self) -> &[String] {
        &self.model.cfg.id2label
    }
    /// Steps taken since [`TextSession::start_training`].
    pub fn steps(&self) -> u64 {
        self.opt.as_ref().map_or(0, |o| o.step)
    }

    /// Sentence embeddings: mean over the real tokens of the last hidden states, L2-normalised
    /// (sentence-transformers' pooling for MiniLM and most of its models).
    pub async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let batch = self.tok.encode(texts)?;
        let e = self.model.embed(&self.gpu, &batch, Pooling::Mean, true).await?;
        self.gpu.check("embedding").await?;
        Ok(e)
    }

    /// Put a classification head for `labels` on the encoder (the checkpoint's own head when
    /// it has one with that many classes, else a new one seeded by [`SessionOptions::seed`])
    /// and start a fresh optimizer. Any earlier training is discarded.
    pub fn start_training(&mut self, labels: &[String], optim: OptimConfig) -> Result<()> {
        optim.validate()?;
        if labels.len() < 2 {
            return Err(Error::BadSetting {
                name: "labels",
                value: labels.join(", "),
                expected: "at least two class names".into(),
            });
        }
        if let Some((i, l)) = labels.iter().enumerate().find(|(i, l)| labels[..*i].contains(l)) {
            return Err(Error::BadSetting {
                name: "labels",
                value: labels.join(", "),
                expected: format!("distinct class names ({l:?} is repeated at position {i})"),
            });
        }
        let mut cfg = self.cfg.clone();
        let keep_head = cfg.id2label.len() == labels.len();
        cfg.id2label = labels.to_vec();
        self.opt = None;
        self.acts.clear();
        self.model = if keep_head {
            Encoder::load(&self.gpu, cfg, &self.weights, self.seed)?
        } else {
            // A head of another size: the checkpoint's is dropped (only then is a copy needed).
            let mut weights = self.weights.clone();
            weights.tensors.retain(|k, _| !k.starts_with("classifier."));
            Encoder::load(&self.gpu, cfg, &weights, self.seed)?
        };
        self.opt = Some(Optimizer::new(&self.gpu, &self.model.params, optim)?);
        Ok(())
    }

    /// Tokenize `texts` (lengths rounded up to a multiple of 8) with class `labels`, into the
    /// activation set of that shape.
    fn upload(&mut self, texts: &[&str], labels: Option<&[&str]>) -> Result<(usize, usize)> {
        let mut b: TextBatch = self.tok.encode_rounded(texts, 8)?;
        if let Some(labels) = labels {
            if labels.len() != texts.len() {
                return Err(Error::BadSetting {
                    name: "labels",
                    value: format!("{} labels", labels.len()),
                    expected: format!("one label per text ({} texts)", texts.len()),
                });
            }
            let names = &self.model.cfg.id2label;
            let ids = labels
                .iter()
                .map(|l| {
                    names.iter().position(|n| n == l).map(|i| i as u32).ok_or_else(|| Error::BadSetting {
                        name: "labels",
                        value: l.to_string(),
                        expected: format!("one of the classes given to start_training ({})", names.join(", ")),
                    })
                })
                .collect::<Result<Vec<u32>>>()?;
            b.labels = Some(ids);
        }
        let key = (b.batch, b.seq);
        if !self.acts.contains_key(&key) {
            let a = self.model.acts(&self.gpu, b.batch, b.seq)?;
            self.acts.insert(key, a);
        }
        let acts = self.acts.get_mut(&key).expect("planned above");
        self.model.upload(&self.gpu, acts, &b)?;
        Ok(key)
    }

    /// One optimizer step on `texts` with class `labels` (one submit, one small readback):
    /// the loss at the parameters before the step, the gradient norm and TRAM's d. A NaN or
    /// infinity anywhere in the step is an [`Error::NonFinite`].
    pub async fn step(&mut self, texts: &[&str], labels: &[&str]) -> Result<Metrics> {
        if self.opt.is_none() {
            return Err(Error::BadSetting {
                name: "step",
                value: "before start_training".into(),
                expected: "start_training(labels, optimizer) first".into(),
            });
        }
        let key = self.upload(texts, Some(labels))?;
        let opt = self.opt.as_mut().expect("checked above");
        let task = EncoderTask { model: &self.model, acts: &self.acts[&key], aux: None };
        let mut rec = self.gpu.recorder();
        opt.step(&mut rec, &task)?;
        rec.submit_checked().await?;
        let m = opt.metrics(&self.gpu).await?;
        if let Some((step, what)) = &m.nonfinite {
            return Err(Error::NonFinite {
                step: *step,
                what: what.join(" and the "),
                resume: "start again with a lower learning rate (or gradient clipping)".into(),
            });
        }
        Ok(m)
    }

    /// Class probabilities (softmax of the logits) for each text.
    pub async fn classify(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let key = self.upload(texts, None)?;
        let acts = &self.acts[&key];
        let mut rec = self.gpu.recorder();
        self.model.forward(&mut rec, acts, false, None)?;
        rec.submit_checked().await?;
        let logits = self.gpu.read_f32(self.model.logits(acts)).await?;
        let c = self.model.cfg.id2label.len();
        let probs: Vec<Vec<f32>> = logits
            .chunks(c)
            .map(|row| {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let e: Vec<f64> = row.iter().map(|&x| ((x - max) as f64).exp()).collect();
                let s: f64 = e.iter().sum();
                e.iter().map(|&v| (v / s) as f32).collect()
            })
            .collect();
        if probs.iter().flatten().any(|p| !p.is_finite()) {
            return Err(Error::NonFinite {
                step: self.steps(),
                what: "class probabilities".into(),
                resume: "the model's weights hold NaN or infinity".into(),
            });
        }
        Ok(probs)
    }
}
