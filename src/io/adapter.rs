//! Hugging Face PEFT LoRA adapter folders: `adapter_config.json` + `adapter_model.safetensors`.
//! Reading maps PEFT's tensor names (`base_model.model.NAME.lora_A.weight`, a task head as
//! `base_model.model.classifier.weight`) to tramway's (`NAME.lora_A.weight`); writing does the
//! reverse, so PEFT's `PeftModel.from_pretrained(base, dir)` loads what tramway trained.

use crate::error::{model_err, Error, Result};
use crate::gpu::Gpu;
use crate::io::weights::{HostTensor, Weights};
use crate::nn::lora::{is_adapter, LoraConfig, Target};
use crate::nn::ParamSet;

/// PEFT's prefix of every saved tensor name.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// An adapter read from its files: the LoRA settings and the tensors under tramway's names.
pub struct Adapter {
    pub config: LoraConfig,
    pub weights: Weights,
    /// `base_model_name_or_path` of the config, when given.
    pub base: Option<String>,
}

/// Parse `adapter_config.json` (`file` names it in errors) and the tensors of
/// `adapter_model.safetensors`. The adapted Linears are the ones the file has tensors for; the
/// rank is `r` (every `lora_A` must have it), the scale `lora_alpha / r` (`/ sqrt(r)` with
/// `use_rslora`). Settings tramway does not implement (DoRA, trained biases, per-module ranks)
/// are refused by name rather than ignored.
pub fn parse_adapter(file: &str, config: &str, weights: Weights) -> Result<Adapter> {
    let v: serde_json::Value =
        serde_json::from_str(config).or_else(|e| model_err(file, format!("not valid JSON: {e}")))?;
    let bad = |m: String| model_err::<()>(file, m);
    if let Some(t) = v.get("peft_type").and_then(|t| t.as_str()) {
        if t != "LORA" {
            bad(format!("peft_type {t:?}: tramway reads LoRA adapters (\"LORA\")"))?;
        }
    }
    let rank = match v.get("r").and_then(|r| r.as_u64()) {
        Some(r) if r > 0 => r as usize,
        _ => return model_err(file, "r (the LoRA rank, a positive integer) is missing or not valid"),
    };
    let alpha = match v.get("lora_alpha").and_then(|a| a.as_f64()) {
        Some(a) if a.is_finite() && a > 0.0 => a as f32,
        None => 8.0, // PEFT's default
        Some(a) => return model_err(file, format!("lora_alpha {a} must be a positive number")),
    };
    let flag = |k: &str| v.get(k).and_then(|b| b.as_bool()).unwrap_or(false);
    if flag("use_dora") {
        bad("use_dora: DoRA adapters are not supported (plain LoRA only)".into())?;
    }
    if let Some(b) = v.get("bias").and_then(|b| b.as_str()).filter(|b| *b != "none") {
        bad(format!("bias {b:?}: only adapters without trained biases (\"none\") are supported"))?;
    }
    for k in ["rank_pattern", "alpha_pattern"] {
        if v.get(k).and_then(|p| p.as_object()).map(|o| !o.is_empty()).unwrap_or(false) {
            bad(format!("{k}: per-module ranks or alphas are not supported"))?;
        }
    }
    let mut tensors = std::collections::HashMap::new();
    let mut modules = Vec::new();
    for (name, t) in weights.tensors {
        let short = name.strip_prefix(PEFT_PREFIX).unwrap_or(&name);
        let short = short.replace(".modules_to_save.", ".").replace(".default.", ".");
        if let Some(m) = short.strip_suffix(".lora_A.weight") {
            if t.shape.len() != 2 || t.shape[0] != rank {
                return model_err(
                    &weights.file,
                    format!("{name} has shape {:?}; expected [r = {rank}, in] as adapter_config.json says", t.shape),
                );
            }
            modules.push(m.to_string());
        }
        tensors.insert(short, t);
    }
    if modules.is_empty() {
        return model_err(&weights.file, "no lora_A tensors: this is not a LoRA adapter");
    }
    modules.sort();
    let config = LoraConfig {
        rank,
        alpha,
        dropout: v.get("lora_dropout").and_then(|d| d.as_f64()).unwrap_or(0.0) as f32,
        targets: Target::ALL.to_vec(),
        modules: Some(modules),
        rslora: flag("use_rslora"),
    };
    config.validate().or_else(|e| model_err(file, e.to_string()))?;
    let base = v.get("base_model_name_or_path").and_then(|b| b.as_str()).map(str::to_string);
    Ok(Adapter { config, weights: Weights { file: weights.file, tensors, ints: Default::default() }, base })
}

