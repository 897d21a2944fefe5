//! Fine-tuning a text or image classifier end to end (native): data, the step loop, evaluation,
//! metrics, the plot, checkpoints and resume.
//!
//! The data order is a function of the seed and the step only (epoch `e` is a seeded
//! permutation; batch `k` takes examples `k·B .. (k+1)·B` of the concatenated epochs), so a
//! resumed run needs nothing but the step count to continue bitwise.

pub mod checkpoint;
pub mod experiment;
mod finetune;
pub mod lm;
pub mod plot;

use crate::data::batch::LmBatch;
use crate::data::batch::{ImageBatch, TextBatch};
use crate::data::image::{ImagePrep, ImageSet};
use crate::data::table::{label_set, read_examples, Example};
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
use crate::models::{Family, TaskModel};
use crate::optim::{OptimConfig, Optimizer};
pub use finetune::finetune;
use lm::{CausalLm, LmActs};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E3779B97F4A7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D049BB133111EB);
    x ^ (x >> 31)
}

/// The example order of epoch `epoch` (Fisher–Yates with a seeded SplitMix stream).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s = splitmix(seed ^ epoch.wrapping_mul(0xA24BAED4963EE407));
    for i in (1..n).rev() {
        s = splitmix(s);
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

/// Example indices of training batch `step`.
pub fn batch_indices(n: usize, batch: usize, seed: u64, step: u64) -> Vec<usize> {
    let start = step as usize * batch;
    let mut out = Vec::with_capacity(batch);
    let mut cached: Option<(u64, Vec<usize>)> = None;
    for k in start..start + batch {
        let epoch = (k / n) as u64;
        if cached.as_ref().map(|c| c.0) != Some(epoch) {
            cached = Some((epoch, epoch_order(n, seed, epoch)));
        }
        out.push(cached.as_ref().unwrap().1[k % n]);
    }
    out
}

/// What is being fine-tuned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// BERT/RoBERTa/XLM-R folders; CSV/TSV/JSONL data with text and label columns.
    TextClassification,
    /// ViT/DINOv2 folders; a folder per class or IDX arrays.
    ImageClassification,
    /// GPT-2/LLaMA folders; plain text (.txt) or a text column (.jsonl, .csv, .tsv), tokenized
    /// and packed into blocks of `--max-len` tokens; evaluated as perplexity.
    CausalLm,
}

impl TaskKind {
    /// The task a model folder serves, from its config.json `model_type`.
    pub fn of_model(dir: &Path) -> Result<TaskKind> {
        let p = dir.join("config.json");
        let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        Ok(match crate::models::family_of_config(&p.display().to_string(), &text)? {
            Family::Encoder(_) => TaskKind::TextClassification,
            Family::Vision(_) => TaskKind::ImageClassification,
            Family::CausalLm(_) => TaskKind::CausalLm,
        })
    }
}

/// A labelled dataset of either kind.
#[derive(Clone, Debug)]
pub enum Dataset {
    Text(Vec<Example>),
    Images(ImageSet),
    /// Raw documents for a language model (before tokenization).
    Documents(Vec<String>),
    /// Token blocks of a language model.
    Blocks(Vec<Vec<u32>>),
}

/// Documents for a language model: a `.txt` file is one document; `.jsonl`/`.csv`/`.tsv` give
/// one per row from `text_column`.
pub fn read_documents(path: &Path, text_column: &str) -> Result<Vec<String>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext == "txt" || ext == "text" || ext.is_empty() {
        let t = std::fs::read_to_string(path).map_err(io_err(path))?;
        if t.trim().is_empty() {
            return Err(Error::Model { file: path.display().to_string(), message: "no text".into() });
        }
        return Ok(vec![t]);
    }
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::Model { file: path.display().to_string(), message: format!("not UTF-8 text: {e}") })?;
    let docs: Vec<String> = if ext == "jsonl" || ext == "json" {
        let mut v = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let j: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Model {
                file: path.display().to_string(),
                message: format!("line {}: not JSON: {e}", i + 1),
            })?;
            match j.get(text_column).and_then(|t| t.as_str()) {
                Some(t) => v.push(t.to_string()),
                None => {
                    return Err(Error::Model {
                        file: path.display().to_string(),
                        message: format!("line {}: no string field {text_column:?}", i + 1),
                    })
                }
            }
        }
        v
    } else {
        read_column(path, text_column)?
    };
    if docs.is_empty() {
        return Err(Error::Model { file: path.display().to_string(), message: "no documents".into() });
    }
    Ok(docs)
}

