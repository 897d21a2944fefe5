//! A fine-tuned classifier folder (text or image) for `tramway eval` and `tramway predict`.

use crate::data::image::ImageSet;
use crate::data::table::Example;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::encoder::read_encoder_config;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;

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
        let Loaded { net, labels } = load_net(gpu, kind, dir, Head::Keep, max_len, None, 0, None, false)?;
        Ok(Classifier {
            labels: labels.names.clone(),
            run: Run { gpu, net, labels, acts: HashMap::new(), needs_aux: false, lora: None },
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
