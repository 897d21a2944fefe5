//! LoRA against full fine-tuning of a causal LM (default SmolLM2-135M-Instruct), measured in
//! one run: the GPU memory each plans (weights, adapters, gradients, optimizer state,
//! activations: buffers as allocated) and seconds per optimizer step, AdamW and TRAM-x, for
//! the full model (f32), LoRA on the f32 checkpoint and LoRA on its bf16 copy (frozen weights
//! kept 16-bit); steps interleaved round by round so the machine's drift hits every
//! configuration alike; medians.
//!
//!   models/fetch.sh smollm2 && $(bash tools/setup-torch.sh) tools/cast_bf16.py models/SmolLM2-135M-Instruct models/SmolLM2-135M-Instruct-bf16
//!   cargo run --release --example bench_lora [--rounds N] [--batch B] [--seq T] [--rank R]

use std::path::Path;
use std::time::Instant;
use tramway::data::batch::LmBatch;
use tramway::models::{Build, Task};
use tramway::nn::lora::{LoraConfig, Target};
use tramway::ops::kl::KlKind;
use tramway::optim::{Base, KlNorm, Method, OptimConfig, Optimizer, Schedule, TramRef};
use tramway::train::lm::{lm_tokenizer, CausalLm};
use tramway::train::MemoryPlan;
use tramway::{Gpu, GpuOptions, Result};

fn arg(name: &str, default: usize) -> usize {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

const TEXT: &str = "Shares in the company rose sharply on Monday after it reported a rise in quarterly \
profits, helped by strong demand in Asia and lower costs. Analysts said the results were better than \
expected and raised their forecasts for the full year, although they warned that higher interest rates \
could slow consumer spending in Europe and the United States.";

/// Errors as their message (`error: ...`, exit status 1), not Rust's debug form.
fn main() -> std::process::ExitCode {
    tramway::error::exit_code(run())
}

fn run() -> Result<()> {
    let (rounds, batch, seq, rank) = (arg("--rounds", 3), arg("--batch", 2), arg("--seq", 32), arg("--rank", 8));
    let f32_dir = Path::new("models/SmolLM2-135M-Instruct");
    let bf16_dir = Path::new("models/SmolLM2-135M-Instruct-bf16");
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let lora = LoraConfig::new(rank, 2.0 * rank as f32, Target::ALL.to_vec());
    let builds: Vec<(&str, &Path, Option<LoraConfig>)> = vec![
        ("full (f32)", f32_dir, None),
        ("LoRA (f32 base)", f32_dir, Some(lora.clone())),
        ("LoRA (bf16 base)", bf16_dir, Some(lora.clone())),
    ];
    let tram = Method::Tram {
        reference: TramRef::Noise { std: 0.01, uniform: false },
        adaptive: true,
        kl: KlKind::Forward,
        kl_norm: KlNorm::Mean,
        tr_scale: 1.0,
    };
    let methods = [("adamw", Method::Plain), ("tram-x", tram)];
    struct Row {
        name: String,
        plan: MemoryPlan,
        times: Vec<f64>,
    }
    let mut models = Vec::new();
    for (name, dir, l) in &builds {
        let model = CausalLm::load_with(&gpu, dir, &Build { seed: 1, lora: l.clone(), ..Default::default() })?;
        let tok = lm_tokenizer(dir, &model)?;
        let ids = tok.ids(TEXT, false)?;
        let mut b = LmBatch { batch, seq, ids: Vec::new(), mask: Vec::new() };
        for k in 0..batch {
            b.ids.extend(ids.iter().cycle().skip(k * 7).take(seq));
            b.mask.extend(std::iter::repeat_n(1, seq));
        }
        let before = gpu.allocated_bytes();
        model.params.reserve_scratch(&gpu, batch * seq)?;
        let mut acts = model.acts(&gpu, batch, seq)?;
        let act_bytes = gpu.allocated_bytes() - before;
        model.upload(&gpu, &mut acts, &b)?;
        models.push((name.to_string(), model, acts, act_bytes));
    }
    let mut runs: Vec<(usize, Optimizer, Row)> = Vec::new();
    for (k, (name, model, _, act_bytes)) in models.iter().enumerate() {
        for (mname, m) in &methods {
            let c = OptimConfig {
                base: Base::adamw(),
                method: *m,
                lr: 1e-5,
                schedule: Schedule::Constant,
                clip: Some(1.0),
                seed: 1,
            };
            let opt = Optimizer::new(&gpu, &model.params, c)?;
            let plan = MemoryPlan::of(&model.params, &opt, *act_bytes);
            runs.push((k, opt, Row { name: format!("{name}, {mname}"), plan, times: Vec::new() }));
        }
    }
    // Round 0 warms every kernel up (the driver's JIT) and is not counted.
    for round in 0..=rounds {
        for (k, opt, row) in runs.iter_mut() {
            let (_, model, acts, _) = &models[*k];
            let task = Task { model, acts, aux: None };
            let t0 = Instant::now();
            let mut rec = gpu.recorder();
            opt.step(&mut rec, &task)?;
            rec.submit()?;
            gpu.wait()?;
            if round > 0 {
                row.times.push(t0.elapsed().as_secs_f64());
            }
            eprintln!("round {round}: {} {:.2} s", row.name, t0.elapsed().as_secs_f64());
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "device: {} ({:?}); SmolLM2-135M-Instruct; batch {batch} x {seq} tokens; LoRA r {rank}, alpha {}, on q,k,v,o,gate,up,down; {rounds} interleaved rounds, medians",
        gpu.adapter_info().name,
        gpu.adapter_info().backend,
        2 * rank
    );
    println!("\n| configuration | planned MiB | frozen B / param | trainable params | full's memory / this | s / step | this / full's time |");
    println!("|---|---|---|---|---|---|---|");
    for (i, (_, _, row)) in runs.iter().enumerate() {
        let full = &runs[i % methods.len()].2;
        let p = &row.plan;
        let per =
            if p.frozen_params > 0 { format!("{:.2}", p.frozen as f64 / p.frozen_params as f64) } else { "-".into() };
        println!(
            "| {} | {:.1} | {per} | {:.2}M | {:.2} | {:.2} | {:.2} |",
            row.name,
            mib(p.total()),
            p.trainable_params as f64 / 1e6,
            full.plan.total() as f64 / p.total() as f64,
            median(&row.times),
            median(&row.times) / median(&full.times)
        );
    }
    Ok(())
}
