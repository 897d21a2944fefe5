//! The comparison experiment's bookkeeping: one `summary.json` per (task, optimizer, seed) run,
//! and the report built from them — a markdown table (mean ± sample std over seeds, per
//! evaluation set) and a PNG per task; and the experiment file's plan ([`plan`]) and its
//! runs ([`run`]).

use super::plot::{write_png, Panel, Series};
use super::{FinetuneOptions, Summary};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
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
    /// What computed the run: the commit and the machine ([`computed_by`]); an experiment
    /// resumed across sessions mixes them, and the report lists each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_by: Option<String>,
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
            computed_by: None,
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
    let sets = eval_sets(rs.iter().copied());
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

/// The evaluation sets of some runs, in the order they first appear.
fn eval_sets<'a>(runs: impl Iterator<Item = &'a RunRecord>) -> Vec<String> {
    let mut sets: Vec<String> = Vec::new();
    for r in runs {
        for e in &r.evals {
            if !sets.contains(&e.0) {
                sets.push(e.0.clone());
            }
        }
    }
    sets
}

/// The two-sided 95 % quantile of Student's t with `df` degrees of freedom.
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        d if d <= 30 => T[d - 1],
        // Within 0.002 of the exact quantile from 31 on.
        d => 1.96 + 2.4 / d as f64,
    }
}

/// Mean of paired differences and its 95 % interval (Student's t): `(mean, low, high)`; NaN
/// bounds for fewer than two pairs.
pub fn paired_interval(diffs: &[f64]) -> (f64, f64, f64) {
    let (m, sd) = mean_std(diffs);
    let half = t975(diffs.len().saturating_sub(1)) * sd / (diffs.len() as f64).sqrt();
    (m, m - half, m + half)
}

/// One row of the paired comparison: an optimizer's per-seed differences to the reference on
/// each evaluation set (accuracy points, or perplexity for a language model).
struct PairedRow {
    optimizer: String,
    diffs: Vec<(String, Vec<f64>)>,
}

impl PairedRow {
    /// The most seeds paired on any set.
    fn pairs(&self) -> usize {
        self.diffs.iter().map(|(_, d)| d.len()).max().unwrap_or(0)
    }
}

/// Each row's paired differences to `reference` on one task, over the seeds both rows ran;
/// `None` when the reference has no runs.
fn paired_rows(task: &str, optimizers: &[String], records: &[RunRecord], reference: &str) -> Option<Vec<PairedRow>> {
    let rs: Vec<&RunRecord> = records.iter().filter(|r| r.task == task).collect();
    let refs: Vec<&&RunRecord> = rs.iter().filter(|r| r.optimizer == reference).collect();
    if refs.is_empty() {
        return None;
    }
    let scale = if is_lm(&rs) { 1.0 } else { 100.0 };
    let sets = eval_sets(rs.iter().copied());
    let mut rows = Vec::new();
    for o in optimizers.iter().filter(|o| *o != reference && *o != "pretrained") {
        let diffs: Vec<(String, Vec<f64>)> = sets
            .iter()
            .map(|set| {
                let at = |r: &RunRecord| r.evals.iter().find(|e| &e.0 == set).map(score);
                let d = rs
                    .iter()
                    .filter(|r| &r.optimizer == o)
                    .filter_map(|r| {
                        let base = refs.iter().find(|b| b.seed == r.seed)?;
                        Some((at(r)? - at(base)?) * scale)
                    })
                    .collect();
                (set.clone(), d)
            })
            .collect();
        let row = PairedRow { optimizer: o.clone(), diffs };
        if row.pairs() > 0 {
            rows.push(row);
        }
    }
    Some(rows)
}

