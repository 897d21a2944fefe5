//! Kernel benchmark: GFLOP/s of the WGSL matmul at square and transformer shapes, against the
//! CPU's own SGEMM (matrixmultiply, one thread) measured in the same run, and time per call of
//! the other kernels at BERT-small-like shapes.
//!
//!   cargo run --release --example bench_kernels            # full (a few minutes on lavapipe)
//!   cargo run --release --example bench_kernels -- --quick # small shapes (CI smoke)
//!   cargo run --release --example bench_kernels -- --decode # only the one-row (decoding) table
//!   cargo run --release --example bench_kernels -- --layouts # each layout: vector vs scalar kernel
//!   cargo run --release --example bench_kernels -- --subgroups [TILE..] # A shared across subgroups vs plain
//!   cargo run --release --example bench_kernels -- --parity # NN / NT / TN at the MiniLM step's shapes
//!   cargo run --release --example bench_kernels -- --parity --only=up # ... only the shapes named *up*
//!
//! Each GPU figure is the median of several single-submit runs after a warm-up call (which pays
//! the driver's JIT); upload and readback are excluded. Results are checked against the CPU.

#![allow(clippy::too_many_arguments)]

use std::time::Instant;
use tramway::ops::attention::{attention, attention_backward, AttnShape, HeadView};
use tramway::ops::cross_entropy::{cross_entropy, IGNORE_INDEX};
use tramway::ops::elementwise::{activation, axpby};
use tramway::ops::embedding::{embedding, embedding_backward, EmbeddingIndex};
use tramway::ops::kl::{kl_mean, KlKind};
use tramway::ops::matmul::{matmul, matmul_with, Act, Matmul, MatmulPath};
use tramway::ops::norm::{layernorm, norm_backward, NormGrads};
use tramway::ops::reduce::{reduce, Reduction};
use tramway::ops::softmax::{softmax, SoftmaxMask};
use tramway::{Gpu, GpuOptions, Recorder, Result, Tensor};

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Part i (0 q, 1 k, 2 v) of a fused [rows, 3 * hid] QKV tensor.
fn qkv_part(t: &Tensor, i: usize, hid: usize) -> HeadView<'_> {
    HeadView { t, off: i * hid, row_stride: 3 * hid }
}

/// One timed kernel call.
type Case<'a> = Box<dyn Fn(&mut Recorder) -> Result<()> + 'a>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median seconds of `reps` runs of `f` (each one submit + wait), after one warm-up run.
fn time_gpu(gpu: &Gpu, reps: usize, f: &dyn Fn(&mut Recorder) -> Result<()>) -> Result<f64> {
    let mut r = gpu.recorder();
    f(&mut r)?;
    r.submit()?;
    gpu.wait()?;
    let mut ts = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        let mut r = gpu.recorder();
        f(&mut r)?;
        r.submit()?;
        gpu.wait()?;
        ts.push(t0.elapsed().as_secs_f64());
    }
    Ok(median(ts))
}

