//! `config.json` of the supported architectures (BERT-family encoders, ViT/DINOv2, GPT-2,
//! LLaMA), validated: every value tramway uses is type- and range-checked, and an error names
//! the key, the value found and what is allowed. Sizes are bounded so that an absurd config is
//! refused here rather than aborting on an allocation later.

use crate::error::{model_err, Result};
use crate::ops::matmul::Act;
use serde_json::{Map, Value};

/// The most elements one tensor described by a config may have (2^34: 64 GiB in f32, far above
/// any released checkpoint's largest tensor).
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 34;
/// [`MAX_TENSOR_ELEMENTS`] as a size, or the largest size on 32-bit targets (wasm32).
pub const MAX_SIZE: usize =
    if (usize::MAX as u64) < MAX_TENSOR_ELEMENTS { usize::MAX } else { MAX_TENSOR_ELEMENTS as usize };
/// The most layers a config may declare.
pub const MAX_LAYERS: usize = 1024;
/// The most classes a classifier head may have.
pub const MAX_LABELS: usize = 1 << 20;
/// The most positions a config may declare (position ids are u32 on the GPU).
pub const MAX_POSITIONS: usize = 1 << 31;
/// The largest image side a vision config may declare.
pub const MAX_IMAGE_SIZE: usize = 16384;

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

/// Typed, range-checked access to the keys of one `config.json` object. An absent key and a
/// `null` are the same (Hugging Face writes `null` for unset options).
struct Keys<'a> {
    file: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Keys<'a> {
    /// Parse a config text (kept whole as `raw`); it must be a JSON object.
    fn parse(file: &str, text: &str) -> Result<Value> {
        match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(v) => model_err(file, format!("expected a JSON object of settings, found {}", kind_of(&v))),
            Err(e) => model_err(file, format!("not valid JSON: {e}")),
        }
    }

    /// The keys of `raw`, a value [`Keys::parse`] returned.
    fn new(file: &'a str, raw: &'a Value) -> Result<Self> {
        match raw {
            Value::Object(map) => Ok(Keys { file, map }),
            v => model_err(file, format!("expected a JSON object of settings, found {}", kind_of(v))),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn invalid<T>(&self, key: &str, v: &Value, expected: &str) -> Result<T> {
        model_err(self.file, format!("{key} = {} is not valid: expected {expected}", show(v)))
    }

    fn range<T>(&self, key: &str, v: impl std::fmt::Display, expected: &str) -> Result<T> {
        model_err(self.file, format!("{key} = {v} is out of range: expected {expected}"))
    }

    fn uint(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(x) => Ok(Some(x)),
                None => self.invalid(key, v, "a non-negative integer"),
            },
        }
    }

    /// A size in `1..=max`; `default` when absent (an error naming the key when there is none).
    fn size(&self, key: &str, default: Option<usize>, max: usize) -> Result<usize> {
        let x = match (self.uint(key)?, default) {
            (Some(x), _) => x,
            (None, Some(d)) => d as u64,
            (None, None) => return model_err(self.file, format!("{key} is missing")),
        };
        if x == 0 || x > max as u64 {
            return self.range(key, x, &format!("a positive integer at most {max}"));
        }
        Ok(x as usize)
    }

    fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) => Ok(Some(x)),
                None => self.invalid(key, v, "a number"),
            },
        }
    }

    /// A dropout probability: finite, in [0, 1).
    fn prob(&self, key: &str, default: f64) -> Result<f32> {
        let p = self.float(key)?.unwrap_or(default);
        if !(p.is_finite() && (0.0..1.0).contains(&p)) {
            return self.range(key, p, "a probability in [0, 1)");
        }
        Ok(p as f32)
    }

    /// A normalisation epsilon: finite and > 0, also as f32.
    fn eps(&self, key: &str, default: f64) -> Result<f32> {
        let e = self.float(key)?.unwrap_or(default);
        let e32 = e as f32;
        if !(e.is_finite() && e > 0.0 && e32.is_finite() && e32 > 0.0) {
            return self.range(key, e, "a finite number > 0 (within f32 range)");
        }
        Ok(e32)
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => self.invalid(key, v, "a string"),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => self.invalid(key, v, "true or false"),
        }
    }

    /// A token id (u32); for a list of ids (as some configs give `eos_token_id`), the first.
    fn token_id(&self, key: &str) -> Result<Option<u32>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let one = match v {
            Value::Array(a) => match a.first() {
                None => return Ok(None),
                Some(x) => x,
            },
            x => x,
        };
        match one.as_u64().and_then(|x| u32::try_from(x).ok()) {
            Some(x) => Ok(Some(x)),
            None => self.invalid(key, v, "a token id (an integer in 0..2^32) or a list of them"),
        }
    }

    /// `model_type`, checked against the accepted names (`what` describes them).
    fn model_type(&self, accepted: &[&str], what: &str) -> Result<&'a str> {
        match self.string("model_type")? {
            Some(t) if accepted.contains(&t) => Ok(t),
            Some(t) => model_err(self.file, format!("model_type {t:?} is not {what}")),
            None => model_err(self.file, format!("model_type is missing (expected {})", quoted(accepted))),
        }
    }

    /// Refuse a tensor whose element count (the product of `dims`, each named by the keys it
    /// comes from) overflows or exceeds [`MAX_TENSOR_ELEMENTS`].
    fn tensor(&self, what: &str, dims: &[(&str, usize)]) -> Result<()> {
        let n = dims.iter().try_fold(1u64, |acc, &(_, d)| acc.checked_mul(d as u64));
        if n.is_none_or(|n| n > MAX_TENSOR_ELEMENTS) {
            let shape: Vec<String> = dims.iter().map(|(k, d)| format!("{k} = {d}")).collect();
            let size = n.map(|n| format!("{n} elements")).unwrap_or_else(|| "more elements than fit in 64 bits".into());
            return model_err(
                self.file,
                format!(
                    "the {what} tensor ({}) would have {size}; tramway accepts at most {MAX_TENSOR_ELEMENTS} (2^34) \
                     per tensor",
                    shape.join(" x ")
                ),
            );
        }
        Ok(())
    }
}

