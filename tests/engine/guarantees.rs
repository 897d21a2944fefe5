//! What tramway guarantees a user (README "What tramway guarantees"), tested through the
//! `tramway` binary on the fixture models so it always runs:
//! - a table of bad inputs: each exits non-zero with a message naming the flag, key, file or
//!   tensor, never panics, and leaves the `--out` folder's previous contents as they were;
//! - the finite guard: a run that goes NaN/Inf stops at that step, names the quantity and the
//!   last good checkpoint, and writes nothing over it;
//! - crash safety: kill -9 at random moments of a checkpointing run, then every checkpoint
//!   loads and the resumed run ends bitwise where an uninterrupted one does; the abort switch
//!   between the two renames of a checkpoint swap loses nothing;
//! - Hugging Face label semantics: integer labels index a fine-tuned head.

use super::encoder::fixture;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tramway");

/// A scratch folder per test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tramway-guard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A word-level tokenizer.json over `w0 … w{n-1}` (ids 0..n), whitespace-split.
pub fn word_tokenizer(n: usize) -> String {
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..n).map(|i| (format!("w{i}"), serde_json::json!(i))).collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w1"}
    })
    .to_string()
}

/// The BERT fixture (2 layers, vocabulary 99, 3 labels, dropout 0) with a tokenizer, in `dir`.
pub fn text_model(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("bert/model").join(f), m.join(f)).unwrap();
    }
    std::fs::write(m.join("tokenizer.json"), word_tokenizer(99)).unwrap();
    m
}

/// A learnable two-class CSV: class `a` uses words w10..w40, class `b` w50..w80.
pub fn text_data(path: &Path, n: usize, labels: [&str; 2]) {
    let mut s = String::from("text,label\n");
    for i in 0..n {
        let c = i % 2;
        let base = if c == 0 { 10 } else { 50 };
        let words: Vec<String> = (0..5).map(|k| format!("w{}", base + (i * 7 + k * 3) % 30)).collect();
        s.push_str(&format!("{},{}\n", words.join(" "), labels[c]));
    }
    std::fs::write(path, s).unwrap();
}

/// A scratch folder `name` with the fixture text model and a two-class training CSV of `n`
/// rows: (folder, model, training file, an output path).
fn setup(name: &str, n: usize) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let dir = scratch(name);
    let model = text_model(&dir);
    let train = dir.join("train.csv");
    text_data(&train, n, ["neg", "pos"]);
    let out = dir.join("out");
    (dir, model, train, out)
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Every file under `dir` with its bytes (hidden lock file excluded).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name() != ".tramway.lock" {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn finetune_args<'a>(model: &'a str, train: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "finetune",
        "--model",
        model,
        "--train",
        train,
        "--out",
        out,
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--max-len",
        "16",
        "--optimizer",
        "adamw",
        "--lr",
        "1e-3",
    ]
}

/// Write a modified copy of the fixture model: `edit` changes its config.json.
fn model_with_config(dir: &Path, name: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let m = dir.join(name);
    std::fs::create_dir_all(&m).unwrap();
    let src = dir.join("model");
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), m.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(m.join("config.json"), cfg.to_string()).unwrap();
    m
}