/// Each row's paired difference to `reference` on one task, per evaluation set, over the seeds
/// both rows ran (a seed fixes the data order and the head's initialisation, so the pairs share
/// their batches): mean and 95 % interval, in accuracy points (perplexity for a language
/// model). `None` when the reference has no runs.
pub fn paired_table(task: &str, optimizers: &[String], records: &[RunRecord], reference: &str) -> Option<String> {
    let rows = paired_rows(task, optimizers, records, reference)?;
    let first = rows.first()?;
    let sets: Vec<&str> = first.diffs.iter().map(|(s, _)| s.as_str()).collect();
    let mut s = format!("| optimizer − {reference} | {} | pairs |\n", sets.join(" | "));
    s += &format!("|---|{}---|\n", "---|".repeat(sets.len()));
    for row in &rows {
        let cells: Vec<String> = row
            .diffs
            .iter()
            .map(|(_, d)| {
                let (m, lo, hi) = paired_interval(d);
                match d.len() {
                    0 => "–".to_string(),
                    1 => format!("{m:+.2}"),
                    _ => format!("{m:+.2} [{lo:+.2}, {hi:+.2}]"),
                }
            })
            .collect();
        s += &format!("| {} | {} | {} |\n", row.optimizer, cells.join(" | "), row.pairs());
    }
    Some(s)
}

/// What the paired table can and cannot conclude, in a sentence or two computed from it: which
/// intervals exclude 0, how many intervals there are, and how many of them would exclude 0 by
/// chance alone if no optimizer differed from `reference` (5 % of them). `None` when there is
/// no table.
pub fn paired_verdict(task: &str, optimizers: &[String], records: &[RunRecord], reference: &str) -> Option<String> {
    let rows = paired_rows(task, optimizers, records, reference)?;
    if rows.is_empty() {
        return None;
    }
    let mut intervals = 0;
    let mut excluding = Vec::new();
    let (mut fewest, mut most) = (usize::MAX, 0);
    for row in &rows {
        for (set, d) in &row.diffs {
            if d.len() < 2 {
                continue;
            }
            intervals += 1;
            (fewest, most) = (fewest.min(d.len()), most.max(d.len()));
            let (m, lo, hi) = paired_interval(d);
            if lo > 0.0 || hi < 0.0 {
                excluding.push(format!("{} on {set} ({m:+.2} [{lo:+.2}, {hi:+.2}])", row.optimizer));
            }
        }
    }
    let chance = 0.05 * intervals as f64;
    let seeds = if fewest == most { format!("{most}") } else { format!("{fewest} to {most}") };
    let none = if intervals == 1 {
        "The one interval contains 0".to_string()
    } else {
        format!("None of the {intervals} intervals excludes 0")
    };
    Some(match (intervals, excluding.len()) {
        (0, _) => format!(
            "No optimizer has two seeds paired with {reference}'s yet, so there is no interval: these differences rank \
             nothing."
        ),
        (_, 0) => format!(
            "{none}: at {seeds} seeds these runs do not tell any optimizer from {reference} on any set, which is not \
             evidence that they are equal."
        ),
        (n, k) => {
            let head = match (n, k) {
                (1, _) => "The one interval excludes 0".to_string(),
                (_, 1) => format!("1 of the {n} intervals excludes 0"),
                _ => format!("{k} of the {n} intervals exclude 0"),
            };
            let by_chance = if n == 1 {
                format!("An interval at 95 % excludes 0 by chance alone one time in 20 when the optimizer does not differ from {reference}")
            } else {
                format!("With {n} intervals at 95 %, about {chance:.1} would exclude 0 by chance alone if no optimizer differed from {reference}")
            };
            let others = if n > k {
                format!("; the others do not tell their optimizer from {reference}")
            } else {
                String::new()
            };
            format!(
                "{head}: {}{others}. {by_chance}, so an interval that only just excludes 0 is weak evidence on its \
                 own; all of it holds for this model, data and length of run only.",
                excluding.join("; "),
            )
        }
    })
}

/// Mean training loss over seeds at each logged step of `metrics.jsonl` files.
fn mean_loss_curve(dirs: &[PathBuf]) -> Vec<(f64, f64)> {
    mean_curve(dirs, "loss")
}

/// Mean over seeds of a training metric (`loss`, TRAM's `d`) at each logged step.
fn mean_curve(dirs: &[PathBuf], key: &str) -> Vec<(f64, f64)> {
    let mut sums: std::collections::BTreeMap<u64, (f64, usize)> = Default::default();
    for d in dirs {
        let Ok(text) = std::fs::read_to_string(d.join("metrics.jsonl")) else { continue };
        for v in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
            if v.get("eval").is_some() {
                continue;
            }
            if let (Some(step), Some(loss)) = (v["step"].as_u64(), v[key].as_f64()) {
                let e = sums.entry(step).or_default();
                e.0 += loss;
                e.1 += 1;
            }
        }
    }
    sums.into_iter().map(|(s, (sum, n))| (s as f64, sum / n as f64)).collect()
}

