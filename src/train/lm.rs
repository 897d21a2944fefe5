//! Causal language models at the data edge (native): loading a GPT-2 or LLaMA folder,
//! perplexity of a text, and greedy generation.

use crate::data::batch::LmBatch;
use crate::data::text::TextTokenizer;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::adapter::{load_adapter, read_adapter};
use crate::io::hf::read_weights;
use crate::io::weights::HostTensor;
pub use crate::models::lm::{CausalLm, LmActs, LmDecoder};
use crate::models::Build;
use crate::models::TaskModel;
use std::path::Path;

impl CausalLm {
    /// Load a causal LM folder (config.json of a causal family in `models::FAMILIES`,
    /// model.safetensors).
    pub fn load(gpu: &Gpu, dir: &Path, seed: u64) -> Result<CausalLm> {
        Self::load_with(gpu, dir, &Build { seed, ..Default::default() })
    }

    /// [`CausalLm::load`] as `b` says (LoRA adapters, the base frozen).
    pub fn load_with(gpu: &Gpu, dir: &Path, b: &Build) -> Result<CausalLm> {
        let p = dir.join("config.json");
        let file = p.display().to_string();
        let text = std::fs::read_to_string(&p).map_err(|source| Error::Io { path: file.clone(), source })?;
        let w = read_weights(dir)?;
        crate::models::load_causal_lm_with(gpu, &file, &text, &w, b)
    }

    /// The base folder `dir` with the PEFT LoRA adapter folder `adapter` on it.
    pub fn load_adapted(gpu: &Gpu, dir: &Path, adapter: &Path) -> Result<CausalLm> {
        let a = read_adapter(adapter)?;
        let model = Self::load_with(gpu, dir, &Build { seed: 0, lora: Some(a.config.clone()), ..Default::default() })?;
        load_adapter(gpu, &model.params, &a)?;
        Ok(model)
    }

    /// Every parameter under its name with the adapters merged into their base weights (the
    /// state itself without adapters).
    pub async fn merged_state(&self, gpu: &Gpu) -> Result<Vec<(String, HostTensor)>> {
        let state = self.params.state(gpu).await?;
        let linears: Vec<&crate::nn::layers::Linear> = self.parts.blocks.iter().flat_map(|b| b.linears()).collect();
        Ok(crate::nn::lora::merged_state(state, self.params.names(), &linears))
    }
}

/// Tokens fed per step while a prompt is read into the cache: bounds the scores of one step
/// (heads x chunk x capacity floats).
pub const PREFILL_CHUNK: usize = 64;

/// Perplexity of a text and what it was computed over.
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    pub perplexity: f64,
    /// Tokens of the text.
    pub tokens: usize,
    /// Tokens predicted (each block's first token has no context and is not scored).
    pub predicted: usize,
}

/// Perplexity of `ids` cut into independent blocks of `block` tokens (the last one shorter),
/// `batch` blocks per forward: exp of the mean next-token negative log-likelihood.
pub fn perplexity(gpu: &Gpu, model: &CausalLm, ids: &[u32], block: usize, batch: usize) -> Result<Perplexity> {
    if block < 2 || block > model.max_positions() {
        return Err(Error::BadSetting {
            name: "--block",
            value: block.to_string(),
            expected: format!("between 2 and the model's {} positions", model.max_positions()),
        });
    }
    let blocks: Vec<&[u32]> = ids.chunks(block).filter(|b| b.len() >= 2).collect();
    if blocks.is_empty() {
        return Err(Error::BadSetting {
            name: "TEXT",
            value: format!("{} tokens", ids.len()),
            expected: "at least 2 tokens".into(),
        });
    }
    let batch = batch.max(1);
    let (mut nll, mut count) = (0f64, 0usize);
    let mut acts: Option<(usize, LmActs)> = None;
    for group in blocks.chunks(batch) {
        if acts.as_ref().map(|a| a.0) != Some(group.len()) {
            acts = Some((group.len(), model.acts(gpu, group.len(), block)?));
        }
        let a = &mut acts.as_mut().unwrap().1;
        let mut b = LmBatch { batch: group.len(), seq: block, ids: Vec::new(), mask: Vec::new() };
        for blk in group {
            b.ids.extend_from_slice(blk);
            b.ids.extend(std::iter::repeat_n(model.pad_id(), block - blk.len()));
            b.mask.extend(std::iter::repeat_n(1, blk.len()));
            b.mask.extend(std::iter::repeat_n(0, block - blk.len()));
        }
        model.upload(gpu, a, &b)?;
        let mut rec = gpu.recorder();
        model.forward(&mut rec, a, true, None)?;
        rec.submit()?;
        let l = gpu.read_f32_blocking(&a.loss)?;
        nll += l[0] as f64 * l[1] as f64;
        count += l[1] as usize;
    }
    Ok(Perplexity { perplexity: (nll / count as f64).exp(), tokens: ids.len(), predicted: count })
}

