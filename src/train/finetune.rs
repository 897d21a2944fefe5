//! The fine-tuning run: checks everything before the first step, trains with the finite
//! guard, checkpoints without ever losing the last good one, saves, then evaluates.

use super::checkpoint::{self, Fnv, OutLock, TrainerState};
use super::MemoryPlan;
use super::{
    io_err, load_net, metrics_panels, pack_documents, plot, Dataset, EvalResult, FinetuneOptions, Head, Loaded, Net,
    Run, Summary, TaskKind,
};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::hf::{read_weights, write_atomic};
use crate::io::weights::serialize;
use crate::optim::{Method, Metrics, Optimizer};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Fine-tune, evaluate and save. Prints progress to stderr when `progress`. The run's GPU
/// memory is released when it returns, with or without an error (so that one process can run
/// many: `tramway experiment`).
///
/// Before the first step every option, the model and all training and evaluation data are
/// checked; `--out` is locked for the run. Every step is guarded on the GPU: the first NaN or
/// infinity in the loss, the gradient norm, the ascent, TRAM's d or the updated parameters
/// stops the run with [`Error::NonFinite`] before anything more is written.
pub fn finetune(gpu: &Gpu, o: &FinetuneOptions) -> Result<Summary> {
    let created = !o.out.exists();
    let r = finetune_run(gpu, o);
    // The model, optimizer and activations are dropped by now; the cached bind groups still
    // hold their buffers.
    gpu.trim();
    if r.is_err() && created {
        // A run refused before it wrote anything leaves no folder behind (only its lock).
        let only_lock =
            std::fs::read_dir(&o.out).map(|d| d.flatten().all(|e| e.file_name() == ".tramway.lock")).unwrap_or(false);
        if only_lock {
            let _ = std::fs::remove_dir_all(&o.out);
        }
    }
    r
}

impl Dataset {
    /// A hash of the examples' content and order (what a resumed run must train on).
    fn fingerprint(&self) -> String {
        let mut h = Fnv::default();
        h.field(self.len().to_string().as_bytes());
        for i in 0..self.len() {
            match self {
                Dataset::Text(v) => h.field(v[i].text.as_bytes()).field(v[i].label.as_bytes()),
                Dataset::Images(s) => h.field(s.label(i).as_bytes()),
                Dataset::Documents(v) => h.field(v[i].as_bytes()),
                Dataset::Blocks(v) => {
                    v[i].iter().for_each(|t| {
                        h.bytes(&t.to_le_bytes());
                    });
                    h.field(&[])
                }
            };
        }
        h.hex()
    }
}

