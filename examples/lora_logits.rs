//! The logits of a causal LM with a PEFT LoRA adapter (or without one) on given token ids,
//! written to a safetensors file (used by tools/check_adapter.py to prove that PEFT, loading the
//! adapter tramway saved, computes tramway's logits).
//!
//!   cargo run --release --example lora_logits -- MODEL_DIR ADAPTER_DIR|- IDS OUT.safetensors
//!
//! IDS: comma-separated token ids (one sequence).

use std::path::Path;
use tramway::data::batch::LmBatch;
use tramway::io::weights::{serialize, HostTensor};
use tramway::models::TaskModel;
use tramway::train::lm::CausalLm;
use tramway::{Gpu, GpuOptions};

fn main() -> tramway::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: lora_logits MODEL_DIR ADAPTER_DIR|- IDS OUT.safetensors");
        std::process::exit(2);
    }
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let model = match args[2].as_str() {
        "-" => CausalLm::load(&gpu, Path::new(&args[1]), 0)?,
        a => CausalLm::load_adapted(&gpu, Path::new(&args[1]), Path::new(a))?,
    };
    let ids: Vec<u32> =
        args[3].split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>().map_err(|e| {
            tramway::Error::BadSetting { name: "IDS", value: args[3].clone(), expected: format!("{e}") }
        })?;
    let t = ids.len();
    let b = LmBatch { batch: 1, seq: t, ids, mask: vec![1; t] };
    let mut acts = model.acts(&gpu, 1, t)?;
    model.upload(&gpu, &mut acts, &b)?;
    let mut rec = gpu.recorder();
    model.forward(&mut rec, &acts, false, None)?;
    rec.submit()?;
    let data = gpu.read_f32_blocking(&acts.logits)?;
    let logits = HostTensor { shape: vec![1, t, model.vocab_size()], data, dtype: safetensors::Dtype::F32 };
    let bytes = serialize(&args[4], &[("logits".to_string(), logits)])?;
    std::fs::write(&args[4], bytes).map_err(|source| tramway::Error::Io { path: args[4].clone(), source })?;
    Ok(())
}
