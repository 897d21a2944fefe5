//! GPT-2 against PyTorch's GPT2LMHeadModel (tools/make_fixtures.py gpt2): logits of every
//! position, the next-token loss on a right-padded batch, and every parameter gradient.

use super::encoder::{fixture, rel_err, LOGITS_TOL};
use super::*;
use tramway::data::batch::LmBatch;
use tramway::io::hf::read_weights;
use tramway::models::gpt2::Gpt2Config;

/// Tolerances as for the encoders: logits and loss `LOGITS_TOL` relative, gradients `GRAD_TOL` of scale.
fn check_on(gpu: &Gpu, split: bool) {
    let dir = fixture("gpt2");
    let text = std::fs::read_to_string(dir.join("model/config.json")).unwrap();
    let cfg = Gpt2Config::parse("config.json", &text).unwrap();
    let model = tramway::models::gpt2::load(gpu, &cfg, &read_weights(&dir.join("model")).unwrap(), 0).unwrap();
    assert_eq!(model.params.parts(0).len() > 1, split, "wte split into row blocks");
    let (batch, loss) = super::llama::check_lm(gpu, "gpt2", &model);
    let b = batch.batch;
    // Tokens counted: every position whose next token is real.
    let real: usize = batch.mask.iter().map(|&m| m as usize).sum();
    assert_eq!(loss[1] as usize, real - b, "every sequence's last real token predicts nothing");
}

#[test]
fn gpt2_matches_pytorch() {
    check_on(gpu(), false);
}

/// The same with a 16 KiB binding limit: wte (150 x 32, 19.2 kB) is stored as two row blocks,
/// so the embedding gather, the tied head and both their backward passes run per block.
#[test]
fn gpt2_with_split_wte_matches_pytorch() {
    let small = Gpu::new_blocking(GpuOptions { max_binding: Some(16384), ..GpuOptions::from_env().unwrap() }).unwrap();
    check_on(&small, true);
}

#[test]
fn next_token_targets_skip_padding_and_the_last_position() {
    let b = LmBatch { batch: 2, seq: 3, ids: vec![5, 6, 7, 8, 9, 0], mask: vec![1, 1, 1, 1, 1, 0] };
    let ig = tramway::ops::cross_entropy::IGNORE_INDEX;
    assert_eq!(b.targets(), vec![6, 7, ig, 9, ig, ig]);
}