fn read_column(path: &Path, text_column: &str) -> Result<Vec<String>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let delim = if ext == "csv" { b',' } else { b'\t' };
    let bad = |m: String| Error::Model { file: path.display().to_string(), message: m };
    let mut r =
        csv::ReaderBuilder::new().delimiter(delim).from_path(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let headers = r.headers().map_err(|e| bad(e.to_string()))?.clone();
    let Some(col) = headers.iter().position(|h| h == text_column) else {
        return Err(bad(format!(
            "no column {text_column:?} (columns: {})",
            headers.iter().collect::<Vec<_>>().join(", ")
        )));
    };
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        out.push(rec.get(col).unwrap_or("").to_string());
    }
    Ok(out)
}

/// How many blocks of `block` tokens the documents of `path` make for the LM in `dir` (the
/// run length of `--epochs`, before any GPU work).
pub fn count_lm_blocks(dir: &Path, path: &Path, text_column: &str, block: usize) -> Result<usize> {
    let p = dir.join("config.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).map_err(io_err(&p))?)
        .map_err(|e| Error::Model { file: p.display().to_string(), message: format!("not valid JSON: {e}") })?;
    let eos = v.get("eos_token_id").and_then(|e| e.as_u64()).map(|e| e as u32);
    let tok = TextTokenizer::from_dir(dir, block.max(2), eos.unwrap_or(0))?;
    Ok(pack_documents(&tok, &read_documents(path, text_column)?, block, eos)?.len())
}

/// Tokenize documents and pack them (each followed by `sep`, when given) into blocks of
/// `block` tokens; the remainder becomes a last, shorter block (padded in its batch).
pub fn pack_documents(tok: &TextTokenizer, docs: &[String], block: usize, sep: Option<u32>) -> Result<Vec<Vec<u32>>> {
    let mut all = Vec::new();
    for d in docs {
        all.extend(tok.ids(d, false)?);
        all.extend(sep);
    }
    Ok(all.chunks(block.max(2)).filter(|c| c.len() >= 2).map(|c| c.to_vec()).collect())
}

impl Dataset {
    /// Read `path` for `kind` (the column names matter for text only).
    pub fn read(kind: TaskKind, path: &Path, text_column: &str, label_column: &str) -> Result<Dataset> {
        Ok(match kind {
            TaskKind::TextClassification => Dataset::Text(read_examples(path, text_column, label_column)?),
            TaskKind::ImageClassification => Dataset::Images(ImageSet::open(path)?),
            TaskKind::CausalLm => Dataset::Documents(read_documents(path, text_column)?),
        })
    }
    pub fn len(&self) -> usize {
        match self {
            Dataset::Text(v) => v.len(),
            Dataset::Images(s) => s.len(),
            Dataset::Documents(v) => v.len(),
            Dataset::Blocks(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn label(&self, i: usize) -> &str {
        match self {
            Dataset::Text(v) => &v[i].label,
            Dataset::Images(s) => s.label(i),
            Dataset::Documents(_) | Dataset::Blocks(_) => "",
        }
    }
    /// The distinct labels, sorted (numerically when they are all integers).
    pub fn labels(&self) -> Vec<String> {
        match self {
            Dataset::Documents(_) | Dataset::Blocks(_) => Vec::new(),
            _ => label_set((0..self.len()).map(|i| self.label(i))),
        }
    }
    /// The examples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        match self {
            Dataset::Text(v) => Dataset::Text(idx.iter().map(|&i| v[i].clone()).collect()),
            Dataset::Images(s) => Dataset::Images(s.select(idx)),
            Dataset::Documents(v) => Dataset::Documents(idx.iter().map(|&i| v[i].clone()).collect()),
            Dataset::Blocks(v) => Dataset::Blocks(idx.iter().map(|&i| v[i].clone()).collect()),
        }
    }
    /// At most `m` examples, taken round-robin by label (in `labels` order) so the classes
    /// stay balanced.
    pub fn balanced_cut(&self, labels: &[String], m: usize) -> Dataset {
        if labels.is_empty() {
            return self.select(&(0..m.min(self.len())).collect::<Vec<_>>());
        }
        let by: Vec<Vec<usize>> =
            labels.iter().map(|l| (0..self.len()).filter(|&i| self.label(i) == l).collect()).collect();
        let mut cut = Vec::new();
        let mut i = 0;
        while cut.len() < m && by.iter().any(|v| i < v.len()) {
            for v in &by {
                if i < v.len() && cut.len() < m {
                    cut.push(v[i]);
                }
            }
            i += 1;
        }
        self.select(&cut)
    }
}

/// The model of a run with what turns examples into its input. (One per run: the variants'
/// size difference does not matter.)
#[allow(clippy::large_enum_variant)]
enum Net {
    Text { model: Encoder, tok: TextTokenizer },
    Image { model: Vit, prep: ImagePrep },
    Lm { model: CausalLm, tok: TextTokenizer },
}

/// Activations per batch shape (a second set for R3F's noised branch); a few per run.
#[allow(clippy::large_enum_variant)]
enum Acts {
    Text(EncoderActs, Option<EncoderActs>),
    Image(VitActs, Option<VitActs>),
    Lm(LmActs, Option<LmActs>),
}

/// How a dataset's labels name a classifier's classes, with Hugging Face's semantics: labels
/// that are the head's `id2label` names map through `label2id`; otherwise integer labels
/// `0..num_labels-1` are class indices.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelMap {
    /// The head's class names (`id2label`), by id.
    pub names: Vec<String>,
    /// Labels are class indices rather than names.
    pub by_index: bool,
}

impl LabelMap {
    /// How `labels` meet a head with classes `names`: by name when every label is one of the
    /// names, else by index when every label is an integer below their count, else `None`.
    pub fn fit(names: &[String], labels: &[String]) -> Option<LabelMap> {
        if labels.iter().all(|l| names.contains(l)) {
            return Some(LabelMap { names: names.to_vec(), by_index: false });
        }
        if labels.iter().all(|l| l.parse::<usize>().map(|i| i < names.len()).unwrap_or(false)) {
            return Some(LabelMap { names: names.to_vec(), by_index: true });
        }
        None
    }
    /// The class id of `label`.
    pub fn id(&self, label: &str) -> Option<u32> {
        if self.by_index {
            label.parse::<usize>().ok().filter(|&i| i < self.names.len()).map(|i| i as u32)
        } else {
            self.names.iter().position(|n| n == label).map(|i| i as u32)
        }
    }
    /// Check that every label of `data` maps to a class; the error names the file.
    pub fn check(&self, file: &Path, data: &Dataset) -> Result<()> {
        if let Some(bad) = (0..data.len()).map(|i| data.label(i)).find(|l| self.id(l).is_none()) {
            let how = if self.by_index {
                format!("a class index below {} (the data's labels are indices of the head)", self.names.len())
            } else {
                format!("one of the model's labels ({})", self.names.join(", "))
            };
            return Err(Error::Model {
                file: file.display().to_string(),
                message: format!("label {bad:?} is not {how}"),
            });
        }
        Ok(())
    }
}

/// A loaded model: config with labels, weights, and input preparation.
struct Loaded {
    net: Net,
    labels: LabelMap,
}

/// What to do with a classifier's head when loading it for training.
#[derive(Clone, Copy)]
enum Head<'a> {
    /// Keep it as it is (evaluation, prediction).
    Keep,
    /// Train on these labels: keep the head when they fit it ([`LabelMap::fit`]), else
    /// re-initialise it for them (refused when `resume`: a checkpoint's head is never dropped).
    Train { labels: &'a [String], resume: bool },
}

/// Fit a classifier's `id2label` to the training labels (see [`Head`]); a re-initialised head
/// drops the checkpoint's `classifier.*` tensors and says so in one line.
fn fit_head(id2label: &mut Vec<String>, weights: &mut Weights, head: Head) -> Result<LabelMap> {
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
fn load_net(
    gpu: &Gpu,
    kind: TaskKind,
    dir: &Path,
    head: Head,
    max_len: usize,
    image_size: Option<usize>,
    seed: u64,
) -> Result<Loaded> {
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
            let model = Encoder::load(gpu, cfg, &weights, seed)?;
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
            let model = CausalLm::load(gpu, dir, seed)?;
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

struct Run<'a> {
    gpu: &'a Gpu,
    net: Net,
    labels: LabelMap,
    acts: HashMap<(usize, usize), Acts>,
    needs_aux: bool,
}

impl Run<'_> {
    fn text_batch(&self, tok: &TextTokenizer, texts: &[&str], labels: Option<Vec<u32>>) -> Result<TextBatch> {
        // Lengths rounded up to a multiple of 8 so a few activation plans serve every batch.
        let mut b = tok.encode_rounded(texts, 8)?;
        b.labels = labels;
        Ok(b)
    }

    /// Upload examples `idx` of `data` into the activations planned for their shape (planned
    /// once per shape); returns that shape's key.
    fn upload(&mut self, data: &Dataset, idx: &[usize]) -> Result<(usize, usize)> {
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

    fn kind(&self) -> TaskKind {
        match self.net {
            Net::Text { .. } => TaskKind::TextClassification,
            Net::Image { .. } => TaskKind::ImageClassification,
            Net::Lm { .. } => TaskKind::CausalLm,
        }
    }

    /// One optimizer step on the batch uploaded under `key`.
    fn step(&self, opt: &mut Optimizer, rec: &mut crate::gpu::Recorder, key: (usize, usize)) -> Result<()> {
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
    fn forward(
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

    fn num_labels(&self) -> usize {
        self.labels.names.len()
    }

    fn params(&self) -> &crate::nn::ParamSet {
        match &self.net {
            Net::Text { model, .. } => &model.params,
            Net::Image { model, .. } => &model.params,
            Net::Lm { model, .. } => &model.params,
        }
    }

    /// Write the model as a Hugging Face folder (tokenizer files copied from `source`; a
    /// vision model gets the preprocessor_config.json of the size it was trained at).
    fn save(&self, dir: &Path, source: &Path) -> Result<()> {
        match &self.net {
            Net::Text { model, .. } => save_encoder(self.gpu, model, dir, Some(source)),
            Net::Image { model, prep } => {
                let state = pollster::block_on(model.state(self.gpu))?;
                let pre = serde_json::to_string_pretty(&prep.config_json()).unwrap_or_default().into_bytes();
                save_folder(dir, &state, &model.config_json(), Some(source), &[("preprocessor_config.json", pre)])
            }
            Net::Lm { model, .. } => {
                let state = pollster::block_on(model.state(self.gpu))?;
                save_folder(dir, &state, &model.config, Some(source), &[])
            }
        }
    }

    fn evaluate(&mut self, name: &str, data: &Dataset, batch: usize) -> Result<EvalResult> {
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
fn finite_eval(name: &str, loss: f64) -> Result<()> {
    if loss.is_finite() {
        return Ok(());
    }
    Err(Error::Gpu {
        context: format!("evaluation of {name}"),
        message: "the model's outputs or loss are NaN or infinite (its weights or configuration are not usable)".into(),
    })
}

/// A fine-tuned classifier folder (text or image), ready for evaluation and prediction.
pub struct Classifier<'g> {
    run: Run<'g>,
    pub labels: Vec<String>,
}

impl<'g> Classifier<'g> {
    /// Load `dir` (config.json with id2label, model.safetensors, tokenizer.json or
    /// preprocessor_config.json).
    pub fn load(gpu: &'g Gpu, dir: &Path, max_len: usize) -> Result<Self> {
        let kind = TaskKind::of_model(dir)?;
        if kind == TaskKind::CausalLm {
            return Err(Error::Model {
                file: dir.display().to_string(),
                message: "a language model: use `tramway perplexity` or `tramway generate`".into(),
            });
        }
        let max_len = match kind {
            TaskKind::TextClassification => max_len.min(read_encoder_config(dir)?.max_position_embeddings),
            TaskKind::ImageClassification | TaskKind::CausalLm => max_len,
        };
        let Loaded { net, labels } = load_net(gpu, kind, dir, Head::Keep, max_len, None, 0)?;
        Ok(Classifier {
            labels: labels.names.clone(),
            run: Run { gpu, net, labels, acts: HashMap::new(), needs_aux: false },
        })
    }

    /// What the model classifies.
    pub fn kind(&self) -> TaskKind {
        self.run.kind()
    }

    /// How the labels of `data` name the model's classes (see [`LabelMap`]).
    pub fn label_map(&self, file: &Path, data: &Dataset) -> Result<LabelMap> {
        let map = LabelMap::fit(&self.labels, &data.labels())
            .unwrap_or(LabelMap { names: self.labels.clone(), by_index: false });
        map.check(file, data)?;
        Ok(map)
    }

    /// Accuracy and mean loss on labelled examples: labels are the model's label names or,
    /// as in Hugging Face, class indices.
    pub fn evaluate(&mut self, name: &str, file: &Path, data: &Dataset, batch: usize) -> Result<EvalResult> {
        self.run.labels = self.label_map(file, data)?;
        self.run.evaluate(name, data, batch.max(1))
    }

    /// Class probabilities for each input: texts for a text model, image files for a vision
    /// model.
    pub fn predict(&mut self, inputs: &[&str], batch: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        for chunk in inputs.chunks(batch.max(1)) {
            let data = match self.kind() {
                TaskKind::TextClassification => {
                    Dataset::Text(chunk.iter().map(|t| Example { text: t.to_string(), label: String::new() }).collect())
                }
                TaskKind::ImageClassification | TaskKind::CausalLm => {
                    Dataset::Images(ImageSet::files(chunk.iter().map(PathBuf::from).collect()))
                }
            };
            let idx: Vec<usize> = (0..chunk.len()).collect();
            let key = self.run.upload(&data, &idx)?;
            let gpu = self.run.gpu;
            let mut rec = gpu.recorder();
            let (logits, _) = self.run.forward(&mut rec, key, false)?;
            rec.submit()?;
            let logits = gpu.read_f32_blocking(logits)?;
            if logits.iter().any(|v| !v.is_finite()) {
                finite_eval("prediction", f64::NAN)?;
            }
            for row in logits.chunks(self.labels.len()) {
                let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f64> = row.iter().map(|&v| ((v - m) as f64).exp()).collect();
                let z: f64 = e.iter().sum();
                out.push(e.iter().map(|v| (v / z) as f32).collect());
            }
        }
        Ok(out)
    }

    /// At most `m` examples of `data`, class-balanced.
    pub fn cut(&self, data: &Dataset, m: usize) -> Dataset {
        data.balanced_cut(&self.labels, m)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

/// The training-loss and evaluation-accuracy curves of a metrics JSONL file, as plot panels.
pub fn metrics_panels(lines: &[serde_json::Value]) -> Vec<plot::Panel> {
    let loss: Vec<(f64, f64)> = lines
        .iter()
        .filter(|v| v.get("eval").is_none())
        .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get("loss")?.as_f64()?)))
        .collect();
    let mut names: Vec<String> = Vec::new();
    for v in lines {
        if let Some(n) = v.get("eval").and_then(|n| n.as_str()) {
            if !names.iter().any(|m| m == n) {
                names.push(n.to_string());
            }
        }
    }
    let acc: Vec<plot::Series> = names
        .iter()
        .map(|n| plot::Series {
            name: n.clone(),
            points: lines
                .iter()
                .filter(|v| v.get("eval").and_then(|e| e.as_str()) == Some(n))
                .filter_map(|v| {
                    let y = v.get("accuracy").or_else(|| v.get("perplexity"))?.as_f64()?;
                    Some((v.get("step")?.as_f64()?, y))
                })
                .collect(),
            err: None,
        })
        .collect();
    let mut panels = vec![plot::Panel {
        title: "training loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        series: vec![plot::Series { name: "train".into(), points: loss, err: None }],
        categories: vec![],
    }];
    let lm = lines.iter().any(|v| v.get("perplexity").is_some());
    let what = if lm { "perplexity" } else { "accuracy" };
    if !acc.is_empty() {
        panels.push(plot::Panel {
            title: format!("evaluation {what}"),
            x_label: "step".into(),
            y_label: what.into(),
            series: acc,
            categories: vec![],
        });
    }
    panels
}
