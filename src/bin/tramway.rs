//! The `tramway` command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tramway::gpu::{enumerate, Gpu, GpuOptions};

#[derive(Parser)]
#[command(
    name = "tramway",
    version,
    about = "Fine-tune transformers on any GPU wgpu reaches",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every GPU adapter, the one tramway would choose, its limits and features.
    Info,
    /// Print one JSON line per input: {"text", "tokens", "embedding"}.
    Embed(EmbedArgs),
    /// Fine-tune a text (BERT/RoBERTa/XLM-R) or image (ViT/DINOv2) classifier with TRAM or a baseline.
    #[command(allow_negative_numbers = true)]
    Finetune(Box<FinetuneArgs>),
    /// Accuracy and loss of a fine-tuned classifier on labelled sets.
    Eval(EvalArgs),
    /// Class probabilities of a fine-tuned classifier for each text or image file (one JSON line each).
    Predict(PredictArgs),
    /// Run an optimizer comparison (tasks × optimizers × seeds) from a TOML file and write the
    /// results table and plots.
    Experiment(ExperimentArgs),
    /// Perplexity of a causal LM (GPT-2, LLaMA) on a text file.
    Perplexity(PerplexityArgs),
    /// Continuation of a prompt by a causal LM with a K/V cache: greedy, or sampled (temperature, top-k, top-p).
    #[command(allow_negative_numbers = true)]
    Generate(GenerateArgs),
}

#[derive(clap::Args)]
struct EvalArgs {
    /// A fine-tuned folder (e.g. runs/NAME/final).
    #[arg(long)]
    model: PathBuf,
    /// NAME=PATH (repeatable): .csv, .tsv or .jsonl with text and label columns; for an image
    /// model, a folder per class or an IDX images file.
    #[arg(long = "eval", value_parser = parse_eval, required = true)]
    evals: Vec<(String, PathBuf)>,
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long, default_value = "label")]
    label_column: String,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// At most N examples per set (class-balanced).
    #[arg(long)]
    max_eval: Option<usize>,
}

#[derive(clap::Args)]
struct PredictArgs {
    /// A fine-tuned folder (e.g. runs/NAME/final).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// The texts to classify (image files for an image model).
    #[arg(required = true)]
    texts: Vec<String>,
}

/// A count flag that must be at least 1.
fn positive(name: &'static str, v: usize) -> tramway::Result<()> {
    if v == 0 {
        return Err(tramway::Error::BadSetting { name, value: "0".into(), expected: "a positive number".into() });
    }
    Ok(())
}

fn eval_cmd(a: EvalArgs) -> tramway::Result<()> {
    positive("--batch-size", a.batch_size)?;
    positive("--max-len", a.max_len)?;
    if let Some(m) = a.max_eval {
        positive("--max-eval", m)?;
    }
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let mut c = tramway::train::Classifier::load(&gpu, &a.model, a.max_len)?;
    for (name, path) in &a.evals {
        let mut rows = tramway::train::Dataset::read(c.kind(), path, &a.text_column, &a.label_column)?;
        if let Some(m) = a.max_eval {
            rows = c.cut(&rows, m);
        }
        let r = c.evaluate(name, path, &rows, a.batch_size)?;
        println!(
            "{}",
            serde_json::json!({"eval": r.name, "accuracy": r.accuracy, "loss": r.loss, "examples": r.examples})
        );
    }
    Ok(())
}

fn predict_cmd(a: PredictArgs) -> tramway::Result<()> {
    positive("--batch-size", a.batch_size)?;
    positive("--max-len", a.max_len)?;
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let mut c = tramway::train::Classifier::load(&gpu, &a.model, a.max_len)?;
    let refs: Vec<&str> = a.texts.iter().map(|s| s.as_str()).collect();
    let probs = c.predict(&refs, a.batch_size)?;
    for (text, p) in a.texts.iter().zip(probs) {
        let best = p.iter().enumerate().fold(0, |b, (i, &v)| if v > p[b] { i } else { b });
        let map: serde_json::Map<String, serde_json::Value> =
            c.labels.iter().zip(&p).map(|(l, v)| (l.clone(), serde_json::json!(v))).collect();
        println!(
            "{{\"{}\":{},\"label\":{},\"probabilities\":{}}}",
            match c.kind() {
                tramway::train::TaskKind::TextClassification => "text",
                tramway::train::TaskKind::ImageClassification | tramway::train::TaskKind::CausalLm => "image",
            },
            serde_json::json!(text),
            serde_json::json!(c.labels[best]),
            serde_json::Value::Object(map)
        );
    }
    Ok(())
}