/// Write an adapter's tensors (every parameter of `params` that trains: the adapters and a
/// task head) into the model built with its config; every one must be in the file with its
/// shape, and the file may hold nothing else.
pub fn load_adapter(gpu: &Gpu, params: &ParamSet, adapter: &Adapter) -> Result<()> {
    let file = &adapter.weights.file;
    for (name, t) in &adapter.weights.tensors {
        let Some(i) = params.index(name) else {
            return model_err(file, format!("{name} is not a tensor of this model (is it the adapter's base model?)"));
        };
        if !params.trains(i) {
            return model_err(file, format!("{name} is a frozen base tensor of this model; an adapter cannot set it"));
        }
        if params.shape(i) != t.shape.as_slice() {
            return model_err(file, format!("{name} has shape {:?}; the model expects {:?}", t.shape, params.shape(i)));
        }
        params.write(gpu, i, &t.data)?;
    }
    // Every trainable tensor (the adapters, and a head PEFT saves as modules_to_save) must
    // come from the file: a missing one would keep its random initialisation silently.
    for (i, n) in params.names().iter().enumerate() {
        if params.trains(i) && !adapter.weights.tensors.contains_key(n) {
            return model_err(file, format!("{n} is missing"));
        }
    }
    Ok(())
}

/// The files of a PEFT adapter for `params` (built with `lora`): `adapter_config.json` and
/// the trainable tensors under PEFT's names. `task_type` is PEFT's (`CAUSAL_LM`, `SEQ_CLS`).
pub async fn adapter_files(
    gpu: &Gpu,
    params: &ParamSet,
    lora: &LoraConfig,
    base: &str,
    task_type: &str,
) -> Result<(serde_json::Value, Vec<(String, HostTensor)>)> {
    let mut tensors = Vec::new();
    let mut modules = Vec::new();
    let mut heads = Vec::new();
    for (i, name) in params.names().iter().enumerate() {
        if !params.trains(i) {
            continue;
        }
        if let Some(m) = name.strip_suffix(".lora_A.weight") {
            modules.push(m.to_string());
        } else if !is_adapter(name) {
            heads.push(name.split('.').next().unwrap_or(name).to_string());
        }
        let data = params.read(gpu, i).await?;
        let t = HostTensor { shape: params.shape(i).to_vec(), data, dtype: safetensors::Dtype::F32 };
        tensors.push((format!("{PEFT_PREFIX}{name}"), t));
    }
    if modules.is_empty() {
        return Err(Error::BadSetting {
            name: "adapter",
            value: String::new(),
            expected: "a model built with LoRA adapters".into(),
        });
    }
    heads.sort();
    heads.dedup();
    // Full module names: PEFT matches a list entry that equals a module's name exactly, so
    // an adapter on GPT-2's attention c_proj alone (not the MLP's) is expressed too.
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "use_rslora": lora.rslora,
        "use_dora": false,
        "bias": "none",
        "fan_in_fan_out": modules.iter().any(|m| m.contains(".attn.c_") || m.contains(".mlp.c_")),
        "target_modules": modules,
        "modules_to_save": if heads.is_empty() { serde_json::Value::Null } else { serde_json::json!(heads) },
        "init_lora_weights": true,
        "inference_mode": true,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": null,
        "layers_pattern": null,
        "revision": null,
        "auto_mapping": null,
        "megatron_config": null,
        "megatron_core": "megatron.core",
        "loftq_config": {},
        "layer_replication": null,
    });
    Ok((config, tensors))
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::*;
    use crate::io::hf::{read, read_weights, write_atomic};
    use crate::io::weights::serialize;
    use std::path::Path;

    /// Read a PEFT adapter folder.
    pub fn read_adapter(dir: &Path) -> Result<Adapter> {
        let cfg = dir.join("adapter_config.json");
        let text =
            String::from_utf8(read(&cfg)?).or_else(|_| model_err(&cfg.display().to_string(), "not UTF-8 text"))?;
        parse_adapter(&cfg.display().to_string(), &text, read_weights(&dir.join("adapter_model.safetensors"))?)
    }

    /// Write a PEFT adapter folder (each file atomically).
    pub fn save_adapter(
        gpu: &Gpu,
        params: &ParamSet,
        lora: &LoraConfig,
        dir: &Path,
        base: &str,
        task_type: &str,
    ) -> Result<()> {
        let (config, tensors) = pollster::block_on(adapter_files(gpu, params, lora, base, task_type))?;
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
        let st = dir.join("adapter_model.safetensors");
        write_atomic(&st, &serialize(&st.display().to_string(), &tensors)?)?;
        let text = serde_json::to_string_pretty(&config).unwrap_or_default();
        write_atomic(&dir.join("adapter_config.json"), text.as_bytes())
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;