/// A training metric at each logged step.
type Curve = Vec<(f64, f64)>;

/// The window of the moving average that smooths each run's loss in `<task>-runs.png`.
const SMOOTH: usize = 10;

/// A trailing moving average over `window` points (the first points average the ones there are).
pub fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let window = window.max(1);
    let mut sum = 0.0;
    let mut out = Vec::with_capacity(points.len());
    for (i, &(x, y)) in points.iter().enumerate() {
        sum += y;
        if i >= window {
            sum -= points[i - window].1;
        }
        out.push((x, sum / (i + 1).min(window) as f64));
    }
    out
}

/// Write `<out>/<task>-runs.png`, the curves of every run: per optimizer that trained, a panel
/// of training loss ([`moving_average`] over [`SMOOTH`] steps) with a line per seed (the same
/// colour for a seed in every panel), then a panel of TRAM's d per step for each optimizer that
/// logs one; the loss panels share one y range, the d panels another. Returns the file's name,
/// or None when no run logged a curve.
fn runs_figure(out: &Path, task: &str, optimizers: &[String], records: &[RunRecord]) -> Result<Option<String>> {
    let (mut loss_panels, mut d_panels) = (Vec::new(), Vec::new());
    for o in optimizers {
        let mut runs: Vec<&RunRecord> =
            records.iter().filter(|r| r.task == task && &r.optimizer == o && r.steps > 0).collect();
        runs.sort_by_key(|r| r.seed);
        // (seed, loss curve, d curve)
        let curves: Vec<(u64, Curve, Curve)> = runs
            .iter()
            .map(|r| {
                let d = [run_dir(out, task, o, r.seed)];
                (r.seed, mean_curve(&d, "loss"), mean_curve(&d, "d"))
            })
            .collect();
        if curves.iter().all(|c| c.1.is_empty()) {
            continue;
        }
        let panel = |title: String, y: &str, series| Panel {
            title,
            x_label: "step".into(),
            y_label: y.into(),
            series,
            categories: vec![],
            y_range: None,
        };
        let loss = curves
            .iter()
            .map(|c| Series { name: format!("seed {}", c.0), points: moving_average(&c.1, SMOOTH), err: None })
            .collect();
        loss_panels.push(panel(format!("{o}: training loss"), &format!("loss ({SMOOTH}-step mean)"), loss));
        if curves.iter().any(|c| c.2.iter().any(|p| p.1 > 0.0)) {
            let d = curves
                .iter()
                .map(|c| Series { name: format!("seed {}", c.0), points: c.2.clone(), err: None })
                .collect();
            d_panels.push(panel(format!("{o}: trust-region distance d"), "d", d));
        }
    }
    if loss_panels.is_empty() {
        return Ok(None);
    }
    // One y range for all loss panels and one for all d panels, so panels compare by eye.
    for panels in [&mut loss_panels, &mut d_panels] {
        let ys = panels.iter().flat_map(|p| &p.series).flat_map(|s| &s.points).map(|p| p.1).filter(|y| y.is_finite());
        let range = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
        for p in panels.iter_mut() {
            p.y_range = Some(range);
        }
    }
    loss_panels.extend(d_panels);
    let name = format!("{task}-runs.png");
    write_png(&out.join(&name), &format!("{task}: every run"), &loss_panels)?;
    Ok(Some(name))
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
    // What computed the runs (a resumed experiment may span commits and machines).
    let mut by: Vec<(String, usize)> = Vec::new();
    for r in &ran {
        let k = r.computed_by.clone().unwrap_or_else(|| "not recorded".into());
        match by.iter_mut().find(|(b, _)| *b == k) {
            Some((_, n)) => *n += 1,
            None => by.push((k, 1)),
        }
    }
    if !by.is_empty() {
        let list: Vec<String> =
            by.iter().map(|(b, n)| format!("{b} ({n} run{})", if *n == 1 { "" } else { "s" })).collect();
        md += &format!("Runs computed by: {}.\n", list.join("; "));
    }
    for t in tasks {
        if !records.iter().any(|r| &r.task == t) {
            continue;
        }
        let lm = is_lm(&records.iter().filter(|r| &r.task == t).collect::<Vec<_>>());
        let what = if lm { "Perplexity (lower is better)" } else { "Accuracy" };
        md += &format!("\n### {t}\n\n{what} (mean ± std over seeds):\n\n{}", task_table(t, optimizers, &records));
        if let Some(p) = paired_table(t, optimizers, &records, "adamw") {
            let unit = if lm { "perplexity" } else { "accuracy points" };
            md += &format!(
                "\nPaired difference to adamw over the same seeds (same data order), mean and 95 % interval \
                 (Student's t, pairs − 1 degrees of freedom), in {unit}:\n\n{p}\n{}\n",
                paired_verdict(t, optimizers, &records, "adamw").unwrap_or_default()
            );
        }
        let mut loss = Vec::new();
        let sets = eval_sets(records.iter().filter(|r| &r.task == t));
        let mut acc = Vec::new();
        let mut dcurves = Vec::new();
        for o in optimizers {
            let runs: Vec<&RunRecord> = records.iter().filter(|r| &r.task == t && &r.optimizer == o).collect();
            if runs.is_empty() {
                continue;
            }
            let dirs: Vec<PathBuf> = runs.iter().map(|r| run_dir(out, t, o, r.seed)).collect();
            // A baseline row has no loss curve; its empty series keeps the colours of the two
            // panels in step (empty series are not drawn).
            // Smoothed like the every-run figure: each step's loss is one batch's, and six
            // optimizers' raw curves overlap into noise.
            loss.push(Series { name: o.clone(), points: moving_average(&mean_loss_curve(&dirs), SMOOTH), err: None });
            let d = mean_curve(&dirs, "d");
            let d = if d.iter().any(|p| p.1 > 0.0) { d } else { Vec::new() };
            dcurves.push(Series { name: o.clone(), points: d, err: None });
            let (mut points, mut err) = (Vec::new(), Vec::new());
            for (k, set) in sets.iter().enumerate() {
                let a: Vec<f64> = runs.iter().filter_map(|r| r.evals.iter().find(|e| &e.0 == set).map(score)).collect();
                let (m, sd) = mean_std(&a);
                points.push((k as f64, m));
                err.push(sd);
            }
            acc.push(Series { name: o.clone(), points, err: Some(err) });
        }
        let mut panels = vec![
            Panel {
                title: "training loss (mean over seeds)".into(),
                x_label: "step".into(),
                y_label: format!("loss ({SMOOTH}-step mean)"),
                series: loss,
                categories: vec![],
                y_range: None,
            },
            Panel {
                title: format!("{} (mean ± std over seeds)", if lm { "perplexity" } else { "accuracy" }),
                x_label: "evaluation set".into(),
                y_label: if lm { "perplexity" } else { "accuracy" }.into(),
                series: acc,
                categories: sets,
                y_range: None,
            },
        ];
        if dcurves.iter().any(|s| !s.points.is_empty()) {
            panels.push(Panel {
                title: "TRAM's trust-region distance d (mean over seeds)".into(),
                x_label: "step".into(),
                y_label: "d".into(),
                series: dcurves,
                categories: vec![],
                y_range: None,
            });
        }
        let png = out.join(format!("{t}.png"));
        write_png(&png, t, &panels)?;
        md += &format!("\n![{t}]({t}.png)\n");
        if let Some(name) = runs_figure(out, t, optimizers, &records)? {
            md += &format!(
                "\nEvery run's training loss (a trailing mean over {SMOOTH} logged steps), a line per seed, \
                 and TRAM's d at every step:\n\n![{t}: every run]({name})\n"
            );
        }
    }
    write_atomic(&out.join("results.md"), md.as_bytes())?;
    Ok(md)
}

