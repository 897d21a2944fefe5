//! Every pipeline the engine creates, translated for every platform: a device of its own runs
//! what users run — fine-tuning of each model family's fixture with every optimizer (and
//! evaluation), embedding, perplexity, K/V-cached greedy and sampled decoding, matmuls of ragged
//! sizes (the scalar kernel), and the
//! split-table paths of a device with a small binding limit — then each compiled
//! (shader, constants) variant is validated by naga, checked against WebGPU's default limits
//! and Apple's buffer count, and written as SPIR-V, GLSL ES 3.1, MSL and HLSL
//! (`gpu::translate`); where spirv-val and glslangValidator are installed, the SPIR-V and GLSL
//! are validated by them. `TRAMWAY_SHADERS_OUT=DIR` keeps the translations in DIR.

use super::encoder::fixture;
use super::guarantees::{text_data, word_tokenizer};
use std::path::{Path, PathBuf};
use std::process::Command;
use tramway::gpu::translate::{translate, PortableLimits};
use tramway::gpu::{Gpu, GpuOptions, KernelSpec};
use tramway::ops::kl::KlKind;
use tramway::optim::{Base, KlNorm, Method, OptimConfig, Schedule, TramRef};
use tramway::train::{finetune, FinetuneOptions, TaskKind};

/// Every optimizer configuration a user can choose, with the variants that change kernels
/// (KL direction, noise distribution, non-adaptive TRAM, SGD).
fn methods() -> Vec<(Base, Method)> {
    let tram = |reference, adaptive, kl| Method::Tram { reference, adaptive, kl, kl_norm: KlNorm::Mean, tr_scale: 1.0 };
    let noise = TramRef::Noise { std: 0.1, uniform: false };
    let adamw = Base::adamw();
    let sgd = Base::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.01 };
    vec![
        (adamw, Method::Plain),
        (sgd, Method::Plain),
        (adamw, Method::Sam { rho: 0.05 }),
        (sgd, Method::Sam { rho: 0.05 }),
        (adamw, Method::Asam { rho: 0.5, eta: 0.01 }),
        (adamw, Method::Fsam { gamma: 0.1, eta: 0.1 }),
        (adamw, tram(noise, true, KlKind::Forward)),
        (adamw, tram(TramRef::Noise { std: 0.1, uniform: true }, false, KlKind::Reverse)),
        (adamw, tram(noise, true, KlKind::Symmetric)),
        (adamw, tram(TramRef::Params { ema_decay: 0.0 }, true, KlKind::Forward)),
        (adamw, tram(TramRef::Params { ema_decay: 1.0 }, true, KlKind::Forward)),
        (adamw, tram(TramRef::Params { ema_decay: 0.5 }, true, KlKind::Forward)),
        (adamw, Method::TramFisher { gamma: 0.1, eta: 0.1, std: 0.1, uniform: false }),
        (adamw, Method::R3f { lambda: 0.1, std: 0.1, uniform: false, kl: KlKind::Symmetric }),
        (adamw, Method::TrustRegion { lambda: 0.1, ema_decay: 0.0 }),
        (adamw, Method::TrustRegion { lambda: 0.1, ema_decay: 0.999 }),
    ]
}

/// A model folder and its training and evaluation data, per family.
fn family(dir: &Path, name: &str) -> (TaskKind, PathBuf, PathBuf, Option<usize>) {
    let model = dir.join(name);
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(name).join("model").join(f), model.join(f)).unwrap();
    }
    match name {
        "vit" | "dinov2" => {
            let train = super::finetune::write_idx(dir, &format!("{name}-train"), 8, 8, false);
            (TaskKind::ImageClassification, model, train, Some(if name == "vit" { 12 } else { 16 }))
        }
        "gpt2" | "llama" | "llama_tied" => {
            std::fs::write(model.join("tokenizer.json"), word_tokenizer(150)).unwrap();
            let text: Vec<String> = (0..120).map(|i| format!("w{}", (3 + 7 * i) % 150)).collect();
            let train = dir.join(format!("{name}.txt"));
            std::fs::write(&train, text.join(" ")).unwrap();
            (TaskKind::CausalLm, model, train, None)
        }
        _ => {
            let vocab = if name == "roberta" { 97 } else { 99 };
            std::fs::write(model.join("tokenizer.json"), word_tokenizer(vocab)).unwrap();
            let train = dir.join(format!("{name}.csv"));
            // Class indices: they fit the fixtures' heads (no re-initialisation note).
            text_data(&train, 8, ["0", "1"]);
            (TaskKind::TextClassification, model, train, None)
        }
    }
}

