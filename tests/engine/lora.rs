//! LoRA adapters against Hugging Face PEFT (tools/make_fixtures.py lora): the gpt2, llama and
//! bert fixtures' models with PEFT's adapters loaded from its saved folder; logits, loss and
//! the gradient of every trainable tensor (adapters, and a classifier's head) within the same
//! tolerances as the full models (`LOGITS_TOL`, `GRAD_TOL`), the base weights frozen.

use super::encoder::fixture;
use super::*;
use tramway::io::adapter::{adapter_files, load_adapter, read_adapter, PEFT_PREFIX};
use tramway::io::hf::read_weights;
use tramway::models::encoder::read_encoder_config;
use tramway::models::{Build, Encoder};
use tramway::nn::lora::{is_adapter, LoraConfig, Target};
use tramway::nn::ParamSet;

fn build(lora: &LoraConfig) -> Build {
    Build { seed: 0, lora: Some(lora.clone()) }
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
