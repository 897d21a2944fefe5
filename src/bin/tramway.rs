//! The `tramway` command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tramway::gpu::{Gpu, GpuOptions};

#[derive(Parser)]
#[command(
    name = "tramway",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TRAMWAY_COMMIT"), ")"),
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
    /// A logistic-regression probe of a text encoder's frozen (pooled) features: what the
    /// pre-trained features give without fine-tuning, as a reference for fine-tuned runs.
    Probe(ProbeArgs),
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
    /// Train LoRA adapters of this rank on a frozen base (causal LMs); checkpoints and final/
    /// are then PEFT adapter folders (adapter_config.json, adapter_model.safetensors).
    #[arg(long)]
    lora_rank: Option<usize>,
    /// LoRA's alpha (the scale is alpha / rank; default 2 x rank).
    #[arg(long)]
    lora_alpha: Option<f32>,
    /// Dropout on each adapter's input while training (PEFT's lora_dropout; default 0).
    #[arg(long)]
    lora_dropout: Option<f32>,
    /// The Linears that get adapters: a comma-separated list of q, k, v, o, gate, up, down
    /// (default all). GPT-2's fused c_attn takes q, k and v together.
    #[arg(long)]
    lora_targets: Option<String>,
    /// With --lora-rank: also write final-merged/, a full model folder with the adapters merged.
    #[arg(long)]
    merge: bool,
    /// Train only the classifier head on the frozen encoder (a linear probe of its features).
    #[arg(long)]
    freeze_base: bool,
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
    print!("{}", s.describe(&opts));
    Ok(())
}