fn cpu_sgemm(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32]) {
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Decoding one token (K/V-cached generation): a single row through SmolLM2-sized weights, 32
/// calls per submit as in a decoding step.
fn bench_decode(gpu: &Gpu, quick: bool, reps: usize) -> Result<()> {
    let (dh, di, dv) = if quick { (128, 512, 4096) } else { (576, 1536, 49152) };
    println!("\n| one-row matmul (decoding) | m x n x k | GPU GFLOP/s | CPU sgemm GFLOP/s (1 thread) | GPU / CPU | GPU ms per call |");
    println!("|---|---|---|---|---|---|");
    bench_row(gpu, "x.W^T up/gate projection", di, dh, 32, reps)?;
    bench_row(gpu, "x.W^T down projection", dh, di, 32, reps)?;
    bench_row(gpu, "x.E^T LM head", dv, dh, 1, reps)
}

/// One row times `W^T` (`W` `[n, k]`), `calls` matmuls (distinct weights) per submit.
fn bench_row(gpu: &Gpu, name: &str, n: usize, k: usize, calls: usize, reps: usize) -> Result<()> {
    let a = data(k, 1);
    let b = data(k * n, 2);
    let at = gpu.from_f32(&a, &[1, k])?;
    let bts = (0..calls).map(|_| gpu.from_f32(&b, &[n, k])).collect::<Result<Vec<_>>>()?;
    let ct = gpu.zeros(&[1, n])?;
    let secs = time_gpu(gpu, reps, &|r| {
        bts.iter().try_for_each(|bt| matmul_with(r, &Matmul::new(&at, false, bt, true, &ct)?, MatmulPath::auto(gpu)))
    })? / calls as f64;
    let mut c = vec![0f32; n];
    let cpu_reps = 20;
    let t0 = Instant::now();
    for _ in 0..cpu_reps {
        cpu_sgemm(1, n, k, &a, false, &b, true, &mut c);
    }
    let cpu = t0.elapsed().as_secs_f64() / cpu_reps as f64;
    let flop = 2.0 * (n * k) as f64;
    println!(
        "| {name} | 1x{n}x{k} | {:.2} | {:.2} | {:.2} | {:.3} |",
        flop / secs / 1e9,
        flop / cpu / 1e9,
        cpu / secs,
        secs * 1e3
    );
    Ok(())
}

fn bench_matmul(
    gpu: &Gpu,
    name: &str,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    path: MatmulPath,
    reps: usize,
) -> Result<()> {
    let a = data(m * k, 1);
    let b = data(k * n, 2);
    let at = gpu.from_f32(&a, &if ta { [k, m] } else { [m, k] })?;
    let bt = gpu.from_f32(&b, &if tb { [n, k] } else { [k, n] })?;
    let ct = gpu.zeros(&[m, n])?;
    let secs = time_gpu(gpu, reps, &|r| matmul_with(r, &Matmul::new(&at, ta, &bt, tb, &ct)?, path))?;
    let mut c = vec![0f32; m * n];
    let t0 = Instant::now();
    let cpu_reps = reps.max(3);
    for _ in 0..cpu_reps {
        cpu_sgemm(m, n, k, &a, ta, &b, tb, &mut c);
    }
    let cpu = t0.elapsed().as_secs_f64() / cpu_reps as f64;
    let got = gpu.read_f32_blocking(&ct)?;
    let err = got.iter().zip(&c).fold(0f32, |e, (x, y)| e.max((x - y).abs()));
    let flop = 2.0 * (m * n * k) as f64;
    println!(
        "| {name} | {path:?} | {m}x{n}x{k} | {:.2} | {:.1} | {:.2} | {:.3} | {:.1e} |",
        flop / secs / 1e9,
        flop / cpu / 1e9,
        cpu / secs,
        secs * 1e3,
        err
    );
    Ok(())
}

/// `--layouts`: each layout a transformer step uses (NN forward x·W and backward dY·W, TN
/// dW = Xᵀ·dY, NT x·Wᵀ) on the register path with its vector kernel (vec4 along n for NN/TN,
/// along k for NT) against the scalar kernel, on two devices of the same adapter, interleaved
/// call by call (5 rounds, medians).
fn bench_layouts(gpu: &Gpu, quick: bool) -> Result<()> {
    let scalar = Gpu::new_blocking(GpuOptions { scalar_matmul: true, ..GpuOptions::from_env()? })?;
    let (t, h, f) = if quick { (256, 128, 512) } else { (192, 384, 1536) };
    println!("\n| layout | m x n x k | vector kernel GFLOP/s | scalar kernel GFLOP/s | speed-up |");
    println!("|---|---|---|---|---|");
    let shapes = [
        ("NN x.W (up)", t, f, h, false, false),
        ("NN dX = dY.W (down)", t, h, f, false, false),
        ("TN dW = x^T.dY", h, f, t, true, false),
        ("NT x.W^T (HF layout)", t, f, h, false, true),
    ];
    for (name, m, n, k, ta, tb) in shapes {
        let (a, b) = (data(m * k, 1), data(k * n, 2));
        let run = |g: &Gpu| -> Result<f64> {
            let at = g.from_f32(&a, &if ta { [k, m] } else { [m, k] })?;
            let bt = g.from_f32(&b, &if tb { [n, k] } else { [k, n] })?;
            let ct = g.zeros(&[m, n])?;
            time_gpu(g, 1, &|r| matmul_with(r, &Matmul::new(&at, ta, &bt, tb, &ct)?, MatmulPath::Register))
        };
        let (mut tv, mut ts) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            tv.push(run(gpu)?);
            ts.push(run(&scalar)?);
        }
        let (tv, ts) = (median(tv), median(ts));
        let flop = 2.0 * (m * n * k) as f64;
        println!("| {name} | {m}x{n}x{k} | {:.2} | {:.2} | {:.2} |", flop / tv / 1e9, flop / ts / 1e9, ts / tv);
    }
    Ok(())
}

