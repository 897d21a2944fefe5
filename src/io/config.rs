//! `config.json` of BERT-family encoders (BERT, RoBERTa, XLM-R, MiniLM).

use crate::error::{model_err, Result};
use crate::ops::matmul::Act;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Which embedding/position scheme and head naming the checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderKind {
    /// BERT / MiniLM: positions 0..T, token types, `bert.pooler` + `classifier`.
    Bert,
    /// RoBERTa / XLM-R: positions start after `pad_token_id`, skip padding; head is
    /// `classifier.dense` + `classifier.out_proj`.
    Roberta,
}

/// The subset of a Hugging Face encoder config tramway uses, validated.
#[derive(Clone, Debug)]
pub struct EncoderConfig {
    pub kind: EncoderKind,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub act: Act,
    pub pad_token_id: u32,
    pub hidden_dropout: f32,
    pub attention_dropout: f32,
    /// Label names by id; its length is the number of classes.
    pub id2label: Vec<String>,
    /// The raw JSON, kept so a saved model writes back every key it was given.
    pub raw: serde_json::Value,
}

#[derive(Deserialize)]
struct Raw {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    pad_token_id: Option<u32>,
    hidden_dropout_prob: Option<f32>,
    attention_probs_dropout_prob: Option<f32>,
    position_embedding_type: Option<String>,
    id2label: Option<BTreeMap<String, String>>,
    num_labels: Option<usize>,
}

impl EncoderConfig {
    /// Parse and validate `config.json` text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let raw_value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return model_err(file, format!("not valid JSON: {e}")),
        };
        let r: Raw = match serde_json::from_value(raw_value.clone()) {
            Ok(r) => r,
            Err(e) => return model_err(file, format!("unexpected value: {e}")),
        };
        let model_type = r.model_type.clone().unwrap_or_default();
        let kind = match model_type.as_str() {
            "bert" => EncoderKind::Bert,
            "roberta" | "xlm-roberta" | "camembert" => EncoderKind::Roberta,
            "" => return model_err(file, "model_type is missing (expected \"bert\", \"roberta\" or \"xlm-roberta\")"),
            other => {
                return model_err(file, format!("model_type {other:?} is not a supported encoder (expected \"bert\", \"roberta\" or \"xlm-roberta\")"))
            }
        };
        let need = |v: Option<usize>, key: &str| need(file, v, key);
        let (hidden_size, num_heads) = heads(file, r.hidden_size, r.num_attention_heads)?;
        let act = hidden_act(file, r.hidden_act.as_deref())?;
        if let Some(p) = r.position_embedding_type.as_deref() {
            if p != "absolute" {
                return model_err(
                    file,
                    format!("position_embedding_type {p:?} is not supported (expected \"absolute\")"),
                );
            }
        }
        let id2label = labels(file, &r.id2label, r.num_labels)?;
        let pad = r.pad_token_id.unwrap_or(if kind == EncoderKind::Roberta { 1 } else { 0 });
        let cfg = EncoderConfig {
            kind,
            model_type,
            vocab_size: need(r.vocab_size, "vocab_size")?,
            hidden_size,
            num_layers: need(r.num_hidden_layers, "num_hidden_layers")?,
            num_heads,
            intermediate_size: need(r.intermediate_size, "intermediate_size")?,
            max_position_embeddings: need(r.max_position_embeddings, "max_position_embeddings")?,
            type_vocab_size: r.type_vocab_size.unwrap_or(2).max(1),
            layer_norm_eps: r.layer_norm_eps.unwrap_or(1e-12) as f32,
            act,
            pad_token_id: pad,
            hidden_dropout: r.hidden_dropout_prob.unwrap_or(0.1),
            attention_dropout: r.attention_probs_dropout_prob.unwrap_or(0.1),
            id2label,
            raw: raw_value,
        };
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }
    /// Prefix of the encoder's tensor names in HF checkpoints (`bert.`, `roberta.`).
    pub fn prefix(&self) -> &'static str {
        match self.kind {
            EncoderKind::Bert => "bert.",
            EncoderKind::Roberta => "roberta.",
        }
    }
}

/// The vision architectures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisionKind {
    Vit,
    Dinov2,
}