#[derive(clap::Args)]
struct FinetuneArgs {
    /// Hugging Face model folder to start from.
    #[arg(long)]
    model: PathBuf,
    /// text-classification, image-classification or causal-lm (default: from the model's
    /// config.json).
    #[arg(long)]
    task: Option<String>,
    /// Training data: .csv, .tsv or .jsonl with text and label columns; for images, a folder
    /// per class or an IDX images file (`*images-idx3-ubyte[.gz]`, labels beside it).
    #[arg(long)]
    train: PathBuf,
    /// An evaluation set, NAME=PATH (repeatable).
    #[arg(long = "eval", value_parser = parse_eval)]
    evals: Vec<(String, PathBuf)>,
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long, default_value = "label")]
    label_column: String,
    /// adamw, sgd, sam, asam, fsam, tram-x, tram-prev, tram-init, tram-ema, tram-fisher, r3f, trpo, mesa.
    #[arg(long, default_value = "tram-x")]
    optimizer: String,
    /// Base optimizer of the sharpness/trust-region methods: adamw or sgd.
    #[arg(long, default_value = "adamw")]
    base: String,
    /// SAM/ASAM radius (default 0.05 SAM, 0.5 ASAM).
    #[arg(long)]
    rho: Option<f32>,
    /// ASAM/FSAM η (default 0 ASAM, 0.1 FSAM).
    #[arg(long)]
    eta: Option<f32>,
    /// FSAM / TRAM-Fisher γ (0.1).
    #[arg(long)]
    gamma: Option<f32>,
    /// TRAM-x / TRAM-Fisher / R3F noise σ (0.1).
    #[arg(long)]
    noise_std: Option<f32>,
    /// TRAM-x / TRAM-Fisher / R3F noise: normal (default) or uniform.
    #[arg(long)]
    noise_type: Option<String>,
    /// forward, reverse or symmetric (TRAM default forward, R3F symmetric).
    #[arg(long)]
    kl_type: Option<String>,
    /// TRAM's KL: mean (the paper, default) or reference-code (divided by the number of classes).
    #[arg(long)]
    kl_norm: Option<String>,
    /// TRAM's multiplier of d (1).
    #[arg(long)]
    tr_scale: Option<f32>,
    /// EMA decay of the reference (tram-ema; MESA default 0.999).
    #[arg(long)]
    ema_decay: Option<f32>,
    /// R3F / TRPO / MESA regulariser weight λ (0.1).
    #[arg(long)]
    lambda: Option<f32>,
    /// TRAM without the |θ| scaling (SAM-style ascent).
    #[arg(long)]
    no_adaptive: bool,
    #[arg(long, default_value_t = 2e-5)]
    lr: f32,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
    /// Total steps (overrides --epochs); 0 evaluates the starting model without training.
    #[arg(long)]
    steps: Option<u64>,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// constant, linear, cosine or polynomial.
    #[arg(long, default_value = "linear")]
    schedule: String,
    /// Global gradient-norm clipping (0: off).
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Evaluate every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// Log metrics every N steps.
    #[arg(long, default_value_t = 1)]
    log_every: u64,
    /// Evaluate on at most N examples per set (class-balanced).
    #[arg(long)]
    max_eval: Option<usize>,
    /// Batch size for evaluation (default: --batch-size).
    #[arg(long)]
    eval_batch_size: Option<usize>,
    /// Image side a vision model sees (a multiple of its patch size; default: its preprocessor's).
    #[arg(long)]
    image_size: Option<usize>,
    /// Output folder: checkpoint-N/ and final/ (Hugging Face folders with optimizer state), plot.png.
    #[arg(long)]
    out: PathBuf,
    /// Do not write final/ (metrics, plot and summary only).
    #[arg(long)]
    no_save: bool,
    /// Continue from a checkpoint folder written by an earlier run.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Append one JSON line per logged step and per evaluation to this file.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Profile the second step (each dispatch timed alone) and write a table per kernel to FILE:
    /// calls, ms, share of the step, GFLOP/s (matmuls), GB/s of the bytes bound.
    #[arg(long)]
    profile: Option<PathBuf>,
}

fn parse_eval(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), PathBuf::from(p))),
        _ => Err(format!("expected NAME=PATH, got {s:?}")),
    }
}

fn finetune(a: FinetuneArgs) -> tramway::Result<()> {
    let opts = finetune_options(a)?;
    opts.validate()?;
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let base = match opts.optim.base {
        tramway::optim::Base::AdamW { .. } => "AdamW",
        tramway::optim::Base::Sgd { .. } => "SGD",
    };
    eprintln!("device: {}; optimizer: {} ({base} steps)", gpu.adapter_info().name, opts.optim.name());
    let s = tramway::train::finetune(&gpu, &opts)?;
    if s.steps == 0 {
        println!("no training steps (--steps 0): the starting model evaluated in {:.0} s", s.seconds);
    } else {
        println!("{} steps in {:.0} s, last training loss {:.4}", s.steps, s.seconds, s.final_loss);
    }
    for e in &s.evals {
        if e.accuracy.is_nan() {
            println!("eval {:<20} perplexity {:.4}  loss {:.4}  ({} tokens)", e.name, e.loss.exp(), e.loss, e.examples);
        } else {
            println!("eval {:<20} accuracy {:.4}  loss {:.4}  ({} examples)", e.name, e.accuracy, e.loss, e.examples);
        }
    }
    if opts.save_final {
        println!("model saved to {}", opts.out.join("final").display());
    }
    println!("plot: {}", opts.out.join("plot.png").display());
    Ok(())
}