/// `--rounds=N` (a positive number; 5 when absent).
fn rounds_flag() -> Result<usize> {
    match std::env::args().find_map(|a| a.strip_prefix("--rounds=").map(str::to_string)) {
        Some(r) => r.parse().ok().filter(|&n: &usize| n > 0).ok_or(tramway::Error::BadSetting {
            name: "--rounds",
            value: r,
            expected: "a positive number".into(),
        }),
        None => Ok(5),
    }
}

/// `--subgroups [TMxTNxWGXxWGY ...] [--against=TILE] [--rounds=N]`: the register kernels that
/// share A across a subgroup (their default tile, or each tile given) against the plain register
/// kernels (8x4 in 8x8), or against the subgroup kernels at another tile, on two devices of the
/// same adapter, interleaved call by call (N rounds, default 5, of 3 calls each; medians of the
/// times and of the per-round ratios), results compared element by element.
fn bench_subgroups(gpu: &Gpu) -> Result<()> {
    let Some(size) = gpu.subgroup_rows() else {
        println!("this adapter's subgroups are not workgroup rows: the subgroup kernels do not run here");
        return Ok(());
    };
    let parse = |a: String| -> Result<Option<[u32; 4]>> {
        let v: Vec<u32> = a.split('x').filter_map(|x| x.parse().ok()).collect();
        match v[..] {
            [tm, tn, wx, wy] => Ok(Some([tm, tn, wx, wy])),
            _ => Err(tramway::Error::BadSetting { name: "tile", value: a, expected: "TMxTNxWGXxWGY".into() }),
        }
    };
    let mut tiles: Vec<Option<[u32; 4]>> =
        std::env::args().skip(1).filter(|a| !a.starts_with('-')).map(parse).collect::<Result<_>>()?;
    let flag = |name: &str| std::env::args().find_map(|a| a.strip_prefix(name).map(str::to_string));
    let against = flag("--against=").map(parse).transpose()?.flatten();
    if let Some(a) = std::env::args().find(|a| a == "--against" || a == "--rounds") {
        let expected = format!("{a}=VALUE (one argument)");
        return Err(tramway::Error::BadSetting { name: "flag", value: a, expected });
    }
    let rounds = rounds_flag()?;
    if tiles.is_empty() {
        tiles.push(None);
    }
    let (t, h, f) = (192, 384, 1536);
    let shapes = [
        ("NN x.W (up)", t, f, h, false, false),
        ("NN dX = dY.W (down)", t, h, f, false, false),
        ("TN dW = x^T.dY", h, f, t, true, false),
        ("NT x.W^T (HF layout)", t, f, h, false, true),
        ("NN up, 2048 rows", 2048, f, h, false, false),
        ("NT up, 2048 rows", 2048, f, h, false, true),
        ("NN odd sizes", 77, 36, 1003, false, false),
    ];
    let plain = match against {
        None => Gpu::new_blocking(GpuOptions { no_subgroup_matmul: true, ..GpuOptions::from_env()? })?,
        Some(t) => Gpu::new_blocking(GpuOptions { matmul_tile: Some(t), ..GpuOptions::from_env()? })?,
    };
    let reference = match against {
        None => format!("the plain kernels (tile {:?})", tramway::ops::matmul::tile(&plain)),
        Some(t) => format!("the subgroup kernels at tile {}x{}", t[0], t[1]),
    };
    for tile in tiles {
        let g = Gpu::new_blocking(GpuOptions { matmul_tile: tile, ..GpuOptions::from_env()? })?;
        // The override sets rows and column groups; the workgroup keeps the probed shape.
        let sub = tramway::ops::matmul::SUBGROUP_TILE;
        let k4 = tramway::ops::matmul::SUBGROUP_TILE_K4;
        let shape = match tile {
            Some(t) => format!("tile {}x{}", t[0], t[1]),
            None => {
                format!("tiles {}x{} (B along n), {}x{} (both along k; column groups of 4)", sub.0, sub.1, k4.0, k4.1)
            }
        };
        println!("\nsubgroup kernels, {shape} in {size}x{} workgroups, against {reference}, {rounds} rounds", sub.2);
        println!("\n| layout | m x n x k | reference GFLOP/s | subgroup GFLOP/s | speed-up | max abs difference |");
        println!("|---|---|---|---|---|---|");
        for (name, m, n, k, ta, tb) in shapes {
            let (a, b) = (data(m * k, 1), data(k * n, 2));
            let run = |gpu: &Gpu| -> Result<(f64, Vec<f32>)> {
                let at = gpu.from_f32(&a, &if ta { [k, m] } else { [m, k] })?;
                let bt = gpu.from_f32(&b, &if tb { [n, k] } else { [k, n] })?;
                let ct = gpu.zeros(&[m, n])?;
                let t = time_gpu(gpu, 3, &|r| matmul(r, &Matmul::new(&at, ta, &bt, tb, &ct)?))?;
                Ok((t, gpu.read_f32_blocking(&ct)?))
            };
            let (mut t0, mut t1, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
            let mut err = 0f32;
            for _ in 0..rounds {
                let (x, c0) = run(&plain)?;
                let (y, c1) = run(&g)?;
                err = err.max(c0.iter().zip(&c1).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max));
                t0.push(x);
                t1.push(y);
                ratio.push(x / y);
            }
            let flop = 2.0 * (m * n * k) as f64;
            println!(
                "| {name} | {m}x{n}x{k} | {:.2} | {:.2} | {:.2} | {err:.1e} |",
                flop / median(t0) / 1e9,
                flop / median(t1) / 1e9,
                median(ratio)
            );
        }
    }
    Ok(())
}