/// The subset of a Hugging Face ViT or DINOv2 `config.json` tramway uses, validated.
#[derive(Clone, Debug)]
pub struct VitConfig {
    /// `vit` (ViTForImageClassification) or `dinov2` (Dinov2ForImageClassification: LayerScale,
    /// position embeddings interpolated to the input size, classifier on [CLS, mean patch]).
    pub kind: VisionKind,
    /// The side of the images fed to the model; `image_size` is the side the position
    /// embeddings were trained for (DINOv2 interpolates between the two; ViT needs them equal).
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub layer_norm_eps: f32,
    pub act: Act,
    pub hidden_dropout: f32,
    pub attention_dropout: f32,
    pub id2label: Vec<String>,
    pub raw: serde_json::Value,
}

#[derive(Deserialize)]
struct RawVit {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    num_channels: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    hidden_dropout_prob: Option<f32>,
    attention_probs_dropout_prob: Option<f32>,
    qkv_bias: Option<bool>,
    id2label: Option<BTreeMap<String, String>>,
    num_labels: Option<usize>,
    mlp_ratio: Option<usize>,
    use_swiglu_ffn: Option<bool>,
}

/// A required positive size.
fn need(file: &str, v: Option<usize>, key: &str) -> Result<usize> {
    match v {
        Some(x) if x > 0 => Ok(x),
        Some(_) => model_err(file, format!("{key} must be positive")),
        None => model_err(file, format!("{key} is missing")),
    }
}

/// hidden_size and num_attention_heads, the first a multiple of the second.
fn heads(file: &str, hidden: Option<usize>, heads: Option<usize>) -> Result<(usize, usize)> {
    let (h, n) = (need(file, hidden, "hidden_size")?, need(file, heads, "num_attention_heads")?);
    if !h.is_multiple_of(n) {
        return model_err(file, format!("hidden_size {h} is not a multiple of num_attention_heads {n}"));
    }
    Ok((h, n))
}

/// The MLP activation named by `hidden_act` (GELU when absent).
fn hidden_act(file: &str, name: Option<&str>) -> Result<Act> {
    match name.unwrap_or("gelu") {
        "gelu" => Ok(Act::GeluErf),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Act::GeluTanh),
        other => model_err(file, format!("hidden_act {other:?} is not supported (expected \"gelu\" or \"gelu_new\")")),
    }
}

fn labels(file: &str, id2label: &Option<BTreeMap<String, String>>, num_labels: Option<usize>) -> Result<Vec<String>> {
    Ok(match (id2label, num_labels) {
        (Some(m), _) => {
            let mut v = vec![String::new(); m.len()];
            for (k, name) in m {
                match k.parse::<usize>() {
                    Ok(i) if i < m.len() => v[i] = name.clone(),
                    _ => return model_err(file, format!("id2label key {k:?} is not an id below {}", m.len())),
                }
            }
            v
        }
        (None, Some(n)) => (0..n).map(|i| format!("LABEL_{i}")).collect(),
        (None, None) => vec!["LABEL_0".into(), "LABEL_1".into()],
    })
}

impl VitConfig {
    /// Parse and validate a ViT `config.json`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let raw: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return model_err(file, format!("not valid JSON: {e}")),
        };
        let r: RawVit = match serde_json::from_value(raw.clone()) {
            Ok(r) => r,
            Err(e) => return model_err(file, format!("unexpected value: {e}")),
        };
        let kind = match r.model_type.as_deref() {
            Some("vit") => VisionKind::Vit,
            Some("dinov2") => VisionKind::Dinov2,
            Some(other) => {
                return model_err(
                    file,
                    format!("model_type {other:?} is not a supported vision model (expected \"vit\" or \"dinov2\")"),
                )
            }
            None => return model_err(file, "model_type is missing (expected \"vit\" or \"dinov2\")"),
        };
        if r.use_swiglu_ffn == Some(true) {
            return model_err(file, "use_swiglu_ffn = true is not supported");
        }
        if r.qkv_bias == Some(false) {
            return model_err(file, "qkv_bias = false is not supported");
        }
        let need = |v: Option<usize>, key: &str| need(file, v, key);
        let (hidden_size, num_heads) = heads(file, r.hidden_size, r.num_attention_heads)?;
        let dino = kind == VisionKind::Dinov2;
        let image_size = r.image_size.unwrap_or(if dino { 518 } else { 224 });
        let patch_size = r.patch_size.unwrap_or(if dino { 14 } else { 16 });
        if patch_size == 0 || !image_size.is_multiple_of(patch_size) {
            return model_err(file, format!("image_size {image_size} is not a multiple of patch_size {patch_size}"));
        }
        let act = hidden_act(file, r.hidden_act.as_deref())?;
        let intermediate_size = match (kind, r.intermediate_size) {
            (VisionKind::Dinov2, _) => hidden_size * r.mlp_ratio.unwrap_or(4),
            (_, i) => need(i, "intermediate_size")?,
        };
        Ok(VitConfig {
            kind,
            input_size: image_size,
            hidden_size,
            num_layers: need(r.num_hidden_layers, "num_hidden_layers")?,
            num_heads,
            intermediate_size,
            image_size,
            patch_size,
            num_channels: r.num_channels.unwrap_or(3),
            layer_norm_eps: r.layer_norm_eps.unwrap_or(if dino { 1e-6 } else { 1e-12 }) as f32,
            act,
            hidden_dropout: r.hidden_dropout_prob.unwrap_or(0.0),
            attention_dropout: r.attention_probs_dropout_prob.unwrap_or(0.0),
            id2label: labels(file, &r.id2label, r.num_labels)?,
            raw,
        })
    }
    /// Patches per side of the position-embedding grid (the trained size).
    pub fn pos_grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Patches per side of the input images.
    pub fn grid(&self) -> usize {
        self.input_size / self.patch_size
    }
    /// Tokens per image: the patches plus CLS.
    pub fn seq(&self) -> usize {
        self.grid() * self.grid() + 1
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }
}