/// One run of an experiment.
pub struct PlannedRun {
    pub task: String,
    /// The row: an optimizer name, or `pretrained` (the starting model, no training).
    pub optimizer: String,
    pub seed: u64,
    pub dir: PathBuf,
    pub options: FinetuneOptions,
}

/// An experiment file read and every run's options built and checked.
pub struct Plan {
    pub file: String,
    pub out: PathBuf,
    pub quick: bool,
    pub seeds: Vec<u64>,
    /// The tasks chosen, in the file's order.
    pub tasks: Vec<String>,
    /// The report's rows (optimizers, `pretrained` first with `baseline = true`).
    pub rows: Vec<String>,
    pub runs: Vec<PlannedRun>,
}

/// Read an experiment file (`out`, `seeds`, `optimizers`, `baseline`, a `[finetune]` table of
/// flags for every run, `[optimizer.NAME]` tables, a `[quick]` table and `[[task]]` tables; see
/// experiments/domain-shift.toml) and build every (task, optimizer, seed) run's options before
/// any starts, so a bad key fails at once rather than hours in. `only`: these tasks;
/// `out_override`: the output folder; `quick`: the `[quick]` overrides into `<out>-quick`.
/// `finetune` turns a `tramway finetune ...` argument list into options (the CLI's parser).
pub fn plan(
    config: &Path,
    quick: bool,
    only: &[String],
    out_override: Option<&Path>,
    finetune: impl Fn(&[String]) -> std::result::Result<FinetuneOptions, String>,
) -> Result<Plan> {
    let file = config.display().to_string();
    let bad = |m: String| Error::Model { file: file.clone(), message: m };
    let text = std::fs::read_to_string(config).map_err(|source| Error::Io { path: file.clone(), source })?;
    let t: toml::Table = text.parse().map_err(|e| bad(format!("not valid TOML: {e}")))?;
    let table = |k: &str| -> Result<toml::Table> {
        match t.get(k) {
            None => Ok(toml::Table::new()),
            Some(toml::Value::Table(x)) => Ok(x.clone()),
            Some(v) => Err(bad(format!("{k} must be a table, found {v:?}"))),
        }
    };
    let (finetune_t, optim_t, quick_t) = (table("finetune")?, table("optimizer")?, table("quick")?);
    // `[optimizer.tram-x-0.1]` is TOML for a table "0.1" inside "tram-x-0": say so.
    for (k, v) in &optim_t {
        if let Some((inner, _)) = v.as_table().and_then(|t| t.iter().find(|(_, x)| x.is_table())) {
            return Err(bad(format!(
                "[optimizer.{k}.{inner}] is a table inside optimizer.{k}: a row name with a dot needs quotes, \
                 [optimizer.\"{k}.{inner}\"]"
            )));
        }
    }
    let seeds_of = |v: Option<&toml::Value>| -> Result<Option<Vec<u64>>> {
        match v {
            None => Ok(None),
            Some(toml::Value::Array(xs)) => xs
                .iter()
                .map(|x| x.as_integer().filter(|&i| i >= 0).map(|i| i as u64))
                .collect::<Option<Vec<u64>>>()
                .map(Some)
                .ok_or_else(|| bad("seeds must be a list of non-negative integers".into())),
            Some(v) => Err(bad(format!("seeds must be a list, found {v:?}"))),
        }
    };
    let mut seeds = seeds_of(t.get("seeds"))?.unwrap_or(vec![1, 2, 3]);
    if quick {
        if let Some(q) = seeds_of(quick_t.get("seeds"))? {
            seeds = q;
        }
    }
    let optimizers: Vec<String> = match t.get("optimizers") {
        Some(toml::Value::Array(xs)) if !xs.is_empty() => xs
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("optimizers must be a list of names".into()))?,
        _ => return Err(bad("optimizers = [\"adamw\", \"tram-x\", ...] is missing".into())),
    };
    let tasks: Vec<toml::Table> = match t.get("task") {
        Some(toml::Value::Array(xs)) if !xs.is_empty() => xs
            .iter()
            .map(|x| x.as_table().cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("[[task]] entries must be tables".into()))?,
        _ => return Err(bad("no [[task]] tables".into())),
    };
    let mut names = Vec::new();
    for task in &tasks {
        match task.get("name").and_then(|n| n.as_str()) {
            Some(n) if !n.is_empty() && !n.contains(['/', '\\']) => names.push(n.to_string()),
            _ => return Err(bad("every [[task]] needs a name (no slashes)".into())),
        }
    }
    if let Some(unknown) = only.iter().find(|n| !names.contains(n)) {
        return Err(Error::BadSetting {
            name: "--task",
            value: unknown.clone(),
            expected: format!("one of the file's tasks: {}", names.join(", ")),
        });
    }
    let chosen: Vec<String> = names.iter().filter(|n| only.is_empty() || only.contains(n)).cloned().collect();
    let mut out = match (&out_override, t.get("out").and_then(|o| o.as_str())) {
        (Some(o), _) => o.to_path_buf(),
        (None, Some(o)) => PathBuf::from(o),
        (None, None) => PathBuf::from("runs/experiment"),
    };
    if quick && out_override.is_none() {
        out = PathBuf::from(format!("{}-quick", out.display()));
    }
    // `baseline = true`: one more row per task, the starting model evaluated without training
    // (`--steps 0`, first seed) — the reference a language model's perplexities need.
    let baseline = match t.get("baseline") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(v) => return Err(bad(format!("baseline must be true or false, found {v:?}"))),
    };
    let mut rows: Vec<(String, Vec<u64>)> = Vec::new();
    if baseline {
        rows.push(("pretrained".into(), seeds.iter().take(1).copied().collect()));
    }
    rows.extend(optimizers.iter().map(|o| (o.clone(), seeds.clone())));
    // Every run's options are built and checked before the first run starts, so a bad key in
    // the file fails at once rather than hours in.
    // Seed by seed, every row of a seed before the next seed: an experiment stopped part way
    // has whole seeds, each a paired comparison of every optimizer.
    let mut runs = Vec::new();
    for (task, name) in tasks.iter().zip(&names).filter(|(_, n)| chosen.contains(n)) {
        for &seed in &seeds {
            for (o, _) in rows.iter().filter(|(_, s)| s.contains(&seed)) {
                let dir = run_dir(&out, name, o, seed);
                let mut args = vec!["tramway".to_string(), "finetune".to_string()];
                let flags = |tb: &toml::Table, skip: &[&str]| super::flags::table_flags(&file, tb, skip).map_err(bad);
                args.extend(flags(&finetune_t, &[])?);
                args.extend(flags(task, &["name"])?);
                // A row's table: the method's settings, or a variant of a method (`method =
                // "tram-x"` with its own settings, e.g. a σ of a sweep, or a frozen-base probe).
                let mut method = None;
                if let Some(v) = optim_t.get(o.as_str()) {
                    let tb = v.as_table().ok_or_else(|| bad(format!("optimizer.{o} must be a table")))?;
                    method = match tb.get("method") {
                        None => None,
                        Some(toml::Value::String(m)) => Some(m.clone()),
                        Some(m) => return Err(bad(format!("optimizer.{o}.method must be a name, found {m:?}"))),
                    };
                    args.extend(flags(tb, &["method"])?);
                }
                if quick {
                    args.extend(flags(&quick_t, &["seeds"])?);
                }
                let metrics = dir.join("metrics.jsonl");
                let optimizer = match (o.as_str(), method) {
                    ("pretrained", _) => "adamw".to_string(),
                    (_, Some(m)) => m,
                    _ => o.clone(),
                };
                for (f, v) in [
                    ("--optimizer", optimizer),
                    ("--seed", seed.to_string()),
                    ("--out", dir.display().to_string()),
                    ("--metrics", metrics.display().to_string()),
                ] {
                    args.push(f.into());
                    args.push(v);
                }
                if o == "pretrained" {
                    args.extend(["--steps".into(), "0".into()]);
                }
                args.push("--no-save".into());
                let context = |e: String| bad(format!("task {name}, optimizer {o}: {e}"));
                let options = finetune(&args).map_err(context)?;
                options.validate().map_err(|e| context(e.to_string()))?;
                runs.push(PlannedRun { task: name.clone(), optimizer: o.clone(), seed, dir, options });
            }
        }
    }
    Ok(Plan { file, out, quick, seeds, tasks: chosen, rows: rows.into_iter().map(|(o, _)| o).collect(), runs })
}

