//! The `tramway` command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tramway::gpu::{enumerate, Gpu, GpuOptions};

#[derive(Parser)]
#[command(name = "tramway", version, about = "Fine-tune transformers on any GPU wgpu reaches")]
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
    /// An image to embed with a ViT folder.
    #[arg(long)]
    image: Option<PathBuf>,
    /// The texts to embed.
    texts: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PoolingArg {
    Mean,
    Cls,
}

fn embed(a: EmbedArgs) -> tramway::Result<()> {
    use tramway::data::text::{token_counts, TextTokenizer};
    use tramway::io::hf::{read_encoder_config, read_weights};
    use tramway::models::encoder::{Encoder, Pooling};
    if let Some(image) = &a.image {
        return Err(tramway::Error::BadSetting {
            name: "--image",
            value: image.display().to_string(),
            expected: "a text model: image (ViT) embedding is not implemented yet".into(),
        });
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
    println!("adapters ({}):", all.len());
    for a in &all {
        let i = &a.info;
        println!("  - {} [{:?}, {:?}] driver: {} {}", i.name, i.backend, i.device_type, i.driver, i.driver_info);
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Info => info(),
        Cmd::Embed(a) => embed(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
