//! Fine-tuning a text or image classifier end to end (native): data, the step loop, evaluation,
//! metrics, the plot, checkpoints and resume.
//!
//! The data order is a function of the seed and the step only (epoch `e` is a seeded
//! permutation; batch `k` takes examples `k·B .. (k+1)·B` of the concatenated epochs), so a
//! resumed run needs nothing but the step count to continue bitwise.

pub mod checkpoint;
mod classifier;
mod dataset;
pub mod embed;
pub mod experiment;
mod finetune;
pub mod flags;
pub mod info;
pub mod lm;
mod options;
pub mod plot;
pub mod probe;
mod run;
pub mod slurm;

pub use classifier::Classifier;
pub use dataset::{
    batch_indices, count_lm_blocks, epoch_order, pack_documents, read_documents, Dataset, LabelMap, TaskKind,
};
pub use finetune::finetune;
pub use options::{EvalResult, FinetuneOptions, MemoryPlan, Summary};
pub(crate) use run::{finite_eval, load_net, Head, Loaded, Net, Run};

use crate::error::Error;
use std::path::Path;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
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
        y_range: None,
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
            y_range: None,
        });
    }
    panels
}