/// Tokenize or decode every example of `data` once (what the model will see) and check it:
/// token ids inside the model's vocabulary, images decodable at a sane size.
fn check_inputs(net: &Net, file: &Path, data: &Dataset) -> Result<()> {
    let out_of_vocab = |id: u32, vocab: usize, example: usize| Error::Model {
        file: file.display().to_string(),
        message: format!(
            "example {} has token id {id}, outside the model's vocabulary of {vocab} (config.json vocab_size): \
             the tokenizer does not belong to this model",
            example + 1
        ),
    };
    match (net, data) {
        (Net::Text { model, tok }, Dataset::Text(rows)) => {
            let vocab = model.cfg.vocab_size;
            for (c, chunk) in rows.chunks(256).enumerate() {
                let texts: Vec<&str> = chunk.iter().map(|r| r.text.as_str()).collect();
                let b = tok.encode(&texts)?;
                if let Some(k) = b.ids.iter().position(|&id| id as usize >= vocab) {
                    return Err(out_of_vocab(b.ids[k], vocab, c * 256 + k / b.seq.max(1)));
                }
            }
        }
        (Net::Image { prep, .. }, Dataset::Images(set)) => {
            for i in 0..set.len() {
                set.pixels(i, prep)?;
            }
        }
        (Net::Lm { model, .. }, Dataset::Blocks(blocks)) => {
            let vocab = model.vocab_size();
            for (i, b) in blocks.iter().enumerate() {
                if let Some(&id) = b.iter().find(|&&id| id as usize >= vocab) {
                    return Err(out_of_vocab(id, vocab, i));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The error that stops a run at its first non-finite step.
fn nonfinite_error(step: u64, what: &[&str], last_good: &Option<(u64, PathBuf)>) -> Error {
    let resume = match last_good {
        Some((s, p)) => format!(
            "the last good checkpoint is {} (step {s}): continue with `--resume {}` and a lower --lr (or --clip)",
            p.display(),
            p.display()
        ),
        None => "no checkpoint was saved before it: start again with a lower --lr (or --clip)".to_string(),
    };
    Error::NonFinite { step, what: what.join(" and the "), resume }
}

/// Save a checkpoint: written into a hidden temporary folder, then swapped in
/// ([`checkpoint::swap_in`]), so a crash at any moment leaves a complete checkpoint.
fn save_checkpoint(run: &Run, opt: &Optimizer, state: &TrainerState, dir: &Path, source: &Path) -> Result<()> {
    let gpu = run.gpu;
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = checkpoint::temp_dir_for(dir);
    let _ = std::fs::remove_dir_all(&tmp);
    run.save(&tmp, source)?;
    let tensors = pollster::block_on(opt.state(gpu, run.params()))?;
    let st = tmp.join("optimizer.safetensors");
    write_atomic(&st, &serialize(&st.display().to_string(), &tensors)?)?;
    let state = TrainerState { step: opt.step, ..state.clone() };
    write_atomic(&tmp.join("trainer_state.json"), serde_json::to_string_pretty(&state).unwrap_or_default().as_bytes())?;
    checkpoint::swap_in(&tmp, dir)
}

fn finetune_run(gpu: &Gpu, o: &FinetuneOptions) -> Result<Summary> {
    let started = Instant::now();
    o.validate()?;
    let kind = o.task;
    if let Some(dir) = o.resume.as_ref().filter(|d| d.join("adapter_config.json").is_file()) {
        if o.lora.is_none() {
            return Err(Error::BadSetting {
                name: "--resume",
                value: dir.display().to_string(),
                expected: "with --lora-rank (and the run's other --lora-* flags): this checkpoint is a LoRA adapter for --model".into(),
            });
        }
    }
    // A LoRA checkpoint is an adapter folder: the base is always --model.
    let source_dir = if o.lora.is_some() { &o.model } else { o.resume.as_ref().unwrap_or(&o.model) };
    let model_kind = TaskKind::of_model(source_dir)?;
    if model_kind != kind {
        return Err(Error::BadSetting {
            name: "--task",
            value: format!("{kind:?}"),
            expected: format!("{model_kind:?} for the model in {}", source_dir.display()),
        });
    }
    let _lock = OutLock::acquire(&o.out)?;
    let lm = kind == TaskKind::CausalLm;
    let mut train = Dataset::read(kind, &o.train, &o.text_column, &o.label_column)?;
    let labels = train.labels();
    if labels.len() < 2 && !lm {
        return Err(Error::Model {
            file: o.train.display().to_string(),
            message: format!("only one label ({:?}): a classifier needs at least two", labels),
        });
    }
    let mut evals = Vec::new();
    for (name, path) in &o.evals {
        evals.push((name.clone(), path.clone(), Dataset::read(kind, path, &o.text_column, &o.label_column)?));
    }
    // The model: a checkpoint to resume, or the pre-trained folder with a head for our labels.
    let resumed = match &o.resume {
        Some(dir) => Some(TrainerState::read(dir)?),
        None => None,
    };
    let model_dir = source_dir.clone();
    let head = Head::Train { labels: &labels, resume: o.resume.is_some() };
    let Loaded { net, labels: map } =
        load_net(gpu, kind, &model_dir, head, o.max_len, o.image_size, o.optim.seed, o.lora.as_ref(), o.freeze_base)?;
    // Every example is checked before the first step: labels, token ids, images.
    if !lm {
        map.check(&o.train, &train)?;
        for (_, path, rows) in &evals {
            map.check(path, rows)?;
        }
    }
    // A language model's documents become token blocks of --max-len, each document followed
    // by the end-of-text token.
    if let Net::Lm { model, tok } = &net {
        let pack = |d: &Dataset| -> Result<Dataset> {
            match d {
                Dataset::Documents(docs) => Ok(Dataset::Blocks(pack_documents(tok, docs, o.max_len, model.eos())?)),
                other => Ok(other.clone()),
            }
        };
        train = pack(&train)?;
        for (_, _, rows) in evals.iter_mut() {
            *rows = pack(rows)?;
        }
        if train.is_empty() {
            return Err(Error::Model { file: o.train.display().to_string(), message: "fewer than 2 tokens".into() });
        }
    }
    for (_, path, rows) in evals.iter_mut() {
        if let Some(m) = o.max_eval {
            // Balanced over the set's own classes (with class indices it may hold a class the
            // training data lacks).
            *rows = rows.balanced_cut(&rows.labels(), m);
        }
        if rows.is_empty() {
            return Err(Error::Model { file: path.display().to_string(), message: "no examples to evaluate".into() });
        }
        check_inputs(&net, path, rows)?;
    }
    check_inputs(&net, &o.train, &train)?;
    // `steps: Some(0)` trains nothing: the starting model is evaluated (an experiment's baseline).
    let total = o.steps.unwrap_or((((o.epochs * train.len() as f64) / o.batch_size as f64).ceil() as u64).max(1));
    let settings = TrainerState {
        step: 0,
        total_steps: total,
        seed: o.optim.seed,
        optimizer: o.optim.name().to_string(),
        optimizer_settings: match &o.lora {
            None => format!(
                "{:?}; {:?}; lr {}; {:?}; clip {:?}",
                o.optim.method, o.optim.base, o.optim.lr, o.optim.schedule, o.optim.clip
            ),
            Some(l) => format!(
                "{:?}; {:?}; lr {}; {:?}; clip {:?}; LoRA r {} alpha {} dropout {} on {:?}",
                o.optim.method,
                o.optim.base,
                o.optim.lr,
                o.optim.schedule,
                o.optim.clip,
                l.rank,
                l.alpha,
                l.dropout,
                l.targets
            ),
        },
        task: if o.freeze_base { format!("{kind:?} (frozen base)") } else { format!("{kind:?}") },
        batch_size: o.batch_size,
        max_len: o.max_len,
        image_size: o.image_size,
        train_examples: train.len(),
        train_fingerprint: train.fingerprint(),
    };
    let start_step = match &resumed {
        Some(st) => {
            let diffs = st.differences(&settings);
            if !diffs.is_empty() {
                return Err(Error::Model {
                    file: o.resume.as_ref().unwrap_or(&model_dir).join("trainer_state.json").display().to_string(),
                    message: format!(
                        "the checkpoint was trained with other settings; resume with the same ones ({})",
                        diffs.join("; ")
                    ),
                });
            }
            if st.step > total {
                return Err(Error::BadSetting {
                    name: "--steps",
                    value: total.to_string(),
                    expected: format!("at least the checkpoint's step {} to resume from it", st.step),
                });
            }
            st.step
        }
        None => 0,
    };
    let needs_aux = matches!(o.optim.method, Method::R3f { .. });
    let mut run = Run { gpu, net, labels: map, acts: HashMap::new(), needs_aux, lora: o.lora.clone() };
    if let (Some(dir), Some(l)) = (&o.resume, &o.lora) {
        let a = crate::io::adapter::read_adapter(dir)?;
        if (a.config.rank, a.config.alpha, a.config.rslora) != (l.rank, l.alpha, l.rslora) {
            return Err(Error::Model {
                file: dir.join("adapter_config.json").display().to_string(),
                message: format!(
                    "the adapter has r {} and alpha {}; resume with --lora-rank {} --lora-alpha {}",
                    a.config.rank, a.config.alpha, a.config.rank, a.config.alpha
                ),
            });
        }
        // The adapter's base, where it names a folder that exists here, must be --model.
        let canon = |p: &std::path::Path| std::fs::canonicalize(p).ok();
        if let (Some(b), Some(m)) = (a.base.as_deref().and_then(|b| canon(std::path::Path::new(b))), canon(&o.model)) {
            if b != m {
                return Err(Error::Model {
                    file: dir.join("adapter_config.json").display().to_string(),
                    message: format!("the adapter was trained on {} but --model is {}", b.display(), m.display()),
                });
            }
        }
        crate::io::adapter::load_adapter(gpu, run.params(), &a)?;
    }
    let mut opt = Optimizer::new(gpu, run.params(), o.optim)?;
    // The largest training batch's activations are planned now, so the memory report is whole.
    let before = gpu.allocated_bytes();
    run.plan_acts(&train, o.batch_size)?;
    let plan = MemoryPlan::of(run.params(), &opt, gpu.allocated_bytes() - before);
    if o.progress {
        eprintln!("{}", plan.describe());
    }
    if let Some(dir) = &o.resume {
        let st = read_weights(&dir.join("optimizer.safetensors"))?;
        opt.load_state(gpu, run.params(), &st, start_step)?;
    }
    // Every metrics line of the run (those before a resume included), for the plot. A resumed
    // run drops the lines its checkpoint had not reached (a killed run's last steps).
    let mut history: Vec<serde_json::Value> = Vec::new();
    if let (Some(p), Some(_)) = (&o.metrics, &o.resume) {
        if let Ok(text) = std::fs::read_to_string(p) {
            history.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter(|v| v.get("step").and_then(|s| s.as_u64()).map(|s| s <= start_step).unwrap_or(false)),
            );
            let kept: String = history.iter().map(|v| format!("{v}\n")).collect();
            write_atomic(p, kept.as_bytes())?;
        }
    }
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
        history.push(v);
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
    let evals: Vec<(String, Dataset)> = evals.into_iter().map(|(n, _, d)| (n, d)).collect();
    let eval_batch = o.eval_batch_size.unwrap_or(o.batch_size);
    let do_eval = |run: &mut Run,
                   step: u64,
                   log: &mut dyn FnMut(serde_json::Value) -> Result<()>|
     -> Result<Vec<EvalResult>> {
        let mut out = Vec::new();
        for (name, rows) in &evals {
            let r = run.evaluate(name, rows, eval_batch)?;
            let line = if r.accuracy.is_nan() {
                serde_json::json!({"step": step, "eval": r.name, "loss": r.loss, "perplexity": r.loss.exp(), "tokens": r.examples})
            } else {
                serde_json::json!({"step": step, "eval": r.name, "loss": r.loss, "accuracy": r.accuracy, "examples": r.examples})
            };
            log(line)?;
            out.push(r);
        }
        Ok(out)
    };
    // The last checkpoint known good (the one resumed from, then each one saved).
    let mut last_good: Option<(u64, PathBuf)> = o.resume.as_ref().map(|d| (start_step, d.clone()));
    // The guard's record is read with the step's metrics; before anything is saved or
    // evaluated it is read if this step's metrics were not.
    let guarded = |opt: &Optimizer, last_good: &Option<(u64, PathBuf)>| -> Result<Metrics> {
        let m = pollster::block_on(opt.metrics(gpu))?;
        match &m.nonfinite {
            Some((step, what)) => Err(nonfinite_error(*step, what, last_good)),
            None => Ok(m),
        }
    };
    // The profiled step (1-based): the run's second, its first if it has one step left.
    let profile = o.profile.clone().or_else(|| std::env::var_os("TRAMWAY_PROFILE").map(PathBuf::from));
    let profile_step = profile.as_ref().map(|_| (start_step + 2).min(total));
    let mut final_loss = f32::NAN;
    let mut eval_results = Vec::new();
    for step in start_step..total {
        let idx = super::batch_indices(train.len(), o.batch_size, o.optim.seed, step);
        let lr = opt.lr();
        let key = run.upload(&train, &idx)?;
        let done = step + 1;
        let profiling = profile_step == Some(done);
        if profiling {
            gpu.profile_start();
        }
        let started = std::time::Instant::now();
        let mut rec = gpu.recorder();
        run.step(&mut opt, &mut rec, key)?;
        let recorded = started.elapsed().as_secs_f64();
        rec.submit()?;
        if let (true, Some(path)) = (profiling, &profile) {
            // The profiled submit returns once the timestamps are read back: the step is done.
            let wall = started.elapsed().as_secs_f64();
            let (mut rows, shapes) = gpu.profile_stop_detailed();
            let commands: f64 = rows.iter().map(|r| r.seconds).sum();
            let how = if gpu.timestamped_profile() {
                "timed on the GPU by timestamps between the commands of the step's one submit"
            } else {
                "submitted alone and waited for (wall clock: the adapter has no timestamps inside encoders)"
            };
            // The CPU's share, so that the table adds up to the step's wall time: recording the
            // commands (measured) and the rest of the wall time beyond the commands' own
            // (encoding, submitting, waiting; never below zero).
            rows.push(crate::gpu::ProfileRow {
                kernel: "host: recording the step's commands".into(),
                calls: 1,
                seconds: recorded,
                ..Default::default()
            });
            rows.push(crate::gpu::ProfileRow {
                kernel: "host: encoding, submit and wait beyond the commands".into(),
                calls: 1,
                seconds: (wall - recorded - commands).max(0.0),
                ..Default::default()
            });
            let text = format!(
                "# tramway profile: step {done} of {}, {} on {} ({:?})\n\nEach dispatch, copy and clear of the step {how}; \
                 GFLOP/s counted for matmuls; GB/s of the bytes bound, an upper bound on the traffic. The two `host` rows \
                 are the CPU's share of the step's wall time ({:.1} ms, of which the commands are {:.1} ms, {:.0} %).\n\n{}",
                o.model.display(),
                o.optim.name(),
                gpu.adapter_info().name,
                gpu.adapter_info().backend,
                wall * 1e3,
                commands * 1e3,
                100.0 * commands / wall.max(1e-12),
                crate::gpu::profile_table(&rows)
            );
            let text = if shapes.is_empty() {
                text
            } else {
                format!(
                    "{text}\n## Matmuls by layout and shape\n\nThe matmul rows above, split by what each dispatch computed: \
                     the layout (A then B: N as stored row-major, T transposed, S strided) and the shape (batch x) m x n x k.\n\n{}",
                    crate::gpu::profile_shape_table(&shapes, wall)
                )
            };
            write_atomic(path, text.as_bytes())?;
            if o.progress {
                eprintln!("profile of step {done} written to {}", path.display());
            }
        }
        let logged = done % o.log_every == 0 || done == total;
        let saving = o.save_every > 0 && done % o.save_every == 0 && done != total;
        let evaluating = o.eval_every > 0 && done % o.eval_every == 0 && done != total;
        if logged || saving || evaluating {
            let m = pollster::block_on(opt.metrics(gpu))?;
            final_loss = m.loss;
            if logged {
                log(
                    serde_json::json!({"step": done, "loss": m.loss, "lr": lr, "d": m.d, "grad_norm": m.grad_norm, "param_norm": m.param_norm}),
                )?;
                if let Some(bar) = &bar {
                    bar.set_message(format!("loss {:.4} lr {:.2e} d {:.3e}", m.loss, lr, m.d));
                }
            }
            if let Some((s, what)) = &m.nonfinite {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                return Err(nonfinite_error(*s, what, &last_good));
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
        if evaluating {
            eval_results = do_eval(&mut run, done, &mut log)?;
        }
        if saving {
            let dir = o.out.join(format!("checkpoint-{done}"));
            save_checkpoint(&run, &opt, &settings, &dir, &model_dir)?;
            last_good = Some((done, dir));
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    if total > start_step {
        guarded(&opt, &last_good)?;
    }
    // The model is saved before the final evaluation, so nothing that happens there can cost
    // the run.
    if o.save_final {
        save_checkpoint(&run, &opt, &settings, &o.out.join("final"), &model_dir)?;
        if o.merge {
            let dir = o.out.join("final-merged");
            let tmp = checkpoint::temp_dir_for(&dir);
            let _ = std::fs::remove_dir_all(&tmp);
            run.save_merged(&tmp, &model_dir)?;
            checkpoint::swap_in(&tmp, &dir)?;
        }
    }
    eval_results = if evals.is_empty() { eval_results } else { do_eval(&mut run, total, &mut log)? };
    let title = match (&o.lora, o.freeze_base) {
        (Some(l), _) => format!("{} — {}, LoRA r {}", o.model.display(), o.optim.name(), l.rank),
        (None, true) => format!("{} — {}, frozen base", o.model.display(), o.optim.name()),
        (None, false) => format!("{} — {}", o.model.display(), o.optim.name()),
    };
    plot::write_png(&o.out.join("plot.png"), &title, &metrics_panels(&history))?;
    Ok(Summary {
        steps: total,
        final_loss,
        evals: eval_results,
        seconds: started.elapsed().as_secs_f64(),
        memory: plan,
    })
}

#[cfg(test)]
mod tests {
    use crate::train::LabelMap;

    #[test]
    fn label_map_follows_hugging_face() {
        let names: Vec<String> = ["negative", "positive"].iter().map(|s| s.to_string()).collect();
        let ints: Vec<String> = ["0", "1"].iter().map(|s| s.to_string()).collect();
        let m = LabelMap::fit(&names, &ints).unwrap();
        assert!(m.by_index);
        assert_eq!((m.id("0"), m.id("1"), m.id("2")), (Some(0), Some(1), None));
        let m = LabelMap::fit(&names, &["positive".to_string()]).unwrap();
        assert_eq!((m.by_index, m.id("positive"), m.id("negative")), (false, Some(1), Some(0)));
        // Names take precedence: a head whose names are numbers maps them by name.
        let star: Vec<String> = ["1", "2", "3"].iter().map(|s| s.to_string()).collect();
        let m = LabelMap::fit(&star, &star).unwrap();
        assert_eq!((m.by_index, m.id("1"), m.id("3")), (false, Some(0), Some(2)));
        assert!(LabelMap::fit(&names, &["2".to_string(), "0".to_string()]).is_none());
        assert!(LabelMap::fit(&names, &["good".to_string()]).is_none());
    }
}