/// `--parity [--rounds=N]`: the three layouts (NN, NT, TN) at each shape an all-MiniLM-L6-v2
/// step (batch 8 x 24 tokens) runs, on the path this adapter takes, each layout as a share of
/// the best at its shape, with the layouts the step uses there marked (the fused-QKV rows are
/// the shapes of a model with one QKV weight, as GPT-2's `c_attn`; MiniLM runs q, k and v as
/// three 384-wide products, the `q, k, v, out` rows). The attention shapes are batched over 8
/// sequences x 12 heads (contiguous here; strided views of the fused QKV in the model).
///
/// N rounds (default 5); a round runs every shape and layout in turn, 3 submits each of enough
/// calls for ~200 MFLOP, and a layout's rate is its fastest round: on a shared VM contention
/// only slows a round, and medians of rounds swung 20 % between layouts that the fastest rounds
/// put level. Every call reads operands that are not in the cores' caches, as in a step (a
/// benchmark that repeats one product on the same operands measured x·Wᵀ kernels 1.35x apart
/// that were within a few percent of each other in a training step, BENCHMARKS.md).
fn bench_parity(gpu: &Gpu) -> Result<()> {
    let rounds = rounds_flag()?;
    // (what, batch, m, n, k, layouts the step uses at this shape)
    // The last two rows are not the step's: NN with B's 64-column workgroup panel contiguous
    // (n = 64) and with its rows 6 KB apart (n = 1536), at the same m and k. NN ran 1.1x NT
    // at the first and 0.74x at the second before the column-panel order and the prefetch of
    // B's panel (1.0-1.05x and 0.85-0.89x since): what NN loses there is the strided walk down
    // a wide B from memory, not arithmetic (BENCHMARKS.md).
    let shapes: [(&str, usize, usize, usize, usize, &str); 14] = [
        ("fused QKV x.Wt", 1, 192, 1152, 384, "NT"),
        ("fused QKV dX", 1, 192, 384, 1152, "NN"),
        ("fused QKV dW", 1, 1152, 384, 192, "TN"),
        ("q, k, v, out x.Wt, dX", 1, 192, 384, 384, "NT NN"),
        ("q, k, v, out dW", 1, 384, 384, 192, "TN"),
        ("up x.Wt, down dX", 1, 192, 1536, 384, "NT NN"),
        ("down x.Wt, up dX", 1, 192, 384, 1536, "NT NN"),
        ("up dW", 1, 1536, 384, 192, "TN"),
        ("down dW", 1, 384, 1536, 192, "TN"),
        ("up x.Wt, 2048 rows", 1, 2048, 1536, 384, "NT"),
        ("Q.Kt, dO.Vt", 96, 24, 24, 32, "NT"),
        ("P.V, dS.K, Pt.dO, dSt.Q", 96, 24, 32, 24, "NN TN"),
        ("B panel contiguous (not the step's)", 1, 192, 64, 1536, ""),
        ("B rows 6 KB apart (not the step's)", 1, 192, 1536, 1536, ""),
    ];
    let layouts = [("NN", false, false), ("NT", false, true), ("TN", true, false)];
    // `--only=TEXT`: the shapes whose name contains TEXT (a tile sweep at one shape).
    let only = std::env::args().find_map(|a| a.strip_prefix("--only=").map(str::to_string));
    let shapes: Vec<_> =
        shapes.into_iter().filter(|s| only.as_ref().is_none_or(|o| s.0.contains(o.as_str()))).collect();
    // Operands as a training step meets them: not in the cores' caches. Each call takes the
    // next of a shape's sets of A, B and C (together 64 MiB, beyond this VM's 2 x 1 MiB L2 and
    // its 32 MiB L3), so no call finds its operands where an earlier call left them. The three
    // layouts read the same buffers (only the views differ: the values do not matter here).
    let mut sets: Vec<Vec<(Tensor, Tensor, Tensor)>> = Vec::new();
    for &(_, batch, m, n, k, _) in &shapes {
        let set_bytes = 4 * batch * (m * k + k * n + m * n);
        let copies = (64usize << 20).div_ceil(set_bytes).clamp(2, 64);
        let (a, b) = (data(batch * m * k, 1), data(batch * k * n, 2));
        sets.push(
            (0..copies)
                .map(|_| {
                    Ok((
                        gpu.from_f32(&a, &[batch * m * k])?,
                        gpu.from_f32(&b, &[batch * k * n])?,
                        gpu.zeros(&[batch, m, n])?,
                    ))
                })
                .collect::<Result<_>>()?,
        );
    }
    let next = std::cell::Cell::new(0usize);
    // times[shape][layout]: seconds a call, one entry a round. A round runs every shape and
    // layout in turn, so that each shape's rounds are spread over the whole run: the VM's slow
    // phases last minutes, and rounds taken back to back at one shape could all fall in one.
    let mut times = vec![vec![Vec::new(); layouts.len()]; shapes.len()];
    for _ in 0..rounds {
        for (si, &(_, batch, m, n, k, _)) in shapes.iter().enumerate() {
            let flop = 2.0 * (batch * m * n * k) as f64;
            // Calls per submit: at least ~200 MFLOP a submit, so that the submit and wait (a few
            // tenths of a millisecond) do not hide the kernels of the small attention products (a
            // millisecond each), which in a step run inside one long submit.
            let calls = (2e8 / flop).ceil().clamp(1.0, 32.0) as usize;
            for (li, &(_, ta, tb)) in layouts.iter().enumerate() {
                let shape_a = if ta { [batch, k, m] } else { [batch, m, k] };
                let shape_b = if tb { [batch, n, k] } else { [batch, k, n] };
                let t = time_gpu(gpu, 3, &|r| {
                    for _ in 0..calls {
                        let (at, bt, ct) = &sets[si][next.get() % sets[si].len()];
                        next.set(next.get() + 1);
                        matmul(r, &Matmul::new(&at.reshape(&shape_a)?, ta, &bt.reshape(&shape_b)?, tb, ct)?)?;
                    }
                    Ok(())
                })?;
                times[si][li].push(t / calls as f64);
            }
        }
    }
    println!("\nlayouts at the MiniLM step's shapes, {:?} path, {rounds} rounds", MatmulPath::auto(gpu));
    println!("\n| shape | batch x m x n x k | NN GFLOP/s | NT GFLOP/s | TN GFLOP/s | used by the step | slowest used / best |");
    println!("|---|---|---|---|---|---|---|");
    let mut worst = f64::INFINITY;
    for (&(what, batch, m, n, k, used), ts) in shapes.iter().zip(&times) {
        let flop = 2.0 * (batch * m * n * k) as f64;
        let rate: Vec<f64> = ts.iter().map(|t| flop / t.iter().cloned().fold(f64::INFINITY, f64::min) / 1e9).collect();
        let best = rate.iter().cloned().fold(0.0, f64::max);
        let slowest_used = layouts
            .iter()
            .zip(&rate)
            .filter(|((name, _, _), _)| used.split(' ').any(|u| u == *name))
            .map(|(_, r)| r / best)
            .fold(f64::INFINITY, f64::min);
        worst = worst.min(slowest_used);
        // A probe row (no layout of the step): NN as a share of NT instead.
        let share =
            if used.is_empty() { format!("NN / NT {:.2}", rate[0] / rate[1]) } else { format!("{slowest_used:.2}") };
        println!(
            "| {what} | {batch}x{m}x{n}x{k} | {:.2} | {:.2} | {:.2} | {used} | {share} |",
            rate[0], rate[1], rate[2]
        );
    }
    println!("\nslowest layout the step uses, as a share of the best layout at its shape: {worst:.2}");
    Ok(())
}