/// Matmuls of ragged sizes (the scalar kernel: no dimension a multiple of 4), each transpose.
fn ragged_matmuls(gpu: &Gpu) {
    use tramway::ops::matmul::{matmul, Act, Matmul};
    let (m, n, k) = (7, 5, 3);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = gpu.zeros(&if ta { [k, m] } else { [m, k] }).unwrap();
        let b = gpu.zeros(&if tb { [n, k] } else { [k, n] }).unwrap();
        let c = gpu.zeros(&[m, n]).unwrap();
        let mut rec = gpu.recorder();
        matmul(&mut rec, &Matmul::new(&a, ta, &b, tb, &c).unwrap().act(Act::GeluErf)).unwrap();
        rec.submit().unwrap();
    }
}

/// Both softmax paths (a workgroup per row for GPUs, an invocation per row for CPU drivers;
/// the device runs one of them) with each mask, forward and backward.
fn softmax_paths(gpu: &Gpu) {
    use tramway::ops::softmax::{softmax_backward_with, softmax_with, SoftmaxMask, SoftmaxPath};
    let (rows, t) = (2 * 3, 3);
    let (x, y, dx) = (gpu.zeros(&[rows, t]).unwrap(), gpu.zeros(&[rows, t]).unwrap(), gpu.zeros(&[rows, t]).unwrap());
    let mask = gpu.from_u32(&[1; 2 * 3], &[2 * 3]).unwrap();
    for path in [SoftmaxPath::Workgroup, SoftmaxPath::Row] {
        for (with_mask, causal) in [(false, false), (true, false), (false, true), (true, true)] {
            let m = SoftmaxMask { mask: with_mask.then_some(&mask), causal, tq: t, heads: 1 };
            let mut rec = gpu.recorder();
            softmax_with(&mut rec, &x, &y, 1.0, &m, path).unwrap();
            softmax_backward_with(&mut rec, &y, &x, &dx, 1.0, path).unwrap();
            rec.submit().unwrap();
        }
    }
}

/// Fine-tuning steps (batches of `batch`, `max_len` tokens) of every family with every optimizer, then evaluation; decoding,
/// perplexity and embedding. On `gpu`.
fn workload(gpu: &Gpu, dir: &Path, families: &[&str], methods: &[(Base, Method)], batch: usize, max_len: usize) {
    for name in families {
        let (task, model, train, image_size) = family(dir, name);
        for (k, (base, method)) in methods.iter().enumerate() {
            let o = FinetuneOptions {
                task,
                model: model.clone(),
                train: train.clone(),
                evals: vec![("dev".into(), train.clone())],
                text_column: "text".into(),
                label_column: "label".into(),
                optim: OptimConfig {
                    base: *base,
                    method: *method,
                    lr: 1e-3,
                    schedule: Schedule::Linear { warmup: 1, total: 2 },
                    clip: Some(1.0),
                    seed: 1,
                },
                batch_size: batch,
                steps: Some(2),
                epochs: 1.0,
                max_len,
                eval_every: 0,
                save_every: 0,
                log_every: 1,
                max_eval: Some(4),
                eval_batch_size: None,
                image_size,
                save_final: false,
                out: dir.join(format!("out-{name}-{k}")),
                resume: None,
                metrics: None,
                progress: false,
                profile: None,
                lora: None,
                merge: false,
                freeze_base: false,
            };
            finetune(gpu, &o).unwrap_or_else(|e| panic!("{name} {method:?}: {e}"));
        }
        if task == TaskKind::CausalLm {
            use tramway::train::lm::{generate, perplexity, CausalLm, Sampling};
            let lm = CausalLm::load(gpu, &model, 0).unwrap();
            let prompt: Vec<u32> = (0..70).map(|i| (i * 7 % 150) as u32).collect();
            // A prompt read as one chunk, then single tokens; greedy and sampled.
            let s = Sampling { temperature: 1.0, top_k: 20, top_p: 0.9, seed: 3 };
            for sampling in [Sampling { temperature: 0.0, ..s }, s] {
                let short: Vec<u32> = prompt[..10].to_vec();
                generate(gpu, &lm, &short, 4, &[], &sampling).unwrap();
            }
            perplexity(gpu, &lm, &prompt, max_len, 2).unwrap();
        }
        if task == TaskKind::TextClassification {
            use tramway::models::encoder::{Encoder, Pooling};
            let cfg = tramway::models::encoder::read_encoder_config(&model).unwrap();
            let enc = Encoder::load(gpu, cfg, &tramway::io::hf::read_weights(&model).unwrap(), 0).unwrap();
            let tok = tramway::data::text::TextTokenizer::from_dir(&model, 16, 0).unwrap();
            let b = tok.encode(&["w1 w2 w3", "w4"]).unwrap();
            for (pooling, normalize) in [(Pooling::Mean, true), (Pooling::Cls, false)] {
                pollster::block_on(enc.embed(gpu, &b, pooling, normalize)).unwrap();
            }
        }
    }
}

