//! Step benchmark: seconds per optimizer step on a real encoder (default all-MiniLM-L6-v2, batch
//! 8 × 24 tokens) for AdamW, SAM, TRAM-x and TRAM-θ_{t−1}, interleaved round by round so that the
//! machine's drift hits every optimizer alike; medians, and each method's ratio to AdamW against
//! its pass-count limit ((forward + 2·backward passes) / 3, a backward costing about two
//! forwards: 2.0 for SAM, 2.33 for TRAM-x).
//!
//! The peer in the same run: PyTorch on one CPU thread (tools/torch_step.py: the same model,
//! batch and passes per method), its steps interleaved with tramway's, when a python with torch
//! and transformers is found (`TRAMWAY_TORCH_PYTHON`, else the venv `tools/setup-torch.sh`
//! makes).
//!
//!   models/fetch.sh minilm && cargo run --release --example bench_step [MODEL_DIR] [--rounds N] [--batch B] [--seq T]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;
use tramway::data::text::TextTokenizer;
use tramway::io::hf::read_weights;
use tramway::models::encoder::read_encoder_config;
use tramway::models::encoder::{Encoder, EncoderTask};
use tramway::ops::kl::KlKind;
use tramway::optim::{Base, KlNorm, Method, OptimConfig, Optimizer, Schedule, TramRef};
use tramway::{Gpu, GpuOptions, Result};

fn arg(name: &str, default: usize) -> usize {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// tools/torch_step.py running, fed method names, answering seconds per step.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn start(dir: &std::path::Path, batch: usize, seq: usize) -> Option<Peer> {
        let python = std::env::var("TRAMWAY_TORCH_PYTHON").ok().or_else(|| {
            let home = std::env::var("HOME").ok()?;
            let cache = std::env::var("TRAMWAY_CACHE").unwrap_or(format!("{home}/.cache/tramway"));
            let p = format!("{cache}/torch-venv/bin/python");
            std::path::Path::new(&p).exists().then_some(p)
        })?;
        let mut child = Command::new(&python)
            .arg("tools/torch_step.py")
            .arg(dir)
            .args(["--batch", &batch.to_string(), "--seq", &seq.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let mut stdout = BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        stdout.read_line(&mut line).ok()?;
        (line.trim() == "ready").then_some(Peer { child, stdin, stdout })
    }
    fn step(&mut self, method: &str) -> Option<f64> {
        writeln!(self.stdin, "{method}").ok()?;
        self.stdin.flush().ok()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).ok()?;
        line.trim().parse().ok()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Errors as their message (`error: ...`, exit status 1), not Rust's debug form.
fn main() -> std::process::ExitCode {
    tramway::error::exit_code(run())
}

fn run() -> Result<()> {
    let dir = std::env::args().nth(1).filter(|a| !a.starts_with("--")).unwrap_or("models/all-MiniLM-L6-v2".into());
    let dir = std::path::PathBuf::from(dir);
    let (rounds, batch, seq) = (arg("--rounds", 5), arg("--batch", 8), arg("--seq", 24));
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let cfg = read_encoder_config(&dir)?;
    let tok = TextTokenizer::from_dir(&dir, seq, cfg.pad_token_id)?;
    let model = Encoder::load(&gpu, cfg, &read_weights(&dir)?, 0)?;
    // Sentences long enough to fill `seq` tokens after truncation, two labels.
    let text = "the film is a long and careful study of memory, loss and the small habits that keep a family together through the years";
    let texts: Vec<&str> = (0..batch).map(|_| text).collect();
    let mut b = tok.encode(&texts)?;
    b.labels = Some((0..batch as u32).map(|i| i % 2).collect());
    let mut acts = model.acts(&gpu, b.batch, b.seq)?;
    model.upload(&gpu, &mut acts, &b)?;
    let tram = |reference| Method::Tram {
        reference,
        adaptive: true,
        kl: KlKind::Forward,
        kl_norm: KlNorm::Mean,
        tr_scale: 1.0,
    };
    let methods = [
        ("adamw", Method::Plain),
        ("sam", Method::Sam { rho: 0.05 }),
        ("tram-x", tram(TramRef::Noise { std: 0.1, uniform: false })),
        ("tram-prev", tram(TramRef::Params { ema_decay: 0.0 })),
    ];
    let mut opts: Vec<Optimizer> = methods
        .iter()
        .map(|(_, m)| {
            let c = OptimConfig {
                base: Base::adamw(),
                method: *m,
                lr: 1e-5,
                schedule: Schedule::Constant,
                clip: Some(1.0),
                seed: 1,
            };
            Optimizer::new(&gpu, &model.params, c)
        })
        .collect::<Result<_>>()?;
    let task = EncoderTask { model: &model, acts: &acts, aux: None };
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); methods.len()];
    let mut peer = Peer::start(&dir, batch, seq);
    let mut peer_times: Vec<Vec<f64>> = vec![Vec::new(); methods.len()];
    // Round 0 warms every kernel up (the driver's JIT) and is not counted.
    for round in 0..=rounds {
        for (k, opt) in opts.iter_mut().enumerate() {
            let t0 = Instant::now();
            let mut rec = gpu.recorder();
            opt.step(&mut rec, &task)?;
            rec.submit()?;
            gpu.wait()?;
            if round > 0 {
                times[k].push(t0.elapsed().as_secs_f64());
            }
            if let Some(p) = peer.as_mut() {
                match p.step(methods[k].0) {
                    Some(t) if round > 0 => peer_times[k].push(t),
                    Some(_) => {}
                    None => peer = None,
                }
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&times[0]);
    println!(
        "device: {} ({:?}); {}; batch {batch} x {seq} tokens; {rounds} interleaved rounds, medians",
        gpu.adapter_info().name,
        gpu.adapter_info().backend,
        dir.display()
    );
    let have_peer = peer_times.iter().all(|t| t.len() == rounds && rounds > 0);
    if have_peer {
        println!("\n| optimizer | s / step | ratio to AdamW | pass-count limit | PyTorch 1 thread s / step | PyTorch ratio to AdamW | tramway / PyTorch |");
        println!("|---|---|---|---|---|---|---|");
    } else {
        println!("\n| optimizer | s / step | ratio to AdamW | pass-count limit |");
        println!("|---|---|---|---|");
    }
    let pbase = if have_peer { median(&peer_times[0]) } else { f64::NAN };
    for (((name, m), t), pt) in methods.iter().zip(&times).zip(&peer_times) {
        let (f, bw) = m.passes();
        let limit = (f + 2 * bw) as f64 / 3.0;
        let row = format!("| {name} | {:.3} | {:.2} | {:.2} |", median(t), median(t) / base, limit);
        if have_peer {
            let p = median(pt);
            println!("{row} {p:.3} | {:.2} | {:.2} |", p / pbase, median(t) / p);
        } else {
            println!("{row}");
        }
    }
    if !have_peer {
        println!("\n(no PyTorch peer: `bash tools/setup-torch.sh` installs one, or set TRAMWAY_TORCH_PYTHON)");
    }
    Ok(())
}