/// `raw` (a loaded config.json) with `architectures = [arch]` and `id2label`/`label2id` for
/// `labels`, as Hugging Face writes them.
pub fn with_labels(raw: &serde_json::Value, arch: &str, labels: &[String]) -> serde_json::Value {
    let mut v = raw.clone();
    if let Some(m) = v.as_object_mut() {
        m.insert("architectures".into(), serde_json::json!([arch]));
        let id2label: serde_json::Map<String, serde_json::Value> =
            labels.iter().enumerate().map(|(i, l)| (i.to_string(), serde_json::json!(l))).collect();
        let label2id: serde_json::Map<String, serde_json::Value> =
            labels.iter().enumerate().map(|(i, l)| (l.clone(), serde_json::json!(i))).collect();
        m.insert("id2label".into(), id2label.into());
        m.insert("label2id".into(), label2id.into());
        m.remove("num_labels");
    }
    v
}

/// A GPT-2 `config.json` (GPT2LMHeadModel), validated.
#[derive(Clone, Debug)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub inner_size: usize,
    pub layer_norm_eps: f32,
    pub act: Act,
    pub resid_dropout: f32,
    pub embd_dropout: f32,
    pub attn_dropout: f32,
    /// The LM head is `wte` (GPT-2 always ties it; an untied checkpoint is refused).
    pub tie_word_embeddings: bool,
    pub eos_token_id: Option<u32>,
    pub raw: serde_json::Value,
}

#[derive(Deserialize)]
struct RawGpt2 {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    n_positions: Option<usize>,
    n_embd: Option<usize>,
    n_layer: Option<usize>,
    n_head: Option<usize>,
    n_inner: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    activation_function: Option<String>,
    resid_pdrop: Option<f32>,
    embd_pdrop: Option<f32>,
    attn_pdrop: Option<f32>,
    scale_attn_weights: Option<bool>,
    scale_attn_by_inverse_layer_idx: Option<bool>,
    reorder_and_upcast_attn: Option<bool>,
    tie_word_embeddings: Option<bool>,
    eos_token_id: Option<u32>,
}