/// Run run `index` of the plan (the order of the local runs and of a Slurm array), unless its
/// `summary.json` exists. Returns whether it ran.
pub fn run_one(gpu: &Gpu, plan: &Plan, index: usize) -> Result<bool> {
    let Some(r) = plan.runs.get(index) else {
        return Err(Error::BadSetting {
            name: "--run-index",
            value: index.to_string(),
            expected: format!(
                "a run of the plan: 0 to {} ({} runs)",
                plan.runs.len().saturating_sub(1),
                plan.runs.len()
            ),
        });
    };
    if load_record(&r.dir)?.is_some() {
        eprintln!("run {index} ({} {} seed {}): done already", r.task, r.optimizer, r.seed);
        return Ok(false);
    }
    eprintln!("run {index}: {} {} seed {}", r.task, r.optimizer, r.seed);
    let by = computed_by();
    let s = super::finetune(gpu, &r.options)?;
    save_record(&r.dir, &RunRecord { computed_by: Some(by), ..RunRecord::new(&r.task, &r.optimizer, r.seed, &s) })?;
    Ok(true)
}

/// The commit this binary was built from, with `+changes` when its code differed from it
/// (stamped at build time by build.rs).
pub const BUILD_COMMIT: &str = env!("TRAMWAY_COMMIT");

