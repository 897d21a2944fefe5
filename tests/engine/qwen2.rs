//! Qwen2 against PyTorch's Qwen2ForCausalLM (tools/make_fixtures.py qwen2): LLaMA's block with
//! biases on Q, K and V, grouped-query attention (4 query heads, 2 K/V heads), RoPE with base
//! 10^6; untied (qwen2) and tied (qwen2_tied) heads. Loaded through the model_type table as a
//! user's folder is: logits, the next-token loss on a right-padded batch, every parameter
//! gradient; K/V-cached decoding equal to the full forward; every optimizer trains it.

use super::encoder::fixture;
use super::*;
use tramway::train::lm::CausalLm;

/// Tolerances as for every fixture: logits and loss `LOGITS_TOL` relative, gradients `GRAD_TOL`
/// of each tensor's scale (`check_grads`).
fn check_on(gpu: &Gpu, name: &str, split: bool) {
    let dir = fixture(name);
    let model = CausalLm::load(gpu, &dir.join("model"), 0).unwrap();
    assert_eq!(model.params.parts(0).len() > 1, split, "embedding table split into row blocks");
    let bias = "model.layers.0.self_attn.q_proj.bias";
    assert!(model.params.index(bias).is_some() && model.params.index("model.layers.0.self_attn.o_proj.bias").is_none());
    super::llama::check_lm(gpu, name, &model);
    assert_eq!(model.config["architectures"][0], "Qwen2ForCausalLM");
}

#[test]
fn qwen2_matches_pytorch() {
    check_on(gpu(), "qwen2", false);
    check_on(gpu(), "qwen2_tied", false);
}

/// With a 16 KiB binding limit the 150 x 32 embedding table and the untied head are each
/// stored as two row blocks.
#[test]
fn qwen2_with_split_tables_matches_pytorch() {
    let small = Gpu::new_blocking(GpuOptions { max_binding: Some(16384), ..GpuOptions::from_env().unwrap() }).unwrap();
    check_on(&small, "qwen2", true);
}

#[test]
fn qwen2_decodes_with_kv_cache_as_the_full_forward() {
    for name in ["qwen2", "qwen2_tied"] {
        super::gpt2::decode_matches_forward_on(gpu(), name);
    }
}

#[test]
fn qwen2_trains_with_every_optimizer() {
    for name in ["qwen2", "qwen2_tied"] {
        super::optim::every_method_runs_on(name);
    }
}

#[test]
fn qwen2_configs_give_clear_errors() {
    let base = std::fs::read_to_string(fixture("qwen2/model/config.json")).unwrap();
    let with = |k: &str, v: &str| {
        let mut j: serde_json::Value = serde_json::from_str(&base).unwrap();
        j[k] = serde_json::from_str(v).unwrap();
        tramway::models::qwen2::parse("config.json", &j.to_string()).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert!(with("use_sliding_window", "true").contains("use_sliding_window"));
    assert!(with("num_key_value_heads", "3").contains("not a multiple of num_key_value_heads"));
    assert!(with("model_type", "\"llama\"").contains("not Qwen2"));
}