/// Errors as their message (`error: ...`, exit status 1), not Rust's debug form.
fn main() -> std::process::ExitCode {
    tramway::error::exit_code(run())
}

fn run() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--decode`: only the one-row (decoding) table, at full size.
    let decode_only = std::env::args().any(|a| a == "--decode");
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let info = gpu.adapter_info();
    let tile = tramway::ops::matmul::tile(&gpu);
    println!("adapter: {} ({:?}, {}), matmul tile {:?}", info.name, info.backend, info.driver_info, tile);
    let reps = if quick { 2 } else { 3 };
    if decode_only {
        return bench_decode(&gpu, false, reps);
    }
    if std::env::args().any(|a| a == "--subgroups") {
        return bench_subgroups(&gpu);
    }
    if std::env::args().any(|a| a == "--parity") {
        return bench_parity(&gpu);
    }
    if std::env::args().any(|a| a == "--layouts") {
        return bench_layouts(&gpu, quick);
    }
    println!("\n| matmul | kernel | m x n x k | GPU GFLOP/s | CPU sgemm GFLOP/s (1 thread) | GPU / CPU | GPU ms | max abs err |");
    println!("|---|---|---|---|---|---|---|---|");
    let auto = MatmulPath::auto(&gpu);
    let other = if auto == MatmulPath::Register { MatmulPath::Tiled } else { MatmulPath::Register };
    let sq: &[usize] = if quick { &[128, 256] } else { &[256, 512, 1024] };
    for &s in sq {
        bench_matmul(&gpu, "NN square", s, s, s, false, false, auto, reps)?;
    }
    let (t, h, f) = if quick { (256, 128, 512) } else { (2048, 384, 1536) };
    bench_matmul(&gpu, "NN up-projection", t, f, h, false, false, auto, reps)?;
    bench_matmul(&gpu, "NN down-projection", t, h, f, false, false, auto, reps)?;
    bench_matmul(&gpu, "NT x.W^T (HF layout)", t, f, h, false, true, auto, reps)?;
    bench_matmul(&gpu, "TN dW = x^T.dy", h, f, t, true, false, auto, reps)?;
    // The other kernel family at one shape, for comparison.
    bench_matmul(&gpu, "NT x.W^T (HF layout)", t, f, h, false, true, other, reps)?;
    bench_decode(&gpu, quick, reps)?;

    // Other kernels at one BERT-small-like batch: 16 sequences of 128 tokens, hidden 384,
    // 12 heads, vocabulary 30522.
    let (b, s, hid, heads) = if quick { (2, 32, 128, 4) } else { (16, 128, 384, 12) };
    let rows = b * s;
    let x = gpu.from_f32(&data(rows * hid, 3), &[rows, hid])?;
    let y = gpu.zeros(&[rows, hid])?;
    // The incoming gradient of the norm backward: its own tensor (one tensor bound as two
    // writable inputs is refused, as browsers do).
    let dy = gpu.from_f32(&data(rows * hid, 11), &[rows, hid])?;
    let g = gpu.from_f32(&vec![1.0; hid], &[hid])?;
    let be = gpu.zeros(&[hid])?;
    let (mean, rstd) = (gpu.zeros(&[rows])?, gpu.zeros(&[rows])?);
    let (dg, db) = (gpu.zeros(&[hid])?, gpu.zeros(&[hid])?);
    let big = gpu.from_f32(&data(rows * 4 * hid, 4), &[rows, 4 * hid])?;
    let big2 = gpu.zeros(&[rows, 4 * hid])?;
    let shape = AttnShape { batch: b, seq: s, heads, head_dim: hid / heads };
    let qkv = gpu.from_f32(&data(rows * 3 * hid, 5), &[rows, 3 * hid])?;
    let dqkv = gpu.zeros(&[rows, 3 * hid])?;
    let probs = gpu.zeros(&[b * heads * s * s])?;
    let mask = gpu.from_u32(&vec![1; b * s], &[b * s])?;
    let view = |t, i| qkv_part(t, i, hid);
    let scores = gpu.from_f32(&data(b * heads * s * s, 11), &[b * heads * s, s])?;
    let probs2 = probs.reshape(&[b * heads * s, s])?;
    let vocab = if quick { 1000 } else { 30522 };
    let ids: Vec<u32> = (0..rows as u32).map(|i| (i * 7919) % vocab as u32).collect();
    let idt = gpu.from_u32(&ids, &[rows])?;
    let index = EmbeddingIndex::upload(&gpu, &ids, vocab)?;
    let wte = gpu.from_f32(&data(vocab * hid, 6), &[vocab, hid])?;
    let dwte = gpu.zeros(&[vocab, hid])?;
    let classes = 1000;
    let logits = gpu.from_f32(&data(rows * classes, 7), &[rows, classes])?;
    let logits2 = gpu.from_f32(&data(rows * classes, 8), &[rows, classes])?;
    let dlogits = gpu.zeros(&[rows, classes])?;
    let targets = gpu.from_u32(
        &ids.iter().map(|&i| if i % 10 == 0 { IGNORE_INDEX } else { i % classes as u32 }).collect::<Vec<_>>(),
        &[rows],
    )?;
    let out = gpu.zeros(&[4])?;
    let params_n = if quick { 1 << 20 } else { 22_000_000 };
    let params = gpu.from_f32(&data(params_n, 9), &[params_n])?;
    let grads = gpu.from_f32(&data(params_n, 10), &[params_n])?;
    let scale = 1.0 / ((hid / heads) as f32).sqrt();

    println!("\n| kernel | shape | ms per call |");
    println!("|---|---|---|");
    let cases: Vec<(&str, String, Case)> = vec![
        (
            "layernorm forward",
            format!("{rows}x{hid}"),
            Box::new(|r| layernorm(r, &x, &g, &be, &y, &mean, &rstd, 1e-12)),
        ),
        (
            "layernorm backward (dx, dgamma, dbeta)",
            format!("{rows}x{hid}"),
            Box::new(|r| {
                norm_backward(
                    r,
                    &x,
                    &g,
                    &dy,
                    Some(&mean),
                    &rstd,
                    &NormGrads { dx: &y, accumulate_dx: false, dgamma: Some(&dg), dbeta: Some(&db) },
                )
            }),
        ),
        ("gelu (erf) forward", format!("{rows}x{}", 4 * hid), Box::new(|r| activation(r, &big, &big2, Act::GeluErf))),
        ("axpy", format!("{rows}x{}", 4 * hid), Box::new(|r| axpby(r, 0.5, &big, 1.0, &big2))),
        (
            "attention forward (QK^T, masked softmax, PV)",
            format!("b{b} t{s} h{heads} d{}", hid / heads),
            Box::new(|r| {
                attention(
                    r,
                    &shape,
                    view(&qkv, 0),
                    view(&qkv, 1),
                    view(&qkv, 2),
                    HeadView::dense(&y, &shape),
                    &probs,
                    Some(&mask),
                    false,
                    scale,
                )
            }),
        ),
        (
            "attention backward (dQ, dK, dV)",
            format!("b{b} t{s} h{heads} d{}", hid / heads),
            Box::new(|r| {
                attention_backward(
                    r,
                    &shape,
                    view(&qkv, 0),
                    view(&qkv, 1),
                    view(&qkv, 2),
                    &probs,
                    HeadView::dense(&y, &shape),
                    view(&dqkv, 0),
                    view(&dqkv, 1),
                    view(&dqkv, 2),
                    scale,
                    false,
                )
            }),
        ),
        (
            "softmax (scores)",
            format!("{}x{s}", b * heads * s),
            Box::new(|r| softmax(r, &scores, &probs2, 1.0, &SoftmaxMask::none())),
        ),
        (
            "cross-entropy loss + dlogits",
            format!("{rows}x{classes}"),
            Box::new(|r| cross_entropy(r, &logits, &targets, &out, Some(&dlogits), IGNORE_INDEX, 1.0)),
        ),
        (
            "KL mean (forward)",
            format!("{rows}x{classes}"),
            Box::new(|r| kl_mean(r, &logits, &logits2, &out, 2, KlKind::Forward, 1.0, None)),
        ),
        ("embedding gather", format!("{rows} ids, {vocab}x{hid}"), Box::new(|r| embedding(r, &wte, &idt, &y))),
        (
            "embedding backward (scatter-add)",
            format!("{rows} ids, {vocab}x{hid}"),
            Box::new(|r| embedding_backward(r, &y, &index, &dwte)),
        ),
        (
            "global L2 norm",
            format!("{params_n}"),
            Box::new(|r| reduce(r, &[&params], Reduction::L2Norm, 1.0, &out, 3, false)),
        ),
        ("axpy over all parameters", format!("{params_n}"), Box::new(|r| axpby(r, -1e-3, &grads, 1.0, &params))),
    ];
    for (name, shape, f) in &cases {
        let secs = time_gpu(&gpu, reps, f.as_ref())?;
        println!("| {name} | {shape} | {:.3} |", secs * 1e3);
    }
    Ok(())
}
