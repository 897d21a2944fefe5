use super::*;
use std::path::{Path, PathBuf};
use tramway::data::batch::TextBatch;
use tramway::io::hf::read_weights;
use tramway::io::weights::Weights;
use tramway::models::encoder::read_encoder_config;
use tramway::models::encoder::Encoder;

/// A file or folder under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn ints(w: &Weights, name: &str) -> Vec<u32> {
    w.ints(name).unwrap().1.iter().map(|&v| v as u32).collect()
}

/// Largest |got - want| relative to the largest |want| of the tensor: elementwise relative
/// error is meaningless for entries near zero, the tensor's scale is what a bug would disturb.
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    // A length mismatch or a NaN/Inf anywhere is a failure, never a small error: `f64::max`
    // would skip a NaN and `zip` would stop at the shorter slice.
    assert_eq!(got.len(), want.len(), "rel_err: {} values against {} expected", got.len(), want.len());
    if let Some(i) = got.iter().chain(want).position(|v| !v.is_finite()) {
        let (which, i) = if i < got.len() { ("got", i) } else { ("expected", i - got.len()) };
        panic!("rel_err: {which}[{i}] is not finite");
    }
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let diff = got.iter().zip(want).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    diff / scale.max(1e-30)
}

/// Logits and loss against PyTorch, relative to the tensor's scale: f32 on both sides, differing
/// only in summation order, measured <= 1.2e-6 on every fixture (roberta). The 1e-4
/// passed a BERT or RoBERTa run with the tanh GELU in place of erf (logits off by 1.3e-5, 9e-5).
pub const LOGITS_TOL: f64 = 1e-5;
/// Every gradient against PyTorch, relative to its tensor's scale: measured <= 1.4e-5 (bert);
/// the 1e-3 passed the tanh-GELU BERT (4.2e-4) and RoBERTa (3.9e-4).
pub const GRAD_TOL: f64 = 1e-4;

/// The model's logits, loss and every parameter gradient against PyTorch ([`LOGITS_TOL`],
/// [`GRAD_TOL`]).
fn check_against_pytorch(name: &str) {
    check_against_pytorch_on(gpu(), name, false)
}

/// [`check_against_pytorch`] on a given device; `split` asks that the word embeddings were
/// stored as several row blocks (a device with a small binding limit).
fn check_against_pytorch_on(gpu: &Gpu, name: &str, split: bool) {
    let dir = fixture(name);
    let cfg = read_encoder_config(&dir.join("model")).unwrap();
    let weights = read_weights(&dir.join("model")).unwrap();
    let expected = read_weights(&dir.join("expected.safetensors")).unwrap();
    let model = Encoder::load(gpu, cfg, &weights, 0).unwrap();
    assert_eq!(model.params.parts(0).len() > 1, split, "{name}: word embeddings split into blocks");
    check_encoder(gpu, name, &model, &expected);
}

/// An encoder's logits, loss and every trainable parameter's gradient on the batch of the
/// fixture `expected` ([`LOGITS_TOL`], [`GRAD_TOL`]).
pub fn check_encoder(gpu: &Gpu, name: &str, model: &Encoder, expected: &Weights) {
    let expected = expected.clone();
    let (shape, _) = expected.ints("input_ids").unwrap();
    let (b, t) = (shape[0], shape[1]);
    let batch = TextBatch {
        batch: b,
        seq: t,
        ids: ints(&expected, "input_ids"),
        mask: ints(&expected, "attention_mask"),
        types: expected.ints.contains_key("token_type_ids").then(|| ints(&expected, "token_type_ids")),
        labels: Some(ints(&expected, "labels")),
    };
    let mut acts = model.acts(gpu, b, t).unwrap();
    model.upload(gpu, &mut acts, &batch).unwrap();
    let mut rc = gpu.recorder();
    model.params.zero_grads(&mut rc);
    model.forward(&mut rc, &acts, true, None).unwrap();
    model.backward(&mut rc, &acts).unwrap();
    rc.submit().unwrap();
    let logits = gpu.read_f32_blocking(&acts.logits).unwrap();
    let want_logits = &expected.tensors["logits"].data;
    let e = rel_err(&logits, want_logits);
    assert!(e < LOGITS_TOL, "{name}: logits off by {e:.2e} relative:\n{logits:?}\n{want_logits:?}");
    let loss = gpu.read_f32_blocking(&acts.loss).unwrap()[0];
    let want_loss = expected.tensors["loss"].data[0];
    assert!((((loss - want_loss) / want_loss).abs() as f64) < LOGITS_TOL, "{name}: loss {loss} vs {want_loss}");
    check_grads(gpu, name, &model.params, &expected);
}