/// The options a `finetune` command line stands for (validated).
fn finetune_options(a: FinetuneArgs) -> tramway::Result<tramway::train::FinetuneOptions> {
    use tramway::ops::kl::KlKind;
    use tramway::optim::{Base, KlNorm, Method, OptimConfig, Schedule, TramRef};
    use tramway::train::{Dataset, TaskKind};
    let bad = |name: &'static str, value: &str, expected: &str| tramway::Error::BadSetting {
        name,
        value: value.to_string(),
        expected: expected.to_string(),
    };
    let task = match a.task.as_deref() {
        None => TaskKind::of_model(a.resume.as_ref().unwrap_or(&a.model))?,
        Some("text-classification") => TaskKind::TextClassification,
        Some("image-classification") => TaskKind::ImageClassification,
        Some("causal-lm") => TaskKind::CausalLm,
        Some(v) => return Err(bad("--task", v, "text-classification, image-classification or causal-lm")),
    };
    // A method option must belong to the chosen optimizer: one given to another (a misplaced
    // key in a config or experiment file) would otherwise be ignored without a word.
    let users: [(&'static str, bool, &[&str]); 11] = [
        ("--rho", a.rho.is_some(), &["sam", "asam"]),
        ("--eta", a.eta.is_some(), &["asam", "fsam", "tram-fisher"]),
        ("--gamma", a.gamma.is_some(), &["fsam", "tram-fisher"]),
        ("--noise-std", a.noise_std.is_some(), &["tram-x", "tram-fisher", "r3f"]),
        ("--noise-type", a.noise_type.is_some(), &["tram-x", "tram-fisher", "r3f"]),
        ("--kl-type", a.kl_type.is_some(), &["tram-x", "tram-prev", "tram-init", "tram-ema", "r3f"]),
        ("--kl-norm", a.kl_norm.is_some(), &["tram-x", "tram-prev", "tram-init", "tram-ema"]),
        ("--tr-scale", a.tr_scale.is_some(), &["tram-x", "tram-prev", "tram-init", "tram-ema"]),
        ("--no-adaptive", a.no_adaptive, &["tram-x", "tram-prev", "tram-init", "tram-ema"]),
        ("--ema-decay", a.ema_decay.is_some(), &["tram-ema", "mesa"]),
        ("--lambda", a.lambda.is_some(), &["r3f", "trpo", "mesa"]),
    ];
    for (name, given, by) in users {
        if given && !by.contains(&a.optimizer.as_str()) {
            return Err(bad(
                "--optimizer",
                &a.optimizer,
                &format!("an optimizer that uses {name} ({}), or no {name}: it would have no effect", by.join(", ")),
            ));
        }
    }
    let (gamma, noise_std, lambda) = (a.gamma.unwrap_or(0.1), a.noise_std.unwrap_or(0.1), a.lambda.unwrap_or(0.1));
    let uniform = match a.noise_type.as_deref().unwrap_or("normal") {
        "normal" => false,
        "uniform" => true,
        v => return Err(bad("--noise-type", v, "normal or uniform")),
    };
    let kl = |default: KlKind| -> tramway::Result<KlKind> {
        Ok(match a.kl_type.as_deref() {
            None => default,
            Some("forward") => KlKind::Forward,
            Some("reverse") => KlKind::Reverse,
            Some("symmetric") => KlKind::Symmetric,
            Some(v) => return Err(bad("--kl-type", v, "forward, reverse or symmetric")),
        })
    };
    let kl_norm = match a.kl_norm.as_deref().unwrap_or("mean") {
        "mean" => KlNorm::Mean,
        "reference-code" | "reference_code" => KlNorm::ReferenceCode,
        v => return Err(bad("--kl-norm", v, "mean or reference-code")),
    };
    let tram = |reference| -> tramway::Result<Method> {
        Ok(Method::Tram {
            reference,
            adaptive: !a.no_adaptive,
            kl: kl(KlKind::Forward)?,
            kl_norm,
            tr_scale: a.tr_scale.unwrap_or(1.0),
        })
    };
    let sgd = Base::Sgd { momentum: a.momentum, nesterov: false, weight_decay: a.weight_decay };
    let adamw = Base::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: a.weight_decay };
    let mut base = match a.base.as_str() {
        "adamw" => adamw,
        "sgd" => sgd,
        v => return Err(bad("--base", v, "adamw or sgd")),
    };
    let method =
        match a.optimizer.as_str() {
            "adamw" => {
                base = adamw;
                Method::Plain
            }
            "sgd" => {
                base = sgd;
                Method::Plain
            }
            "sam" => Method::Sam { rho: a.rho.unwrap_or(0.05) },
            "asam" => Method::Asam { rho: a.rho.unwrap_or(0.5), eta: a.eta.unwrap_or(0.0) },
            "fsam" => Method::Fsam { gamma, eta: a.eta.unwrap_or(0.1) },
            "tram-x" => tram(TramRef::Noise { std: noise_std, uniform })?,
            "tram-prev" => tram(TramRef::Params { ema_decay: 0.0 })?,
            "tram-init" => tram(TramRef::Params { ema_decay: 1.0 })?,
            "tram-ema" => match a.ema_decay {
                Some(d) if (0.0..=1.0).contains(&d) => tram(TramRef::Params { ema_decay: d })?,
                Some(d) => return Err(bad("--ema-decay", &d.to_string(), "a value in [0, 1]")),
                None => return Err(bad("--ema-decay", "", "a value in [0, 1]: tram-ema needs one")),
            },
            "tram-fisher" => Method::TramFisher { gamma, eta: a.eta.unwrap_or(0.1), std: noise_std, uniform },
            "r3f" => Method::R3f { lambda, std: noise_std, uniform, kl: kl(KlKind::Symmetric)? },
            "trpo" => Method::TrustRegion { lambda, ema_decay: 0.0 },
            "mesa" => Method::TrustRegion { lambda, ema_decay: a.ema_decay.unwrap_or(0.999) },
            v => return Err(bad(
                "--optimizer",
                v,
                "adamw, sgd, sam, asam, fsam, tram-x, tram-prev, tram-init, tram-ema, tram-fisher, r3f, trpo or mesa",
            )),
        };
    let schedule = |total: u64| -> tramway::Result<Schedule> {
        Ok(match a.schedule.as_str() {
            "constant" => Schedule::Constant,
            "linear" => Schedule::Linear { warmup: a.warmup, total },
            "cosine" => Schedule::Cosine { warmup: a.warmup, total },
            "polynomial" => Schedule::Polynomial { warmup: a.warmup, total, power: 1.0 },
            v => return Err(bad("--schedule", v, "constant, linear, cosine or polynomial")),
        })
    };
    if !(a.lr.is_finite() && a.lr >= 0.0) {
        return Err(bad("--lr", &a.lr.to_string(), "a finite learning rate >= 0"));
    }
    if a.batch_size == 0 {
        return Err(bad("--batch-size", "0", "a positive number of examples per step"));
    }
    if a.steps.is_none() && !(a.epochs.is_finite() && a.epochs > 0.0) {
        return Err(bad("--epochs", &a.epochs.to_string(), "a finite number of epochs > 0 (or --steps)"));
    }
    // The schedule needs the run length: from --steps, or from the data size and --epochs.
    let total = match a.steps {
        Some(s) => s,
        None => {
            let n = if task == TaskKind::CausalLm {
                tramway::train::count_lm_blocks(
                    a.resume.as_ref().unwrap_or(&a.model),
                    &a.train,
                    &a.text_column,
                    a.max_len,
                )?
            } else {
                Dataset::read(task, &a.train, &a.text_column, &a.label_column)?.len()
            };
            ((a.epochs * n as f64) / a.batch_size.max(1) as f64).ceil().max(1.0) as u64
        }
    };
    let optim = OptimConfig {
        base,
        method,
        lr: a.lr,
        schedule: schedule(total.max(1))?,
        // 0 turns clipping off; anything else (NaN and negatives too) is checked by validate.
        clip: (a.clip != 0.0).then_some(a.clip),
        seed: a.seed,
    };
    Ok(tramway::train::FinetuneOptions {
        task,
        model: a.model,
        train: a.train,
        evals: a.evals,
        text_column: a.text_column,
        label_column: a.label_column,
        optim,
        batch_size: a.batch_size,
        steps: Some(total),
        epochs: a.epochs,
        max_len: a.max_len,
        eval_every: a.eval_every,
        save_every: a.save_every,
        log_every: a.log_every,
        max_eval: a.max_eval,
        eval_batch_size: a.eval_batch_size,
        image_size: a.image_size,
        save_final: !a.no_save,
        out: a.out,
        resume: a.resume,
        metrics: a.metrics,
        progress: true,
        profile: a.profile,
    })
}

