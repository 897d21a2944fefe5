//! Fine-tuning a text classifier end to end (native): data, the step loop, evaluation, metrics,
//! checkpoints and resume.
//!
//! The data order is a function of the seed and the step only (epoch `e` is a seeded
//! permutation; batch `k` takes examples `k·B .. (k+1)·B` of the concatenated epochs), so a
//! resumed run needs nothing but the step count to continue bitwise.

use crate::data::table::{label_set, read_examples, Example};
use crate::data::text::TextTokenizer;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::config::EncoderConfig;
use crate::io::hf::{read_encoder_config, read_weights, save_encoder, write_atomic};
use crate::io::weights::{serialize, Weights};
use crate::models::encoder::{Encoder, EncoderActs, EncoderTask, TextBatch};
use crate::optim::{Method, OptimConfig, Optimizer};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything `tramway finetune` needs.
#[derive(Clone, Debug)]
pub struct FinetuneOptions {
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
    pub out: PathBuf,
    pub resume: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
    pub progress: bool,
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

struct Run<'a> {
    gpu: &'a Gpu,
    model: Encoder,
    tok: TextTokenizer,
    label_ids: HashMap<String, u32>,
    acts: HashMap<(usize, usize), (EncoderActs, Option<EncoderActs>)>,
    needs_aux: bool,
}

impl Run<'_> {
    fn batch(&self, rows: &[&Example]) -> Result<TextBatch> {
        let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        let mut b = self.tok.encode(&texts)?;
        // Round the length up to a multiple of 8 so a few activation plans serve every batch.
        let seq = b.seq.div_ceil(8).saturating_mul(8).min(self.tok.max_len).max(b.seq);
        if seq != b.seq {
            let (old, pad) = (b.seq, self.tok.pad_id);
            let widen = |v: &[u32], fill: u32| -> Vec<u32> {
                v.chunks(old).flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(fill, seq - old))).collect()
            };
            b.ids = widen(&b.ids, pad);
            b.mask = widen(&b.mask, 0);
            b.types = b.types.as_ref().map(|t| widen(t, 0));
            b.seq = seq;
        }
        let labels = rows.iter().map(|r| self.label_ids.get(&r.label).copied()).collect::<Option<Vec<u32>>>();
        b.labels = labels;
        Ok(b)
    }

    /// The activations planned for this batch's shape (planned once per shape), with the batch
    /// uploaded.
    fn acts_for(&mut self, b: &TextBatch) -> Result<(&Encoder, &(EncoderActs, Option<EncoderActs>))> {
        let key = (b.batch, b.seq);
        if !self.acts.contains_key(&key) {
            let main = self.model.acts(self.gpu, b.batch, b.seq)?;
            let aux = if self.needs_aux { Some(self.model.acts(self.gpu, b.batch, b.seq)?) } else { None };
            self.acts.insert(key, (main, aux));
        }
        let (main, aux) = self.acts.get_mut(&key).unwrap();
        self.model.upload(self.gpu, main, b)?;
        if let Some(a) = aux {
            self.model.upload(self.gpu, a, b)?;
        }
        Ok((&self.model, self.acts.get(&key).unwrap()))
    }

    fn evaluate(&mut self, name: &str, rows: &[Example], batch: usize) -> Result<EvalResult> {
        let (mut loss, mut correct, mut n) = (0.0f64, 0usize, 0usize);
        for chunk in rows.chunks(batch) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let b = self.batch(&refs)?;
            let labels = b.labels.clone().unwrap_or_default();
            let gpu = self.gpu;
            let (model, (acts, _)) = self.acts_for(&b)?;
            let mut rec = gpu.recorder();
            model.forward(&mut rec, acts, true, None)?;
            rec.submit()?;
            let logits = gpu.read_f32_blocking(&acts.logits)?;
            let l = gpu.read_f32_blocking(&acts.loss)?;
            let c = model.cfg.num_labels();
            for (row, &y) in logits.chunks(c).zip(&labels) {
                let arg = row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best });
                correct += (arg as u32 == y) as usize;
            }
            loss += l[0] as f64 * chunk.len() as f64;
            n += chunk.len();
        }
        Ok(EvalResult {
            name: name.to_string(),
            loss: loss / n as f64,
            accuracy: correct as f64 / n as f64,
            examples: n,
        })
    }
}

