//! The fine-tuning loop end to end on the real all-MiniLM-L6-v2 (skipped when not fetched):
//! interrupting and resuming from a checkpoint gives bitwise the run that never stopped.

use super::real_models::model_dir;
use super::*;
use std::path::{Path, PathBuf};
use tramway::ops::kl::KlKind;
use tramway::optim::{Base, KlNorm, Method, OptimConfig, Schedule, TramRef};
use tramway::train::{batch_indices, epoch_order, finetune, Classifier, Dataset, FinetuneOptions, TaskKind};

fn options(model: &Path, data: &Path, out: &Path, steps: u64) -> FinetuneOptions {
    let method = Method::Tram {
        reference: TramRef::Noise { std: 0.1, uniform: false },
        adaptive: true,
        kl: KlKind::Forward,
        kl_norm: KlNorm::Mean,
        tr_scale: 1.0,
    };
    FinetuneOptions {
        task: TaskKind::TextClassification,
        model: model.to_path_buf(),
        train: data.join("train.csv"),
        evals: vec![("dev".into(), data.join("dev.jsonl"))],
        text_column: "text".into(),
        label_column: "label".into(),
        optim: OptimConfig {
            base: Base::adamw(),
            method,
            lr: 1e-4,
            schedule: Schedule::Linear { warmup: 1, total: 4 },
            clip: Some(1.0),
            seed: 9,
        },
        batch_size: 2,
        steps: Some(steps),
        epochs: 1.0,
        max_len: 16,
        eval_every: 0,
        save_every: 2,
        log_every: 1,
        max_eval: None,
        eval_batch_size: None,
        image_size: None,
        save_final: true,
        out: out.to_path_buf(),
        resume: None,
        metrics: Some(out.join("metrics.jsonl")),
        progress: false,
        profile: None,
        lora: None,
        merge: false,
        freeze_base: false,
    }
}

