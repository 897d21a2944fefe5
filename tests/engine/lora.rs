//! LoRA adapters against Hugging Face PEFT (tools/make_fixtures.py lora): the gpt2, llama and
//! bert fixtures' models with PEFT's adapters loaded from its saved folder; logits, loss and
//! the gradient of every trainable tensor (adapters, and a classifier's head) within the same
//! tolerances as the full models (`LOGITS_TOL`, `GRAD_TOL`), the base weights frozen.

use super::encoder::{fixture, ints};
use super::*;
use tramway::io::adapter::{adapter_files, load_adapter, read_adapter, PEFT_PREFIX};
use tramway::io::hf::read_weights;
use tramway::models::encoder::read_encoder_config;
use tramway::models::{Build, Encoder};
use tramway::nn::lora::{is_adapter, LoraConfig, Target};
use tramway::nn::ParamSet;

fn build(lora: &LoraConfig) -> Build {
    Build { seed: 0, lora: Some(lora.clone()), ..Default::default() }
}

/// Only the adapters (and a head) train: no gradient or optimizer state for the base.
fn check_frozen(name: &str, p: &ParamSet, head: &[&str]) {
    for (i, n) in p.names().iter().enumerate() {
        let trains = is_adapter(n) || head.iter().any(|h| n.starts_with(h));
        assert_eq!(p.trains(i), trains, "{name}: {n} trains: {}", p.trains(i));
    }
    let trainable: usize = (0..p.len()).filter(|&i| p.trains(i)).map(|i| p.shape(i).iter().product::<usize>()).sum();
    assert_eq!(p.trainable_count(), trainable);
    assert!(p.frozen.is_some() && p.trainable_count() < p.count() / 4, "{name}: the base is frozen");
}

/// The token batch a PEFT fixture's `expected.safetensors` was computed on.
fn fixture_batch(name: &str) -> tramway::data::batch::LmBatch {
    let expected = read_weights(&fixture(&format!("{name}/expected.safetensors"))).unwrap();
    let (shape, _) = expected.ints("input_ids").unwrap();
    tramway::data::batch::LmBatch {
        batch: shape[0],
        seq: shape[1],
        ids: ints(&expected, "input_ids"),
        mask: ints(&expected, "attention_mask"),
    }
}

fn causal(gpu: &Gpu, base: &str) -> (tramway::models::lm::CausalLm, tramway::io::adapter::Adapter) {
    let a = read_adapter(&fixture(&format!("lora_{base}/adapter"))).unwrap();
    let dir = fixture(base).join("model");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let w = read_weights(&dir).unwrap();
    let model = tramway::models::load_causal_lm_with(gpu, "config.json", &text, &w, &build(&a.config)).unwrap();
    load_adapter(gpu, &model.params, &a).unwrap();
    (model, a)
}

#[test]
fn lora_gpt2_matches_peft() {
    let (model, _) = causal(gpu(), "gpt2");
    check_frozen("gpt2", &model.params, &[]);
    super::llama::check_lm(gpu(), "lora_gpt2", &model);
}

#[test]
fn lora_llama_matches_peft() {
    let (model, _) = causal(gpu(), "llama");
    check_frozen("llama", &model.params, &[]);
    super::llama::check_lm(gpu(), "lora_llama", &model);
}

#[test]
fn lora_bert_matches_peft() {
    let a = read_adapter(&fixture("lora_bert/adapter")).unwrap();
    let dir = fixture("bert").join("model");
    let cfg = read_encoder_config(&dir).unwrap();
    let model = Encoder::load_with(gpu(), cfg, &read_weights(&dir).unwrap(), &build(&a.config)).unwrap();
    load_adapter(gpu(), &model.params, &a).unwrap();
    check_frozen("bert", &model.params, &["classifier."]);
    let expected = read_weights(&fixture("lora_bert/expected.safetensors")).unwrap();
    super::encoder::check_encoder(gpu(), "lora_bert", &model, &expected);
}