/// At most `m` examples, taken round-robin by label so the classes stay balanced.
fn balanced_cut(rows: &[Example], labels: &[String], m: usize) -> Vec<Example> {
    let by: Vec<Vec<&Example>> = labels.iter().map(|l| rows.iter().filter(|r| &r.label == l).collect()).collect();
    let mut cut = Vec::new();
    let mut i = 0;
    while cut.len() < m && by.iter().any(|v| i < v.len()) {
        for v in &by {
            if i < v.len() && cut.len() < m {
                cut.push(v[i].clone());
            }
        }
        i += 1;
    }
    cut
}

/// A fine-tuned classifier folder, ready for evaluation and prediction.
pub struct Classifier<'g> {
    run: Run<'g>,
    pub labels: Vec<String>,
}

impl<'g> Classifier<'g> {
    /// Load `dir` (config.json with id2label, model.safetensors, tokenizer.json).
    pub fn load(gpu: &'g Gpu, dir: &Path, max_len: usize) -> Result<Self> {
        let cfg = read_encoder_config(dir)?;
        let labels = cfg.id2label.clone();
        let tok = TextTokenizer::from_dir(dir, max_len.min(cfg.max_position_embeddings), cfg.pad_token_id)?;
        let model = Encoder::load(gpu, cfg, &read_weights(dir)?, 0)?;
        let label_ids = labels.iter().enumerate().map(|(i, l)| (l.clone(), i as u32)).collect();
        Ok(Classifier { run: Run { gpu, model, tok, label_ids, acts: HashMap::new(), needs_aux: false }, labels })
    }

    /// Accuracy and mean loss on labelled examples (labels must be the model's).
    pub fn evaluate(&mut self, name: &str, file: &Path, rows: &[Example], batch: usize) -> Result<EvalResult> {
        if let Some(bad) = rows.iter().find(|r| !self.labels.contains(&r.label)) {
            return Err(Error::Model {
                file: file.display().to_string(),
                message: format!("label {:?} is not one of the model's labels ({})", bad.label, self.labels.join(", ")),
            });
        }
        self.run.evaluate(name, rows, batch.max(1))
    }

    /// Class probabilities for each text.
    pub fn predict(&mut self, texts: &[&str], batch: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        for chunk in texts.chunks(batch.max(1)) {
            let rows: Vec<Example> =
                chunk.iter().map(|t| Example { text: t.to_string(), label: String::new() }).collect();
            let refs: Vec<&Example> = rows.iter().collect();
            let b = self.run.batch(&refs)?;
            let gpu = self.run.gpu;
            let (model, (acts, _)) = self.run.acts_for(&TextBatch { labels: None, ..b })?;
            let mut rec = gpu.recorder();
            model.forward(&mut rec, acts, false, None)?;
            rec.submit()?;
            let logits = gpu.read_f32_blocking(&acts.logits)?;
            for row in logits.chunks(self.labels.len()) {
                let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f64> = row.iter().map(|&v| ((v - m) as f64).exp()).collect();
                let z: f64 = e.iter().sum();
                out.push(e.iter().map(|v| (v / z) as f32).collect());
            }
        }
        Ok(out)
    }

