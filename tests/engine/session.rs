//! `tramway::session`, the in-memory API the browser package wraps: a model from bytes, embedding,
//! step-by-step training, classification, and clear errors for bad calls. (web/test.sh checks
//! that a browser gives the same numbers as this code natively.)

use crate::encoder::fixture;
use crate::guarantees::word_tokenizer;
use tramway::optim::{Method, OptimConfig, Schedule, METHOD_NAMES};
use tramway::session::{SessionOptions, TextModelBytes, TextSession};
use tramway::{Error, Gpu, GpuOptions};

struct Files {
    config: Vec<u8>,
    weights: Vec<u8>,
    tokenizer: Vec<u8>,
}

/// The BERT fixture (2 layers, vocabulary 99, dropout 0) with a word-level tokenizer.
fn files() -> Files {
    let dir = fixture("bert/model");
    Files {
        config: std::fs::read(dir.join("config.json")).unwrap(),
        weights: std::fs::read(dir.join("model.safetensors")).unwrap(),
        tokenizer: word_tokenizer(99).into_bytes(),
    }
}

fn open(f: &Files, o: &SessionOptions) -> tramway::Result<TextSession> {
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    TextSession::open(gpu, &TextModelBytes { config: &f.config, weights: &f.weights, tokenizer: &f.tokenizer }, o)
}

fn opts() -> SessionOptions {
    SessionOptions { max_len: 16, layers: None, seed: 3 }
}

fn cfg(name: &str, lr: f32) -> OptimConfig {
    let (base, method) = Method::preset(name).unwrap();
    OptimConfig { base, method, lr, schedule: Schedule::Constant, clip: Some(1.0), seed: 5 }
}

/// A learnable two-class set: class `neg` uses words w10..w40, `pos` w50..w80.
fn data(n: usize) -> (Vec<String>, Vec<&'static str>) {
    (0..n)
        .map(|i| {
            let base = if i % 2 == 0 { 10 } else { 50 };
            let words: Vec<String> = (0..5).map(|k| format!("w{}", base + (i * 7 + k * 3) % 30)).collect();
            (words.join(" "), if i % 2 == 0 { "neg" } else { "pos" })
        })
        .unzip()
}

fn err_text(r: tramway::Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_session_learns_a_separable_task_and_classifies_it() {
    let mut s = open(&files(), &opts()).unwrap();
    let (texts, labels) = data(16);
    s.start_training(&["neg".into(), "pos".into()], cfg("tram-x", 3e-3)).unwrap();
    let mut losses = Vec::new();
    for k in 0..24 {
        let idx: Vec<usize> = (0..8).map(|i| (k * 8 + i) % texts.len()).collect();
        let t: Vec<&str> = idx.iter().map(|&i| texts[i].as_str()).collect();
        let l: Vec<&str> = idx.iter().map(|&i| labels[i]).collect();
        let m = pollster::block_on(s.step(&t, &l)).unwrap();
        assert!(m.loss.is_finite() && m.d.is_finite() && m.d >= 0.0, "step {k}: {m:?}");
        losses.push(m.loss);
    }
    assert_eq!(s.steps(), 24);
    // Two steps' mean at the start and at the end: the loss at least halves on this task.
    let (first, last) = ((losses[0] + losses[1]) / 2.0, (losses[22] + losses[23]) / 2.0);
    assert!(last < 0.5 * first, "losses {losses:?}");
    let p = pollster::block_on(s.classify(&[&texts[0], &texts[1]])).unwrap();
    assert_eq!(s.labels(), ["neg", "pos"]);
    assert!(p[0][0] > 0.5 && p[1][1] > 0.5, "probabilities {p:?}");
    for row in &p {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
    }
}

#[test]
fn embeddings_are_unit_length_and_layers_can_be_dropped() {
    let f = files();
    let full = open(&f, &opts()).unwrap();
    let one = open(&f, &SessionOptions { layers: Some(1), ..opts() }).unwrap();
    assert_eq!(one.config().num_layers, 1);
    let texts = ["w3 w4 w5", "w60 w61"];
    let a = pollster::block_on(full.embed(&texts)).unwrap();
    let b = pollster::block_on(one.embed(&texts)).unwrap();
    assert_eq!(a.len(), 2);
    for e in a.iter().chain(&b) {
        assert_eq!(e.len(), 32);
        let n: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "norm {n}");
    }
    let diff: f32 = a[0].iter().zip(&b[0]).map(|(x, y)| (x - y).abs()).sum();
    assert!(diff > 1e-3, "dropping a layer changed nothing");
}

#[test]
fn bad_calls_get_clear_errors() {
    let f = files();
    let mut s = open(&f, &opts()).unwrap();
    assert!(err_text(pollster::block_on(s.step(&["w1"], &["neg"]))).contains("start_training"));
    let two = ["neg".to_string(), "pos".to_string()];
    assert!(err_text(s.start_training(&two[..1], cfg("adamw", 1e-3))).contains("at least two"));
    assert!(err_text(s.start_training(&["a".into(), "a".into()], cfg("adamw", 1e-3))).contains("repeated"));
    assert!(err_text(s.start_training(&two, cfg("adamw", f32::NAN))).contains("lr"));
    s.start_training(&two, cfg("adamw", 1e-3)).unwrap();
    let e = err_text(pollster::block_on(s.step(&["w1", "w2"], &["neg", "maybe"])));
    assert!(e.contains("\"maybe\"") || e.contains("maybe") && e.contains("neg, pos"), "{e}");
    assert!(err_text(pollster::block_on(s.step(&["w1", "w2"], &["neg"]))).contains("one label per text"));
    assert!(err_text(Method::preset("adamm")).contains("adamw, sgd"));
    for name in METHOD_NAMES {
        Method::preset(name).unwrap();
    }
    for layers in [0, 3] {
        let e = err_text(open(&f, &SessionOptions { layers: Some(layers), ..opts() }));
        assert!(e.contains("layers") && e.contains("between 1 and the model's 2 layers"), "{e}");
    }
    let e = err_text(open(&f, &SessionOptions { max_len: 41, ..opts() }));
    assert!(e.contains("max_position_embeddings (40)"), "{e}");
    let e = err_text(open(&Files { config: b"{".to_vec(), ..files() }, &opts()));
    assert!(e.contains("config.json"), "{e}");
    let e = err_text(open(&Files { weights: b"not safetensors".to_vec(), ..files() }, &opts()));
    assert!(e.contains("model.safetensors"), "{e}");
    let e = err_text(open(&Files { tokenizer: b"{\"model\": 3}".to_vec(), ..files() }, &opts()));
    assert!(e.contains("tokenizer.json"), "{e}");
}

#[test]
fn a_diverging_step_is_an_error_naming_the_step() {
    let mut s = open(&files(), &opts()).unwrap();
    let (texts, labels) = data(8);
    let mut c = cfg("sam", 1e30);
    c.clip = None;
    s.start_training(&["neg".into(), "pos".into()], c).unwrap();
    let t: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut got = None;
    for _ in 0..4 {
        match pollster::block_on(s.step(&t, &labels)) {
            Ok(_) => {}
            Err(e) => {
                got = Some(e);
                break;
            }
        }
    }
    match got {
        Some(Error::NonFinite { step, .. }) => assert!((1..=4).contains(&step)),
        other => panic!("expected a non-finite step within 4 steps, got {other:?}"),
    }
}
