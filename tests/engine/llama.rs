//! LLaMA against PyTorch's LlamaForCausalLM (tools/make_fixtures.py llama): grouped-query
//! attention (4 query heads, 2 K/V heads), RoPE with base 500, SwiGLU, RMSNorm; untied and tied
//! heads. Logits, the next-token loss on a right-padded batch, every parameter gradient.

use super::encoder::{check_grads, fixture, ints, rel_err, LOGITS_TOL};
use super::*;
use tramway::data::batch::LmBatch;
use tramway::io::hf::read_weights;
use tramway::models::llama::LlamaConfig;
use tramway::train::lm::CausalLm;

/// Tolerances as for the encoders: logits and loss `LOGITS_TOL` relative, gradients `GRAD_TOL` of scale.
fn check_on(gpu: &Gpu, name: &str, split: bool) {
    let dir = fixture(name);
    let text = std::fs::read_to_string(dir.join("model/config.json")).unwrap();
    let cfg = LlamaConfig::parse("config.json", &text).unwrap();
    let model =
        tramway::models::llama::load(gpu, &cfg, &read_weights(&dir.join("model")).unwrap(), 0, "LlamaForCausalLM")
            .unwrap();
    assert_eq!(model.params.parts(0).len() > 1, split, "embedding table split into row blocks");
    check_lm(gpu, name, &model);
}

/// A causal LM against its fixture `name`: one forward and backward on the fixture's batch;
/// logits and loss within `LOGITS_TOL` relative, every gradient within `GRAD_TOL` of scale.
/// Returns the batch and the `[loss, count]` read back.
pub fn check_lm(gpu: &Gpu, name: &str, model: &CausalLm) -> (LmBatch, Vec<f32>) {
    let expected = read_weights(&fixture(name).join("expected.safetensors")).unwrap();
    let (shape, _) = expected.ints("input_ids").unwrap();
    let (b, t) = (shape[0], shape[1]);
    let batch =
        LmBatch { batch: b, seq: t, ids: ints(&expected, "input_ids"), mask: ints(&expected, "attention_mask") };
    let mut acts = model.acts(gpu, b, t).unwrap();
    model.upload(gpu, &mut acts, &batch).unwrap();
    let mut rc = gpu.recorder();
    model.params.zero_grads(&mut rc);
    model.forward(&mut rc, &acts, true, None).unwrap();
    model.backward(&mut rc, &acts).unwrap();
    rc.submit().unwrap();
    let logits = gpu.read_f32_blocking(&acts.logits).unwrap();
    let e = rel_err(&logits, &expected.tensors["logits"].data);
    assert!(e < LOGITS_TOL, "{name} logits off by {e:.2e} relative");
    let loss = gpu.read_f32_blocking(&acts.loss).unwrap();
    let want = expected.tensors["loss"].data[0];
    assert!((((loss[0] - want) / want).abs() as f64) < LOGITS_TOL, "{name} loss {} vs {want}", loss[0]);
    check_grads(gpu, name, &model.params, &expected);
    (batch, loss)
}

#[test]
fn llama_matches_pytorch() {
    check_on(gpu(), "llama", false);
}

#[test]
fn llama_tied_matches_pytorch() {
    check_on(gpu(), "llama_tied", false);
}

/// With a 16 KiB binding limit the 150 x 32 embedding table (19.2 kB) and the untied head are
/// each stored as two row blocks.
#[test]
fn llama_with_split_tables_matches_pytorch() {
    let small = Gpu::new_blocking(GpuOptions { max_binding: Some(16384), ..GpuOptions::from_env().unwrap() }).unwrap();
    check_on(&small, "llama", true);
    check_on(&small, "llama_tied", true);
}

#[test]
fn llama_configs_give_clear_errors() {
    let base = std::fs::read_to_string(fixture("llama/model/config.json")).unwrap();
    let with = |k: &str, v: &str| {
        let mut j: serde_json::Value = serde_json::from_str(&base).unwrap();
        j[k] = serde_json::from_str(v).unwrap();
        LlamaConfig::parse("config.json", &j.to_string()).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert!(with("num_key_value_heads", "3").contains("not a multiple of num_key_value_heads"));
    assert!(with("rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}").contains("rope_scaling"));
    assert!(with("hidden_act", "\"gelu\"").contains("hidden_act"));
    assert!(with("model_type", "\"gpt2\"").contains("not LLaMA"));
}