/// Replace tensor `name` of a safetensors file by `f(values)`.
fn edit_tensor(path: &Path, name: &str, f: impl Fn(&mut Vec<f32>)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let off = &header[name]["data_offsets"];
    let (a, b) = (8 + n + off[0].as_u64().unwrap() as usize, 8 + n + off[1].as_u64().unwrap() as usize);
    let mut v: Vec<f32> = bytes[a..b].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    f(&mut v);
    let mut out = bytes.clone();
    out[a..b].copy_from_slice(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    std::fs::write(path, out).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// At least 40 bad inputs against the command line. Each must exit non-zero with a message
/// holding every key word of its row, print no panic, and leave the `--out` folder of an
/// earlier good run byte for byte as it was.
#[test]
fn bad_inputs_give_clear_errors_and_lose_nothing() {
    let (dir, model, train, out) = setup("table", 16);
    let (m, t, o) = (model.to_str().unwrap(), train.to_str().unwrap(), out.to_str().unwrap());
    // A good run first: its out folder must survive every bad one.
    let mut good = finetune_args(m, t, o);
    let metrics = out.join("metrics.jsonl");
    good.extend(["--save-every", "1", "--metrics", metrics.to_str().unwrap()]);
    let r = run(&good, &[]);
    assert!(r.status.success(), "the good run: {}", text(&r));
    assert!(!text(&r).contains("error"), "a successful run prints no error line: {}", text(&r));
    let before = snapshot(&out);
    assert!(before.keys().any(|k| k.starts_with("final")) && before.keys().any(|k| k.starts_with("checkpoint-1")));

    // Files for the rows.
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    std::fs::write(dir.join("nocol.csv"), "sentence,label\nw1 w2,a\nw3,b\n").unwrap();
    std::fs::write(dir.join("onelabel.csv"), "text,label\nw1 w2,a\nw3,a\n").unwrap();
    std::fs::write(dir.join("tiny.csv"), "text,label\nw1 w2,a\nw3,b\nw4,a\n").unwrap();
    std::fs::write(dir.join("eval-unknown.csv"), "text,label\nw11 w12,neg\nw51,maybe\n").unwrap();
    std::fs::write(dir.join("empty.csv"), "").unwrap();
    std::fs::write(dir.join("eval-oov.csv"), "text,label\nw11 w12,neg\nw51 w120,pos\n").unwrap();
    let big_tok = model_with_config(&dir, "big-tokenizer", |_| {});
    std::fs::write(big_tok.join("tokenizer.json"), word_tokenizer(130)).unwrap();
    let eps = model_with_config(&dir, "eps", |c| c["layer_norm_eps"] = serde_json::json!(-100));
    let drop = model_with_config(&dir, "dropout", |c| c["hidden_dropout_prob"] = serde_json::json!(-0.5));
    let layers = model_with_config(&dir, "layers", |c| c["num_hidden_layers"] = serde_json::json!(1));
    let bad_json = model_with_config(&dir, "badjson", |_| {});
    std::fs::write(bad_json.join("config.json"), "{\"model_type\": \"bert\", ").unwrap();
    let nan_w = model_with_config(&dir, "nanweight", |_| {});
    edit_tensor(&nan_w.join("model.safetensors"), "bert.encoder.layer.1.output.dense.weight", |v| v[5] = f32::NAN);
    let inf_w = model_with_config(&dir, "infweight", |_| {});
    edit_tensor(&inf_w.join("model.safetensors"), "classifier.bias", |v| v[0] = f32::INFINITY);
    let trunc = model_with_config(&dir, "truncated", |_| {});
    let b = std::fs::read(trunc.join("model.safetensors")).unwrap();
    std::fs::write(trunc.join("model.safetensors"), &b[..b.len() / 2]).unwrap();
    let bad_tok = model_with_config(&dir, "badtok", |_| {});
    std::fs::write(bad_tok.join("tokenizer.json"), "{\"model\": 3}").unwrap();
    let no_tok = model_with_config(&dir, "notok", |_| {});
    std::fs::remove_file(no_tok.join("tokenizer.json")).unwrap();
    let ckpt = out.join("checkpoint-1");
    let no_state = dir.join("ckpt-nostate");
    copy_dir(&ckpt, &no_state);
    std::fs::remove_file(no_state.join("trainer_state.json")).unwrap();
    let no_step = dir.join("ckpt-nostep");
    copy_dir(&ckpt, &no_step);
    let mut st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ckpt.join("trainer_state.json")).unwrap()).unwrap();
    st.as_object_mut().unwrap().remove("step");
    std::fs::write(no_step.join("trainer_state.json"), st.to_string()).unwrap();
    let beyond = dir.join("ckpt-beyond");
    copy_dir(&ckpt, &beyond);
    let mut st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ckpt.join("trainer_state.json")).unwrap()).unwrap();
    st["step"] = serde_json::json!(7);
    std::fs::write(beyond.join("trainer_state.json"), st.to_string()).unwrap();
    let nan_moments = dir.join("ckpt-nanmoments");
    copy_dir(&ckpt, &nan_moments);
    edit_tensor(&nan_moments.join("optimizer.safetensors"), "v.bert.encoder.layer.0.attention.self.key.weight", |v| {
        v[3] = f32::NAN
    });
    let other_data = dir.join("other.csv");
    text_data(&other_data, 18, ["neg", "pos"]);
    let idx0 = dir.join("zero-images-idx3-ubyte");
    std::fs::write(&idx0, [0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    std::fs::write(dir.join("zero-labels-idx1-ubyte"), [0u8, 0, 8, 1, 0, 0, 0, 2, 0, 1]).unwrap();
    let vit = dir.join("vit");
    copy_dir(&fixture("vit/model"), &vit);
    let vit_big = dir.join("vit-bigprep");
    copy_dir(&fixture("vit/model"), &vit_big);
    std::fs::write(
        vit_big.join("preprocessor_config.json"),
        r#"{"do_resize": true, "size": {"shortest_edge": 100000}, "do_normalize": true, "image_mean": [0.5,0.5,0.5], "image_std": [0.5,0.5,0.5]}"#,
    )
    .unwrap();
    let img_train = dir.join("imgs");
    for c in ["a", "b"] {
        std::fs::create_dir_all(img_train.join(c)).unwrap();
        image::GrayImage::from_pixel(8, 8, image::Luma([if c == "a" { 20 } else { 220 }]))
            .save(img_train.join(c).join("1.png"))
            .unwrap();
    }

    type Row = (&'static str, Vec<String>, Vec<&'static str>);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // finetune on the good model and data, with extra flags.
    let ft = |extra: &[&str]| {
        let mut a = s(&finetune_args(m, t, o));
        a.extend(s(extra));
        a
    };
    // finetune with another model folder or training file.
    let ft_with = |model: &str, train: &str, extra: &[&str]| {
        let mut a = s(&finetune_args(model, train, o));
        a.extend(s(extra));
        a
    };
    let resume = |from: &Path, extra: &[&str]| {
        let mut a = ft(&["--save-every", "1", "--resume", from.to_str().unwrap()]);
        a.extend(s(extra));
        a
    };
    let rows: Vec<Row> = vec![
        ("lr NaN", ft(&["--lr", "NaN"]), vec!["--lr", "NaN"]),
        ("lr negative", ft(&["--lr", "-1"]), vec!["--lr", "-1"]),
        ("lr negative, = form", ft(&["--lr=-0.5"]), vec!["--lr", "-0.5"]),
        ("lr infinite", ft(&["--lr", "inf"]), vec!["--lr", "inf"]),
        ("lr not a number", ft(&["--lr", "fast"]), vec!["--lr", "fast"]),
        ("weight decay NaN", ft(&["--weight-decay", "NaN"]), vec!["--weight-decay"]),
        ("weight decay negative", ft(&["--weight-decay", "-0.1"]), vec!["--weight-decay"]),
        (
            "epochs NaN",
            ft_with(m, t, &["--epochs", "NaN"]).into_iter().filter(|a| a != "--steps" && a != "2").collect(),
            vec!["--epochs"],
        ),
        (
            "epochs 0",
            ft_with(m, t, &["--epochs", "0"]).into_iter().filter(|a| a != "--steps" && a != "2").collect(),
            vec!["--epochs"],
        ),
        (
            "epochs negative",
            ft_with(m, t, &["--epochs", "-2"]).into_iter().filter(|a| a != "--steps" && a != "2").collect(),
            vec!["--epochs"],
        ),
        ("clip NaN", ft(&["--clip", "NaN"]), vec!["--clip"]),
        ("clip negative", ft(&["--clip", "-1"]), vec!["--clip"]),
        ("max-eval 0", ft(&["--eval", &format!("dev={t}"), "--max-eval", "0"]), vec!["--max-eval"]),
        ("max-eval without an eval set", ft(&["--max-eval", "4"]), vec!["--max-eval", "--eval"]),
        ("batch size 0", ft(&["--batch-size", "0"]), vec!["--batch-size"]),
        ("max-len 0", ft(&["--max-len", "0"]), vec!["--max-len"]),
        (
            "max-len above the model's positions",
            ft(&["--max-len", "1000"]),
            vec!["--max-len", "max_position_embeddings"],
        ),
        ("log-every 0", ft(&["--log-every", "0"]), vec!["--log-every"]),
        (
            "eval batch size 0",
            ft(&["--eval", &format!("dev={t}"), "--eval-batch-size", "0"]),
            vec!["--eval-batch-size"],
        ),
        ("eval set twice", ft(&["--eval", &format!("dev={t}"), "--eval", &format!("dev={t}")]), vec!["--eval", "dev"]),
        ("eval without =", ft(&["--eval", "devset"]), vec!["NAME=PATH"]),
        ("rho NaN", ft(&["--optimizer", "sam", "--rho", "NaN"]), vec!["--rho"]),
        ("rho 0", ft(&["--optimizer", "sam", "--rho", "0"]), vec!["--rho"]),
        ("eta negative", ft(&["--optimizer", "asam", "--eta", "-1"]), vec!["--eta"]),
        ("noise std 0", ft(&["--optimizer", "tram-x", "--noise-std", "0"]), vec!["--noise-std"]),
        ("tr-scale negative", ft(&["--optimizer", "tram-x", "--tr-scale", "-1"]), vec!["--tr-scale"]),
        ("ema decay above 1", ft(&["--optimizer", "tram-ema", "--ema-decay", "1.5"]), vec!["--ema-decay"]),
        ("lambda NaN", ft(&["--optimizer", "r3f", "--lambda", "NaN"]), vec!["--lambda"]),
        ("momentum 1.5", ft(&["--optimizer", "sgd", "--momentum", "1.5"]), vec!["--momentum"]),
        ("gamma infinite", ft(&["--optimizer", "fsam", "--gamma", "inf"]), vec!["--gamma"]),
        ("unknown optimizer", ft(&["--optimizer", "adam"]), vec!["--optimizer", "adamw"]),
        ("option of another optimizer", ft(&["--rho", "0.1"]), vec!["--optimizer", "--rho"]),
        ("unknown schedule", ft(&["--schedule", "step"]), vec!["--schedule"]),
        ("unknown task", ft(&["--task", "ner"]), vec!["--task"]),
        ("task of the other kind", ft(&["--task", "image-classification"]), vec!["--task", "TextClassification"]),
        ("model folder missing", ft_with(&p("nope"), t, &[]), vec!["nope", "config.json"]),
        ("training file missing", ft_with(m, &p("nope.csv"), &[]), vec!["nope.csv"]),
        ("training file without the text column", ft_with(m, &p("nocol.csv"), &[]), vec!["nocol.csv", "text"]),
        ("empty training file", ft_with(m, &p("empty.csv"), &[]), vec!["empty.csv"]),
        ("one label only", ft_with(m, &p("onelabel.csv"), &[]), vec!["onelabel.csv", "two"]),
        (
            "eval label unknown",
            ft(&["--eval", &format!("dev={}", p("eval-unknown.csv"))]),
            vec!["eval-unknown.csv", "maybe"],
        ),
        (
            "eval token outside the vocabulary",
            ft_with(big_tok.to_str().unwrap(), t, &["--eval", &format!("dev={}", p("eval-oov.csv"))]),
            vec!["eval-oov.csv", "120", "vocabulary"],
        ),
        ("layer_norm_eps negative", ft_with(eps.to_str().unwrap(), t, &[]), vec!["config.json", "layer_norm_eps"]),
        ("dropout negative", ft_with(drop.to_str().unwrap(), t, &[]), vec!["config.json", "hidden_dropout_prob"]),
        (
            "fewer layers than the checkpoint",
            ft_with(layers.to_str().unwrap(), t, &[]),
            vec!["num_hidden_layers", "layer 1"],
        ),
        ("config.json not JSON", ft_with(bad_json.to_str().unwrap(), t, &[]), vec!["config.json", "JSON"]),
        (
            "NaN weight",
            ft_with(nan_w.to_str().unwrap(), t, &[]),
            vec!["bert.encoder.layer.1.output.dense.weight", "NaN"],
        ),
        ("infinite weight", ft_with(inf_w.to_str().unwrap(), t, &[]), vec!["classifier.bias", "inf"]),
        ("truncated safetensors", ft_with(trunc.to_str().unwrap(), t, &[]), vec!["model.safetensors"]),
        ("tokenizer.json malformed", ft_with(bad_tok.to_str().unwrap(), t, &[]), vec!["tokenizer.json"]),
        ("tokenizer.json missing", ft_with(no_tok.to_str().unwrap(), t, &[]), vec!["tokenizer.json"]),
        ("resume without trainer_state.json", resume(&no_state, &[]), vec!["trainer_state.json"]),
        ("resume: trainer_state.json without a step", resume(&no_step, &[]), vec!["trainer_state.json", "step"]),
        ("resume: step beyond the run", resume(&beyond, &[]), vec!["trainer_state.json", "step 7"]),
        ("resume: another seed", resume(&ckpt, &["--seed", "5"]), vec!["seed", "checkpoint 42, now 5"]),
        ("resume: another batch size", resume(&ckpt, &["--batch-size", "2"]), vec!["batch_size"]),
        (
            "resume: other data",
            ft_with(m, other_data.to_str().unwrap(), &["--resume", ckpt.to_str().unwrap()]),
            vec!["training"],
        ),
        ("resume: another optimizer", resume(&ckpt, &["--optimizer", "sgd"]), vec!["optimizer", "adamw", "sgd"]),
        (
            "resume: NaN optimizer moments",
            resume(&nan_moments, &[]),
            vec!["optimizer.safetensors", "v.bert.encoder.layer.0.attention.self.key.weight", "NaN"],
        ),
        (
            "IDX of 0x0 images",
            ft_with(vit.to_str().unwrap(), idx0.to_str().unwrap(), &[]),
            vec!["zero-images-idx3-ubyte"],
        ),
        (
            "image size 100000",
            ft_with(vit.to_str().unwrap(), img_train.to_str().unwrap(), &["--image-size", "100000"]),
            vec!["--image-size", "4096"],
        ),
        (
            "preprocessor size 100000",
            ft_with(vit_big.to_str().unwrap(), img_train.to_str().unwrap(), &[]),
            vec!["preprocessor_config.json", "100000"],
        ),
        ("eval: NaN model", s(&["eval", "--model", nan_w.to_str().unwrap(), "--eval", &format!("d={t}")]), vec!["NaN"]),
        (
            "eval: max-eval 0",
            s(&["eval", "--model", m, "--eval", &format!("d={t}"), "--max-eval", "0"]),
            vec!["--max-eval"],
        ),
        ("predict: batch size 0", s(&["predict", "--model", m, "--batch-size", "0", "w1 w2"]), vec!["--batch-size"]),
        ("predict: NaN model", s(&["predict", "--model", inf_w.to_str().unwrap(), "w1 w2"]), vec!["inf"]),
        ("embed: batch size 0", s(&["embed", "--model", m, "--batch-size", "0", "w1"]), vec!["--batch-size"]),
        (
            "probe: an eval label the training data lacks",
            s(&["probe", "--model", m, "--train", t, "--eval", &format!("x={}", p("eval-unknown.csv"))]),
            vec!["eval-unknown.csv", "\"maybe\"", "training labels"],
        ),
        (
            "probe: one training label",
            s(&["probe", "--model", m, "--train", &p("onelabel.csv")]),
            vec!["onelabel.csv", "at least two"],
        ),
        (
            "probe: too few training rows for a dev split",
            s(&["probe", "--model", m, "--train", &p("onelabel.csv").replace("onelabel", "tiny")]),
            vec!["tiny.csv", "--dev"],
        ),
        ("probe: negative L2", s(&["probe", "--model", m, "--train", t, "--l2=0.1,-1"]), vec!["--l2", "-1"]),
        ("probe: max-len 0", s(&["probe", "--model", m, "--train", t, "--max-len", "0"]), vec!["--max-len"]),
        (
            "probe: missing dev file",
            s(&["probe", "--model", m, "--train", t, "--dev", &p("nope.csv")]),
            vec!["nope.csv"],
        ),
    ];
    assert!(rows.len() >= 40, "{} rows", rows.len());
    let mut failures = Vec::new();
    for (what, args, words) in &rows {
        let r = run(&args.iter().map(|a| a.as_str()).collect::<Vec<_>>(), &[]);
        let msg = text(&r);
        // What a user sees (shown with --nocapture).
        println!("{what}: {}", msg.lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>().join(" | "));
        let mut wrong = Vec::new();
        if r.status.success() {
            wrong.push("exit status 0".to_string());
        }
        if msg.contains("panicked") || msg.contains("RUST_BACKTRACE") || r.status.code().is_none() {
            wrong.push("panic or abort".to_string());
        }
        for w in words {
            if !msg.contains(w) {
                wrong.push(format!("no {w:?} in the message"));
            }
        }
        if snapshot(&out) != before {
            wrong.push("the --out folder changed".to_string());
        }
        if !wrong.is_empty() {
            failures.push(format!("{what}: {}\n    {}", wrong.join(", "), msg.trim().replace('\n', "\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs misbehaved:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second process on the same `--out` is refused while the first holds it; a lock left by a
/// dead process is taken over.
#[test]
fn out_folder_is_locked() {
    let (dir, model, train, out) = setup("lock", 8);
    let args = finetune_args(model.to_str().unwrap(), train.to_str().unwrap(), out.to_str().unwrap());
    {
        let _held = tramway::train::checkpoint::OutLock::acquire(&out).unwrap();
        let r = run(&args, &[]);
        let msg = text(&r);
        assert!(!r.status.success() && msg.contains("--out") && msg.contains(&std::process::id().to_string()), "{msg}");
        assert!(!out.join("final").exists());
    }
    // The lock file stays behind with the dead holder's PID; the next run takes it over.
    assert!(out.join(".tramway.lock").exists());
    let r = run(&args, &[]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(out.join("final/model.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The finite guard: a run whose learning rate explodes at step 2 (warmup from 0 to 1e30) stops
/// there with the quantity named, keeps checkpoint-1 as it was, writes no checkpoint-2 and no
/// final/, and names checkpoint-1 for resuming; for AdamW, SAM and TRAM-x.
#[test]
fn nonfinite_training_stops_at_its_step() {
    let (dir, model, train, _) = setup("nan", 8);
    for opt in ["adamw", "sam", "tram-x"] {
        let out = dir.join(format!("out-{opt}"));
        let mut args = finetune_args(model.to_str().unwrap(), train.to_str().unwrap(), out.to_str().unwrap());
        let metrics = out.join("metrics.jsonl");
        args.extend([
            "--steps",
            "4",
            "--save-every",
            "1",
            "--lr",
            "1e30",
            "--clip",
            "0",
            "--warmup",
            "10",
            "--optimizer",
            opt,
            "--metrics",
            metrics.to_str().unwrap(),
        ]);
        let r = run(&args, &[]);
        let msg = text(&r);
        assert!(!r.status.success(), "{opt}: {msg}");
        assert!(msg.contains("step 2") && msg.contains("NaN or infinite"), "{opt}: {msg}");
        assert!(msg.contains("updated parameters") || msg.contains("loss"), "{opt}: names the quantity: {msg}");
        assert!(msg.contains(&format!("--resume {}", out.join("checkpoint-1").display())), "{opt}: {msg}");
        assert!(!msg.contains("panicked"), "{opt}: {msg}");
        assert!(out.join("checkpoint-1/model.safetensors").exists(), "{opt}");
        assert!(!out.join("checkpoint-2").exists() && !out.join("final").exists(), "{opt}");
        // checkpoint-1 is the good model of step 1 (learning rate 0 at step 0): finite and loadable.
        let w = tramway::io::hf::read_weights(&out.join("checkpoint-1")).unwrap();
        assert!(w.tensors.values().all(|t| t.data.iter().all(|v| v.is_finite())), "{opt}");
    }
    // A library caller gets the typed error.
    let _ = std::fs::remove_dir_all(&dir);
}

/// kill -9 at random moments of a run that checkpoints every step, five times, resuming from
/// the newest checkpoint each time: every checkpoint present loads, and the run finished by the
/// last resume ends bitwise where an uninterrupted run does (model and optimizer state).
#[test]
fn killed_runs_resume_bitwise() {
    let (dir, model, train, _) = setup("kill", 12);
    let (m, t) = (model.to_str().unwrap().to_string(), train.to_str().unwrap().to_string());
    let args = |out: &Path, resume: Option<&Path>| -> Vec<String> {
        let mut a: Vec<String> = finetune_args(&m, &t, out.to_str().unwrap()).iter().map(|s| s.to_string()).collect();
        a.extend(["--steps", "8", "--save-every", "1", "--optimizer", "tram-x"].iter().map(|s| s.to_string()));
        if let Some(r) = resume {
            a.extend(["--resume".to_string(), r.to_str().unwrap().to_string()]);
        }
        a
    };
    let straight = dir.join("straight");
    let t0 = std::time::Instant::now();
    let r = run(&args(&straight, None).iter().map(|s| s.as_str()).collect::<Vec<_>>(), &[]);
    assert!(r.status.success(), "{}", text(&r));
    let whole = t0.elapsed().as_secs_f64();
    let out = dir.join("crashed");
    let newest = |out: &Path| -> Option<PathBuf> {
        let mut c: Vec<(u64, PathBuf)> = std::fs::read_dir(out)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                Some((n.strip_prefix("checkpoint-")?.parse().ok()?, e.path()))
            })
            .collect();
        c.sort();
        c.pop().map(|(_, p)| p)
    };
    let mut rng = super::Rng::new(0xc4a5);
    let mut kills = 0;
    while kills < 5 {
        let from = newest(&out);
        let mut child = Command::new(BIN)
            .args(args(&out, from.as_deref()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A moment in the second half of a run's life (start-up is the first part; the
        // checkpoints are written one per step after it).
        let at = whole * (0.45 + 0.5 * (rng.f() as f64 + 1.0) / 2.0);
        std::thread::sleep(std::time::Duration::from_secs_f64(at));
        if child.try_wait().unwrap().is_some() {
            // It finished first: start over from the beginning of the crash series.
            let _ = std::fs::remove_dir_all(&out);
            continue;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // Every checkpoint present is complete: it loads, with its state and moments.
        for e in std::fs::read_dir(&out).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with("checkpoint-") || n == "final" {
                let p = e.path();
                tramway::train::Classifier::load(super::gpu(), &p, 16).unwrap_or_else(|e| panic!("{n}: {e}"));
                tramway::train::checkpoint::TrainerState::read(&p).unwrap_or_else(|e| panic!("{n}: {e}"));
                tramway::io::hf::read_weights(&p.join("optimizer.safetensors")).unwrap_or_else(|e| panic!("{n}: {e}"));
            }
        }
    }
    let from = newest(&out);
    let r = run(&args(&out, from.as_deref()).iter().map(|s| s.as_str()).collect::<Vec<_>>(), &[]);
    assert!(r.status.success(), "{}", text(&r));
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(straight.join("final").join(f)).unwrap();
        let b = std::fs::read(out.join("final").join(f)).unwrap();
        assert!(a == b, "final/{f}: the run killed {kills} times must end bitwise where the straight one did");
    }
    // Nothing a killed run left behind survives the next start.
    let hidden: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.') && n != ".tramway.lock")
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The abort switch between the two renames of a checkpoint swap: the previous final/ is
/// aside, complete; the next run on the folder puts it back before anything else.
#[test]
fn abort_between_the_renames_loses_nothing() {
    let (dir, model, train, out) = setup("swap", 8);
    let args = finetune_args(model.to_str().unwrap(), train.to_str().unwrap(), out.to_str().unwrap());
    let r = run(&args, &[]);
    assert!(r.status.success(), "{}", text(&r));
    let first = snapshot(&out.join("final"));
    let mut again = args.clone();
    again.extend(["--seed", "3"]);
    let r = run(&again, &[("TRAMWAY_FAULT", "checkpoint-swap")]);
    assert!(r.status.code().is_none() || !r.status.success(), "the switch aborts: {}", text(&r));
    assert!(text(&r).contains("aborting on purpose"), "{}", text(&r));
    let aside: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".final.old-"))
        .collect();
    assert_eq!(aside.len(), 1, "the old final/ is aside");
    assert_eq!(snapshot(&aside[0]), first, "complete and unchanged");
    // The next run on the folder restores it first (here a zero-step evaluation that saves nothing).
    let mut zero = args.clone();
    zero.extend(["--steps", "0", "--no-save"]);
    let r = run(&zero, &[]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("restored"), "{}", text(&r));
    assert_eq!(snapshot(&out.join("final")), first);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Hugging Face label semantics: a classifier fine-tuned on labels `neg`/`pos`, trained on
/// with integer labels 0/1, keeps its head: the first step's loss is `tramway eval`'s loss on
/// the same examples (with a re-initialised head it would differ).
#[test]
fn integer_labels_index_a_fine_tuned_head() {
    let dir = scratch("labels");
    let model = text_model(&dir);
    let named = dir.join("named.csv");
    text_data(&named, 8, ["neg", "pos"]);
    let ints = dir.join("ints.csv");
    text_data(&ints, 8, ["0", "1"]);
    let out = dir.join("out");
    let mut args = finetune_args(model.to_str().unwrap(), named.to_str().unwrap(), out.to_str().unwrap());
    args.extend(["--steps", "6", "--lr", "1e-2", "--schedule", "constant"]);
    let r = run(&args, &[]);
    assert!(r.status.success(), "{}", text(&r));
    let tuned = out.join("final");
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(tuned.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["id2label"]["0"], "neg");
    // eval with integer labels indexes the head.
    let r = run(
        &[
            "eval",
            "--model",
            tuned.to_str().unwrap(),
            "--eval",
            &format!("d={}", ints.display()),
            "--batch-size",
            "8",
            "--max-len",
            "16",
        ],
        &[],
    );
    assert!(r.status.success(), "{}", text(&r));
    let line: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&r.stdout).trim()).unwrap();
    let eval_loss = line["loss"].as_f64().unwrap();
    let first_loss = |train: &Path, name: &str| -> f64 {
        let o = dir.join(name);
        let metrics = dir.join(format!("{name}.jsonl"));
        let mut a = finetune_args(tuned.to_str().unwrap(), train.to_str().unwrap(), o.to_str().unwrap());
        // Later flags override earlier ones.
        a.extend(["--steps", "1", "--batch-size", "8", "--metrics", metrics.to_str().unwrap()]);
        let r = run(&a, &[]);
        assert!(r.status.success(), "{}", text(&r));
        let l: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&metrics).unwrap().lines().next().unwrap()).unwrap();
        l["loss"].as_f64().unwrap()
    };
    let kept = first_loss(&ints, "ints");
    // Same examples, same weights, dropout 0: only the order of the batch's rows differs.
    assert!((kept - eval_loss).abs() <= 1e-5 * eval_loss.abs().max(1e-3), "first step {kept} vs eval {eval_loss}");
    // The check can fail: labels that fit neither names nor indices get a fresh head.
    let other = dir.join("other.csv");
    text_data(&other, 8, ["x", "y"]);
    let fresh = first_loss(&other, "other");
    assert!((fresh - eval_loss).abs() > 1e-3, "a new head gives another loss ({fresh} vs {eval_loss})");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tramway probe` on the BERT fixture: frozen mean-pooled features of two classes with
/// disjoint words separate, the class-balanced cut has the asked size, the dev choice and the
/// Markdown report are written.
#[test]
fn probe_separates_frozen_features_and_reports() {
    let dir = scratch("probe");
    let model = text_model(&dir);
    let train = dir.join("train.csv");
    text_data(&train, 120, ["neg", "pos"]);
    // Held-out rows: the same word ranges, other combinations.
    let mut s = String::from("text,label\n");
    for i in 0..30 {
        let (c, base) = if i % 3 == 0 { ("pos", 50) } else { ("neg", 10) };
        let words: Vec<String> = (0..4).map(|k| format!("w{}", base + (i * 11 + k * 5 + 1) % 30)).collect();
        s.push_str(&format!("{},{c}\n", words.join(" ")));
    }
    let held = dir.join("held.csv");
    std::fs::write(&held, s).unwrap();
    let report = dir.join("report").join("probe.md");
    let args = [
        "probe",
        "--model",
        model.to_str().unwrap(),
        "--train",
        train.to_str().unwrap(),
        "--eval",
        &format!("held={}", held.display()),
        "--max-eval",
        "20",
        "--max-len",
        "16",
        "--l2",
        "1e-3,1",
        "--out",
        report.to_str().unwrap(),
    ];
    let r = run(&args, &[]);
    assert!(r.status.success(), "{}", text(&r));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&r.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "two dev lines, the choice, one eval: {lines:?}");
    let chosen = lines[2]["chosen_l2"].as_f64().unwrap();
    assert!(chosen == 1e-3 || chosen == 1.0, "{chosen}");
    assert_eq!(lines[3]["eval"], "held");
    // 10 of each class: the cut is balanced although the file has twice as many neg rows.
    assert_eq!(lines[3]["examples"], 20);
    let acc = lines[3]["accuracy"].as_f64().unwrap();
    // Chance is 0.5; 16 of 20 right by chance has probability 0.6 %.
    assert!(acc >= 0.8, "held-out accuracy {acc}: {lines:?}");
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("| held | 20 |") && md.contains("(chosen)") && md.contains("commit"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}
