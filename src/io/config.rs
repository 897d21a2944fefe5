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

/// Typed, range-checked access to the keys of one `config.json` object. An absent key and a
/// `null` are the same (Hugging Face writes `null` for unset options).
pub struct Keys<'a> {
    pub file: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Keys<'a> {
    /// Parse a config text (kept whole as `raw`); it must be a JSON object.
    pub fn parse(file: &str, text: &str) -> Result<Value> {
        match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(v) => model_err(file, format!("expected a JSON object of settings, found {}", kind_of(&v))),
            Err(e) => model_err(file, format!("not valid JSON: {e}")),
        }
    }

    /// The keys of `raw`, a value [`Keys::parse`] returned.
    pub fn new(file: &'a str, raw: &'a Value) -> Result<Self> {
        match raw {
            Value::Object(map) => Ok(Keys { file, map }),
            v => model_err(file, format!("expected a JSON object of settings, found {}", kind_of(v))),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn invalid<T>(&self, key: &str, v: &Value, expected: &str) -> Result<T> {
        model_err(self.file, format!("{key} = {} is not valid: expected {expected}", show(v)))
    }

    pub fn range<T>(&self, key: &str, v: impl std::fmt::Display, expected: &str) -> Result<T> {
        model_err(self.file, format!("{key} = {v} is out of range: expected {expected}"))
    }

    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(x) => Ok(Some(x)),
                None => self.invalid(key, v, "a non-negative integer"),
            },
        }
    }

    /// A size in `1..=max`; `default` when absent (an error naming the key when there is none).
    pub fn size(&self, key: &str, default: Option<usize>, max: usize) -> Result<usize> {
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

    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) => Ok(Some(x)),
                None => self.invalid(key, v, "a number"),
            },
        }
    }

    /// A dropout probability: finite, in [0, 1).
    pub fn prob(&self, key: &str, default: f64) -> Result<f32> {
        let p = self.float(key)?.unwrap_or(default);
        if !(p.is_finite() && (0.0..1.0).contains(&p)) {
            return self.range(key, p, "a probability in [0, 1)");
        }
        Ok(p as f32)
    }

    /// A normalisation epsilon: finite and > 0, also as f32.
    pub fn eps(&self, key: &str, default: f64) -> Result<f32> {
        let e = self.float(key)?.unwrap_or(default);
        let e32 = e as f32;
        if !(e.is_finite() && e > 0.0 && e32.is_finite() && e32 > 0.0) {
            return self.range(key, e, "a finite number > 0 (within f32 range)");
        }
        Ok(e32)
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => self.invalid(key, v, "a string"),
        }
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => self.invalid(key, v, "true or false"),
        }
    }

    /// A token id (u32); for a list of ids (as some configs give `eos_token_id`), the first.
    pub fn token_id(&self, key: &str) -> Result<Option<u32>> {
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
    pub fn model_type(&self, accepted: &[&str], what: &str) -> Result<&'a str> {
        match self.string("model_type")? {
            Some(t) if accepted.contains(&t) => Ok(t),
            Some(t) => model_err(self.file, format!("model_type {t:?} is not {what}")),
            None => model_err(self.file, format!("model_type is missing (expected {})", quoted(accepted))),
        }
    }

    /// Refuse a tensor whose element count (the product of `dims`, each named by the keys it
    /// comes from) overflows or exceeds [`MAX_TENSOR_ELEMENTS`].
    pub fn tensor(&self, what: &str, dims: &[(&str, usize)]) -> Result<()> {
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
pub fn show(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn quoted(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match q.len() {
        0 => String::new(),
        1 => q[0].clone(),
        n => format!("{} or {}", q[..n - 1].join(", "), q[n - 1]),
    }
}

/// hidden_size and num_attention_heads (under the given key names), the first a multiple of
/// the second.
pub fn heads(k: &Keys, hidden_key: &str, heads_key: &str) -> Result<(usize, usize)> {
    let h = k.size(hidden_key, None, MAX_SIZE)?;
    let n = k.size(heads_key, None, MAX_SIZE)?;
    if !h.is_multiple_of(n) {
        return model_err(k.file, format!("{hidden_key} {h} is not a multiple of {heads_key} {n}"));
    }
    k.tensor("attention projection", &[(hidden_key, h), (hidden_key, h)])?;
    Ok((h, n))
}

/// The MLP activation named by `hidden_act` (GELU when absent).
pub fn hidden_act(k: &Keys) -> Result<Act> {
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
pub fn labels(k: &Keys) -> Result<Vec<String>> {
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