#[test]
fn every_pipeline_translates_to_every_platform() {
    let dir = std::env::temp_dir().join(format!("tramway-portability-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let families = ["bert", "roberta", "vit", "dinov2", "gpt2", "llama", "llama_tied"];
    let gpu = Gpu::new_blocking(GpuOptions::from_env().unwrap()).unwrap();
    workload(&gpu, &dir, &families, &methods(), 4, 16);
    ragged_matmuls(&gpu);
    softmax_paths(&gpu);
    // Split tables: a device that stores the embedding tables as several row blocks (their
    // gather, scatter and tied head run per block).
    let mut others = Vec::new();
    for (bytes, names) in [(8192, &["bert"][..]), (16384, &["gpt2", "llama_tied"][..])] {
        let small =
            Gpu::new_blocking(GpuOptions { max_binding: Some(bytes), ..GpuOptions::from_env().unwrap() }).unwrap();
        workload(&small, &dir, names, &methods()[..3], 2, 8);
        others.extend(small.kernel_specs());
    }
    // The workgroup-tiled matmul family, which a real GPU chooses.
    let tiled = Gpu::new_blocking(GpuOptions { tiled_matmul: Some(true), ..GpuOptions::from_env().unwrap() }).unwrap();
    workload(&tiled, &dir, &families, &methods()[..1], 4, 16);
    // The plain register-blocked matmuls, where the device shares A across subgroups (lavapipe).
    let plain = Gpu::new_blocking(GpuOptions {
        tiled_matmul: Some(false),
        no_subgroup_matmul: true,
        ..GpuOptions::from_env().unwrap()
    })
    .unwrap();
    workload(&plain, &dir, &families, &methods()[..1], 4, 16);
    let mut specs: Vec<KernelSpec> = gpu.kernel_specs();
    for s in others.into_iter().chain(tiled.kernel_specs()).chain(plain.kernel_specs()) {
        if !specs.contains(&s) {
            specs.push(s);
        }
    }
    let out = std::env::var_os("TRAMWAY_SHADERS_OUT").map(PathBuf::from).unwrap_or(dir.join("shaders"));
    std::fs::create_dir_all(&out).unwrap();
    let limits = PortableLimits::default();
    let mut failures = Vec::new();
    let mut shaders = std::collections::BTreeSet::new();
    let mut stems = Vec::new();
    for spec in &specs {
        shaders.insert(spec.shader);
        match translate(spec, &limits) {
            Ok(t) => {
                assert!(!t.spirv.is_empty() && t.spirv[0] == 0x0723_0203, "{}: SPIR-V magic", t.label);
                assert!(t.subgroups || t.glsl.contains("void main()"), "{}: GLSL entry", t.label);
                assert!(t.msl.contains("kernel void"), "{}: MSL kernel", t.label);
                assert!(t.hlsl.contains("[numthreads("), "{}: HLSL entry", t.label);
                t.write(spec, &out).unwrap();
                stems.push((out.join(t.stem(spec)), t.subgroups));
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    println!("{} pipelines from {} shader files translated to SPIR-V, GLSL, MSL and HLSL", specs.len(), shaders.len());
    assert!(failures.is_empty(), "{} of {} pipelines failed:\n{}", failures.len(), specs.len(), failures.join("\n"));
    // The limit checks can fail: a spec with six storage buffers against a limit of five.
    let six = specs.iter().find(|s| s.storage == 6).expect("a six-buffer kernel (layernorm)");
    let tight = PortableLimits { storage_buffers: 5, ..limits };
    let e = translate(six, &tight).unwrap_err().to_string();
    assert!(e.contains("storage buffers") && e.contains("6"), "{e}");
    // The Khronos validators on the SPIR-V and GLSL, where installed (CI installs them and sets
    // TRAMWAY_REQUIRE_TOOLS=1).
    let require = std::env::var("TRAMWAY_REQUIRE_TOOLS").as_deref() == Ok("1");
    // Subgroup kernels are SPIR-V 1.3 (Vulkan 1.1) and have no GLSL.
    for (tool, ext, args, args_sg) in [
        ("spirv-val", "spv", &["--target-env", "vulkan1.0"][..], Some(&["--target-env", "vulkan1.1"][..])),
        ("glslangValidator", "comp", &[][..], None),
    ] {
        if Command::new(tool).arg("--version").output().is_err() {
            assert!(!require, "{tool} is not installed (TRAMWAY_REQUIRE_TOOLS=1)");
            println!("{tool} not installed: its check skipped");
            continue;
        }
        let mut bad = Vec::new();
        let mut n = 0;
        for (stem, subgroups) in &stems {
            let args = match (subgroups, args_sg) {
                (false, _) => args,
                (true, Some(a)) => a,
                (true, None) => {
                    n += 1;
                    continue;
                }
            };
            let p = PathBuf::from(format!("{}.{ext}", stem.display()));
            n += 1;
            let r = Command::new(tool).args(args).arg(&p).output().unwrap();
            if !r.status.success() {
                bad.push(format!(
                    "{}: {}{}",
                    p.display(),
                    String::from_utf8_lossy(&r.stdout),
                    String::from_utf8_lossy(&r.stderr)
                ));
            }
        }
        assert_eq!(n, specs.len(), "{tool}: one file per pipeline");
        assert!(bad.is_empty(), "{tool} refused {} of {n}:\n{}", bad.len(), bad.join("\n"));
        println!("{tool}: {n} files valid");
    }
    // The workload reached every shader file the engine has (a file it missed would go untranslated).
    let all = [
        "matmul",
        "matmul_k4",
        "matmul_n4",
        "matmul_tiled",
        "elementwise",
        "activation",
        "layernorm",
        "softmax",
        "cross_entropy",
        "embedding",
        "reduce",
        "reduce4",
        "rng",
        "patch",
        "optim",
        "kl",
        "decoder",
        "guard",
    ];
    for f in all {
        assert!(shaders.contains(f), "no pipeline of shaders/{f}.wgsl was created");
    }
    // Both variants of the vec4 matmuls, the subgroup one where the device chooses it
    // (lavapipe), and only the subgroup variants need the capability.
    let subgroup_device = tramway::ops::matmul::MatmulPath::auto(&gpu) == tramway::ops::matmul::MatmulPath::Subgroup;
    for f in ["matmul_k4", "matmul_n4"] {
        for sg in [false, true] {
            let has = specs.iter().any(|s| s.shader == f && s.defs.contains(&("SG", tramway::gpu::Def::B(sg))));
            assert!(has || (sg && !subgroup_device), "no pipeline of shaders/{f}.wgsl with SG = {sg}");
        }
    }
    // ... and, where subgroups share the loads, the B-along-n matmul reading A as vec4s along k
    // (NN) and along m (TN), the both-along-k one spreading A's rows over the lanes.
    for (f, a4) in [("matmul_n4", "A4"), ("matmul_n4", "AM4"), ("matmul_k4", "AR")] {
        let has = specs.iter().any(|s| s.shader == f && s.defs.contains(&(a4, tramway::gpu::Def::B(true))));
        assert!(has || !subgroup_device, "no pipeline of shaders/{f}.wgsl with {a4} = true");
    }
    for ((stem, subgroups), spec) in stems.iter().zip(&specs) {
        let sg = spec.defs.contains(&("SG", tramway::gpu::Def::B(true))) || spec.shader == "probe_subgroup";
        let what = "the subgroup capability is needed exactly by SG variants and the probe";
        assert_eq!(*subgroups, sg, "{}: {what}", stem.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