/// How [`generate`] picks each next token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 = greedy (the most likely token); otherwise the logits are divided by it.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Seed of the draws: the same seed, prompt and model give the same tokens.
    pub seed: u64,
}

impl Sampling {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
    /// Refuse settings outside their ranges, naming the flag.
    pub fn check(&self) -> Result<()> {
        let bad = |name, value: String, expected: &str| {
            Err(Error::BadSetting { name, value, expected: expected.to_string() })
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("--temperature", self.temperature.to_string(), "a finite number >= 0 (0 = greedy)");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("--top-p", self.top_p.to_string(), "a probability in (0, 1]");
        }
        Ok(())
    }
    fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
}

/// The token `u` (a uniform draw in [0, 1)) selects under `s`: the logits divided by the
/// temperature, cut to the top-k and then the top-p most likely tokens, softmax in f64, and the
/// first token whose cumulative probability exceeds `u` (tokens in order of decreasing logit,
/// ties by index). Greedy settings return the argmax whatever `u`.
pub fn sample_token(logits: &[f32], s: &Sampling, u: f64) -> usize {
    if s.is_greedy() || logits.len() < 2 {
        return argmax(logits);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    if s.top_k > 0 && s.top_k < order.len() {
        order.select_nth_unstable_by(s.top_k - 1, by_logit);
        order.truncate(s.top_k);
    }
    order.sort_unstable_by(by_logit);
    let t = s.temperature as f64;
    let top = logits[order[0]] as f64;
    let w: Vec<f64> = order.iter().map(|&i| ((logits[i] as f64 - top) / t).exp()).collect();
    let z: f64 = w.iter().sum();
    // Top-p: the shortest prefix whose probability reaches top_p (at least one token).
    let mut keep = w.len();
    if s.top_p < 1.0 {
        let mut acc = 0.0;
        for (i, wi) in w.iter().enumerate() {
            acc += wi / z;
            if acc >= s.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
    }
    let zk: f64 = w[..keep].iter().sum();
    let target = u * zk;
    let mut acc = 0.0;
    for i in 0..keep {
        acc += w[i];
        if target < acc {
            return order[i];
        }
    }
    order[keep - 1]
}

/// SplitMix64 draws in [0, 1) (53 bits) for [`generate`].
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Continuation of `prompt` ids: up to `max_new` tokens (within the model's positions), each
/// picked by `sampling` ([`sample_token`]), stopping after a token of `stop`. The prompt is read
/// into a K/V cache in chunks, then each step feeds one token.
pub fn generate(
    gpu: &Gpu,
    model: &CausalLm,
    prompt: &[u32],
    max_new: usize,
    stop: &[u32],
    sampling: &Sampling,
) -> Result<Vec<u32>> {
    sampling.check()?;
    let total = (prompt.len() + max_new).min(model.max_positions());
    if prompt.is_empty() || prompt.len() >= total {
        return Err(Error::BadSetting {
            name: "--prompt",
            value: format!("{} tokens", prompt.len()),
            expected: format!("at least one token and fewer than the model's {} positions", model.max_positions()),
        });
    }
    let mut d = model.decoder(gpu, total, PREFILL_CHUNK.min(prompt.len()))?;
    let mut logits = model.decode(gpu, &mut d, prompt)?;
    let mut draws = Draws(sampling.seed);
    let mut out = Vec::new();
    loop {
        let next = sample_token(&logits, sampling, draws.next()) as u32;
        out.push(next);
        if stop.contains(&next) || prompt.len() + out.len() >= total {
            break;
        }
        logits = model.decode(gpu, &mut d, &[next])?;
    }
    Ok(out)
}

/// [`generate`] with greedy picks.
pub fn generate_greedy(gpu: &Gpu, model: &CausalLm, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<Vec<u32>> {
    generate(gpu, model, prompt, max_new, stop, &Sampling::greedy())
}

/// Index of the largest value (the first of equals).
fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

/// The tokenizer of an LM folder (no length limit beyond the model's).
pub fn lm_tokenizer(dir: &Path, model: &CausalLm) -> Result<TextTokenizer> {
    TextTokenizer::from_dir(dir, model.max_positions().max(2), model.pad_id())
}
