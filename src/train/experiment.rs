//! The comparison experiment's bookkeeping: one `summary.json` per (task, optimizer, seed) run,
//! and the report built from them — a markdown table (mean ± sample std over seeds, per
//! evaluation set) and a PNG per task. `tramway experiment` drives the runs.

use super::plot::{write_png, Panel, Series};
use super::Summary;
use crate::error::{Error, Result};
use crate::io::hf::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What one run left behind (`<out>/<task>/<optimizer>/seed-<seed>/summary.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub task: String,
    pub optimizer: String,
    pub seed: u64,
    pub steps: u64,
    pub seconds: f64,
    /// The last logged training loss (none for a run of zero steps).
    #[serde(default)]
    pub final_loss: Option<f64>,
    /// (eval set, accuracy (None for a language model), mean loss, examples or scored tokens)
    pub evals: Vec<(String, Option<f64>, f64, usize)>,
}

impl RunRecord {
    pub fn new(task: &str, optimizer: &str, seed: u64, s: &Summary) -> Self {
        RunRecord {
            task: task.into(),
            optimizer: optimizer.into(),
            seed,
            steps: s.steps,
            seconds: s.seconds,
            final_loss: Some(s.final_loss as f64).filter(|l| l.is_finite()),
            evals: s
                .evals
                .iter()
                .map(|e| (e.name.clone(), Some(e.accuracy).filter(|a| !a.is_nan()), e.loss, e.examples))
                .collect(),
        }
    }
}

/// The folder of one run.
pub fn run_dir(out: &Path, task: &str, optimizer: &str, seed: u64) -> PathBuf {
    out.join(task).join(optimizer).join(format!("seed-{seed}"))
}

/// Write a run's record atomically.
pub fn save_record(dir: &Path, r: &RunRecord) -> Result<()> {
    let text = serde_json::to_string_pretty(r).unwrap_or_default();
    write_atomic(&dir.join("summary.json"), text.as_bytes())
}

/// The record of a finished run, if there is one.
pub fn load_record(dir: &Path) -> Result<Option<RunRecord>> {
    let p = dir.join("summary.json");
    if !p.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(&p).map_err(|source| Error::Io { path: p.display().to_string(), source })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Model { file: p.display().to_string(), message: format!("not a run summary: {e}") })
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

/// The score of one evaluation: accuracy, or perplexity for a language model.
fn score(e: &(String, Option<f64>, f64, usize)) -> f64 {
    e.1.unwrap_or(e.2.exp())
}

/// Whether a task's records are a language model's (scored by perplexity).
fn is_lm(records: &[&RunRecord]) -> bool {
    records.iter().flat_map(|r| &r.evals).all(|e| e.1.is_none())
}

/// The markdown table of one task: a row per optimizer, a column per evaluation set (accuracy,
/// or perplexity for a language model; mean ± std over seeds, the value alone for one run),
/// then seeds and mean wall time.
pub fn task_table(task: &str, optimizers: &[String], records: &[RunRecord]) -> String {
    let rs: Vec<&RunRecord> = records.iter().filter(|r| r.task == task).collect();
    let mut sets: Vec<String> = Vec::new();
    for r in &rs {
        for e in &r.evals {
            if !sets.contains(&e.0) {
                sets.push(e.0.clone());
            }
        }
    }
    let mut s = format!("| optimizer | {} | seeds | steps | s / run |\n", sets.join(" | "));
    s += &format!("|---|{}---|---|---|\n", "---|".repeat(sets.len()));
    for o in optimizers {
        let runs: Vec<&&RunRecord> = rs.iter().filter(|r| &r.optimizer == o).collect();
        if runs.is_empty() {
            continue;
        }
        let cells: Vec<String> = sets
            .iter()
            .map(|set| {
                let acc: Vec<f64> =
                    runs.iter().filter_map(|r| r.evals.iter().find(|e| &e.0 == set).map(score)).collect();
                let (m, sd) = mean_std(&acc);
                // One run (a baseline row) has no spread to show.
                match (m >= 10.0, acc.len() > 1) {
                    (true, true) => format!("{m:.2} ± {sd:.2}"),
                    (true, false) => format!("{m:.2}"),
                    (false, true) => format!("{m:.3} ± {sd:.3}"),
                    (false, false) => format!("{m:.3}"),
                }
            })
            .collect();
        let (secs, _) = mean_std(&runs.iter().map(|r| r.seconds).collect::<Vec<_>>());
        let steps = runs[0].steps;
        s += &format!("| {o} | {} | {} | {steps} | {secs:.0} |\n", cells.join(" | "), runs.len());
    }
    s
}

/// Mean training loss over seeds at each logged step of `metrics.jsonl` files.
fn mean_loss_curve(dirs: &[PathBuf]) -> Vec<(f64, f64)> {
    let mut sums: std::collections::BTreeMap<u64, (f64, usize)> = Default::default();
    for d in dirs {
        let Ok(text) = std::fs::read_to_string(d.join("metrics.jsonl")) else { continue };
        for v in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
            if v.get("eval").is_some() {
                continue;
            }
            if let (Some(step), Some(loss)) = (v["step"].as_u64(), v["loss"].as_f64()) {
                let e = sums.entry(step).or_default();
                e.0 += loss;
                e.1 += 1;
            }
        }
    }
    sums.into_iter().map(|(s, (sum, n))| (s as f64, sum / n as f64)).collect()
}

/// Write `<out>/<task>.png` (mean training loss per optimizer; accuracy per set, mean ± std)
/// and `<out>/results.md` (every task's table under `header`); returns the markdown.
pub fn report(out: &Path, tasks: &[String], optimizers: &[String], header: &str) -> Result<String> {
    let mut records = Vec::new();
    for t in tasks {
        for o in optimizers {
            let odir = out.join(t).join(o);
            let Ok(entries) = std::fs::read_dir(&odir) else { continue };
            let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            dirs.sort();
            for d in dirs {
                if let Some(r) = load_record(&d)? {
                    records.push(r);
                }
            }
        }
    }
    let ran: Vec<&RunRecord> = records.iter().filter(|r| tasks.contains(&r.task)).collect();
    let minutes = ran.iter().map(|r| r.seconds).sum::<f64>() / 60.0;
    let mut md = format!(
        "{header} {} finished runs, {minutes:.0} minutes of training and evaluation in all (the sum of \
         the runs' wall times).\n",
        ran.len()
    );
    for t in tasks {
        if !records.iter().any(|r| &r.task == t) {
            continue;
        }
        let lm = is_lm(&records.iter().filter(|r| &r.task == t).collect::<Vec<_>>());
        let what = if lm { "Perplexity (lower is better)" } else { "Accuracy" };
        md += &format!("\n### {t}\n\n{what} (mean ± std over seeds):\n\n{}", task_table(t, optimizers, &records));
        let mut loss = Vec::new();
        let mut sets: Vec<String> = Vec::new();
        for r in records.iter().filter(|r| &r.task == t) {
            for e in &r.evals {
                if !sets.contains(&e.0) {
                    sets.push(e.0.clone());
                }
            }
        }
        let mut acc = Vec::new();
        for o in optimizers {
            let runs: Vec<&RunRecord> = records.iter().filter(|r| &r.task == t && &r.optimizer == o).collect();
            if runs.is_empty() {
                continue;
            }
            let dirs: Vec<PathBuf> = runs.iter().map(|r| run_dir(out, t, o, r.seed)).collect();
            // A baseline row has no loss curve; its empty series keeps the colours of the two
            // panels in step (empty series are not drawn).
            loss.push(Series { name: o.clone(), points: mean_loss_curve(&dirs), err: None });
            let (mut points, mut err) = (Vec::new(), Vec::new());
            for (k, set) in sets.iter().enumerate() {
                let a: Vec<f64> = runs.iter().filter_map(|r| r.evals.iter().find(|e| &e.0 == set).map(score)).collect();
                let (m, sd) = mean_std(&a);
                points.push((k as f64, m));
                err.push(sd);
            }
            acc.push(Series { name: o.clone(), points, err: Some(err) });
        }
        let panels = [
            Panel {
                title: "training loss (mean over seeds)".into(),
                x_label: "step".into(),
                y_label: "loss".into(),
                series: loss,
                categories: vec![],
            },
            Panel {
                title: format!("{} (mean ± std over seeds)", if lm { "perplexity" } else { "accuracy" }),
                x_label: "evaluation set".into(),
                y_label: if lm { "perplexity" } else { "accuracy" }.into(),
                series: acc,
                categories: sets,
            },
        ];
        let png = out.join(format!("{t}.png"));
        write_png(&png, t, &panels)?;
        md += &format!("\n![{t}]({t}.png)\n");
    }
    write_atomic(&out.join("results.md"), md.as_bytes())?;
    Ok(md)
}