/// A JSON value for a message (long values cut).
fn show(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn quoted(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match q.len() {
        0 => String::new(),
        1 => q[0].clone(),
        n => format!("{} or {}", q[..n - 1].join(", "), q[n - 1]),
    }
}

/// hidden_size and num_attention_heads (under the given key names), the first a multiple of
/// the second.
fn heads(k: &Keys, hidden_key: &str, heads_key: &str) -> Result<(usize, usize)> {
    let h = k.size(hidden_key, None, MAX_SIZE)?;
    let n = k.size(heads_key, None, MAX_SIZE)?;
    if !h.is_multiple_of(n) {
        return model_err(k.file, format!("{hidden_key} {h} is not a multiple of {heads_key} {n}"));
    }
    k.tensor("attention projection", &[(hidden_key, h), (hidden_key, h)])?;
    Ok((h, n))
}

/// The MLP activation named by `hidden_act` (GELU when absent).
fn hidden_act(k: &Keys) -> Result<Act> {
    match k.string("hidden_act")?.unwrap_or("gelu") {
        "gelu" => Ok(Act::GeluErf),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Act::GeluTanh),
        other => {
            model_err(k.file, format!("hidden_act {other:?} is not supported (expected \"gelu\" or \"gelu_new\")"))
        }
    }
}

/// Label names by id from `id2label` (every id below its size present exactly once), else
/// `num_labels` generic names, else two.
fn labels(k: &Keys) -> Result<Vec<String>> {
    if let Some(v) = k.get("id2label") {
        let Some(m) = v.as_object() else {
            return k.invalid("id2label", v, "an object of label names by id");
        };
        if m.is_empty() || m.len() > MAX_LABELS {
            return k.range("id2label", format!("{{{} entries}}", m.len()), &format!("1 to {MAX_LABELS} labels"));
        }
        let mut names: Vec<Option<String>> = vec![None; m.len()];
        for (key, name) in m {
            let Some(name) = name.as_str() else {
                return k.invalid(&format!("id2label[{key:?}]"), name, "a label name (a string)");
            };
            match key.parse::<usize>() {
                Ok(i) if i < m.len() && names[i].is_none() => names[i] = Some(name.to_string()),
                Ok(i) if i < m.len() => {
                    return model_err(k.file, format!("id2label gives id {i} twice (key {key:?})"));
                }
                _ => return model_err(k.file, format!("id2label key {key:?} is not an id below {}", m.len())),
            }
        }
        // Distinct ids below m.len(), as many as entries: every id is present.
        return Ok(names.into_iter().map(Option::unwrap_or_default).collect());
    }
    let n = k.size("num_labels", Some(2), MAX_LABELS)?;
    Ok((0..n).map(|i| format!("LABEL_{i}")).collect())
}