#[derive(clap::Args)]
struct EmbedArgs {
    /// Hugging Face model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// How to pool the last hidden states.
    #[arg(long, value_enum, default_value = "mean")]
    pooling: PoolingArg,
    /// L2-normalise each embedding.
    #[arg(long)]
    normalize: bool,
    /// Truncate inputs to this many tokens (special tokens included).
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Sentences per GPU batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// An image to embed with a ViT or DINOv2 folder (repeatable; PNG or JPEG).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// The texts to embed.
    texts: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PoolingArg {
    Mean,
    Cls,
}

fn embed_images(a: &EmbedArgs) -> tramway::Result<()> {
    use tramway::data::batch::ImageBatch;
    use tramway::data::image::ImagePrep;
    use tramway::models::vit::Vit;
    use tramway::models::vit::VitConfig;
    if !a.texts.is_empty() {
        return Err(tramway::Error::BadSetting {
            name: "TEXT",
            value: a.texts.join(" "),
            expected: "no texts together with --image".into(),
        });
    }
    let cfg_path = a.model.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|source| tramway::Error::Io { path: cfg_path.display().to_string(), source })?;
    let mut cfg = VitConfig::parse(&cfg_path.display().to_string(), &text)?;
    let prep = ImagePrep::from_dir(&a.model, cfg.image_size.min(224))?;
    cfg.input_size = prep.size;
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let model = Vit::load(&gpu, cfg, &tramway::io::hf::read_weights(&a.model)?, 0)?;
    for chunk in a.images.chunks(a.batch_size.max(1)) {
        let mut pixels = Vec::new();
        for p in chunk {
            pixels.extend(prep.load(p)?);
        }
        let batch = ImageBatch { batch: chunk.len(), pixels, labels: None };
        let embs = pollster::block_on(model.embed(&gpu, &batch, a.normalize))?;
        for (p, e) in chunk.iter().zip(embs) {
            println!(
                "{{\"image\":{},\"embedding\":{}}}",
                serde_json::json!(p.display().to_string()),
                serde_json::json!(e)
            );
        }
    }
    Ok(())
}