#[test]
fn gpt2_configs_give_clear_errors() {
    let base = std::fs::read_to_string(fixture("gpt2/model/config.json")).unwrap();
    let with = |k: &str, v: &str| {
        let mut j: serde_json::Value = serde_json::from_str(&base).unwrap();
        j[k] = serde_json::from_str(v).unwrap();
        Gpt2Config::parse("config.json", &j.to_string()).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert!(with("model_type", "\"llama\"").contains("not GPT-2"));
    assert!(with("n_head", "5").contains("not a multiple"));
    assert!(with("tie_word_embeddings", "false").contains("not supported"));
    assert!(with("activation_function", "\"relu\"").contains("activation_function"));
}

/// K/V-cached decoding (`CausalLm::decoder`/`decode`) against the full forward of the same
/// sequence: the prompt fed in chunks (one call longer than the decoder's chunk, which splits
/// it), then single tokens; after each call the logits of the last token fed must equal the full
/// forward's at that position. Same f32 kernels, different shapes and summation order:
/// `LOGITS_TOL` of the logits' scale, as against PyTorch (measured: 0, bitwise equal on lavapipe).
/// Plus the errors of a full cache and a bad id.
pub fn decode_matches_forward_on(gpu: &Gpu, name: &str) {
    let model = tramway::train::lm::CausalLm::load(gpu, &fixture(name).join("model"), 0).unwrap();
    decode_matches_forward(gpu, name, &model);
}

/// [`decode_matches_forward_on`] for a model already built (a LoRA one, 16-bit weights).
pub fn decode_matches_forward(gpu: &Gpu, name: &str, model: &tramway::train::lm::CausalLm) {
    use tramway::train::lm::{generate_greedy, LmActs};
    let (n, nv) = (13, model.vocab_size());
    let mut rng = Rng::new(name.len() as u64);
    let ids: Vec<u32> = (0..n).map(|_| rng.below(nv) as u32).collect();
    let full = |ids: &[u32]| -> Vec<f32> {
        let t = ids.len();
        let mut acts: LmActs = model.acts(gpu, 1, t).unwrap();
        model.upload(gpu, &mut acts, &LmBatch { batch: 1, seq: t, ids: ids.to_vec(), mask: vec![1; t] }).unwrap();
        let mut rc = gpu.recorder();
        model.forward(&mut rc, &acts, false, None).unwrap();
        rc.submit().unwrap();
        gpu.read_f32_blocking(&acts.logits).unwrap()
    };
    let want = full(&ids);
    let mut d = model.decoder(gpu, n + 2, 4).unwrap();
    for (a, b) in [(0, 4), (4, 7), (7, 8), (8, 13)] {
        let got = model.decode(gpu, &mut d, &ids[a..b]).unwrap();
        let e = rel_err(&got, &want[(b - 1) * nv..b * nv]);
        assert!(e < LOGITS_TOL, "{name}: logits after positions {a}..{b} off by {e:.2e} relative");
        assert_eq!(d.len(), b);
    }
    let err = model.decode(gpu, &mut d, &[1, 2, 3]).unwrap_err().to_string();
    assert!(err.contains("13 + 3 tokens; expected 1 to 2 more"), "{err}");
    let err = model.decode(gpu, &mut d, &[]).unwrap_err().to_string();
    assert!(err.contains("13 + 0 tokens; expected 1 to 2 more"), "{err}");
    let err = model.decode(gpu, &mut d, &[0, nv as u32]).unwrap_err().to_string();
    assert!(err.contains(&format!("token id {nv} is not below the vocabulary size {nv}")), "{err}");
    assert_eq!(d.len(), 13, "a refused call feeds nothing");
    // Greedy generation with the cache = argmax of the full forward, step by step.
    let prompt = &ids[..5];
    let got = generate_greedy(gpu, model, prompt, 6, &[]).unwrap();
    let mut seq = prompt.to_vec();
    for _ in 0..6 {
        let l = full(&seq);
        let row = &l[(seq.len() - 1) * nv..];
        seq.push(row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b }) as u32);
    }
    assert_eq!(got, seq[5..], "{name}: greedy tokens");
    // Stopping at a stop token: the stop token is the last one returned.
    let stop = got[2];
    let first = got.iter().position(|&t| t == stop).unwrap();
    assert_eq!(generate_greedy(gpu, model, prompt, 6, &[stop]).unwrap(), got[..=first]);
}

#[test]
fn gpt2_and_llama_decode_with_kv_cache_as_the_full_forward() {
    for name in ["gpt2", "llama", "llama_tied"] {
        decode_matches_forward_on(gpu(), name);
    }
    // Token tables (and the untied head) split into row blocks.
    let small = Gpu::new_blocking(GpuOptions { max_binding: Some(16384), ..GpuOptions::from_env().unwrap() }).unwrap();
    for name in ["gpt2", "llama"] {
        decode_matches_forward_on(&small, name);
    }
}

