//! `tramway probe`: what a text encoder's frozen features give without fine-tuning them. A
//! multinomial logistic regression (f64, L-BFGS, features standardised on the training set, L2
//! strength chosen on a dev set) on the encoder's pooled sentence embeddings (mean pooling by
//! default, as sentence-transformers models are trained), evaluated on the same class-balanced
//! cuts as `tramway finetune --max-eval`.

use super::dataset::Dataset;
use super::options::EvalResult;
use crate::data::table::{label_set, read_examples, Example};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::encoder::Pooling;
use std::path::{Path, PathBuf};

/// A fitted linear classifier over standardised features.
#[derive(Clone, Debug)]
pub struct Logistic {
    pub classes: usize,
    pub dim: usize,
    /// `classes × (dim + 1)`, row `c` = class c's weights then its bias.
    pub weights: Vec<f64>,
    mean: Vec<f64>,
    scale: Vec<f64>,
    /// L-BFGS iterations taken and the final gradient's largest component.
    pub iterations: usize,
    pub grad_max: f64,
}

/// Mean cross-entropy over `(x, y)` plus `l2 / 2 · ‖W‖²` (biases not penalised), and its
/// gradient, for `w` laid out as [`Logistic::weights`].
pub fn objective(x: &[Vec<f64>], y: &[usize], classes: usize, l2: f64, w: &[f64]) -> (f64, Vec<f64>) {
    let dim = x.first().map_or(0, |r| r.len());
    let stride = dim + 1;
    let mut g = vec![0.0; w.len()];
    let mut loss = 0.0;
    let mut z = vec![0.0; classes];
    for (xi, &yi) in x.iter().zip(y) {
        for (c, zc) in z.iter_mut().enumerate() {
            let row = &w[c * stride..(c + 1) * stride];
            *zc = row[dim] + row[..dim].iter().zip(xi).map(|(a, b)| a * b).sum::<f64>();
        }
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        let lse = m + s.ln();
        loss += lse - z[yi];
        for c in 0..classes {
            let d = (z[c] - lse).exp() - if c == yi { 1.0 } else { 0.0 };
            let row = &mut g[c * stride..(c + 1) * stride];
            for (gj, xj) in row[..dim].iter_mut().zip(xi) {
                *gj += d * xj;
            }
            row[dim] += d;
        }
    }
    let n = x.len().max(1) as f64;
    loss /= n;
    g.iter_mut().for_each(|v| *v /= n);
    for c in 0..classes {
        for j in 0..dim {
            let wj = w[c * stride + j];
            loss += 0.5 * l2 * wj * wj;
            g[c * stride + j] += l2 * wj;
        }
    }
    (loss, g)
}