/// A run's record of what computed it, `commit C on MACHINE`: the commit the binary was built
/// from (not the checkout it runs in, which may have moved on) and the machine.
pub fn computed_by() -> String {
    format!("commit {BUILD_COMMIT} on {}", machine())
}

/// The machine: host, CPU, cores, OS.
fn machine() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{host}, {cpu}, {cores} cores, {}", std::env::consts::OS)
}

/// Where a report came from: the command, the commit the binary was built from (with
/// `+changes` when its code differed) and that commit's date, the machine (host, CPU, cores, OS).
pub fn provenance() -> String {
    let command: Vec<String> = std::env::args().collect();
    let date = env!("TRAMWAY_COMMIT_DATE");
    format!("Command: `{}`; commit {BUILD_COMMIT} (committed {date}); machine: {}.", command.join(" "), machine())
}

/// Run every planned run that has no `summary.json` yet (an interrupted experiment continues
/// where it stopped; none with `report_only`), then write `results.md` and the plots. Returns
/// the report and the minutes this call trained.
pub fn run(gpu: &Gpu, plan: &Plan, report_only: bool) -> Result<(String, f64)> {
    let total = plan.runs.len();
    let mut ran_secs = 0.0;
    // Taken before training: the commit that computes the runs, not whatever the checkout
    // holds hours later.
    let provenance = provenance();
    let by = computed_by();
    if !report_only {
        for (k, PlannedRun { task: name, optimizer: o, seed, dir, options: opts }) in plan.runs.iter().enumerate() {
            let k = k + 1;
            if load_record(dir)?.is_some() {
                eprintln!("[{k}/{total}] {name} {o} seed {seed}: done already");
                continue;
            }
            eprintln!("[{k}/{total}] {name} {o} seed {seed}");
            let s = super::finetune(gpu, opts)?;
            ran_secs += s.seconds;
            for e in &s.evals {
                if e.accuracy.is_nan() {
                    eprintln!("    {:<20} perplexity {:.3}", e.name, e.loss.exp());
                } else {
                    eprintln!("    {:<20} accuracy {:.4}", e.name, e.accuracy);
                }
            }
            save_record(dir, &RunRecord { computed_by: Some(by.clone()), ..RunRecord::new(name, o, *seed, &s) })?;
        }
    }
    let header = format!(
        "{}\n\nExperiment `{}`{} on {} ({:?}); {} seeds; runs in `{}`.",
        provenance,
        plan.file,
        if plan.quick { " (--quick)" } else { "" },
        gpu.adapter_info().name,
        gpu.adapter_info().backend,
        plan.seeds.len(),
        plan.out.display(),
    );
    let md = report(&plan.out, &plan.tasks, &plan.rows, &header)?;
    Ok((md, ran_secs / 60.0))
}