/// The sampling rule on fixed logits, exactly: sweeping the uniform draw over a fine grid, each
/// token's share of the grid is its probability under temperature / top-k / top-p (f64 softmax;
/// a grid of N points is exact to 1/N per token). Greedy settings give the argmax (the first of
/// equal maxima); out-of-range settings are refused naming the flag.
#[test]
fn sampling_picks_tokens_with_their_probabilities() {
    use tramway::train::lm::{sample_token, Sampling};
    let logits = [1.0f32, 3.0, 2.0, 0.5, 3.0];
    let shares = |s: &Sampling| {
        let n = 100_000;
        let mut c = [0usize; 5];
        for i in 0..n {
            c[sample_token(&logits, s, (i as f64 + 0.5) / n as f64)] += 1;
        }
        c.map(|x| x as f64 / n as f64)
    };
    let softmax = |idx: &[usize], t: f64| {
        let z: f64 = idx.iter().map(|&i| (logits[i] as f64 / t).exp()).sum();
        let mut p = [0.0; 5];
        for &i in idx {
            p[i] = (logits[i] as f64 / t).exp() / z;
        }
        p
    };
    let s = Sampling { temperature: 0.7, top_k: 0, top_p: 1.0, seed: 0 };
    let cases = [
        (s, softmax(&[0, 1, 2, 3, 4], 0.7)),
        // Top-2: the two logits of 3.0.
        (Sampling { top_k: 2, ..s }, softmax(&[1, 4], 0.7)),
        // Top-p 0.8 at temperature 1: sorted probabilities 0.387, 0.387, 0.142, ... reach 0.8
        // with the third token (0.916), so tokens 1, 4 and 2 are kept and renormalised.
        (Sampling { temperature: 1.0, top_p: 0.8, ..s }, softmax(&[1, 4, 2], 1.0)),
        // Top-k 3, then top-p 0.7 of those three (0.422, 0.422, ...): the first two reach it.
        (Sampling { temperature: 1.0, top_k: 3, top_p: 0.7, ..s }, softmax(&[1, 4], 1.0)),
    ];
    for (s, want) in cases {
        let got = shares(&s);
        for i in 0..5 {
            assert!((got[i] - want[i]).abs() < 2e-5, "{s:?}: token {i} drawn {} vs probability {}", got[i], want[i]);
        }
    }
    for s in [Sampling::greedy(), Sampling { top_k: 1, ..s }] {
        assert!((0..10).all(|i| sample_token(&logits, &s, i as f64 / 10.0) == 1), "{s:?}");
    }
    for (bad, flag) in [
        (Sampling { temperature: -1.0, ..s }, "--temperature"),
        (Sampling { temperature: f32::NAN, ..s }, "--temperature"),
        (Sampling { top_p: 0.0, ..s }, "--top-p"),
        (Sampling { top_p: 1.5, ..s }, "--top-p"),
    ] {
        let e = bad.check().unwrap_err().to_string();
        assert!(e.contains(flag), "{e}");
    }
}

/// Sampled generation on the GPT-2 fixture: the same seed gives the same tokens, top-k 1 is
/// greedy, and bad settings are refused before anything runs.
#[test]
fn sampled_generation_is_reproducible() {
    use tramway::train::lm::{generate, generate_greedy, CausalLm, Sampling};
    let model = CausalLm::load(gpu(), &fixture("gpt2").join("model"), 0).unwrap();
    let prompt = [5, 17, 42];
    let s = Sampling { temperature: 1.5, top_k: 0, top_p: 0.95, seed: 7 };
    let a = generate(gpu(), &model, &prompt, 8, &[], &s).unwrap();
    assert_eq!(a.len(), 8);
    assert_eq!(a, generate(gpu(), &model, &prompt, 8, &[], &s).unwrap(), "same seed, same tokens");
    let greedy = generate_greedy(gpu(), &model, &prompt, 8, &[]).unwrap();
    // Sampling must matter: at temperature 1.5 over the fixture's 150 tokens the draws leave
    // the greedy path, and another seed draws other tokens (both fail if sampling were ignored).
    assert_ne!(a, greedy, "sampled tokens must not be the greedy ones");
    assert_ne!(a, generate(gpu(), &model, &prompt, 8, &[], &Sampling { seed: 8, ..s }).unwrap(), "another seed");
    assert_eq!(generate(gpu(), &model, &prompt, 8, &[], &Sampling { top_k: 1, ..s }).unwrap(), greedy);
    let e = generate(gpu(), &model, &prompt, 8, &[], &Sampling { top_p: 0.0, ..s }).unwrap_err().to_string();
    assert!(e.contains("--top-p"), "{e}");
}