/// Minimise a smooth function with L-BFGS (10 pairs, backtracking Armijo line search) from
/// `x`, until the gradient's largest component is below `tol` or `max_iter` iterations.
/// Returns the point, the iterations and the final gradient's largest component (infinite where
/// the function or its gradient is not finite, at the start or at the end).
pub fn lbfgs(
    mut f: impl FnMut(&[f64]) -> (f64, Vec<f64>),
    mut x: Vec<f64>,
    tol: f64,
    max_iter: usize,
) -> (Vec<f64>, usize, f64) {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    // NaN counts as infinitely large (f64::max would skip it and report convergence).
    let gmax = |g: &[f64]| g.iter().fold(0.0f64, |m, v| if v.is_nan() { f64::INFINITY } else { m.max(v.abs()) });
    let (mut fx, mut g) = f(&x);
    if !fx.is_finite() {
        return (x, 0, f64::INFINITY);
    }
    let mut pairs: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> = Default::default();
    let mut it = 0;
    while it < max_iter && gmax(&g) > tol {
        it += 1;
        // Two-loop recursion: d = -H·g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(pairs.len());
        for (s, yv, rho) in pairs.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        if let Some((s, yv, _)) = pairs.back() {
            let gamma = dot(s, yv) / dot(yv, yv);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for ((s, yv, rho), a) in pairs.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(yv, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&d, &g);
        if slope.is_nan() || slope >= 0.0 {
            // Not a descent direction (curvature lost): restart from steepest descent.
            pairs.clear();
            d = g.iter().map(|v| -v).collect();
            slope = -dot(&g, &g);
        }
        let mut t = if pairs.is_empty() { 1.0 / gmax(&g).max(1.0) } else { 1.0 };
        let (mut xn, mut fxn, mut gn);
        loop {
            xn = x.iter().zip(&d).map(|(a, b)| a + t * b).collect::<Vec<f64>>();
            (fxn, gn) = f(&xn);
            if fxn <= fx + 1e-4 * t * slope || t < 1e-20 {
                break;
            }
            t *= 0.5;
        }
        if (fxn.is_nan() || fxn >= fx) && t < 1e-20 {
            break; // no progress left at f64 precision
        }
        let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = gn.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 * dot(&yv, &yv).sqrt() * dot(&s, &s).sqrt() {
            if pairs.len() == 10 {
                pairs.pop_front();
            }
            pairs.push_back((s, yv, 1.0 / sy));
        }
        (x, fx, g) = (xn, fxn, gn);
    }
    let m = gmax(&g);
    (x, it, m)
}

impl Logistic {
    /// Fit on features `x` (one row per example, all of one length) with labels `y` in
    /// `0..classes`, penalty `l2` on the weights.
    pub fn fit(x: &[Vec<f32>], y: &[usize], classes: usize, l2: f64) -> Result<Logistic> {
        let bad = |message: String| Err(Error::Shape { op: "logistic probe", message });
        let dim = x.first().map_or(0, |r| r.len());
        if x.is_empty() || dim == 0 {
            return bad("no examples or empty features".into());
        }
        if x.len() != y.len() {
            return bad(format!("{} feature rows but {} labels", x.len(), y.len()));
        }
        if let Some(r) = x.iter().find(|r| r.len() != dim) {
            return bad(format!("feature rows of {} and {} values", dim, r.len()));
        }
        if let Some(&c) = y.iter().find(|&&c| c >= classes) {
            return bad(format!("label {c} with {classes} classes"));
        }
        if x.iter().flatten().any(|v| !v.is_finite()) {
            return bad("a feature is NaN or infinite".into());
        }
        let n = x.len() as f64;
        let mean: Vec<f64> = (0..dim).map(|j| x.iter().map(|r| r[j] as f64).sum::<f64>() / n).collect();
        let scale: Vec<f64> = (0..dim)
            .map(|j| {
                let var = x.iter().map(|r| (r[j] as f64 - mean[j]).powi(2)).sum::<f64>() / n;
                if var > 1e-24 {
                    1.0 / var.sqrt()
                } else {
                    0.0
                }
            })
            .collect();
        let mut model = Logistic {
            classes,
            dim,
            weights: vec![0.0; classes * (dim + 1)],
            mean,
            scale,
            iterations: 0,
            grad_max: 0.0,
        };
        let z: Vec<Vec<f64>> = x.iter().map(|r| model.standardise(r)).collect();
        let (w, it, gm) = lbfgs(|w| objective(&z, y, classes, l2, w), model.weights.clone(), 1e-7, 2000);
        if !gm.is_finite() {
            return bad(format!("the fit diverged (L2 {l2}): a non-finite loss or gradient"));
        }
        (model.weights, model.iterations, model.grad_max) = (w, it, gm);
        Ok(model)
    }

    fn standardise(&self, r: &[f32]) -> Vec<f64> {
        r.iter().zip(self.mean.iter().zip(&self.scale)).map(|(&v, (m, s))| (v as f64 - m) * s).collect()
    }

    /// Class log-probabilities of one feature row.
    pub fn log_probs(&self, r: &[f32]) -> Vec<f64> {
        let z = self.standardise(r);
        let stride = self.dim + 1;
        let logits: Vec<f64> = (0..self.classes)
            .map(|c| {
                let row = &self.weights[c * stride..(c + 1) * stride];
                row[self.dim] + row[..self.dim].iter().zip(&z).map(|(a, b)| a * b).sum::<f64>()
            })
            .collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + logits.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        logits.iter().map(|v| v - lse).collect()
    }

    /// Accuracy and mean cross-entropy on `(x, y)` (ties in the arg max go to the lower class).
    pub fn score(&self, x: &[Vec<f32>], y: &[usize]) -> (f64, f64) {
        let (mut right, mut loss) = (0usize, 0.0);
        for (r, &c) in x.iter().zip(y) {
            let lp = self.log_probs(r);
            let best = (0..lp.len()).fold(0, |b, i| if lp[i] > lp[b] { i } else { b });
            right += usize::from(best == c);
            loss -= lp[c];
        }
        let n = x.len().max(1) as f64;
        (right as f64 / n, loss / n)
    }
}

/// What `tramway probe` reads.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub model: PathBuf,
    pub train: PathBuf,
    /// Chooses the L2 strength; without it, every fifth training example (held out while the
    /// strength is chosen, then trained on).
    pub dev: Option<PathBuf>,
    pub evals: Vec<(String, PathBuf)>,
    pub text_column: String,
    pub label_column: String,
    pub max_len: usize,
    pub batch_size: usize,
    /// At most this many examples per evaluation set, class-balanced (as `finetune --max-eval`).
    pub max_eval: Option<usize>,
    pub pooling: Pooling,
    /// The L2 strengths tried.
    pub l2: Vec<f64>,
}