/// `--lora-targets` roles select exactly the Linears PEFT's target_modules did: GPT-2's c_attn,
/// c_proj (attention and MLP) and c_fc are q,k,v,o,up,down; LLaMA's q_proj, v_proj, o_proj,
/// gate_proj, down_proj are q,v,o,gate,down.
#[test]
fn targets_select_the_linears_peft_adapts() {
    for (base, targets) in [("gpt2", "q,k,v,o,up,down"), ("llama", "q,v,o,gate,down")] {
        let (model, a) = causal(gpu(), base);
        let by_role = LoraConfig::new(a.config.rank, a.config.alpha, Target::parse_list(targets).unwrap());
        let dir = fixture(base).join("model");
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let w = read_weights(&dir).unwrap();
        let m2 = tramway::models::load_causal_lm_with(gpu(), "config.json", &text, &w, &build(&by_role)).unwrap();
        assert_eq!(model.params.names(), m2.params.names(), "{base}: the same adapters in the same order");
    }
}

/// What tramway saves is PEFT's file: the same tensor names, shapes and values as the adapter
/// it loaded, and a config naming every adapted module.
#[test]
fn saved_adapter_has_peft_names() {
    let (model, a) = causal(gpu(), "gpt2");
    let (cfg, tensors) =
        pollster::block_on(adapter_files(gpu(), &model.params, &a.config, "tests/fixtures/gpt2/model", "CAUSAL_LM"))
            .unwrap();
    let file = read_weights(&fixture("lora_gpt2/adapter/adapter_model.safetensors")).unwrap();
    assert_eq!(tensors.len(), file.tensors.len());
    for (n, t) in &tensors {
        assert!(n.starts_with(PEFT_PREFIX), "{n}");
        let want = &file.tensors[n];
        assert_eq!((&t.shape, &t.data), (&want.shape, &want.data), "{n}");
    }
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8.0);
    assert_eq!(cfg["target_modules"].as_array().unwrap().len(), 8, "2 layers x c_attn, attn.c_proj, c_fc, mlp.c_proj");
    assert_eq!(cfg["fan_in_fan_out"], true);
}