impl Gpt2Config {
    /// Parse and validate a GPT-2 `config.json`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let raw: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return model_err(file, format!("not valid JSON: {e}")),
        };
        let r: RawGpt2 = match serde_json::from_value(raw.clone()) {
            Ok(r) => r,
            Err(e) => return model_err(file, format!("unexpected value: {e}")),
        };
        match r.model_type.as_deref() {
            Some("gpt2") => {}
            Some(other) => return model_err(file, format!("model_type {other:?} is not GPT-2 (expected \"gpt2\")")),
            None => return model_err(file, "model_type is missing (expected \"gpt2\")"),
        }
        let unsupported = [
            (r.scale_attn_weights == Some(false), "scale_attn_weights = false"),
            (r.scale_attn_by_inverse_layer_idx == Some(true), "scale_attn_by_inverse_layer_idx = true"),
            (r.tie_word_embeddings == Some(false), "tie_word_embeddings = false"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(bad, _)| *bad) {
            return model_err(file, format!("{what} is not supported"));
        }
        // reorder_and_upcast_attn only changes the precision of PyTorch's fp16 path: f32 here.
        let _ = r.reorder_and_upcast_attn;
        let (hidden_size, num_heads) = heads(file, r.n_embd, r.n_head)?;
        let act = match r.activation_function.as_deref().unwrap_or("gelu_new") {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Act::GeluTanh,
            "gelu" => Act::GeluErf,
            other => {
                return model_err(
                    file,
                    format!("activation_function {other:?} is not supported (expected \"gelu_new\" or \"gelu\")"),
                )
            }
        };
        Ok(Gpt2Config {
            vocab_size: need(file, r.vocab_size, "vocab_size")?,
            n_positions: need(file, r.n_positions, "n_positions")?,
            hidden_size,
            num_layers: need(file, r.n_layer, "n_layer")?,
            num_heads,
            inner_size: r.n_inner.unwrap_or(4 * hidden_size),
            layer_norm_eps: r.layer_norm_epsilon.unwrap_or(1e-5) as f32,
            act,
            resid_dropout: r.resid_pdrop.unwrap_or(0.1),
            embd_dropout: r.embd_pdrop.unwrap_or(0.1),
            attn_dropout: r.attn_pdrop.unwrap_or(0.1),
            tie_word_embeddings: true,
            eos_token_id: r.eos_token_id,
            raw,
        })
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

/// A LLaMA-family `config.json` (LlamaForCausalLM: RMSNorm, RoPE, SwiGLU, grouped-query
/// attention), validated.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub attention_dropout: f32,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub raw: serde_json::Value,
}

#[derive(Deserialize)]
struct RawLlama {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    tie_word_embeddings: Option<bool>,
    hidden_act: Option<String>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    attention_dropout: Option<f32>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<serde_json::Value>,
}

impl LlamaConfig {
    /// Parse and validate a LLaMA `config.json`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let raw: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return model_err(file, format!("not valid JSON: {e}")),
        };
        let r: RawLlama = match serde_json::from_value(raw.clone()) {
            Ok(r) => r,
            Err(e) => return model_err(file, format!("unexpected value: {e}")),
        };
        match r.model_type.as_deref() {
            Some("llama") => {}
            Some(other) => return model_err(file, format!("model_type {other:?} is not LLaMA (expected \"llama\")")),
            None => return model_err(file, "model_type is missing (expected \"llama\")"),
        }
        if let Some(s) = r.rope_scaling.as_ref().filter(|s| !s.is_null()) {
            return model_err(file, format!("rope_scaling {s} is not supported (plain RoPE only)"));
        }
        if r.attention_bias == Some(true) || r.mlp_bias == Some(true) {
            return model_err(file, "attention_bias / mlp_bias = true is not supported");
        }
        match r.hidden_act.as_deref().unwrap_or("silu") {
            "silu" | "swish" => {}
            other => return model_err(file, format!("hidden_act {other:?} is not supported (expected \"silu\")")),
        }
        let (hidden_size, num_heads) = match (r.hidden_size, r.num_attention_heads) {
            (Some(h), Some(n)) if h > 0 && n > 0 => (h, n),
            _ => return model_err(file, "hidden_size and num_attention_heads must be positive"),
        };
        let head_dim = r.head_dim.unwrap_or(hidden_size / num_heads);
        if head_dim == 0
            || !head_dim.is_multiple_of(2)
            || (r.head_dim.is_none() && !hidden_size.is_multiple_of(num_heads))
        {
            return model_err(
                file,
                format!(
                    "head_dim {head_dim} must be even and positive (hidden_size {hidden_size} / {num_heads} heads)"
                ),
            );
        }
        let num_kv_heads = r.num_key_value_heads.unwrap_or(num_heads);
        if num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
            return model_err(
                file,
                format!("num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}"),
            );
        }
        let eos_token_id = match &r.eos_token_id {
            Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| v as u32),
            Some(serde_json::Value::Array(a)) => a.first().and_then(|v| v.as_u64()).map(|v| v as u32),
            _ => None,
        };
        Ok(LlamaConfig {
            vocab_size: need(file, r.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: need(file, r.intermediate_size, "intermediate_size")?,
            num_layers: need(file, r.num_hidden_layers, "num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            max_position_embeddings: r.max_position_embeddings.unwrap_or(2048),
            rms_norm_eps: r.rms_norm_eps.unwrap_or(1e-6) as f32,
            rope_theta: r.rope_theta.unwrap_or(10000.0),
            tie_word_embeddings: r.tie_word_embeddings.unwrap_or(false),
            attention_dropout: r.attention_dropout.unwrap_or(0.0),
            bos_token_id: r.bos_token_id,
            eos_token_id,
            raw,
        })
    }
}