/// What `tramway probe` found.
#[derive(Clone, Debug)]
pub struct ProbeReport {
    /// Per L2 strength tried: dev accuracy and loss.
    pub dev: Vec<(f64, f64, f64)>,
    pub chosen_l2: f64,
    pub train_examples: usize,
    pub dev_examples: usize,
    /// Training accuracy of the final fit, its L-BFGS iterations and final gradient.
    pub train_accuracy: f64,
    pub iterations: usize,
    pub grad_max: f64,
    pub evals: Vec<EvalResult>,
    /// The command, commit and machine, taken when the probe started.
    pub provenance: String,
}

/// Feature rows and their class indices.
type Labelled = (Vec<Vec<f32>>, Vec<usize>);

fn class_ids(file: &Path, rows: &[Example], classes: &[String]) -> Result<Vec<usize>> {
    rows.iter()
        .map(|e| {
            classes.iter().position(|c| *c == e.label).ok_or_else(|| Error::Model {
                file: file.display().to_string(),
                message: format!("label {:?} is not one of the training labels {classes:?}", e.label),
            })
        })
        .collect()
}

/// Embed every text once (longest first, so batches pad little), fit the probe for each L2
/// strength on the training set, keep the one with the best dev accuracy (then the lower dev
/// loss, then the stronger penalty), and evaluate it.
pub fn probe(gpu: impl FnOnce() -> Result<Gpu>, o: &ProbeOptions) -> Result<ProbeReport> {
    let provenance = super::experiment::provenance();
    if o.l2.is_empty() || o.l2.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
        let value = format!("{:?}", o.l2);
        return Err(Error::BadSetting { name: "--l2", value, expected: "one or more finite values ≥ 0".into() });
    }
    let read = |p: &Path| -> Result<Vec<Example>> {
        let rows = read_examples(p, &o.text_column, &o.label_column)?;
        if rows.is_empty() {
            return Err(Error::Model { file: p.display().to_string(), message: "no examples".into() });
        }
        Ok(rows)
    };
    let all_train = read(&o.train)?;
    let classes = label_set(all_train.iter().map(|e| e.label.as_str()));
    if classes.len() < 2 {
        let message = format!("one label ({classes:?}); a classifier needs at least two");
        return Err(Error::Model { file: o.train.display().to_string(), message });
    }
    let dev_rows = match &o.dev {
        Some(p) => read(p)?,
        None if all_train.len() < 5 => {
            let message = format!(
                "{} training examples leave no dev set to choose the L2 strength (every fifth is held out): give --dev",
                all_train.len()
            );
            return Err(Error::Model { file: o.train.display().to_string(), message });
        }
        None => Vec::new(),
    };
    let mut evals = Vec::new();
    for (name, p) in &o.evals {
        let mut rows = Dataset::Text(read(p)?);
        if let Some(m) = o.max_eval {
            rows = rows.balanced_cut(&rows.labels(), m);
        }
        let Dataset::Text(rows) = rows else { unreachable!("a text dataset stays text") };
        evals.push((name.clone(), class_ids(p, &rows, &classes)?, rows));
    }
    let y_all = class_ids(&o.train, &all_train, &classes)?;
    let y_dev_file = match &o.dev {
        Some(p) => class_ids(p, &dev_rows, &classes)?,
        None => Vec::new(),
    };

    // One embedding pass over every text.
    let texts: Vec<&str> = [&all_train, &dev_rows]
        .into_iter()
        .chain(evals.iter().map(|(_, _, rows)| rows))
        .flat_map(|rows| rows.iter().map(|e| e.text.as_str()))
        .collect();
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
    let sorted: Vec<String> = order.iter().map(|&i| texts[i].to_string()).collect();
    let emb = super::embed::TextEmbedding {
        max_len: o.max_len,
        batch_size: o.batch_size,
        pooling: o.pooling,
        normalize: false,
    };
    let got = super::embed::embed_texts(gpu, &o.model, &sorted, &emb)?;
    let mut feats = vec![Vec::new(); texts.len()];
    for (&i, (_, e)) in order.iter().zip(got) {
        feats[i] = e;
    }
    if let Some(i) = feats.iter().position(|f| f.iter().any(|v| !v.is_finite())) {
        let message = format!("the encoder gave a NaN or infinite feature for the text {:?}", texts[i]);
        return Err(Error::Model { file: o.model.display().to_string(), message });
    }
    let mut feats = feats.into_iter();
    let train_x: Vec<Vec<f32>> = feats.by_ref().take(all_train.len()).collect();
    let dev_file_x: Vec<Vec<f32>> = feats.by_ref().take(dev_rows.len()).collect();
    // The strength is chosen on the dev file, or on every fifth training example held out.
    let ((fit_x, y_fit), (dev_x, y_dev)): (Labelled, Labelled) = match o.dev {
        Some(_) => ((train_x.clone(), y_all.clone()), (dev_file_x, y_dev_file)),
        None => {
            let (dev, fit): (Vec<_>, Vec<_>) =
                train_x.iter().cloned().zip(y_all.iter().copied()).enumerate().partition(|(i, _)| i % 5 == 4);
            (fit.into_iter().map(|(_, p)| p).unzip(), dev.into_iter().map(|(_, p)| p).unzip())
        }
    };
    let mut dev = Vec::new();
    for &l2 in &o.l2 {
        let m = Logistic::fit(&fit_x, &y_fit, classes.len(), l2)?;
        let (acc, loss) = m.score(&dev_x, &y_dev);
        dev.push((l2, acc, loss));
    }
    let best = dev
        .iter()
        .copied()
        .reduce(|b, c| {
            let better = c.1 > b.1 || (c.1 == b.1 && (c.2 < b.2 || (c.2 == b.2 && c.0 > b.0)));
            if better {
                c
            } else {
                b
            }
        })
        .expect("at least one strength");
    // The chosen strength refitted on the whole training set.
    let model = Logistic::fit(&train_x, &y_all, classes.len(), best.0)?;
    let (train_accuracy, _) = model.score(&train_x, &y_all);
    let mut results = Vec::new();
    for (name, y, rows) in &evals {
        let x: Vec<Vec<f32>> = feats.by_ref().take(rows.len()).collect();
        let (accuracy, loss) = model.score(&x, y);
        results.push(EvalResult { name: name.clone(), loss, accuracy, examples: rows.len() });
    }
    Ok(ProbeReport {
        dev,
        chosen_l2: best.0,
        train_examples: all_train.len(),
        dev_examples: dev_x.len(),
        train_accuracy,
        iterations: model.iterations,
        grad_max: model.grad_max,
        evals: results,
        provenance,
    })
}