fn embed(a: EmbedArgs) -> tramway::Result<()> {
    use tramway::data::text::{token_counts, TextTokenizer};
    use tramway::io::hf::read_weights;
    use tramway::models::encoder::read_encoder_config;
    use tramway::models::encoder::{Encoder, Pooling};
    if !a.images.is_empty() {
        return embed_images(&a);
    }
    if a.texts.is_empty() {
        return Err(tramway::Error::BadSetting {
            name: "TEXT",
            value: String::new(),
            expected: "at least one text to embed".into(),
        });
    }
    if a.batch_size == 0 {
        return Err(tramway::Error::BadSetting {
            name: "--batch-size",
            value: "0".into(),
            expected: "a positive number".into(),
        });
    }
    let cfg = read_encoder_config(&a.model)?;
    if a.max_len > cfg.max_position_embeddings {
        return Err(tramway::Error::BadSetting {
            name: "--max-len",
            value: a.max_len.to_string(),
            expected: format!("at most the model's max_position_embeddings ({})", cfg.max_position_embeddings),
        });
    }
    let tok = TextTokenizer::from_dir(&a.model, a.max_len, cfg.pad_token_id)?;
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let model = Encoder::load(&gpu, cfg, &read_weights(&a.model)?, 0)?;
    let pooling = match a.pooling {
        PoolingArg::Mean => Pooling::Mean,
        PoolingArg::Cls => Pooling::Cls,
    };
    for chunk in a.texts.chunks(a.batch_size) {
        let refs: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
        let batch = tok.encode(&refs)?;
        let embs = pollster::block_on(model.embed(&gpu, &batch, pooling, a.normalize))?;
        for ((text, n), e) in chunk.iter().zip(token_counts(&batch)).zip(embs) {
            println!("{{\"text\":{},\"tokens\":{n},\"embedding\":{}}}", serde_json::json!(text), serde_json::json!(e));
        }
    }
    Ok(())
}