/// The options a `finetune` command line stands for (validated).
fn finetune_options(a: FinetuneArgs) -> tramway::Result<tramway::train::FinetuneOptions> {
    use tramway::optim::{OptimConfig, OptimSpec, Schedule};
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
    let spec = OptimSpec {
        optimizer: a.optimizer.clone(),
        base: a.base.clone(),
        rho: a.rho,
        eta: a.eta,
        gamma: a.gamma,
        noise_std: a.noise_std,
        noise_type: a.noise_type.clone(),
        kl_type: a.kl_type.clone(),
        kl_norm: a.kl_norm.clone(),
        tr_scale: a.tr_scale,
        ema_decay: a.ema_decay,
        lambda: a.lambda,
        no_adaptive: a.no_adaptive,
        weight_decay: a.weight_decay,
        momentum: a.momentum,
    };
    let (base, method) = spec.build()?;
    let lora = match (a.lora_rank, a.lora_alpha.is_some() || a.lora_targets.is_some() || a.lora_dropout.is_some()) {
        (None, true) => return Err(bad("--lora-alpha/--lora-targets/--lora-dropout", "", "--lora-rank as well")),
        (None, false) => None,
        (Some(rank), _) => {
            let targets = tramway::nn::lora::Target::parse_list(a.lora_targets.as_deref().unwrap_or("all"))?;
            let mut l = tramway::nn::lora::LoraConfig::new(rank, a.lora_alpha.unwrap_or(2.0 * rank as f32), targets);
            l.dropout = a.lora_dropout.unwrap_or(0.0);
            l.validate()?;
            Some(l)
        }
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
            let model = a.resume.as_ref().unwrap_or(&a.model);
            let n = Dataset::count(task, model, &a.train, &a.text_column, &a.label_column, a.max_len)?;
            ((a.epochs * n as f64) / a.batch_size.max(1) as f64).ceil().max(1.0) as u64
        }
    };
    let optim = OptimConfig {
        base,
        method,
        lr: a.lr,
        schedule: Schedule::named(&a.schedule, a.warmup, total.max(1))?,
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
        lora,
        merge: a.merge,
        freeze_base: a.freeze_base,
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

fn embed(a: EmbedArgs) -> tramway::Result<()> {
    let gpu = || -> tramway::Result<Gpu> { Gpu::new_blocking(GpuOptions::from_env()?) };
    if !a.images.is_empty() {
        if !a.texts.is_empty() {
            return Err(tramway::Error::BadSetting {
                name: "TEXT",
                value: a.texts.join(" "),
                expected: "no texts together with --image".into(),
            });
        }
        let embs = tramway::train::embed::embed_images(&gpu()?, &a.model, &a.images, a.batch_size, a.normalize)?;
        for (p, e) in a.images.iter().zip(embs) {
            let image = serde_json::json!(p.display().to_string());
            println!("{{\"image\":{image},\"embedding\":{}}}", serde_json::json!(e));
        }
        return Ok(());
    }
    let pooling = match a.pooling {
        PoolingArg::Mean => tramway::models::encoder::Pooling::Mean,
        PoolingArg::Cls => tramway::models::encoder::Pooling::Cls,
    };
    let o = tramway::train::embed::TextEmbedding {
        max_len: a.max_len,
        batch_size: a.batch_size,
        pooling,
        normalize: a.normalize,
    };
    let embs = tramway::train::embed::embed_texts(gpu, &a.model, &a.texts, &o)?;
    for (text, (n, e)) in a.texts.iter().zip(embs) {
        println!("{{\"text\":{},\"tokens\":{n},\"embedding\":{}}}", serde_json::json!(text), serde_json::json!(e));
    }
    Ok(())
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// A text encoder folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Training examples (.csv, .tsv or .jsonl with text and label columns).
    #[arg(long)]
    train: PathBuf,
    /// Dev examples that choose the L2 strength (default: every fifth training example).
    #[arg(long)]
    dev: Option<PathBuf>,
    /// NAME=PATH (repeatable): a set to evaluate the chosen probe on.
    #[arg(long = "eval", value_parser = parse_eval)]
    evals: Vec<(String, PathBuf)>,
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long, default_value = "label")]
    label_column: String,
    /// How to pool the last hidden states into features.
    #[arg(long, value_enum, default_value = "mean")]
    pooling: PoolingArg,
    /// Truncate inputs to this many tokens (special tokens included).
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// At most N examples per evaluation set (class-balanced, the same cut as finetune's).
    #[arg(long)]
    max_eval: Option<usize>,
    /// L2 strengths to try (comma-separated), the best on dev is kept.
    #[arg(long, value_delimiter = ',', default_value = "1e-4,1e-3,1e-2,3e-2,1e-1,3e-1,1")]
    l2: Vec<f64>,
    /// Also write the report as Markdown to this file (atomically).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn probe_cmd(a: ProbeArgs) -> tramway::Result<()> {
    positive("--batch-size", a.batch_size)?;
    positive("--max-len", a.max_len)?;
    if let Some(m) = a.max_eval {
        positive("--max-eval", m)?;
    }
    let o = tramway::train::probe::ProbeOptions {
        model: a.model,
        train: a.train,
        dev: a.dev,
        evals: a.evals,
        text_column: a.text_column,
        label_column: a.label_column,
        max_len: a.max_len,
        batch_size: a.batch_size,
        max_eval: a.max_eval,
        pooling: match a.pooling {
            PoolingArg::Mean => tramway::models::encoder::Pooling::Mean,
            PoolingArg::Cls => tramway::models::encoder::Pooling::Cls,
        },
        l2: a.l2,
    };
    let gpu = || -> tramway::Result<Gpu> { Gpu::new_blocking(GpuOptions::from_env()?) };
    let r = tramway::train::probe::probe(gpu, &o)?;
    for (l2, acc, loss) in &r.dev {
        println!("{}", serde_json::json!({"l2": l2, "dev_accuracy": acc, "dev_loss": loss}));
    }
    println!(
        "{}",
        serde_json::json!({"chosen_l2": r.chosen_l2, "train_accuracy": r.train_accuracy, "iterations": r.iterations})
    );
    for e in &r.evals {
        println!(
            "{}",
            serde_json::json!({"eval": e.name, "accuracy": e.accuracy, "loss": e.loss, "examples": e.examples})
        );
    }
    if let Some(out) = &a.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| tramway::Error::Io { path: dir.display().to_string(), source })?;
        }
        tramway::io::hf::write_atomic(out, r.markdown(&o).as_bytes())?;
    }
    Ok(())
}

fn info() -> tramway::Result<()> {
    print!("{}", tramway::train::info::report()?);
    Ok(())
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
    /// A PEFT LoRA adapter folder to apply to --model.
    #[arg(long)]
    adapter: Option<PathBuf>,
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
    let model = match &a.adapter {
        Some(dir) => CausalLm::load_adapted(&gpu, &a.model, dir)?,
        None => CausalLm::load(&gpu, &a.model, 0)?,
    };
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
    /// A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) to apply to
    /// --model, such as a `tramway finetune --lora-rank` run's final/.
    #[arg(long)]
    adapter: Option<PathBuf>,
}