impl EncoderConfig {
    /// Parse and validate `config.json` text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let raw = Keys::parse(file, text)?;
        let k = Keys::new(file, &raw)?;
        let model_type = match k.string("model_type")? {
            Some(t) => t.to_string(),
            None => {
                return model_err(file, "model_type is missing (expected \"bert\", \"roberta\" or \"xlm-roberta\")")
            }
        };
        let kind = match model_type.as_str() {
            "bert" => EncoderKind::Bert,
            "roberta" | "xlm-roberta" | "camembert" => EncoderKind::Roberta,
            other => {
                return model_err(file, format!("model_type {other:?} is not a supported encoder (expected \"bert\", \"roberta\" or \"xlm-roberta\")"))
            }
        };
        let (hidden_size, num_heads) = heads(&k, "hidden_size", "num_attention_heads")?;
        let act = hidden_act(&k)?;
        if let Some(p) = k.string("position_embedding_type")? {
            if p != "absolute" {
                return model_err(
                    file,
                    format!("position_embedding_type {p:?} is not supported (expected \"absolute\")"),
                );
            }
        }
        let id2label = labels(&k)?;
        let pad_token_id = match k.token_id("pad_token_id")? {
            Some(p) => p,
            None if kind == EncoderKind::Roberta => 1,
            None => 0,
        };
        let vocab_size = k.size("vocab_size", None, MAX_SIZE)?;
        let num_layers = k.size("num_hidden_layers", None, MAX_LAYERS)?;
        let intermediate_size = k.size("intermediate_size", None, MAX_SIZE)?;
        let max_position_embeddings = k.size("max_position_embeddings", None, MAX_POSITIONS)?;
        // 0 token types (some converted checkpoints) means the one type every model has.
        let type_vocab_size = match k.uint("type_vocab_size")? {
            Some(0) => 1,
            _ => k.size("type_vocab_size", Some(2), MAX_SIZE)?,
        };
        let h = ("hidden_size", hidden_size);
        k.tensor("word embedding", &[("vocab_size", vocab_size), h])?;
        k.tensor("position embedding", &[("max_position_embeddings", max_position_embeddings), h])?;
        k.tensor("token type embedding", &[("type_vocab_size", type_vocab_size), h])?;
        k.tensor("MLP", &[("intermediate_size", intermediate_size), h])?;
        k.tensor("classifier", &[("number of labels", id2label.len()), h])?;
        Ok(EncoderConfig {
            kind,
            model_type,
            vocab_size,
            hidden_size,
            num_layers,
            num_heads,
            intermediate_size,
            max_position_embeddings,
            type_vocab_size,
            layer_norm_eps: k.eps("layer_norm_eps", 1e-12)?,
            act,
            pad_token_id,
            hidden_dropout: k.prob("hidden_dropout_prob", 0.1)?,
            attention_dropout: k.prob("attention_probs_dropout_prob", 0.1)?,
            id2label,
            raw,
        })
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

impl VitConfig {
    /// Parse and validate a ViT `config.json`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let raw = Keys::parse(file, text)?;
        let k = Keys::new(file, &raw)?;
        let kind = match k.string("model_type")? {
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
        if k.boolean("use_swiglu_ffn")? == Some(true) {
            return model_err(file, "use_swiglu_ffn = true is not supported");
        }
        if k.boolean("qkv_bias")? == Some(false) {
            return model_err(file, "qkv_bias = false is not supported");
        }
        let (hidden_size, num_heads) = heads(&k, "hidden_size", "num_attention_heads")?;
        let dino = kind == VisionKind::Dinov2;
        let image_size = k.size("image_size", Some(if dino { 518 } else { 224 }), MAX_IMAGE_SIZE)?;
        let patch_size = k.size("patch_size", Some(if dino { 14 } else { 16 }), MAX_IMAGE_SIZE)?;
        if !image_size.is_multiple_of(patch_size) {
            return model_err(file, format!("image_size {image_size} is not a multiple of patch_size {patch_size}"));
        }
        let num_channels = k.size("num_channels", Some(3), MAX_IMAGE_SIZE)?;
        if num_channels != 3 {
            return model_err(
                file,
                format!("num_channels = {num_channels} is not supported: tramway feeds RGB images (expected 3)"),
            );
        }
        let act = hidden_act(&k)?;
        let intermediate_size = match kind {
            VisionKind::Dinov2 => {
                // Hugging Face: int(hidden_size * mlp_ratio).
                let ratio = k.float("mlp_ratio")?.unwrap_or(4.0);
                let inter = hidden_size as f64 * ratio;
                if !(ratio.is_finite() && inter >= 1.0 && inter <= MAX_TENSOR_ELEMENTS as f64) {
                    return k.range(
                        "mlp_ratio",
                        ratio,
                        &format!("a number > 0 (hidden_size {hidden_size} x mlp_ratio is the MLP width)"),
                    );
                }
                inter as usize
            }
            VisionKind::Vit => k.size("intermediate_size", None, MAX_SIZE)?,
        };
        let id2label = labels(&k)?;
        let h = ("hidden_size", hidden_size);
        let grid = image_size / patch_size;
        k.tensor("patch embedding", &[("num_channels x patch_size^2", num_channels * patch_size * patch_size), h])?;
        k.tensor("position embedding", &[("(image_size / patch_size)^2 + 1", grid * grid + 1), h])?;
        k.tensor("MLP", &[("intermediate size", intermediate_size), h])?;
        k.tensor("classifier", &[("number of labels", id2label.len()), ("2 x hidden_size", 2 * hidden_size)])?;
        Ok(VitConfig {
            kind,
            input_size: image_size,
            hidden_size,
            num_layers: k.size("num_hidden_layers", None, MAX_LAYERS)?,
            num_heads,
            intermediate_size,
            image_size,
            patch_size,
            num_channels,
            layer_norm_eps: k.eps("layer_norm_eps", if dino { 1e-6 } else { 1e-12 })?,
            act,
            hidden_dropout: k.prob("hidden_dropout_prob", 0.0)?,
            attention_dropout: k.prob("attention_probs_dropout_prob", 0.0)?,
            id2label,
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

impl Gpt2Config {
    /// Parse and validate a GPT-2 `config.json`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let raw = Keys::parse(file, text)?;
        let k = Keys::new(file, &raw)?;
        k.model_type(&["gpt2"], "GPT-2 (expected \"gpt2\")")?;
        let unsupported = [
            (k.boolean("scale_attn_weights")? == Some(false), "scale_attn_weights = false"),
            (k.boolean("scale_attn_by_inverse_layer_idx")? == Some(true), "scale_attn_by_inverse_layer_idx = true"),
            (k.boolean("tie_word_embeddings")? == Some(false), "tie_word_embeddings = false"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(bad, _)| *bad) {
            return model_err(file, format!("{what} is not supported"));
        }
        // reorder_and_upcast_attn only changes the precision of PyTorch's fp16 path: f32 here.
        k.boolean("reorder_and_upcast_attn")?;
        let (hidden_size, num_heads) = heads(&k, "n_embd", "n_head")?;
        let act = match k.string("activation_function")?.unwrap_or("gelu_new") {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Act::GeluTanh,
            "gelu" => Act::GeluErf,
            other => {
                return model_err(
                    file,
                    format!("activation_function {other:?} is not supported (expected \"gelu_new\" or \"gelu\")"),
                )
            }
        };
        let vocab_size = k.size("vocab_size", None, MAX_SIZE)?;
        let n_positions = k.size("n_positions", None, MAX_POSITIONS)?;
        let inner_size = k.size("n_inner", Some(4 * hidden_size), MAX_SIZE)?;
        let h = ("n_embd", hidden_size);
        k.tensor("token embedding", &[("vocab_size", vocab_size), h])?;
        k.tensor("position embedding", &[("n_positions", n_positions), h])?;
        k.tensor("c_attn", &[h, ("3 x n_embd", 3 * hidden_size)])?;
        k.tensor("MLP", &[h, ("n_inner", inner_size)])?;
        Ok(Gpt2Config {
            vocab_size,
            n_positions,
            hidden_size,
            num_layers: k.size("n_layer", None, MAX_LAYERS)?,
            num_heads,
            inner_size,
            layer_norm_eps: k.eps("layer_norm_epsilon", 1e-5)?,
            act,
            resid_dropout: k.prob("resid_pdrop", 0.1)?,
            embd_dropout: k.prob("embd_pdrop", 0.1)?,
            attn_dropout: k.prob("attn_pdrop", 0.1)?,
            tie_word_embeddings: true,
            eos_token_id: k.token_id("eos_token_id")?,
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
    /// Biases on the Q, K and V projections (`attention_bias`; Qwen2 always).
    pub qkv_bias: bool,
    /// A bias on the output projection (`attention_bias`; never in Qwen2).
    pub o_bias: bool,
    pub attention_dropout: f32,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub raw: serde_json::Value,
}

impl LlamaConfig {
    /// Parse and validate a LLaMA `config.json`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let raw = Keys::parse(file, text)?;
        let k = Keys::new(file, &raw)?;
        k.model_type(&["llama"], "LLaMA (expected \"llama\")")?;
        if let Some(s) = k.get("rope_scaling") {
            return model_err(file, format!("rope_scaling {} is not supported (plain RoPE only)", show(s)));
        }
        if k.boolean("mlp_bias")? == Some(true) {
            return model_err(file, "mlp_bias = true is not supported");
        }
        let attention_bias = k.boolean("attention_bias")?.unwrap_or(false);
        match k.string("hidden_act")?.unwrap_or("silu") {
            "silu" | "swish" => {}
            other => return model_err(file, format!("hidden_act {other:?} is not supported (expected \"silu\")")),
        }
        let big = MAX_SIZE;
        let hidden_size = k.size("hidden_size", None, big)?;
        let num_heads = k.size("num_attention_heads", None, big)?;
        let explicit_head_dim = k.uint("head_dim")?.is_some();
        let head_dim = k.size("head_dim", Some((hidden_size / num_heads).max(1)), big)?;
        if !head_dim.is_multiple_of(2) || (!explicit_head_dim && !hidden_size.is_multiple_of(num_heads)) {
            return model_err(
                file,
                format!(
                    "head_dim {head_dim} must be even and positive (hidden_size {hidden_size} / {num_heads} heads)"
                ),
            );
        }
        let num_kv_heads = k.size("num_key_value_heads", Some(num_heads), big)?;
        if !num_heads.is_multiple_of(num_kv_heads) {
            return model_err(
                file,
                format!("num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}"),
            );
        }
        let vocab_size = k.size("vocab_size", None, big)?;
        let intermediate_size = k.size("intermediate_size", None, big)?;
        let h = ("hidden_size", hidden_size);
        let q = num_heads.saturating_mul(head_dim);
        k.tensor("token embedding", &[("vocab_size", vocab_size), h])?;
        k.tensor("q_proj", &[("num_attention_heads x head_dim", q), h])?;
        k.tensor("MLP", &[("intermediate_size", intermediate_size), h])?;
        let rope_theta = k.float("rope_theta")?.unwrap_or(10000.0);
        if !(rope_theta.is_finite() && rope_theta > 0.0) {
            return k.range("rope_theta", rope_theta, "a finite number > 0");
        }
        Ok(LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers: k.size("num_hidden_layers", None, MAX_LAYERS)?,
            num_heads,
            num_kv_heads,
            head_dim,
            max_position_embeddings: k.size("max_position_embeddings", Some(2048), MAX_POSITIONS)?,
            rms_norm_eps: k.eps("rms_norm_eps", 1e-6)?,
            rope_theta,
            tie_word_embeddings: k.boolean("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias: attention_bias,
            o_bias: attention_bias,
            attention_dropout: k.prob("attention_dropout", 0.0)?,
            bos_token_id: k.token_id("bos_token_id")?,
            eos_token_id: k.token_id("eos_token_id")?,
            raw,
        })
    }
}