#[test]
fn resume_continues_bitwise() {
    let Some(model) = model_dir("all-MiniLM-L6-v2") else { return };
    let root = std::env::temp_dir().join(format!("tramway-ft-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("train.csv"),
        "text,label\n\"a wonderful, moving film\",pos\na dull mess,neg\nbrilliant acting,pos\nboring and too long,neg\nI loved it,pos\nawful,neg\n",
    )
    .unwrap();
    std::fs::write(
        data.join("dev.jsonl"),
        "{\"text\": \"great fun\", \"label\": \"pos\"}\n{\"text\": \"terrible\", \"label\": \"neg\"}\n",
    )
    .unwrap();
    let straight = root.join("straight");
    let s = finetune(gpu(), &options(&model, &data, &straight, 4)).unwrap();
    assert_eq!(s.evals.len(), 1);
    assert!(s.final_loss.is_finite());
    let part = root.join("part");
    finetune(gpu(), &options(&model, &data, &part, 2)).unwrap();
    let mut resumed = options(&model, &data, &root.join("resumed"), 4);
    resumed.resume = Some(part.join("final"));
    finetune(gpu(), &resumed).unwrap();
    let a = std::fs::read(straight.join("final/model.safetensors")).unwrap();
    let b = std::fs::read(root.join("resumed/final/model.safetensors")).unwrap();
    assert!(a == b, "the resumed run must end bitwise where the uninterrupted one did");
    let a = std::fs::read(straight.join("final/optimizer.safetensors")).unwrap();
    let b = std::fs::read(root.join("resumed/final/optimizer.safetensors")).unwrap();
    assert!(a == b, "optimizer state too");
    // The checkpoint at step 2 of the straight run is a loadable HF folder with our labels.
    let cfg = tramway::models::encoder::read_encoder_config(&straight.join("checkpoint-2")).unwrap();
    assert_eq!(cfg.id2label, vec!["neg".to_string(), "pos".to_string()]);
    // The saved classifier evaluates to what the run reported, and predicts probabilities.
    let mut c = tramway::train::Classifier::load(gpu(), &straight.join("final"), 16).unwrap();
    let dev = Dataset::Text(tramway::data::table::read_examples(&data.join("dev.jsonl"), "text", "label").unwrap());
    let r = c.evaluate("dev", &data.join("dev.jsonl"), &dev, 2).unwrap();
    assert_eq!((r.accuracy, r.examples), (s.evals[0].accuracy, s.evals[0].examples));
    let p = c.predict(&["great fun", "terrible", "meh"], 2).unwrap();
    assert!(p.len() == 3 && p.iter().all(|v| v.len() == 2 && (v.iter().sum::<f32>() - 1.0).abs() < 1e-5));
    let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().filter(|l| l.contains("\"lr\"")).count(), 4);
    assert!(metrics.lines().any(|l| l.contains("\"eval\":\"dev\"")));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn data_order_is_a_function_of_seed_and_step() {
    let o = epoch_order(10, 3, 0);
    let mut sorted = o.clone();
    sorted.sort();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    assert_ne!(o, epoch_order(10, 3, 1), "each epoch reshuffles");
    // Batches run across epoch boundaries without gaps or repeats within an epoch.
    let all: Vec<usize> = (0..5).flat_map(|s| batch_indices(10, 4, 3, s)).collect();
    assert_eq!(&all[..10], &o[..]);
    assert_eq!(&all[10..20], &epoch_order(10, 3, 1)[..]);
}

#[test]
fn data_files_give_clear_errors() {
    use tramway::data::table::{label_set, read_examples};
    let dir = std::env::temp_dir().join(format!("tramway-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("a.csv");
    std::fs::write(&csv, "sentence,y\nhello,1\nbye,0\nhm,10\n").unwrap();
    let e = read_examples(&csv, "text", "label").unwrap_err().to_string();
    assert!(e.contains("a.csv") && e.contains("no column \"text\"") && e.contains("sentence, y"), "{e}");
    let rows = read_examples(&csv, "sentence", "y").unwrap();
    assert_eq!(
        label_set(rows.iter().map(|r| r.label.as_str())),
        vec!["0", "1", "10"],
        "integer labels sort numerically"
    );
    let tsv = dir.join("b.tsv");
    std::fs::write(&tsv, "text\tlabel\nfine\tpos\nempty label\t\n").unwrap();
    let e = read_examples(&tsv, "text", "label").unwrap_err().to_string();
    assert!(e.contains("b.tsv") && e.contains("record 2") && e.contains("empty"), "{e}");
    let jl = dir.join("c.jsonl");
    std::fs::write(&jl, "{\"text\": \"ok\", \"label\": 1}\n{\"text\": \"no label\"}\n").unwrap();
    let e = read_examples(&jl, "text", "label").unwrap_err().to_string();
    assert!(e.contains("c.jsonl") && e.contains("line 2") && e.contains("\"label\""), "{e}");
    let e = read_examples(&dir.join("d.parquet"), "text", "label").unwrap_err().to_string();
    assert!(e.contains("d.parquet"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Write an IDX pair: `n` grey `side`×`side` images, class 0 dark with a bright top half, class 1
/// bright with a dark top half (learnable from pixels), gzipped when `gz`.
pub fn write_idx(dir: &Path, prefix: &str, n: usize, side: usize, gz: bool) -> PathBuf {
    let mut rng = Rng::new(n as u64);
    let mut img = vec![0u8, 0, 8, 3, 0, 0, 0, n as u8, 0, 0, 0, side as u8, 0, 0, 0, side as u8];
    let mut lab = vec![0u8, 0, 8, 1, 0, 0, 0, n as u8];
    for i in 0..n {
        let y = (i % 2) as u8;
        lab.push(y);
        for r in 0..side {
            for _ in 0..side {
                let top = r < side / 2;
                let base: f32 = if top != (y == 1) { 200.0 } else { 40.0 };
                img.push((base + 40.0 * rng.vec(1)[0]).clamp(0.0, 255.0) as u8);
            }
        }
    }
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(if gz { format!("{name}.gz") } else { name.to_string() });
        if gz {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            std::fs::write(&path, e.finish().unwrap()).unwrap();
        } else {
            std::fs::write(&path, bytes).unwrap();
        }
        path
    };
    write(&format!("{prefix}-labels-idx1-ubyte"), &lab);
    write(&format!("{prefix}-images-idx3-ubyte"), &img)
}

/// Image classification end to end on the tiny ViT fixture: IDX training data (gzipped, with
/// class names), a class-per-folder PNG evaluation set, the loss going down, the plot, the
/// saved folder (with the preprocessor of the trained size) evaluating to what the run
/// reported, and prediction from image files.
#[test]
fn image_classification_end_to_end() {
    let dir = std::env::temp_dir().join(format!("tramway-img-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("eval/dark-top")).unwrap();
    std::fs::create_dir_all(dir.join("eval/bright-top")).unwrap();
    let train = write_idx(&dir, "train", 32, 8, true);
    std::fs::write(dir.join("classes.txt"), "bright-top\ndark-top\n").unwrap();
    // The evaluation folder: the same two classes as PNG files.
    let test = write_idx(&dir, "test", 8, 8, false);
    let set = tramway::data::image::ImageSet::open(&test).unwrap();
    assert_eq!(set.len(), 8);
    let bytes = std::fs::read(&test).unwrap();
    for i in 0..8 {
        let px = &bytes[16 + i * 64..16 + (i + 1) * 64];
        let img = image::GrayImage::from_raw(8, 8, px.to_vec()).unwrap();
        let class = if i % 2 == 0 { "bright-top" } else { "dark-top" };
        img.save(dir.join(format!("eval/{class}/{i}.png"))).unwrap();
    }
    let model = super::encoder::fixture("vit/model");
    let mut o = options(&model, &dir, &dir.join("out"), 12);
    o.task = TaskKind::ImageClassification;
    o.train = train;
    o.evals = vec![("pngs".into(), dir.join("eval"))];
    o.optim.method = Method::Plain;
    o.optim.lr = 3e-3;
    o.optim.schedule = Schedule::Constant;
    o.batch_size = 8;
    o.save_every = 0;
    o.image_size = Some(12);
    let s = finetune(gpu(), &o).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("out/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let losses: Vec<f64> =
        lines.iter().filter(|v| v.get("eval").is_none()).map(|v| v["loss"].as_f64().unwrap()).collect();
    assert!(losses[losses.len() - 1] < losses[0] * 0.7, "the loss must fall: {losses:?}");
    assert_eq!(s.evals[0].examples, 8);
    let png = std::fs::read(dir.join("out/plot.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "plot.png is a PNG");
    let saved = dir.join("out/final");
    let pre: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.join("preprocessor_config.json")).unwrap()).unwrap();
    assert_eq!(pre["crop_size"]["height"], 12);
    let mut c = Classifier::load(gpu(), &saved, 16).unwrap();
    assert_eq!(c.labels, ["bright-top", "dark-top"]);
    let eval = Dataset::read(TaskKind::ImageClassification, &dir.join("eval"), "", "").unwrap();
    let r = c.evaluate("pngs", &dir.join("eval"), &eval, 3).unwrap();
    assert_eq!((r.accuracy, r.examples), (s.evals[0].accuracy, 8));
    let file = dir.join("eval/dark-top/1.png");
    let p = c.predict(&[file.to_str().unwrap()], 1).unwrap();
    assert!(p.len() == 1 && (p[0].iter().sum::<f32>() - 1.0).abs() < 1e-5);
    // A text file is not an image set; a model of the other kind is refused.
    let e = Dataset::read(TaskKind::ImageClassification, &dir.join("classes.txt"), "", "").unwrap_err().to_string();
    assert!(e.contains("classes.txt") && e.contains("IDX"), "{e}");
    o.task = TaskKind::TextClassification;
    let e = finetune(gpu(), &o).unwrap_err().to_string();
    assert!(e.contains("--task") && e.contains("ImageClassification"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Causal-LM fine-tuning end to end on the tiny GPT-2 and LLaMA fixtures (given a word-level
/// tokenizer.json over their 150-token vocabulary): documents packed into blocks, the loss
/// falling on a repetitive text, perplexity per evaluation set in the metrics, and the saved
/// folder loading back with the fine-tuned weights.
/// A repetitive "language": the next word is always the previous plus 7 (mod 150).
fn word_text(start: usize, n: usize) -> String {
    (0..n).map(|i| format!("w{}", (start + 7 * i) % 150)).collect::<Vec<_>>().join(" ")
}

/// A causal-LM run on the `name` fixture's random model with a 150-word word-level tokenizer,
/// trained on [`word_text`] (400 words) and evaluated on 4 documents of 40 words: the folder
/// (`tramway-{tag}-PID-{name}` in the temp dir), the model folder in it, and the options.
fn word_lm(tag: &str, name: &str, steps: u64) -> (PathBuf, PathBuf, FinetuneOptions) {
    let dir = std::env::temp_dir().join(format!("tramway-{tag}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(super::encoder::fixture(name).join("model").join(f), model.join(f)).unwrap();
    }
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..150).map(|i| (format!("w{i}"), serde_json::json!(i))).collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w3"}
    });
    std::fs::write(model.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(dir.join("train.txt"), word_text(3, 400)).unwrap();
    let dev: Vec<String> = (0..4).map(|k| serde_json::json!({ "text": word_text(11 + k, 40) }).to_string()).collect();
    std::fs::write(dir.join("dev.jsonl"), dev.join("\n")).unwrap();
    let mut o = options(&model, &dir, &dir.join("out"), steps);
    o.task = TaskKind::CausalLm;
    o.train = dir.join("train.txt");
    o.evals = vec![("dev".into(), dir.join("dev.jsonl"))];
    (dir, model, o)
}

#[test]
fn causal_lm_finetune_end_to_end() {
    use tramway::train::lm::{lm_tokenizer, perplexity, CausalLm};
    for name in ["gpt2", "llama"] {
        let (dir, _, mut o) = word_lm("lm", name, 30);
        o.optim.method = Method::Plain;
        o.optim.lr = 1e-2;
        o.optim.schedule = Schedule::Constant;
        o.batch_size = 4;
        o.max_len = 16;
        o.save_every = 0;
        let s = finetune(gpu(), &o).unwrap();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("out/metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let losses: Vec<f64> =
            lines.iter().filter(|v| v.get("eval").is_none()).map(|v| v["loss"].as_f64().unwrap()).collect();
        assert!(losses[losses.len() - 1] < losses[0] * 0.75, "{name}: the loss must fall: {losses:?}");
        let ev = lines.iter().find(|v| v.get("eval").is_some()).unwrap();
        let ppl = ev["perplexity"].as_f64().unwrap();
        assert!(ppl.is_finite() && ppl < 150.0, "{name}: dev perplexity {ppl}");
        // 4 documents of 40 words, each followed by the end-of-text token, packed into blocks of
        // 16: every token but the first of each block is scored.
        let total: usize = 4 * 41;
        assert_eq!(s.evals[0].examples, total - total.div_ceil(16), "{name}: scored dev tokens");
        // The saved folder reproduces the run's dev perplexity.
        let saved = dir.join("out/final");
        let lm = CausalLm::load(gpu(), &saved, 0).unwrap();
        let tok = lm_tokenizer(&saved, &lm).unwrap();
        let ids = tok.ids(&word_text(11, 40), false).unwrap();
        let p = perplexity(gpu(), &lm, &ids, 16, 2).unwrap();
        assert!(p.perplexity.is_finite() && p.perplexity < 150.0 && p.predicted == 40 - 3, "{p:?}");
        // Zero steps evaluate the starting model (an experiment's baseline row): no training
        // line, the same scored tokens, and the untrained model's (higher) dev perplexity.
        let mut z = o.clone();
        z.steps = Some(0);
        z.out = dir.join("zero");
        z.metrics = Some(dir.join("zero.jsonl"));
        z.save_final = false;
        let s0 = finetune(gpu(), &z).unwrap();
        assert_eq!((s0.steps, s0.evals[0].examples), (0, s.evals[0].examples), "{name}");
        assert!(s0.final_loss.is_nan(), "{name}: no training loss without steps");
        let zl = std::fs::read_to_string(dir.join("zero.jsonl")).unwrap();
        assert_eq!(zl.lines().count(), 1, "{name}: one evaluation line only: {zl}");
        assert!(
            s0.evals[0].loss > s.evals[0].loss + 0.5,
            "{name}: {} vs trained {}",
            s0.evals[0].loss,
            s.evals[0].loss
        );
        assert!(dir.join("zero/plot.png").is_file());
        // A finished run leaves no bind group (and so no buffer of its model) behind, on a
        // device of its own (the shared one is busy with other tests); perplexity, which does
        // not trim, shows that the cache does fill.
        let own = tramway::gpu::Gpu::new_blocking(tramway::gpu::GpuOptions::from_env().unwrap()).unwrap();
        finetune(&own, &z).unwrap();
        assert_eq!(own.cached_bind_groups(), 0, "{name}: the run's bind groups must be released");
        let lm = CausalLm::load(&own, &dir.join("out/final"), 0).unwrap();
        perplexity(&own, &lm, &ids, 16, 2).unwrap();
        assert!(own.cached_bind_groups() > 0, "{name}: a forward caches its bind groups");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A run's record names the commit the binary was built from (stamped by build.rs), not the
/// checkout's HEAD when the experiment starts: built from this checkout, the stamp is one of its
/// commits.
#[test]
fn experiment_records_name_the_build_commit() {
    use tramway::train::experiment::{computed_by, BUILD_COMMIT};
    let by = computed_by();
    assert!(by.starts_with(&format!("commit {BUILD_COMMIT} on ")), "{by}");
    let hash = BUILD_COMMIT.trim_end_matches("+changes");
    // Built from a git checkout with git installed (CI and every development machine here).
    if std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".git").exists() && !BUILD_COMMIT.starts_with("unknown") {
        assert!(hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit()), "{BUILD_COMMIT}");
        let known = std::process::Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR"), "cat-file", "-e", &format!("{hash}^{{commit}}")])
            .status()
            .map(|s| s.success());
        assert!(matches!(known, Ok(true) | Err(_)), "{hash} is not a commit of this checkout");
    }
}

/// The experiment table: mean ± sample std over seeds per set, perplexity for language models,
/// a one-run row (the `baseline` row) without a spread, rows in the given optimizer order.
#[test]
fn experiment_table_rows() {
    use tramway::train::experiment::{task_table, RunRecord};
    let rec = |o: &str, seed: u64, steps: u64, evals: Vec<(&str, Option<f64>, f64)>| RunRecord {
        task: "t".into(),
        optimizer: o.into(),
        seed,
        steps,
        seconds: 10.0 * seed as f64,
        final_loss: (steps > 0).then_some(0.5),
        evals: evals.into_iter().map(|(n, a, l)| (n.to_string(), a, l, 32)).collect(),
        computed_by: None,
    };
    let rs = vec![
        rec("adamw", 1, 5, vec![("in", Some(0.5), 0.7), ("out", Some(0.25), 0.9)]),
        rec("adamw", 2, 5, vec![("in", Some(0.75), 0.6), ("out", Some(0.5), 0.8)]),
        rec("pretrained", 1, 0, vec![("in", Some(0.5), 0.69), ("out", Some(0.5), 0.69)]),
    ];
    let t = task_table("t", &["pretrained".into(), "adamw".into(), "sam".into()], &rs);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "| optimizer | in | out | seeds | steps | s / run |");
    assert_eq!(lines[2], "| pretrained | 0.500 | 0.500 | 1 | 0 | 10 |");
    // std of (0.5, 0.75) = 0.1768 (sample); no row for an optimizer without runs.
    assert_eq!(lines[3], "| adamw | 0.625 ± 0.177 | 0.375 ± 0.177 | 2 | 5 | 15 |");
    assert_eq!(lines.len(), 4, "{t}");
    // A language model's sets are scored by perplexity, exp(mean loss).
    let lm = vec![rec("sam", 1, 2, vec![("news", None, 4.0)]), rec("sam", 2, 2, vec![("news", None, 4.2)])];
    let t = task_table("t", &["sam".into()], &lm);
    let (a, b) = (4.0f64.exp(), 4.2f64.exp());
    let sd = (a - b).abs() / 2f64.sqrt();
    assert!(t.contains(&format!("| sam | {:.2} ± {sd:.2} | 2 | 2 | 15 |", (a + b) / 2.0)), "{t}");
}

/// `--profile`: the run's second step, every dispatch timed alone, one row per kernel with
/// calls, milliseconds, share and (matmuls) GFLOP/s; the shares add up to the total.
#[test]
fn profile_writes_a_table_per_kernel() {
    // The BERT fixture with a word-level tokenizer, in a scratch folder.
    let dir = super::guarantees::scratch("profile");
    let model = super::guarantees::text_model(&dir);
    super::guarantees::text_data(&dir.join("train.csv"), 8, ["0", "1"]);
    let mut o = options(&model, &dir, &dir.join("out"), 3);
    o.train = dir.join("train.csv");
    o.evals.clear();
    o.save_every = 0;
    o.save_final = false;
    o.profile = Some(dir.join("profile.md"));
    // A device of its own: a profile times every submit on its device (other tests share gpu()).
    let own = tramway::gpu::Gpu::new_blocking(tramway::gpu::GpuOptions::from_env().unwrap()).unwrap();
    finetune(&own, &o).unwrap();
    let text = std::fs::read_to_string(dir.join("profile.md")).unwrap();
    assert!(text.starts_with("# tramway profile: step 2 of"), "{text}");
    // Lavapipe has timestamps inside encoders: the step ran as one submit, timed on the GPU.
    let how = if own.timestamped_profile() { "timed on the GPU by timestamps" } else { "submitted alone" };
    assert!(text.contains(how), "{text}");
    let (kernels, shapes) = text.split_once("## Matmuls by layout and shape").expect("the per-shape table");
    let table = |t: &str| -> Vec<Vec<String>> {
        t.lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| kernel") && !l.starts_with("| total"))
            .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
            .collect()
    };
    let rows = table(kernels);
    // The per-shape table splits the matmul rows by layout and shape: every dispatch once, so
    // its calls and milliseconds add up to the matmul rows' (and the transposes of B for x·Wᵀ).
    let shape_rows = table(shapes);
    let sum = |rows: &[Vec<String>], col: usize, pick: &dyn Fn(&str) -> bool| -> f64 {
        rows.iter().filter(|r| pick(&r[1])).map(|r| r[col].parse::<f64>().unwrap()).sum()
    };
    let is_mm = |k: &str| k.starts_with("matmul") || k.starts_with("transpose");
    assert!(shape_rows.iter().all(|r| is_mm(&r[1])), "{shapes}");
    assert!(shape_rows.iter().any(|r| r[2].starts_with("NN ") || r[2].starts_with("NT")), "no layout named: {shapes}");
    assert_eq!(sum(&rows, 2, &is_mm), sum(&shape_rows, 3, &is_mm), "calls: {text}");
    let (ms, ms_shapes) = (sum(&rows, 3, &is_mm), sum(&shape_rows, 4, &is_mm));
    assert!(
        (ms - ms_shapes).abs() <= 1e-3 * shape_rows.len() as f64 + 1e-6 * ms,
        "{ms} ms against {ms_shapes} ms: {text}"
    );
    // The matmul and softmax kernels by the adapter's choice (`SG` matmuls where subgroups are
    // workgroup rows, the row-per-invocation softmax on CPU drivers).
    for k in ["matmul_n4", "matmul_k4", "optim::adamw", "guard::finite_guard", "softmax::forward"] {
        assert!(rows.iter().any(|r| r[1].starts_with(k)), "no row for {k}: {text}");
    }
    // The subgroup variants have rows of their own where they run.
    if tramway::ops::matmul::MatmulPath::auto(&own) == tramway::ops::matmul::MatmulPath::Subgroup {
        assert!(rows.iter().any(|r| r[1] == "matmul_n4::main (subgroup)"), "{text}");
    }
    // Matmul rows carry GFLOP/s; the shares add up to 100 % (rounded per row).
    assert!(rows.iter().filter(|r| r[1].starts_with("matmul")).all(|r| r[5].parse::<f64>().unwrap() > 0.0));
    let share: f64 = rows.iter().map(|r| r[4].trim_end_matches(" %").parse::<f64>().unwrap()).sum();
    assert!((share - 100.0).abs() < 0.05 * rows.len() as f64 + 0.1, "shares add up to {share}");
    // The host rows make the table add up to the step's wall time, which the text states.
    assert!(rows.iter().any(|r| r[1].starts_with("host: recording")), "{text}");
    let wall: f64 = text.split("wall time (").nth(1).and_then(|t| t.split(" ms").next()).unwrap().parse().unwrap();
    let total: f64 =
        text.lines().find(|l| l.starts_with("| total")).unwrap().split('|').nth(3).unwrap().trim().parse().unwrap();
    assert!(wall > 0.0 && (total - wall).abs() <= 0.002 * wall + 0.1, "table total {total} ms, wall {wall} ms");
    // Profiling leaves the device as it was: the next step is submitted whole again.
    assert!(own.profile_stop().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Class indices may name a class of the head that the training data lacks: the fixture's head
/// has three classes, training uses 0 and 1, the evaluation set also holds 2; `--max-eval 6`
/// cuts it over its own classes, keeping all six (a cut over the training labels kept four).
#[test]
fn evaluation_sets_are_cut_over_their_own_classes() {
    // The BERT fixture with a word-level tokenizer, in a scratch folder.
    let dir = super::guarantees::scratch("evalcut");
    let model = super::guarantees::text_model(&dir);
    super::guarantees::text_data(&dir.join("train.csv"), 8, ["0", "1"]);
    std::fs::write(dir.join("eval.csv"), "text,label\nw11 w12,0\nw13,0\nw51 w52,1\nw53,1\nw90 w91,2\nw92,2\n").unwrap();
    let mut o = options(&model, &dir, &dir.join("out"), 1);
    o.train = dir.join("train.csv");
    o.evals = vec![("dev".into(), dir.join("eval.csv"))];
    o.max_eval = Some(6);
    o.save_every = 0;
    o.save_final = false;
    o.metrics = None;
    let s = finetune(gpu(), &o).unwrap();
    assert_eq!(s.evals[0].examples, 6, "every example of the set's three classes");
    let _ = std::fs::remove_dir_all(&dir);
}

/// LoRA fine-tuning end to end on the tiny GPT-2 and LLaMA fixtures with TRAM-x: only the
/// adapters train (the memory plan says so), the loss falls, `final/` is a PEFT adapter folder
/// that `--adapter` loading reproduces, `final-merged/` is a full model with the same outputs,
/// and a run resumed from its checkpoint ends bitwise where the uninterrupted one did.
#[test]
fn lora_finetune_end_to_end() {
    use tramway::nn::lora::{LoraConfig, Target};
    use tramway::train::lm::{lm_tokenizer, perplexity, CausalLm};
    for name in ["gpt2", "llama"] {
        let (dir, model, mut o) = word_lm("lora", name, 120);
        o.optim.lr = 1e-2;
        o.optim.schedule = Schedule::Constant;
        o.batch_size = 4;
        o.max_len = 16;
        o.save_every = 60;
        o.lora = Some(LoraConfig::new(4, 8.0, Target::ALL.to_vec()));
        o.merge = true;
        let s = finetune(gpu(), &o).unwrap();
        // Only the adapters train: gradients and optimizer state cover them alone.
        let m = s.memory;
        assert!(m.frozen > 0 && m.trainable_params > 0 && m.trainable_params * 4 < m.frozen_params, "{name}: {m:?}");
        assert!(m.gradients < m.frozen / 2 && m.optimizer < m.frozen, "{name}: {m:?}");
        assert!(m.activations > 0, "{name}: a language model plans its activations at the start");
        let losses: Vec<f64> = std::fs::read_to_string(dir.join("out/metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("eval").is_none())
            .map(|v| v["loss"].as_f64().unwrap())
            .collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (first, last) = (mean(&losses[..4]), mean(&losses[losses.len() - 4..]));
        // Rank-4 adapters on a random base learn this slower than a full fine-tune: measured
        // 5.0 -> 4.6 in 40 steps.
        assert!(last < first * 0.85, "{name}: the loss must fall: {losses:?}");
        let fin = dir.join("out/final");
        for f in ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "optimizer.safetensors"] {
            assert!(fin.join(f).is_file(), "{name}: final/{f}");
        }
        assert!(!fin.join("model.safetensors").exists(), "{name}: an adapter folder holds no base weights");
        // The adapter on the base, and the merged folder, give the run's dev perplexity.
        let ids = {
            let lm = CausalLm::load(gpu(), &model, 0).unwrap();
            lm_tokenizer(&model, &lm).unwrap().ids(&word_text(11, 40), false).unwrap()
        };
        let adapted = CausalLm::load_adapted(gpu(), &model, &fin).unwrap();
        let pa = perplexity(gpu(), &adapted, &ids, 16, 2).unwrap().perplexity;
        let merged = CausalLm::load(gpu(), &dir.join("out/final-merged"), 0).unwrap();
        assert!(merged.params.frozen.is_none() && merged.params.names().iter().all(|n| !n.contains("lora_")));
        let pm = perplexity(gpu(), &merged, &ids, 16, 2).unwrap().perplexity;
        let base = perplexity(gpu(), &CausalLm::load(gpu(), &model, 0).unwrap(), &ids, 16, 2).unwrap().perplexity;
        assert!(((pa - pm) / pa).abs() < 1e-4, "{name}: adapter {pa} vs merged {pm}");
        assert!(pa < base * 0.9, "{name}: the adapter must help: {pa} vs base {base}");
        // Resumed from checkpoint-60: the same adapters, bitwise.
        let mut r = o.clone();
        r.out = dir.join("resumed");
        r.metrics = Some(dir.join("resumed/metrics.jsonl"));
        r.resume = Some(dir.join("out/checkpoint-60"));
        r.merge = false;
        finetune(gpu(), &r).unwrap();
        let read_weights = tramway::io::hf::read_weights;
        let a = read_weights(&fin.join("adapter_model.safetensors")).unwrap();
        let b = read_weights(&dir.join("resumed/final/adapter_model.safetensors")).unwrap();
        assert_eq!(a.tensors.len(), b.tensors.len());
        for (k, t) in &a.tensors {
            assert_eq!(t.data, b.tensors[k].data, "{name}: {k} after resuming");
        }
        // An adapter checkpoint resumed as a full model is refused with the fix.
        let mut full = r.clone();
        full.out = dir.join("full");
        full.lora = None;
        let e = finetune(gpu(), &full).err().unwrap().to_string();
        assert!(e.contains("--resume") && e.contains("--lora-rank"), "{name}: {e}");
        // A different rank cannot resume that checkpoint.
        let mut bad = r.clone();
        bad.out = dir.join("bad");
        bad.lora = Some(LoraConfig::new(2, 8.0, Target::ALL.to_vec()));
        let e = finetune(gpu(), &bad).err().unwrap().to_string();
        assert!(e.contains("trainer_state.json") && e.contains("LoRA r 4") && e.contains("LoRA r 2"), "{name}: {e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The paired comparison of the experiment report: per seed differences to AdamW, their mean
/// and a Student-t 95 % interval (t(0.975, 2) = 4.303), in accuracy points.
#[test]
fn experiment_paired_differences() {
    use tramway::train::experiment::{paired_interval, paired_table, paired_verdict, RunRecord};
    let (m, lo, hi) = paired_interval(&[1.0, 2.0, 3.0]);
    assert!(
        (m - 2.0).abs() < 1e-12 && (hi - m - 4.303 / 3f64.sqrt()).abs() < 1e-9 && (m - lo - (hi - m)).abs() < 1e-12
    );
    let rec = |o: &str, seed: u64, acc: f64| RunRecord {
        task: "t".into(),
        optimizer: o.into(),
        seed,
        steps: 200,
        seconds: 1.0,
        final_loss: Some(0.3),
        evals: vec![("in".into(), Some(acc), 0.5, 400)],
        computed_by: None,
    };
    let rs = vec![
        rec("adamw", 1, 0.70),
        rec("adamw", 2, 0.72),
        rec("adamw", 3, 0.74),
        rec("tram-x", 1, 0.71),
        rec("tram-x", 2, 0.74),
        rec("tram-x", 3, 0.77),
        rec("sam", 1, 0.69), // one pair only: no interval
        rec("pretrained", 1, 0.5),
    ];
    let t =
        paired_table("t", &["pretrained".into(), "adamw".into(), "tram-x".into(), "sam".into()], &rs, "adamw").unwrap();
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "| optimizer − adamw | in | pairs |");
    // differences 1, 2, 3 points: mean 2, half-width 4.303 / sqrt 3 = 2.48
    assert_eq!(lines[2], "| tram-x | +2.00 [-0.48, +4.48] | 3 |");
    assert_eq!(lines[3], "| sam | -1.00 | 1 |");
    assert_eq!(lines.len(), 4, "no row for adamw itself or pretrained: {t}");
    assert!(paired_table("t", &["sam".into()], &rs[6..], "adamw").is_none());

    // The sentence under the table says what it concludes, from the intervals themselves.
    let all: Vec<String> = ["pretrained", "adamw", "tram-x", "sam"].iter().map(|s| s.to_string()).collect();
    let v = paired_verdict("t", &all, &rs, "adamw").unwrap();
    assert!(v.starts_with("The one interval contains 0: at 3 seeds"), "{v}");
    // Two sets: tram-x beats adamw by 2, 3, 4 points on "out" (interval [-0.48, +4.48] + 1 =
    // [+0.52, +5.48], excludes 0) and by 1, 2, 3 on "in" (contains 0); sam gets a second seed.
    let mut two = rs.clone();
    for r in two.iter_mut() {
        let extra = if r.optimizer == "tram-x" { 0.01 } else { 0.0 };
        let acc = r.evals[0].1.unwrap() + extra;
        r.evals.push(("out".into(), Some(acc), 0.5, 400));
    }
    let mut sam2 = two[6].clone();
    sam2.seed = 2;
    two.push(sam2);
    let v = paired_verdict("t", &all, &two, "adamw").unwrap();
    assert!(
        v.starts_with("1 of the 4 intervals excludes 0: tram-x on out (+3.00 [+0.52, +5.48]); the others")
            && v.contains("about 0.2 would exclude 0 by chance alone")
            && v.contains("only just excludes 0 is weak evidence"),
        "{v}"
    );
    // A single pair per row: no interval, nothing ranked.
    assert!(paired_verdict("t", &all, &rs[3..], "adamw").is_none());
    let one: Vec<RunRecord> = rs.iter().filter(|r| r.seed == 1).cloned().collect();
    assert!(paired_verdict("t", &all, &one, "adamw").unwrap().contains("no interval"), "one seed");
}

/// The report's figures from the runs' files: `<task>.png` (means over seeds) and
/// `<task>-runs.png`, every run's smoothed loss (a panel per optimizer that trained, a line
/// per seed) and TRAM's d (a panel per optimizer that logs one), three panels to a row.
#[test]
fn experiment_report_draws_every_run() {
    use tramway::train::experiment::{moving_average, report, run_dir, save_record, RunRecord};
    // A trailing mean over 3: the first points average what there is.
    let ma = moving_average(&[(1.0, 3.0), (2.0, 1.0), (3.0, 2.0), (4.0, 6.0)], 3);
    assert_eq!(ma, vec![(1.0, 3.0), (2.0, 2.0), (3.0, 2.0), (4.0, 3.0)]);
    let out = super::guarantees::scratch("report-figures");
    let run = |o: &str, seed: u64, steps: u64, d: bool| {
        let dir = run_dir(&out, "t", o, seed);
        std::fs::create_dir_all(&dir).unwrap();
        let mut lines = String::new();
        for s in 1..=steps {
            let loss = 0.7 - 0.01 * s as f64 + 0.02 * seed as f64;
            let d = if d { format!(", \"d\": {}", 0.001 * s as f64) } else { String::new() };
            lines += &format!("{{\"step\": {s}, \"loss\": {loss}{d}}}\n");
        }
        lines += &format!("{{\"step\": {steps}, \"eval\": \"in\", \"accuracy\": 0.7, \"loss\": 0.5}}\n");
        std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
        let r = RunRecord {
            task: "t".into(),
            optimizer: o.into(),
            seed,
            steps,
            seconds: 1.0,
            final_loss: (steps > 0).then_some(0.5),
            evals: vec![("in".into(), Some(0.7), 0.5, 400)],
            // A record from before the field (the baseline here) reads as "not recorded".
            computed_by: (steps > 0).then(|| "commit abc on box".to_string()),
        };
        save_record(&dir, &r).unwrap();
    };
    let rows: Vec<String> = ["pretrained", "adamw", "tram-x"].iter().map(|s| s.to_string()).collect();
    run("pretrained", 1, 0, false);
    let md = report(&out, &["t".into()], &rows, "header").unwrap();
    assert!(!md.contains("t-runs.png") && !out.join("t-runs.png").exists(), "no curves, no figure: {md}");
    for seed in [1, 2] {
        run("adamw", seed, 30, false);
        run("tram-x", seed, 30, true);
    }
    let md = report(&out, &["t".into()], &rows, "header").unwrap();
    assert!(md.contains("![t: every run](t-runs.png)"), "{md}");
    assert!(md.contains("Runs computed by: not recorded (1 run); commit abc on box (4 runs)."), "{md}");
    for (file, panels) in [("t.png", 3), ("t-runs.png", 3)] {
        let bytes = std::fs::read(out.join(file)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{file}");
        // Three panels in one row of 560 x 420 each (t.png: loss, accuracy, d; t-runs.png:
        // adamw's and tram-x's loss, tram-x's d).
        let dims = image::load_from_memory(&bytes).unwrap();
        assert_eq!((dims.width(), dims.height()), (560 * panels, 420), "{file}");
    }
    // A fourth panel starts a second row.
    run("sam", 1, 30, false);
    let rows: Vec<String> = ["adamw", "sam", "tram-x"].iter().map(|s| s.to_string()).collect();
    report(&out, &["t".into()], &rows, "header").unwrap();
    let img = image::load_from_memory(&std::fs::read(out.join("t-runs.png")).unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (3 * 560, 2 * 420));
    let _ = std::fs::remove_dir_all(&out);
}

/// An experiment file's plan: seed by seed (every row of seed 1 before seed 2, `pretrained`
/// first and once), a row that is a variant of a method (`method = "tram-x"` with its own
/// settings) and a frozen-base probe, each row's table overriding the shared settings.
#[test]
fn experiment_plan_runs_seed_by_seed_with_variants() {
    use std::cell::RefCell;
    use tramway::train::experiment::plan;
    let dir = std::env::temp_dir().join(format!("tramway-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("e.toml");
    std::fs::write(
        &file,
        r#"
out = "runs/x"
seeds = [1, 2]
optimizers = ["adamw", "tram-x", "tram-x-s0.01", "probe"]
baseline = true
[finetune]
lr = 3e-5
[optimizer."tram-x-s0.01"]
method = "tram-x"
noise_std = 0.01
[optimizer.probe]
method = "adamw"
freeze_base = true
lr = 1e-3
[[task]]
name = "t"
model = "m"
train = "x.csv"
"#,
    )
    .unwrap();
    let seen: RefCell<Vec<Vec<String>>> = RefCell::new(Vec::new());
    let model = dir.join("m");
    let p = plan(&file, false, &[], None, |args: &[String]| {
        seen.borrow_mut().push(args.to_vec());
        Ok(options(&model, &dir, &dir.join("out"), 1))
    })
    .unwrap();
    let order: Vec<(String, u64)> = p.runs.iter().map(|r| (r.optimizer.clone(), r.seed)).collect();
    let want: Vec<(String, u64)> = [
        ("pretrained", 1),
        ("adamw", 1),
        ("tram-x", 1),
        ("tram-x-s0.01", 1),
        ("probe", 1),
        ("adamw", 2),
        ("tram-x", 2),
        ("tram-x-s0.01", 2),
        ("probe", 2),
    ]
    .iter()
    .map(|(o, s)| (o.to_string(), *s))
    .collect();
    assert_eq!(order, want);
    let seen = seen.borrow();
    let value = |args: &[String], flag: &str| -> Option<String> {
        args.iter().rposition(|a| a == flag).and_then(|i| args.get(i + 1).cloned())
    };
    let variant = &seen[3];
    assert_eq!(value(variant, "--optimizer").as_deref(), Some("tram-x"), "{variant:?}");
    assert_eq!(value(variant, "--noise-std").as_deref(), Some("0.01"));
    assert!(!variant.iter().any(|a| a == "--method"));
    assert!(value(variant, "--out").unwrap().ends_with("tram-x-s0.01/seed-1"));
    let probe = &seen[4];
    assert_eq!(value(probe, "--optimizer").as_deref(), Some("adamw"));
    assert!(probe.iter().any(|a| a == "--freeze-base"), "{probe:?}");
    assert_eq!(value(probe, "--lr").as_deref(), Some("0.001"), "the row's lr overrides the shared one");
    // An unquoted row name with a dot is a nested table in TOML: refused with the fix.
    let dotted = dir.join("dotted.toml");
    std::fs::write(
        &dotted,
        "optimizers = [\"tram-x-0.1\"]\n[optimizer.tram-x-0.1]\nmethod = \"tram-x\"\n[[task]]\nname = \"t\"\n",
    )
    .unwrap();
    let e = plan(&dotted, false, &[], None, |_: &[String]| Ok(options(&model, &dir, &dir.join("out"), 1)))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("needs quotes") && e.contains("[optimizer.\"tram-x-0.1\"]"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