/// Every parameter gradient against the fixture's `grad.<name>`: finite, non-zero, and within
/// [`GRAD_TOL`] of the tensor's scale (see [`rel_err`]).
pub fn check_grads(gpu: &Gpu, name: &str, params: &tramway::nn::ParamSet, expected: &Weights) {
    // The trainable tensors (all of them, or a LoRA model's adapters and head), by their
    // index in the gradient arena.
    let trainable = params.params.names();
    let local = |n: &str| trainable.iter().position(|x| x == n).unwrap();
    let down = |n: &str| params.grads.read_blocking(gpu, local(n)).unwrap();
    // DINOv2's mask token only serves masked-image modelling: PyTorch gives it no gradient.
    let no_grad = |n: &str| n.ends_with("embeddings.mask_token");
    let names: Vec<String> = trainable.iter().filter(|n| !no_grad(n)).cloned().collect();
    let grads_in_fixture = expected.tensors.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(
        grads_in_fixture,
        names.len(),
        "{name}: the fixture and the model must have the same trainable parameters"
    );
    for n in trainable.iter().filter(|n| no_grad(n)) {
        assert!(down(n).iter().all(|&v| v == 0.0), "{name}: {n} must get no gradient");
    }
    let wants: Vec<&[f32]> = names
        .iter()
        .map(|n| &expected.get(&format!("grad.{n}"), params.grads.shape(local(n))).unwrap().data[..])
        .collect();
    let global = wants.iter().flat_map(|w| w.iter()).fold(0f32, |m, &v| m.max(v.abs()));
    for (i, n) in names.iter().enumerate() {
        let got = down(n);
        assert!(got.iter().all(|v| v.is_finite()), "{name}: gradient of {n} is not finite");
        if n.ends_with("attention.self.key.bias") || n.ends_with("attention.attention.key.bias") {
            // Analytically zero: the key bias adds q.b to every score of a row, and softmax is
            // shift-invariant. Both sides hold rounding noise; it must stay tiny: measured
            // <= 1.8e-9 of the global scale (1e-4 would pass a real gradient of that size).
            let m = got.iter().fold(0f32, |m, &v| m.max(v.abs()));
            assert!(m < 1e-6 * global, "{name}: {n} should be ~0, got {m:e}");
            continue;
        }
        assert!(got.iter().any(|&v| v != 0.0), "{name}: {n} got no gradient");
        let e = rel_err(&got, wants[i]);
        if std::env::var("TRAMWAY_PRINT_ERR").is_ok() {
            eprintln!("{name} {n} {e:.2e}");
        }
        assert!(e < GRAD_TOL, "{name}: gradient of {n} off by {e:.2e} relative");
    }
}

#[test]
fn bert_matches_pytorch() {
    check_against_pytorch("bert");
}

#[test]
fn roberta_matches_pytorch() {
    check_against_pytorch("roberta");
}

/// The same checks on a device whose bindings hold at most 8 KiB: BERT's 99×32 word-embedding
/// table (12.7 KB) is stored as two row blocks, everything else fits one binding.
#[test]
fn bert_with_split_word_embeddings_matches_pytorch() {
    let small = Gpu::new_blocking(GpuOptions { max_binding: Some(8192), ..GpuOptions::from_env().unwrap() }).unwrap();
    check_against_pytorch_on(&small, "bert", true);
}

