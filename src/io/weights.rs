//! safetensors files: every float tensor as f32 (f16 and bf16 widened), integers for fixtures.

use crate::error::{model_err, Error, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;

/// One tensor read from a file, widened to f32.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// The dtype it was stored in (kept so a saved model can use the same).
    pub dtype: Dtype,
}

/// All tensors of a safetensors file, by name.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    pub file: String,
    pub tensors: HashMap<String, HostTensor>,
    /// Integer tensors (token ids, labels in fixtures), as i64.
    pub ints: HashMap<String, (Vec<usize>, Vec<i64>)>,
}

impl Weights {
    /// Refuse a checkpoint with tensors of layers the configuration does not have (they would be
    /// dropped without a word): names like `…layer.N.…`, `…layers.N.…` or `…h.N.…` with N at or
    /// above `num_layers`.
    pub fn check_layers(&self, num_layers: usize, key: &str) -> Result<()> {
        let mut names: Vec<&String> = self.tensors.keys().collect();
        names.sort();
        for name in names {
            if let Some(n) = Self::layer_of(name).filter(|&n| n >= num_layers) {
                return Err(Error::Model {
                    file: self.file.clone(),
                    message: format!(
                        "tensor {name} belongs to layer {n}, but config.json has {key} = {num_layers}: \
                         the checkpoint has more layers than its configuration (tramway does not drop weights)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The layer a tensor name belongs to: N in `…layer.N.…`, `…layers.N.…`, `…h.N.…` or
    /// `…blocks.N.…`.
    pub fn layer_of(name: &str) -> Option<usize> {
        let parts: Vec<&str> = name.split('.').collect();
        parts
            .windows(2)
            .find(|p| matches!(p[0], "layer" | "layers" | "h" | "blocks") && p[1].parse::<usize>().is_ok())
            .and_then(|p| p[1].parse().ok())
    }

    /// Parse a safetensors file's bytes; `file` names it in errors.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Weights> {
        let st = match SafeTensors::deserialize(bytes) {
            Ok(s) => s,
            Err(e) => return model_err(file, format!("not a valid safetensors file: {e}")),
        };
        let mut w = Weights { file: file.to_string(), ..Default::default() };
        for (name, view) in st.iter() {
            let shape = view.shape().to_vec();
            let d = view.data();
            let dtype = view.dtype();
            // safetensors checked that `d` holds exactly the shape's elements of `dtype`.
            let (data, bad) = match dtype {
                Dtype::F32 => widen(d, |b: [u8; 4]| (f32::from_le_bytes(b), None)),
                Dtype::F16 => widen(d, |b: [u8; 2]| (half::f16::from_le_bytes(b).to_f32(), None)),
                Dtype::BF16 => widen(d, |b: [u8; 2]| (half::bf16::from_le_bytes(b).to_f32(), None)),
                Dtype::F64 => widen(d, |b: [u8; 8]| {
                    let x = f64::from_le_bytes(b);
                    (x as f32, Some(x))
                }),
                Dtype::I64 => {
                    let v = d.chunks_exact(8).map(|c| i64::from_le_bytes(le(c))).collect();
                    w.ints.insert(name.to_string(), (shape, v));
                    continue;
                }
                Dtype::I32 => {
                    let v = d.chunks_exact(4).map(|c| i32::from_le_bytes(le(c)) as i64).collect();
                    w.ints.insert(name.to_string(), (shape, v));
                    continue;
                }
                other => {
                    return model_err(
                        file,
                        format!("tensor {name} has dtype {other:?}; tramway reads F32, F16, BF16, F64, I64 and I32"),
                    )
                }
            };
            if let Some((i, x, wide)) = bad {
                let what = match wide {
                    Some(x64) if x64.is_finite() => format!("a value beyond the range of f32 ({x64:e} in F64)"),
                    _ => format!("a non-finite value ({x})"),
                };
                return model_err(
                    file,
                    format!("tensor {name} has {what} at element {i}; tramway refuses non-finite weights"),
                );
            }
            w.tensors.insert(name.to_string(), HostTensor { shape, data, dtype });
        }
        Ok(w)
    }

    /// The float tensor `name`, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&HostTensor> {
        match self.tensors.get(name) {
            None => model_err(&self.file, format!("tensor {name} is missing (expected shape {shape:?})")),
            Some(t) if t.shape != shape => {
                model_err(&self.file, format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape))
            }
            Some(t) => Ok(t),
        }
    }

    /// The integer tensor `name` (fixtures).
    pub fn ints(&self, name: &str) -> Result<&(Vec<usize>, Vec<i64>)> {
        match self.ints.get(name) {
            Some(v) => Ok(v),
            None => model_err(&self.file, format!("integer tensor {name} is missing")),
        }
    }
}

/// `N` bytes of a chunk that `chunks_exact(N)` produced (always exactly `N` long).
fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(c);
    b
}

/// Little-endian values of `N` bytes widened to f32 by `f` (which also returns the value before
/// narrowing, for F64), in one pass that notes the first non-finite result: (index, f32 value,
/// wide value).
#[allow(clippy::type_complexity)]
fn widen<const N: usize>(
    d: &[u8],
    f: impl Fn([u8; N]) -> (f32, Option<f64>),
) -> (Vec<f32>, Option<(usize, f32, Option<f64>)>) {
    let mut out = Vec::with_capacity(d.len() / N);
    let mut bad = None;
    for c in d.chunks_exact(N) {
        let (x, wide) = f(le(c));
        if !x.is_finite() && bad.is_none() {
            bad = Some((out.len(), x, wide));
        }
        out.push(x);
    }
    (out, bad)
}

/// Encode tensors as a safetensors file, each in its `dtype` (F32, F16 or BF16).
pub fn serialize(file: &str, tensors: &[(String, HostTensor)]) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| match t.dtype {
            Dtype::F16 => t.data.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            Dtype::BF16 => t.data.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
            _ => t.data.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        })
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, t), b) in tensors.iter().zip(&bytes) {
        let dtype = match t.dtype {
            Dtype::F16 | Dtype::BF16 => t.dtype,
            _ => Dtype::F32,
        };
        match TensorView::new(dtype, t.shape.clone(), b) {
            Ok(v) => views.push((name.clone(), v)),
            Err(e) => return model_err(file, format!("tensor {name}: {e}")),
        }
    }
    // transformers checks for this metadata entry.
    let meta = Some(core::iter::once(("format".to_string(), "pt".to_string())).collect());
    safetensors::serialize(views, meta).or_else(|e| model_err(file, format!("cannot encode: {e}")))
}