fn info() -> tramway::Result<()> {
    let opts = GpuOptions::from_env()?;
    let all = pollster::block_on(enumerate(opts.backends.unwrap_or(wgpu::Backends::all())));
    println!("adapters ({}), each opened and checked (a matmul of each family, a sum, against the CPU):", all.len());
    for a in &all {
        let i = &a.info;
        println!("  - {} [{:?}, {:?}] driver: {} {}", i.name, i.backend, i.device_type, i.driver, i.driver_info);
        let o = GpuOptions {
            backends: Some(wgpu::Backends::from(i.backend)),
            adapter: Some(i.name.clone()),
            ..opts.clone()
        };
        let t0 = std::time::Instant::now();
        let r = Gpu::new_blocking(o).and_then(|g| pollster::block_on(tramway::ops::self_check(&g)));
        match r {
            Ok(()) => println!("    works ({:.1} s to open, compile and check)", t0.elapsed().as_secs_f64()),
            Err(e) => println!("    does not work: {e}"),
        }
    }
    let gpu = Gpu::new_blocking(opts)?;
    let i = gpu.adapter_info();
    println!("chosen: {} [{:?}, {:?}]", i.name, i.backend, i.device_type);
    println!("  (set TRAMWAY_BACKEND=vulkan|metal|dx12|gl or TRAMWAY_ADAPTER=<name substring> to choose)");
    let l = gpu.limits();
    println!("limits:");
    let rows: [(&str, u64); 12] = [
        ("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size),
        ("max_buffer_size", l.max_buffer_size),
        ("max_storage_buffers_per_shader_stage", l.max_storage_buffers_per_shader_stage as u64),
        ("max_uniform_buffer_binding_size", l.max_uniform_buffer_binding_size),
        ("max_compute_workgroup_storage_size", l.max_compute_workgroup_storage_size as u64),
        ("max_compute_invocations_per_workgroup", l.max_compute_invocations_per_workgroup as u64),
        ("max_compute_workgroup_size_x", l.max_compute_workgroup_size_x as u64),
        ("max_compute_workgroup_size_y", l.max_compute_workgroup_size_y as u64),
        ("max_compute_workgroups_per_dimension", l.max_compute_workgroups_per_dimension as u64),
        ("max_bind_groups", l.max_bind_groups as u64),
        ("min_storage_buffer_offset_alignment", l.min_storage_buffer_offset_alignment as u64),
        ("min_uniform_buffer_offset_alignment", l.min_uniform_buffer_offset_alignment as u64),
    ];
    for (k, v) in rows {
        println!("  {k:<40} {v}");
    }
    let chosen = all.iter().find(|a| a.info.name == i.name && a.info.backend == i.backend);
    if let Some(a) = chosen {
        println!("adapter features:");
        let f = a.features;
        for (name, flag) in [
            ("SHADER_F16", wgpu::Features::SHADER_F16),
            ("SUBGROUP", wgpu::Features::SUBGROUP),
            ("TIMESTAMP_QUERY", wgpu::Features::TIMESTAMP_QUERY),
            ("SHADER_INT64", wgpu::Features::SHADER_INT64),
            ("SHADER_FLOAT32_ATOMIC", wgpu::Features::SHADER_FLOAT32_ATOMIC),
            ("PIPELINE_CACHE", wgpu::Features::PIPELINE_CACHE),
        ] {
            println!("  {name:<40} {}", if f.contains(flag) { "yes" } else { "no" });
        }
        println!("  (all features: {:?})", f);
    }
    println!("device features requested by tramway: {:?} (core WGSL f32/u32 only)", gpu.features());
    Ok(())
}

/// `--config FILE` (TOML): its keys are the long flags of the subcommand (`lr = 2e-5`,
/// `optimizer = "tram-x"`, `eval = ["dev=data/dev.csv"]`, `no_adaptive = true`). They are
/// inserted before the command-line flags, which therefore override them.
fn with_config(args: Vec<String>) -> Result<Vec<String>, String> {
    let Some(i) = args.iter().position(|a| a == "--config" || a.starts_with("--config=")) else {
        return Ok(args);
    };
    let (path, skip) = match args[i].strip_prefix("--config=") {
        Some(p) => (p.to_string(), 1),
        None => (args.get(i + 1).cloned().ok_or("--config needs a file")?, 2),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e| format!("{path}: not valid TOML: {e}"))?;
    let flags = table_flags(&path, &table, &[])?;
    // program, subcommand, config flags, then the rest of the command line (minus --config).
    let mut out: Vec<String> = args[..2.min(args.len())].to_vec();
    out.extend(flags);
    out.extend(
        args[2.min(args.len())..]
            .iter()
            .enumerate()
            .filter(|(j, _)| *j + 2 < i || *j + 2 >= i + skip)
            .map(|(_, a)| a.clone()),
    );
    Ok(out)
}

#[derive(clap::Args)]
struct PerplexityArgs {
    /// A GPT-2 or LLaMA folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// The text to score (UTF-8).
    #[arg(long)]
    text_file: PathBuf,
    /// Tokens per independent block (each block's first token is not scored).
    #[arg(long, default_value_t = 256)]
    block: usize,
    /// Blocks per forward pass.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
}

fn perplexity_cmd(a: PerplexityArgs) -> tramway::Result<()> {
    use tramway::train::lm::{lm_tokenizer, perplexity, CausalLm};
    positive("--batch-size", a.batch_size)?;
    if a.block < 2 {
        return Err(tramway::Error::BadSetting {
            name: "--block",
            value: a.block.to_string(),
            expected: "at least 2 tokens".into(),
        });
    }
    let text = std::fs::read_to_string(&a.text_file)
        .map_err(|source| tramway::Error::Io { path: a.text_file.display().to_string(), source })?;
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let model = CausalLm::load(&gpu, &a.model, 0)?;
    let ids = lm_tokenizer(&a.model, &model)?.ids(&text, false)?;
    let p = perplexity(&gpu, &model, &ids, a.block.min(model.max_positions()), a.batch_size)?;
    println!("perplexity: {:.4}", p.perplexity);
    println!("tokens: {} ({} predicted, blocks of {})", p.tokens, p.predicted, a.block.min(model.max_positions()));
    Ok(())
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// A GPT-2 or LLaMA folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Wrap the prompt in the ChatML turns instruction-tuned models such as SmolLM2-Instruct
    /// expect (a system line, the user turn, then the assistant's).
    #[arg(long)]
    chat: bool,
    /// 0 picks the most likely token (greedy); above 0, sample with the logits divided by it.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample among the K most likely tokens only (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample among the most likely tokens whose probability reaches P (1 = all).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seed of the sampling draws (the same seed gives the same text).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn generate_cmd(a: GenerateArgs) -> tramway::Result<()> {
    use tramway::train::lm::{generate, lm_tokenizer, CausalLm, Sampling};
    let sampling = Sampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed };
    sampling.check()?;
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let model = CausalLm::load(&gpu, &a.model, 0)?;
    let tok = lm_tokenizer(&a.model, &model)?;
    let prompt = if a.chat {
        format!(
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
            a.prompt
        )
    } else {
        a.prompt.clone()
    };
    let ids = tok.ids(&prompt, false)?;
    let stop: Vec<u32> = model.eos().into_iter().collect();
    let t0 = std::time::Instant::now();
    let new = generate(&gpu, &model, &ids, a.max_new_tokens, &stop, &sampling)?;
    let secs = t0.elapsed().as_secs_f64();
    println!("{}", tok.decode(&new, true)?);
    eprintln!(
        "{} prompt + {} new tokens in {secs:.1} s ({:.2} new tokens/s, prompt included)",
        ids.len(),
        new.len(),
        new.len() as f64 / secs
    );
    Ok(())
}