fn scratch_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tramway-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A saved folder has the original names, shapes, dtypes and values, and loads back identical.
#[test]
fn saved_folder_round_trips_names_shapes_dtypes_values() {
    use tramway::io::weights::serialize;
    use tramway::models::encoder::save_encoder;
    for (name, half) in [("bert", false), ("roberta", true)] {
        let src = fixture(name).join("model");
        let mut orig = read_weights(&src).unwrap();
        let work = scratch_dir(&format!("{name}-src"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::copy(src.join("config.json"), work.join("config.json")).unwrap();
        if half {
            // Store the source in f16 (and one tensor in bf16): reading widens, saving narrows back.
            let mut list: Vec<_> = orig.tensors.drain().collect();
            for (i, (_, t)) in list.iter_mut().enumerate() {
                t.dtype = if i == 0 { safetensors::Dtype::BF16 } else { safetensors::Dtype::F16 };
            }
            std::fs::write(work.join("model.safetensors"), serialize("f16", &list).unwrap()).unwrap();
            orig = read_weights(&work).unwrap();
        } else {
            std::fs::copy(src.join("model.safetensors"), work.join("model.safetensors")).unwrap();
        }
        std::fs::write(work.join("tokenizer.json"), b"{}").unwrap();
        let cfg = read_encoder_config(&work).unwrap();
        let model = Encoder::load(gpu(), cfg, &orig, 0).unwrap();
        let out = scratch_dir(&format!("{name}-out"));
        save_encoder(gpu(), &model, &out, Some(&work)).unwrap();
        assert!(out.join("tokenizer.json").is_file(), "tokenizer files are copied");
        let saved = read_weights(&out).unwrap();
        let mut a: Vec<_> = orig.tensors.keys().collect();
        let mut b: Vec<_> = saved.tensors.keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{name}: same tensor names");
        for (n, t) in &orig.tensors {
            let s = &saved.tensors[n];
            assert_eq!((&s.shape, s.dtype), (&t.shape, t.dtype), "{name}: {n} shape/dtype");
            assert!(s.data.iter().zip(&t.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{name}: {n} values");
        }
        let cfg2 = read_encoder_config(&out).unwrap();
        assert_eq!(cfg2.id2label, model.cfg.id2label);
        let again = Encoder::load(gpu(), cfg2, &saved, 1).unwrap();
        for i in 0..model.params.len() {
            assert_eq!(down(model.params.p(i)), down(again.params.p(i)));
        }
        let _ = std::fs::remove_dir_all(&work);
        let _ = std::fs::remove_dir_all(&out);
    }
}

fn load_err(cfg_edit: impl Fn(&mut serde_json::Value), w_edit: impl Fn(&mut Weights)) -> String {
    let dir = fixture("bert").join("model");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    cfg_edit(&mut v);
    let cfg = match tramway::models::encoder::EncoderConfig::parse("config.json", &v.to_string()) {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let mut w = read_weights(&dir).unwrap();
    w_edit(&mut w);
    match Encoder::load(gpu(), cfg, &w, 0) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_folders_give_clear_errors() {
    let t = "bert.encoder.layer.1.output.dense.weight";
    let e = load_err(
        |_| {},
        |w| {
            w.tensors.remove(t);
        },
    );
    assert!(e.contains(t) && e.contains("missing") && e.contains("[32, 64]"), "{e}");
    let e = load_err(
        |_| {},
        |w| {
            w.tensors.get_mut(t).unwrap().shape = vec![64, 32];
        },
    );
    assert!(e.contains(t) && e.contains("[64, 32]") && e.contains("expected [32, 64]"), "{e}");
    let e = load_err(|v| v["model_type"] = "gpt2".into(), |_| {});
    assert!(e.contains("config.json") && e.contains("\"gpt2\"") && e.contains("not a supported encoder"), "{e}");
    let e = load_err(|v| v["hidden_act"] = "relu".into(), |_| {});
    assert!(e.contains("hidden_act") && e.contains("relu"), "{e}");
    let e = load_err(|v| v["num_attention_heads"] = 5.into(), |_| {});
    assert!(e.contains("hidden_size 32") && e.contains("num_attention_heads 5"), "{e}");
    let e = load_err(|v| v.as_object_mut().unwrap().remove("vocab_size").map(|_| ()).unwrap(), |_| {});
    assert!(e.contains("vocab_size is missing"), "{e}");
    let e =
        tramway::io::weights::Weights::parse("model.safetensors", b"not a safetensors file").unwrap_err().to_string();
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors"), "{e}");
    let missing = scratch_dir("missing");
    let e = read_encoder_config(&missing).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains(&missing.display().to_string()), "{e}");
}