/// Bad adapters and settings are refused with the file or flag named.
#[test]
fn bad_adapters_and_targets_give_clear_errors() {
    let err = |r: tramway::Result<()>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(Target::parse_list("q,x").map(|_| ())).contains("--lora-targets"));
    assert!(err(LoraConfig::new(0, 8.0, vec![Target::Q]).validate()).contains("--lora-rank"));
    assert!(err(LoraConfig::new(4, f32::NAN, vec![Target::Q]).validate()).contains("--lora-alpha"));
    // GPT-2's c_attn holds q, k and v: adapting only q cannot be expressed.
    let dir = fixture("gpt2").join("model");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let w = read_weights(&dir).unwrap();
    let only_q = build(&LoraConfig::new(2, 4.0, vec![Target::Q]));
    let e = tramway::models::load_causal_lm_with(gpu(), "config.json", &text, &w, &only_q).err().unwrap().to_string();
    assert!(e.contains("--lora-targets") && e.contains("c_attn"), "{e}");
    // An adapter for another model: tensor names the model does not have.
    let bert_adapter = read_adapter(&fixture("lora_bert/adapter")).unwrap();
    let m = tramway::models::load_causal_lm_with(
        gpu(),
        "config.json",
        &text,
        &w,
        &build(&LoraConfig::new(2, 4.0, Target::ALL.to_vec())),
    )
    .unwrap();
    let e = err(load_adapter(gpu(), &m.params, &bert_adapter));
    assert!(e.contains("adapter_model.safetensors") && e.contains("not a tensor of this model"), "{e}");
    // Settings tramway does not implement are named, not ignored.
    let parse = |cfg: &str| {
        let w = read_weights(&fixture("lora_gpt2/adapter/adapter_model.safetensors")).unwrap();
        tramway::io::adapter::parse_adapter("adapter_config.json", cfg, w)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(parse(r#"{"r": 4, "use_dora": true}"#).contains("DoRA"));
    assert!(parse(r#"{"r": 4, "bias": "all"}"#).contains("bias"));
    assert!(parse(r#"{"r": 3}"#).contains("[r = 3, in]"));
    assert!(parse(r#"{"peft_type": "IA3", "r": 4}"#).contains("IA3"));
    assert!(parse("{").contains("not valid JSON"));
}

/// The packed 16-bit kernels against the host: unpacking any run of rows and gathering rows by
/// id, bf16 and f16, with awkward sizes (odd widths and counts, one row) and a binding limit
/// small enough to store the table as several row blocks. Exact: unpacking is a bit move.
#[test]
fn half_unpack_and_gather_match_the_host() {
    use tramway::ops::half::{unpack_host, Half16};
    let small = Gpu::new_blocking(GpuOptions { max_binding: Some(256), ..GpuOptions::from_env().unwrap() }).unwrap();
    for (bf16, rows, cols) in [(true, 37, 5), (false, 37, 5), (true, 1, 3), (false, 9, 1)] {
        let round = |v: f32| if bf16 { half::bf16::from_f32(v).to_f32() } else { half::f16::from_f32(v).to_f32() };
        let data: Vec<f32> = (0..rows * cols).map(|i| round(((i * 7919 % 211) as f32 - 105.0) / 17.0)).collect();
        let h = Half16::upload(&small, &data, &[rows, cols], bf16).unwrap();
        assert_eq!(h.parts.len() > 1, rows * cols * 2 > 256, "{rows}x{cols}: blocks {}", h.parts.len());
        for (r0, n) in [(0, rows), (rows - 1, 1), (rows / 3, rows / 2)] {
            if n == 0 || r0 + n > rows || n * cols * 4 > 256 {
                continue;
            }
            let out = small.zeros(&[n * cols]).unwrap();
            let mut rc = small.recorder();
            let spans_blocks = h.parts.iter().filter(|(b0, bn, _)| r0 < b0 + bn && b0 < &(r0 + n)).count() > 1;
            let r = h.unpack_rows(&mut rc, r0, &out);
            if spans_blocks && r0 % 24 != 0 {
                continue; // a run starting inside one block and ending in the next is refused
            }
            r.unwrap();
            rc.submit().unwrap();
            assert_eq!(
                small.read_f32_blocking(&out).unwrap(),
                data[r0 * cols..(r0 + n) * cols],
                "{rows}x{cols} rows {r0}+{n}"
            );
        }
        let ids: Vec<u32> = [rows - 1, 0, rows / 2, rows - 1].iter().map(|&i| i as u32).collect();
        let idt = small.from_u32(&ids, &[ids.len()]).unwrap();
        let out = small.zeros(&[ids.len() * cols]).unwrap();
        let mut rc = small.recorder();
        h.gather(&mut rc, &idt, &out).unwrap();
        rc.submit().unwrap();
        let want: Vec<f32> =
            ids.iter().flat_map(|&i| data[i as usize * cols..(i as usize + 1) * cols].to_vec()).collect();
        assert_eq!(small.read_f32_blocking(&out).unwrap(), want, "{rows}x{cols} gather");
        let back = pollster::block_on(h.read(&small)).unwrap();
        assert_eq!(back, data);
        assert_eq!(unpack_host(&tramway::ops::half::pack(&data, bf16), data.len(), bf16), data);
    }
}

/// A bf16 (LLaMA) or f16 (GPT-2, tied and split-free table) checkpoint with LoRA keeps its
/// frozen Linear weights and token table in 16 bits: about 2 bytes per frozen parameter, and
/// the same logits, loss and adapter gradients, bitwise, as the f32 model holding the same
/// (16-bit-rounded) values.
#[test]
fn frozen_16_bit_weights_give_the_f32_results() {
    use safetensors::Dtype;
    for (base, dtype) in [("llama", Dtype::BF16), ("gpt2", Dtype::F16)] {
        let a = read_adapter(&fixture(&format!("lora_{base}/adapter"))).unwrap();
        let dir = fixture(base).join("model");
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let mut w16 = read_weights(&dir).unwrap();
        for t in w16.tensors.values_mut() {
            t.data = t
                .data
                .iter()
                .map(|&v| match dtype {
                    Dtype::BF16 => half::bf16::from_f32(v).to_f32(),
                    _ => half::f16::from_f32(v).to_f32(),
                })
                .collect();
            t.dtype = dtype;
        }
        let mut w32 = w16.clone();
        for t in w32.tensors.values_mut() {
            t.dtype = Dtype::F32;
        }
        let run = |w: &tramway::io::weights::Weights| {
            let m = tramway::models::load_causal_lm_with(gpu(), "config.json", &text, w, &build(&a.config)).unwrap();
            load_adapter(gpu(), &m.params, &a).unwrap();
            let batch = fixture_batch(&format!("lora_{base}"));
            let mut acts = m.acts(gpu(), batch.batch, batch.seq).unwrap();
            m.upload(gpu(), &mut acts, &batch).unwrap();
            let mut rc = gpu().recorder();
            m.params.zero_grads(&mut rc);
            m.forward(&mut rc, &acts, true, None).unwrap();
            m.backward(&mut rc, &acts).unwrap();
            rc.submit().unwrap();
            let logits = gpu().read_f32_blocking(&acts.logits).unwrap();
            let grads: Vec<Vec<f32>> =
                (0..m.params.params.len()).map(|j| m.params.grads.read_blocking(gpu(), j).unwrap()).collect();
            (m, logits, grads)
        };
        let (m16, l16, g16) = run(&w16);
        let (m32, l32, g32) = run(&w32);
        let p = &m16.params;
        let should = |n: &str| {
            let table = ["wte.weight", "embed_tokens.weight", "lm_head.weight"].iter().any(|t| n.ends_with(t));
            let linear = (n.contains(".c_") || n.ends_with("_proj.weight")) && n.ends_with(".weight");
            table || (linear && !n.contains("lora_"))
        };
        for (i, n) in p.names().iter().enumerate() {
            assert_eq!(p.half(i).is_some(), should(n), "{base}: {n} 16-bit");
        }
        let (_, frozen16) = p.bytes();
        let (_, frozen32) = m32.params.bytes();
        let frozen_params = p.count() - p.trainable_count();
        let per = frozen16 as f64 / frozen_params as f64;
        // Norm vectors and biases stay f32 and every buffer is padded to 256 bytes: a little
        // above 2 on these tiny models (2.0 on SmolLM2, see BENCHMARKS.md).
        assert!(per < 2.4 && frozen32 as f64 / frozen16 as f64 > 1.6, "{base}: {per:.2} bytes per frozen parameter");
        assert_eq!(l16, l32, "{base}: logits");
        assert_eq!(g16, g32, "{base}: adapter gradients");
        // Saving reads the 16-bit values back exactly, in their dtype.
        let state = pollster::block_on(p.state(gpu())).unwrap();
        let (_, t) = state
            .iter()
            .find(|(n, _)| n.ends_with("layers.0.self_attn.q_proj.weight") || n.ends_with("h.0.attn.c_attn.weight"))
            .unwrap();
        assert_eq!(t.dtype, dtype);
    }
}

/// Every optimizer steps a LoRA model: the loss stays finite, the adapters move, the frozen
/// base does not (its bytes are compared before and after), and the optimizer's state covers
/// the adapters only (TRAM-θ's reference copy included).
#[test]
fn every_optimizer_trains_adapters_only() {
    use tramway::models::Task;
    use tramway::optim::{Method, OptimConfig, Optimizer, Schedule, METHOD_NAMES};
    let (model, _) = causal(gpu(), "llama");
    let batch = fixture_batch("lora_llama");
    let mut acts = model.acts(gpu(), batch.batch, batch.seq).unwrap();
    model.upload(gpu(), &mut acts, &batch).unwrap();
    let aux = {
        let mut a = model.acts(gpu(), batch.batch, batch.seq).unwrap();
        model.upload(gpu(), &mut a, &batch).unwrap();
        a
    };
    let p = &model.params;
    let frozen_before = p.frozen.as_ref().unwrap().read_blocking(gpu(), 0).unwrap();
    let trainable_bytes = p.bytes().0;
    for name in METHOD_NAMES {
        let (base, method) = Method::preset(name).unwrap();
        let cfg = OptimConfig { base, method, lr: 1e-3, schedule: Schedule::Constant, clip: Some(1.0), seed: 3 };
        let before: Vec<f32> = p.params.read_blocking(gpu(), 0).unwrap();
        let mut opt = Optimizer::new(gpu(), p, cfg).unwrap();
        assert!(
            opt.state_bytes() <= 4 * trainable_bytes,
            "{name}: state {} for {trainable_bytes} trainable bytes",
            opt.state_bytes()
        );
        let task = Task { model: &model, acts: &acts, aux: Some(&aux) };
        for _ in 0..2 {
            let mut rec = gpu().recorder();
            opt.step(&mut rec, &task).unwrap();
            rec.submit().unwrap();
        }
        let loss = gpu().read_f32_blocking(&acts.loss).unwrap()[0];
        assert!(loss.is_finite(), "{name}: loss {loss}");
        let after = p.params.read_blocking(gpu(), 0).unwrap();
        assert_ne!(before, after, "{name}: the first adapter must move");
        assert!(after.iter().all(|v| v.is_finite()), "{name}");
        assert_eq!(
            p.frozen.as_ref().unwrap().read_blocking(gpu(), 0).unwrap(),
            frozen_before,
            "{name}: the base moved"
        );
    }
}

/// A linear probe (`--freeze-base`): only the classifier trains; its gradient and the logits
/// are the full model's (PyTorch's BERT fixture), since freezing changes what is updated, not
/// the function. A causal LM has no head to probe.
#[test]
fn freeze_base_trains_the_head_alone() {
    use super::encoder::{rel_err, GRAD_TOL, LOGITS_TOL};
    let dir = fixture("bert").join("model");
    let cfg = read_encoder_config(&dir).unwrap();
    let b = Build { seed: 0, lora: None, freeze_base: true };
    let model = Encoder::load_with(gpu(), cfg, &read_weights(&dir).unwrap(), &b).unwrap();
    let p = &model.params;
    let trainable: Vec<&String> = p.names().iter().enumerate().filter(|(i, _)| p.trains(*i)).map(|(_, n)| n).collect();
    assert_eq!(trainable, ["classifier.weight", "classifier.bias"]);
    let expected = read_weights(&fixture("bert/expected.safetensors")).unwrap();
    let (shape, _) = expected.ints("input_ids").unwrap();
    let batch = tramway::data::batch::TextBatch {
        batch: shape[0],
        seq: shape[1],
        ids: ints(&expected, "input_ids"),
        mask: ints(&expected, "attention_mask"),
        types: Some(ints(&expected, "token_type_ids")),
        labels: Some(ints(&expected, "labels")),
    };
    let mut acts = model.acts(gpu(), batch.batch, batch.seq).unwrap();
    model.upload(gpu(), &mut acts, &batch).unwrap();
    let mut rc = gpu().recorder();
    p.zero_grads(&mut rc);
    model.forward(&mut rc, &acts, true, None).unwrap();
    model.backward(&mut rc, &acts).unwrap();
    rc.submit().unwrap();
    let logits = gpu().read_f32_blocking(&acts.logits).unwrap();
    assert!(rel_err(&logits, &expected.tensors["logits"].data) < LOGITS_TOL);
    for (j, n) in ["classifier.weight", "classifier.bias"].iter().enumerate() {
        let got = p.grads.read_blocking(gpu(), j).unwrap();
        let e = rel_err(&got, &expected.tensors[&format!("grad.{n}")].data);
        assert!(e < GRAD_TOL, "{n}: {e:.2e}");
    }
    let gdir = fixture("gpt2").join("model");
    let text = std::fs::read_to_string(gdir.join("config.json")).unwrap();
    let e = tramway::models::load_causal_lm_with(gpu(), "config.json", &text, &read_weights(&gdir).unwrap(), &b)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--freeze-base") && e.contains("nothing to train"), "{e}");
}

/// K/V-cached decoding of adapted models (the adapters join every Linear of the decode path)
/// equals their full forward, for the f32 and the 16-bit base (generation with `--adapter`).
#[test]
fn adapted_models_decode_as_their_full_forward() {
    for base in ["gpt2", "llama"] {
        let (model, a) = causal(gpu(), base);
        super::gpt2::decode_matches_forward(gpu(), &format!("lora_{base}"), &model);
        let dir = fixture(base).join("model");
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let mut w = read_weights(&dir).unwrap();
        for t in w.tensors.values_mut() {
            t.data = t.data.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
            t.dtype = safetensors::Dtype::BF16;
        }
        let m16 = tramway::models::load_causal_lm_with(gpu(), "config.json", &text, &w, &build(&a.config)).unwrap();
        load_adapter(gpu(), &m16.params, &a).unwrap();
        assert!(m16.params.half(0).is_some());
        super::gpt2::decode_matches_forward(gpu(), &format!("lora_{base} (bf16 base)"), &m16);
    }
}

/// LoRA dropout (on each adapter's input, training only): the same key gives the same numbers,
/// it changes the loss, and the adapters' gradient (masks regenerated in the backward, also on
/// the adapter's share of dx) matches a directional finite difference (tests/engine/dropout.rs).
#[test]
fn lora_dropout_is_keyed_and_its_gradient_is_exact() {
    for base in ["gpt2", "llama"] {
        let mut a = read_adapter(&fixture(&format!("lora_{base}/adapter"))).unwrap();
        a.config.dropout = 0.25;
        let dir = fixture(base).join("model");
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let model = tramway::models::load_causal_lm_with(
            gpu(),
            "config.json",
            &text,
            &read_weights(&dir).unwrap(),
            &build(&a.config),
        )
        .unwrap();
        load_adapter(gpu(), &model.params, &a).unwrap();
        let expected = read_weights(&fixture(&format!("lora_{base}/expected.safetensors"))).unwrap();
        let batch = fixture_batch(&format!("lora_{base}"));
        let run = |t: Option<tramway::nn::Train>, grads: bool| {
            let mut acts = model.acts(gpu(), batch.batch, batch.seq).unwrap();
            model.upload(gpu(), &mut acts, &batch).unwrap();
            let mut rc = gpu().recorder();
            model.params.zero_grads(&mut rc);
            model.forward(&mut rc, &acts, true, t).unwrap();
            if grads {
                model.backward(&mut rc, &acts).unwrap();
            }
            rc.submit().unwrap();
            (gpu().read_f32_blocking(&acts.loss).unwrap()[0], gpu().read_f32_blocking(&acts.logits).unwrap())
        };
        // Without training the adapter's dropout is off: PEFT's logits.
        let (_, l_eval) = run(None, false);
        let e = super::encoder::rel_err(&l_eval, &expected.tensors["logits"].data);
        assert!(e < super::encoder::LOGITS_TOL, "{base}: evaluation ignores LoRA dropout ({e:.2e})");
        super::dropout::check_training_mode(&model.params, &run);
    }
}