/// The flags a TOML table stands for: `key = value` is `--key value`, `true` a bare flag,
/// `false` nothing, an array one flag per item, a table `--key name=value` per entry (for
/// `eval = { dev = "dev.csv" }`). Keys in `skip` are left out.
fn table_flags(path: &str, table: &toml::Table, skip: &[&str]) -> Result<Vec<String>, String> {
    let mut flags = Vec::new();
    for (key, value) in table {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        let scalar = |v: &toml::Value| -> Result<String, String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(n) => Ok(n.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                other => Err(format!("{path}: {key} = {other:?}: expected a string or a number")),
            }
        };
        match value {
            toml::Value::Boolean(true) => flags.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for v in items {
                    flags.push(flag.clone());
                    flags.push(scalar(v)?);
                }
            }
            toml::Value::Table(t) => {
                for (name, v) in t {
                    flags.push(flag.clone());
                    flags.push(format!("{name}={}", scalar(v)?));
                }
            }
            v => {
                flags.push(flag);
                flags.push(scalar(v)?);
            }
        }
    }
    Ok(flags)
}

#[derive(clap::Args)]
struct ExperimentArgs {
    /// The experiment file (TOML): `out`, `seeds`, `optimizers`, a `[finetune]` table of flags
    /// for every run, `[optimizer.NAME]` tables, a `[quick]` table, and `[[task]]` tables
    /// (`name` plus finetune flags). See experiments/domain-shift.toml.
    config: PathBuf,
    /// A few steps of every run with the `[quick]` overrides, into `<out>-quick` (CI's smoke test).
    #[arg(long)]
    quick: bool,
    /// Only this task (repeatable).
    #[arg(long = "task")]
    tasks: Vec<String>,
    /// Only rebuild results.md and the plots from finished runs.
    #[arg(long)]
    report: bool,
    /// Output folder (overrides the file's `out`).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Run every (task, optimizer, seed) of the experiment file that has no `summary.json` yet (so
/// an interrupted experiment continues where it stopped), then write the report.
fn experiment(a: ExperimentArgs) -> tramway::Result<()> {
    use tramway::train::experiment::{load_record, report, run_dir, save_record, RunRecord};
    let file = a.config.display().to_string();
    let bad = |m: String| tramway::Error::Model { file: file.clone(), message: m };
    let text =
        std::fs::read_to_string(&a.config).map_err(|source| tramway::Error::Io { path: file.clone(), source })?;
    let t: toml::Table = text.parse().map_err(|e| bad(format!("not valid TOML: {e}")))?;
    let table = |k: &str| -> tramway::Result<toml::Table> {
        match t.get(k) {
            None => Ok(toml::Table::new()),
            Some(toml::Value::Table(x)) => Ok(x.clone()),
            Some(v) => Err(bad(format!("{k} must be a table, found {v:?}"))),
        }
    };
    let (finetune_t, optim_t, quick_t) = (table("finetune")?, table("optimizer")?, table("quick")?);
    let seeds_of = |v: Option<&toml::Value>| -> tramway::Result<Option<Vec<u64>>> {
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
    if a.quick {
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
    if let Some(unknown) = a.tasks.iter().find(|n| !names.contains(n)) {
        return Err(tramway::Error::BadSetting {
            name: "--task",
            value: unknown.clone(),
            expected: format!("one of the file's tasks: {}", names.join(", ")),
        });
    }
    let chosen: Vec<String> = names.iter().filter(|n| a.tasks.is_empty() || a.tasks.contains(n)).cloned().collect();
    let mut out = match (&a.out, t.get("out").and_then(|o| o.as_str())) {
        (Some(o), _) => o.clone(),
        (None, Some(o)) => PathBuf::from(o),
        (None, None) => PathBuf::from("runs/experiment"),
    };
    if a.quick && a.out.is_none() {
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
    let mut plan = Vec::new();
    for (task, name) in tasks.iter().zip(&names).filter(|(_, n)| chosen.contains(n)) {
        for (o, row_seeds) in &rows {
            for &seed in row_seeds {
                let dir = run_dir(&out, name, o, seed);
                let mut args = vec!["tramway".to_string(), "finetune".to_string()];
                let flags = |tb: &toml::Table, skip: &[&str]| table_flags(&file, tb, skip).map_err(bad);
                args.extend(flags(&finetune_t, &[])?);
                args.extend(flags(task, &["name"])?);
                if let Some(v) = optim_t.get(o) {
                    let tb = v.as_table().ok_or_else(|| bad(format!("optimizer.{o} must be a table")))?;
                    args.extend(flags(tb, &[])?);
                }
                if a.quick {
                    args.extend(flags(&quick_t, &["seeds"])?);
                }
                let metrics = dir.join("metrics.jsonl");
                let optimizer = if o == "pretrained" { "adamw".to_string() } else { o.clone() };
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
                let cli = Cli::try_parse_from(&args).map_err(|e| context(e.to_string().trim().to_string()))?;
                let Cmd::Finetune(fa) = cli.cmd else { unreachable!("parsed as finetune") };
                let opts = finetune_options(*fa).map_err(|e| context(e.to_string()))?;
                opts.validate().map_err(|e| context(e.to_string()))?;
                plan.push((name.clone(), o.clone(), seed, dir, opts));
            }
        }
    }
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let total = plan.len();
    let mut ran_secs = 0.0;
    if !a.report {
        for (k, (name, o, seed, dir, opts)) in plan.iter().enumerate() {
            let k = k + 1;
            if load_record(dir)?.is_some() {
                eprintln!("[{k}/{total}] {name} {o} seed {seed}: done already");
                continue;
            }
            eprintln!("[{k}/{total}] {name} {o} seed {seed}");
            let s = tramway::train::finetune(&gpu, opts)?;
            ran_secs += s.seconds;
            for e in &s.evals {
                if e.accuracy.is_nan() {
                    eprintln!("    {:<20} perplexity {:.3}", e.name, e.loss.exp());
                } else {
                    eprintln!("    {:<20} accuracy {:.4}", e.name, e.accuracy);
                }
            }
            save_record(dir, &RunRecord::new(name, o, *seed, &s))?;
        }
    }
    let header = format!(
        "Experiment `{}`{} on {} ({:?}); {} seeds; runs in `{}`.",
        file,
        if a.quick { " (--quick)" } else { "" },
        gpu.adapter_info().name,
        gpu.adapter_info().backend,
        seeds.len(),
        out.display(),
    );
    let names: Vec<String> = rows.into_iter().map(|(o, _)| o).collect();
    let md = report(&out, &chosen, &names, &header)?;
    println!("{md}");
    if !a.report {
        println!("this invocation ran for {:.1} min", ran_secs / 60.0);
    }
    println!("written: {}", out.join("results.md").display());
    Ok(())
}

fn main() -> ExitCode {
    let args = match with_config(std::env::args().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    let r = match cli.cmd {
        Cmd::Info => info(),
        Cmd::Embed(a) => embed(a),
        Cmd::Finetune(a) => finetune(*a),
        Cmd::Eval(a) => eval_cmd(a),
        Cmd::Predict(a) => predict_cmd(a),
        Cmd::Experiment(a) => experiment(a),
        Cmd::Perplexity(a) => perplexity_cmd(a),
        Cmd::Generate(a) => generate_cmd(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_config;

    #[test]
    fn config_keys_become_flags_that_the_command_line_overrides() {
        let path = std::env::temp_dir().join(format!("tramway-cfg-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "lr = 1e-4\noptimizer = \"sam\"\neval = [\"a=x.csv\"]\nno_adaptive = true\nclip = false\n",
        )
        .unwrap();
        let args: Vec<String> = ["tramway", "finetune", "--config", path.to_str().unwrap(), "--optimizer", "adamw"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = with_config(args).unwrap();
        let pos = |f: &str| out.iter().position(|a| a == f).unwrap();
        assert_eq!(out[out.iter().rposition(|a| a == "--optimizer").unwrap() + 1], "adamw", "{out:?}");
        assert!(
            pos("--optimizer") < out.iter().rposition(|a| a == "--optimizer").unwrap(),
            "config first, command line last"
        );
        assert_eq!(out[pos("--lr") + 1], "0.0001");
        assert_eq!(out[pos("--eval") + 1], "a=x.csv");
        assert!(out.contains(&"--no-adaptive".to_string()) && !out.contains(&"--clip".to_string()));
        assert!(!out.iter().any(|a| a == "--config"));
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, "lr = [true]\n").unwrap();
        let args: Vec<String> =
            ["tramway", "finetune", "--config", path.to_str().unwrap()].iter().map(|s| s.to_string()).collect();
        assert!(with_config(args).unwrap_err().contains("lr"));
        let _ = std::fs::remove_file(&path);
    }
}