    /// At most `m` examples of `rows`, class-balanced.
    pub fn cut(&self, rows: &[Example], m: usize) -> Vec<Example> {
        balanced_cut(rows, &self.labels, m)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

/// Save a checkpoint atomically: everything goes to a temporary folder that is renamed into
/// place, so a crash leaves either the previous checkpoint or the new one.
fn save_checkpoint(gpu: &Gpu, model: &Encoder, opt: &Optimizer, dir: &Path, source: &Path) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    save_encoder(gpu, model, &tmp, Some(source))?;
    let state = pollster::block_on(opt.state(gpu, &model.params))?;
    let st = tmp.join("optimizer.safetensors");
    write_atomic(&st, &serialize(&st.display().to_string(), &state)?)?;
    let meta = serde_json::json!({ "step": opt.step, "seed": opt.cfg.seed, "optimizer": format!("{:?}", opt.cfg) });
    write_atomic(&tmp.join("trainer_state.json"), serde_json::to_string_pretty(&meta).unwrap_or_default().as_bytes())?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io_err(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io_err(dir))
}

/// Fine-tune, evaluate and save. Prints progress to stderr when `progress`.
pub fn finetune(gpu: &Gpu, o: &FinetuneOptions) -> Result<Summary> {
    let started = Instant::now();
    let bad = |name: &'static str, value: String, expected: &str| Error::BadSetting {
        name,
        value,
        expected: expected.to_string(),
    };
    if o.batch_size == 0 {
        return Err(bad("--batch-size", "0".into(), "a positive number"));
    }
    let train = read_examples(&o.train, &o.text_column, &o.label_column)?;
    let labels = label_set(&train);
    if labels.len() < 2 {
        return Err(Error::Model {
            file: o.train.display().to_string(),
            message: format!("only one label ({:?}): a classifier needs at least two", labels),
        });
    }
    let mut evals = Vec::new();
    for (name, path) in &o.evals {
        let mut rows = read_examples(path, &o.text_column, &o.label_column)?;
        if let Some(bad_label) = rows.iter().find(|r| !labels.contains(&r.label)) {
            return Err(Error::Model {
                file: path.display().to_string(),
                message: format!(
                    "label {:?} does not occur in the training data (labels: {})",
                    bad_label.label,
                    labels.join(", ")
                ),
            });
        }
        if let Some(m) = o.max_eval {
            // Keep the classes balanced when cutting: take examples round-robin by label.
            let mut by: Vec<Vec<Example>> =
                labels.iter().map(|l| rows.iter().filter(|r| &r.label == l).cloned().collect()).collect();
            let mut cut = Vec::new();
            let mut i = 0;
            while cut.len() < m && by.iter().any(|v| i < v.len()) {
                for v in by.iter_mut() {
                    if i < v.len() && cut.len() < m {
                        cut.push(v[i].clone());
                    }
                }
                i += 1;
            }
            rows = cut;
        }
        evals.push((name.clone(), rows));
    }
    // The model: a checkpoint to resume, or the pre-trained folder with a head for our labels.
    let (model_dir, start_step) = match &o.resume {
        Some(dir) => {
            let state: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.join("trainer_state.json")).map_err(io_err(dir))?,
            )
            .map_err(|e| Error::Model {
                file: dir.join("trainer_state.json").display().to_string(),
                message: e.to_string(),
            })?;
            (dir.clone(), state["step"].as_u64().unwrap_or(0))
        }
        None => (o.model.clone(), 0),
    };
    let mut cfg: EncoderConfig = read_encoder_config(&model_dir)?;
    let mut weights: Weights = read_weights(&model_dir)?;
    if cfg.id2label != labels {
        if o.resume.is_some() {
            return Err(Error::Model {
                file: model_dir.display().to_string(),
                message: format!(
                    "the checkpoint's labels {:?} differ from the training data's {:?}",
                    cfg.id2label, labels
                ),
            });
        }
        // A new task: the classifier is re-initialised for these labels (like Hugging Face's
        // ignore_mismatched_sizes).
        cfg.id2label = labels.clone();
        weights.tensors.retain(|k, _| !k.starts_with("classifier."));
    }
    if o.max_len > cfg.max_position_embeddings {
        return Err(bad("--max-len", o.max_len.to_string(), "at most the model's max_position_embeddings"));
    }
    let tok = TextTokenizer::from_dir(&model_dir, o.max_len, cfg.pad_token_id)?;
    let model = Encoder::load(gpu, cfg, &weights, o.optim.seed)?;
    let mut opt = Optimizer::new(gpu, &model.params, o.optim)?;
    if o.resume.is_some() {
        let st = read_weights(&model_dir.join("optimizer.safetensors"))?;
        opt.load_state(gpu, &model.params, &st, start_step)?;
    }
    let total = o.steps.unwrap_or(((o.epochs * train.len() as f64) / o.batch_size as f64).ceil() as u64).max(1);
    let label_ids: HashMap<String, u32> = labels.iter().enumerate().map(|(i, l)| (l.clone(), i as u32)).collect();
    let needs_aux = matches!(o.optim.method, Method::R3f { .. });
    let mut run = Run { gpu, model, tok, label_ids, acts: HashMap::new(), needs_aux };
    std::fs::create_dir_all(&o.out).map_err(io_err(&o.out))?;
    let mut metrics = match &o.metrics {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(o.resume.is_some())
                .write(true)
                .truncate(o.resume.is_none())
                .open(p)
                .map_err(io_err(p))?,
        ),
        None => None,
    };
    let mut log = |v: serde_json::Value| -> Result<()> {
        if let (Some(f), Some(p)) = (metrics.as_mut(), &o.metrics) {
            writeln!(f, "{v}").map_err(io_err(p))?;
        }
        Ok(())
    };
    let bar = if o.progress {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}, {per_sec}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_position(start_step);
        Some(b)
    } else {
        None
    };
    let mut final_loss = f32::NAN;
    let mut eval_results = Vec::new();
    let do_eval = |run: &mut Run,
                   step: u64,
                   log: &mut dyn FnMut(serde_json::Value) -> Result<()>|
     -> Result<Vec<EvalResult>> {
        let mut out = Vec::new();
        for (name, rows) in &evals {
            let r = run.evaluate(name, rows, o.batch_size)?;
            log(
                serde_json::json!({"step": step, "eval": r.name, "loss": r.loss, "accuracy": r.accuracy, "examples": r.examples}),
            )?;
            out.push(r);
        }
        Ok(out)
    };
    for step in start_step..total {
        let idx = batch_indices(train.len(), o.batch_size, o.optim.seed, step);
        let rows: Vec<&Example> = idx.iter().map(|&i| &train[i]).collect();
        let b = run.batch(&rows)?;
        let lr = opt.lr();
        let (model, (acts, aux)) = run.acts_for(&b)?;
        let mut rec = gpu.recorder();
        opt.step(&mut rec, &EncoderTask { model, acts, aux: aux.as_ref() })?;
        rec.submit()?;
        let done = step + 1;
        if done % o.log_every.max(1) == 0 || done == total {
            let m = pollster::block_on(opt.metrics(gpu))?;
            final_loss = m.loss;
            log(serde_json::json!({"step": done, "loss": m.loss, "lr": lr, "d": m.d, "grad_norm": m.grad_norm}))?;
            if let Some(bar) = &bar {
                bar.set_message(format!("loss {:.4} lr {:.2e} d {:.3e}", m.loss, lr, m.d));
            }
            if !m.loss.is_finite() {
                return Err(Error::Gpu {
                    context: format!("step {done}"),
                    message: "the loss is not finite; lower --lr or enable --clip".into(),
                });
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
        if o.eval_every > 0 && done % o.eval_every == 0 && done != total {
            eval_results = do_eval(&mut run, done, &mut log)?;
        }
        if o.save_every > 0 && done % o.save_every == 0 && done != total {
            save_checkpoint(gpu, &run.model, &opt, &o.out.join(format!("checkpoint-{done}")), &model_dir)?;
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    eval_results = if evals.is_empty() { eval_results } else { do_eval(&mut run, total, &mut log)? };
    save_checkpoint(gpu, &run.model, &opt, &o.out.join("final"), &model_dir)?;
    Ok(Summary { steps: total, final_loss, evals: eval_results, seconds: started.elapsed().as_secs_f64() })
}
