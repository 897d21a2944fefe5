//! Training and evaluation data as a run sees it: the task a folder serves, labelled tables,
//! image sets and documents, the seeded example order, and how labels name a head's classes.

use crate::data::image::ImageSet;
use crate::data::table::{label_set, read_examples, Example};
use crate::data::text::TextTokenizer;
use crate::error::{Error, Result};
use crate::models::Family;
use std::path::Path;

use super::*;

pub(crate) fn splitmix(mut x: u64) -> u64 {
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

pub(crate) fn read_column(path: &Path, text_column: &str) -> Result<Vec<String>> {
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
    /// How many examples a run of `task` on `path` has before any GPU work (the run length of
    /// `--epochs`): rows of a table or images of a set, or blocks of `max_len` tokens of the
    /// documents for the language model in `model`.
    pub fn count(
        task: TaskKind,
        model: &Path,
        path: &Path,
        text_column: &str,
        label_column: &str,
        max_len: usize,
    ) -> Result<usize> {
        match task {
            TaskKind::CausalLm => count_lm_blocks(model, path, text_column, max_len),
            _ => Ok(Dataset::read(task, path, text_column, label_column)?.len()),
        }
    }

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