impl ProbeReport {
    /// The report as Markdown, with where it came from.
    pub fn markdown(&self, o: &ProbeOptions) -> String {
        let mut s = String::from("# Logistic probe on frozen features\n\n");
        s += &format!(
            "Model `{}`, {} pooling, max_len {}; multinomial logistic regression (f64 L-BFGS, features standardised on the training set, biases not penalised) on {} training examples (`{}`); L2 chosen on {} dev examples ({}).\n\n",
            o.model.display(),
            match o.pooling {
                Pooling::Mean => "mean",
                Pooling::Cls => "first-token",
            },
            o.max_len,
            self.train_examples,
            o.train.display(),
            self.dev_examples,
            o.dev.as_ref().map_or("every fifth training example".to_string(), |p| format!("`{}`", p.display())),
        );
        s += "| L2 | dev accuracy | dev loss |\n|---:|---:|---:|\n";
        for (l2, a, l) in &self.dev {
            let mark = if *l2 == self.chosen_l2 { " (chosen)" } else { "" };
            s += &format!("| {l2:e}{mark} | {a:.4} | {l:.4} |\n");
        }
        s += &format!(
            "\nFinal fit: L2 {:e}, training accuracy {:.4}, {} L-BFGS iterations (largest gradient component {:.1e}).\n\n",
            self.chosen_l2, self.train_accuracy, self.iterations, self.grad_max
        );
        s += "| set | examples | accuracy | loss |\n|---|---:|---:|---:|\n";
        for r in &self.evals {
            s += &format!("| {} | {} | {:.4} | {:.4} |\n", r.name, r.examples, r.accuracy, r.loss);
        }
        s += &format!("\n{}\n", self.provenance);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    #[test]
    fn the_objective_gradient_matches_finite_differences() {
        let mut r = rng(3);
        let (n, dim, classes, l2) = (7, 5, 3, 0.3);
        let x: Vec<Vec<f64>> = (0..n).map(|_| (0..dim).map(|_| r()).collect()).collect();
        let y: Vec<usize> = (0..n).map(|i| i % classes).collect();
        let w: Vec<f64> = (0..classes * (dim + 1)).map(|_| r()).collect();
        let (_, g) = objective(&x, &y, classes, l2, &w);
        assert_eq!(g.len(), w.len());
        for j in 0..w.len() {
            let h = 1e-6;
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[j] += h;
            wm[j] -= h;
            let fd = (objective(&x, &y, classes, l2, &wp).0 - objective(&x, &y, classes, l2, &wm).0) / (2.0 * h);
            // Central differences of an f64 function: truncation ~h², rounding ~1e-16/h.
            assert!((fd - g[j]).abs() < 1e-8, "component {j}: finite difference {fd}, gradient {}", g[j]);
        }
    }

    #[test]
    fn lbfgs_never_reports_a_nan_gradient_as_converged() {
        let (_, it, gm) = lbfgs(|x| (x[0] * x[0], vec![f64::NAN]), vec![1.0], 1e-8, 50);
        assert!(gm.is_infinite(), "gradient measure {gm} after {it} iterations");
        let (_, it, gm) = lbfgs(|_| (f64::NAN, vec![0.0]), vec![1.0], 1e-8, 50);
        assert!(gm.is_infinite() && it == 0, "a NaN start: {gm} after {it} iterations");
    }

    #[test]
    fn lbfgs_finds_the_minimum_of_a_badly_scaled_quadratic() {
        // f = Σ a_i (x_i - c_i)², condition number 1e4: the minimum is c.
        let a = [1e-2, 1.0, 10.0, 100.0];
        let c = [3.0, -1.0, 0.5, 2.0];
        let f = |x: &[f64]| {
            let v = x.iter().zip(a.iter().zip(&c)).map(|(x, (a, c))| a * (x - c) * (x - c)).sum();
            let g = x.iter().zip(a.iter().zip(&c)).map(|(x, (a, c))| 2.0 * a * (x - c)).collect();
            (v, g)
        };
        let (x, it, gm) = lbfgs(f, vec![0.0; 4], 1e-10, 500);
        assert!(gm <= 1e-10, "stopped at gradient {gm} after {it} iterations");
        for (xi, ci) in x.iter().zip(&c) {
            assert!((xi - ci).abs() < 1e-8, "{x:?} vs {c:?}");
        }
    }

    #[test]
    fn the_fit_is_a_stationary_point_and_separates_separable_classes() {
        let mut r = rng(9);
        let centres = [[2.0f32, 0.0, 1.0], [-2.0, 1.0, 0.0], [0.0, -2.0, -1.0]];
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..90 {
            let c = i % 3;
            x.push(centres[c].iter().map(|v| v + 0.3 * r() as f32).collect::<Vec<f32>>());
            y.push(c);
        }
        let m = Logistic::fit(&x, &y, 3, 1e-3).unwrap();
        assert!(m.grad_max <= 1e-7, "gradient {} after {} iterations", m.grad_max, m.iterations);
        let (acc, loss) = m.score(&x, &y);
        assert_eq!(acc, 1.0);
        assert!(loss.is_finite() && loss < 0.1, "loss {loss}");
        // Probabilities sum to one.
        let p: f64 = m.log_probs(&x[0]).iter().map(|v| v.exp()).sum();
        assert!((p - 1.0).abs() < 1e-12);
        // A stronger penalty fits less tightly.
        let strong = Logistic::fit(&x, &y, 3, 10.0).unwrap();
        assert!(strong.score(&x, &y).1 > loss);
    }

    #[test]
    fn bad_features_are_refused_with_the_reason() {
        let e = Logistic::fit(&[vec![1.0, f32::NAN]], &[0], 2, 0.1).unwrap_err().to_string();
        assert!(e.contains("NaN"), "{e}");
        let e = Logistic::fit(&[vec![1.0, 2.0], vec![1.0]], &[0, 1], 2, 0.1).unwrap_err().to_string();
        assert!(e.contains("feature rows of 2 and 1"), "{e}");
        let e = Logistic::fit(&[vec![1.0]], &[0, 1], 2, 0.1).unwrap_err().to_string();
        assert!(e.contains("1 feature rows but 2 labels"), "{e}");
        let e = Logistic::fit(&[vec![1.0]], &[2], 2, 0.1).unwrap_err().to_string();
        assert!(e.contains("label 2 with 2 classes"), "{e}");
    }
}