fn generate_cmd(a: GenerateArgs) -> tramway::Result<()> {
    use tramway::train::lm::{generate, lm_tokenizer, CausalLm, Sampling};
    let sampling = Sampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed };
    sampling.check()?;
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let model = match &a.adapter {
        Some(dir) => CausalLm::load_adapted(&gpu, &a.model, dir)?,
        None => CausalLm::load(&gpu, &a.model, 0)?,
    };
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
    /// Run only run I of the grid (in the order of a local run; what a Slurm array task calls).
    #[arg(long)]
    run_index: Option<usize>,
    /// Hand the unfinished runs to Slurm as one job array (`sbatch`; resubmit to finish what is
    /// missing, `--report` once the array is done).
    #[arg(long)]
    slurm: bool,
    /// With --slurm: write the sbatch script but do not submit it.
    #[arg(long, requires = "slurm")]
    dry_run: bool,
    /// With --slurm: the partition (overrides the file's `[slurm] partition`).
    #[arg(long, requires = "slurm")]
    partition: Option<String>,
    /// With --slurm: GPUs per run (`--gres=gpu:N`; overrides `[slurm] gpus`).
    #[arg(long, requires = "slurm")]
    gpus_per_run: Option<u32>,
    /// With --slurm: the time limit per run, e.g. 02:00:00 (overrides `[slurm] time`).
    #[arg(long, requires = "slurm")]
    time: Option<String>,
}

/// `tramway experiment`: plan every run of the file (each run's flags parsed as `tramway
/// finetune` would), run what has not finished, write the report.
fn experiment(a: ExperimentArgs) -> tramway::Result<()> {
    use tramway::train::experiment::{plan, run};
    let parse = |args: &[String]| -> Result<tramway::train::FinetuneOptions, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string().trim().to_string())?;
        let Cmd::Finetune(fa) = cli.cmd else { unreachable!("parsed as finetune") };
        finetune_options(*fa).map_err(|e| e.to_string())
    };
    let p = plan(&a.config, a.quick, &a.tasks, a.out.as_deref(), parse)?;
    if a.slurm {
        return slurm(&a, &p);
    }
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    if let Some(i) = a.run_index {
        tramway::train::experiment::run_one(&gpu, &p, i)?;
        return Ok(());
    }
    let (md, minutes) = run(&gpu, &p, a.report)?;
    println!("{md}");
    if !a.report {
        println!("this invocation ran for {minutes:.1} min");
    }
    println!("written: {}", p.out.join("results.md").display());
    Ok(())
}

/// `tramway experiment --slurm`: the unfinished runs as one job array.
fn slurm(a: &ExperimentArgs, p: &tramway::train::experiment::Plan) -> tramway::Result<()> {
    use tramway::train::slurm::{submit, Callback, Resources};
    let mut res = Resources::from_file(&a.config)?;
    res.partition = a.partition.clone().or(res.partition);
    res.gpus = a.gpus_per_run.unwrap_or(res.gpus);
    res.time = a.time.clone().or(res.time);
    let io = |source| tramway::Error::Io { path: "the tramway executable / working folder".into(), source };
    let (exe, workdir) = (std::env::current_exe().map_err(io)?, std::env::current_dir().map_err(io)?);
    let cb = Callback { exe: &exe, config: &a.config, quick: a.quick, tasks: &a.tasks, workdir: &workdir };
    match submit(p, &res, &cb, a.dry_run)? {
        None => println!("every run of the grid has finished: `tramway experiment {} --report`", a.config.display()),
        Some(sub) => {
            println!("{} of {} runs in {}", sub.runs.len(), p.runs.len(), sub.script.display());
            match sub.job {
                Some(id) => println!("submitted job array {id}; when it is done: --report"),
                None => println!("not submitted (--dry-run): sbatch {}", sub.script.display()),
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match tramway::train::flags::with_config(std::env::args().collect()) {
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
        Cmd::Probe(a) => probe_cmd(a),
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
