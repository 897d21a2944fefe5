//! Text batches through a Hugging Face `tokenizer.json` (the `tokenizers` crate).
//!
//! The file's own padding and truncation settings are replaced by ours: truncate to `max_len`
//! tokens (special tokens included) and pad each batch to its longest sequence, with the pad id
//! the tokenizer declares (or the model config's `pad_token_id`).

use crate::data::batch::TextBatch;
use crate::error::{model_err, Error, Result};
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

/// A tokenizer with tramway's padding and truncation.
pub struct TextTokenizer {
    tok: Tokenizer,
    /// The file's tokenizer without any padding or truncation (long texts, decoding).
    raw: Tokenizer,
    /// The tokenizer.json path, for errors.
    file: String,
    pub max_len: usize,
    pub pad_id: u32,
}

impl TextTokenizer {
    /// Load `<dir>/tokenizer.json`. `pad_id` is used when the file declares no padding.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &Path, max_len: usize, pad_id: u32) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let file = path.display().to_string();
        if !path.is_file() {
            return model_err(&file, "tokenizer.json is missing (tramway reads Hugging Face fast-tokenizer files)");
        }
        let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: file.clone(), source })?;
        Self::from_bytes(&file, &bytes, max_len, pad_id)
    }

    /// A tokenizer from the bytes of a `tokenizer.json`; `file` names it in errors.
    pub fn from_bytes(file: &str, bytes: &[u8], max_len: usize, pad_id: u32) -> Result<Self> {
        let file = file.to_string();
        // JSON syntax first: the tokenizers crate panics (`expect`) on some syntax errors inside
        // its sections, never on a well-formed value.
        let value: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => return model_err(&file, format!("not valid JSON: {e}")),
        };
        let mut tok = match guarded(&file, "reading the tokenizer", || serde_json::from_value::<Tokenizer>(value))? {
            Ok(t) => t,
            Err(e) => return model_err(&file, format!("cannot read the tokenizer: {e}")),
        };
        if max_len < 2 {
            return model_err(&file, format!("max length {max_len} is too short (at least 2 for the special tokens)"));
        }
        let mut raw = tok.clone();
        if let Err(e) = raw.with_truncation(None) {
            return model_err(&file, format!("cannot turn truncation off: {e}"));
        }
        raw.with_padding(None);
        let pad_id = tok.get_padding().map(|p| p.pad_id).unwrap_or(pad_id);
        let pad_token = tok.id_to_token(pad_id).unwrap_or_else(|| "[PAD]".to_string());
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        if let Err(e) = tok.with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        })) {
            return model_err(&file, format!("cannot set truncation to {max_len}: {e}"));
        }
        // A file whose post-processor refers to special tokens it does not define (and the
        // like) makes the tokenizers crate panic on every text: refuse it now, not mid-run.
        let _ = guarded(&file, "tokenizing a test text", || tok.encode("a", true))?;
        Ok(TextTokenizer { tok, raw, file, max_len, pad_id })
    }

    /// The token ids of one text, whole (no truncation or padding; special tokens as the file's
    /// post-processor adds them when `special`).
    pub fn ids(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        match guarded(&self.file, "tokenizing a text", || self.raw.encode(text, special))? {
            Ok(e) => Ok(e.get_ids().to_vec()),
            Err(e) => model_err(&self.file, format!("tokenization failed: {e}")),
        }
    }

    /// Text of token ids (special tokens skipped when `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        guarded(&self.file, "decoding", || self.raw.decode(ids, skip_special))?
            .map_err(|e| Error::Model { file: self.file.clone(), message: format!("decoding failed: {e}") })
    }

    /// Tokenize `texts` into one padded batch (labels unset).
    pub fn encode(&self, texts: &[&str]) -> Result<TextBatch> {
        if texts.is_empty() {
            return model_err(&self.file, "no texts to encode");
        }
        let enc = match guarded(&self.file, "tokenizing a batch", || self.tok.encode_batch(texts.to_vec(), true))? {
            Ok(e) => e,
            Err(e) => return model_err(&self.file, format!("tokenization failed: {e}")),
        };
        let seq = enc.iter().map(|e| e.get_ids().len()).max().unwrap_or(0).max(1);
        let mut types = Vec::with_capacity(texts.len() * seq);
        let mut b = TextBatch { batch: texts.len(), seq, ids: Vec::new(), mask: Vec::new(), types: None, labels: None };
        for e in &enc {
            let n = e.get_ids().len();
            b.ids.extend(e.get_ids());
            b.ids.extend(std::iter::repeat_n(self.pad_id, seq - n));
            b.mask.extend(e.get_attention_mask());
            b.mask.extend(std::iter::repeat_n(0, seq - n));
            types.extend(e.get_type_ids());
            types.extend(std::iter::repeat_n(0, seq - n));
        }
        b.types = Some(types);
        Ok(b)
    }
}

impl TextTokenizer {
    /// [`TextTokenizer::encode`] with the batch's length rounded up to a multiple of `round`
    /// (at most `max_len`), so a few activation plans serve every batch.
    pub fn encode_rounded(&self, texts: &[&str], round: usize) -> Result<TextBatch> {
        let mut b = self.encode(texts)?;
        let seq = b.seq.div_ceil(round.max(1)).saturating_mul(round.max(1)).min(self.max_len).max(b.seq);
        if seq != b.seq {
            let (old, pad) = (b.seq, self.pad_id);
            let widen = |v: &[u32], fill: u32| -> Vec<u32> {
                v.chunks(old).flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(fill, seq - old))).collect()
            };
            b.ids = widen(&b.ids, pad);
            b.mask = widen(&b.mask, 0);
            b.types = b.types.as_ref().map(|t| widen(t, 0));
            b.seq = seq;
        }
        Ok(b)
    }
}

/// Run a call into the tokenizers crate, turning a panic into an error naming `file`. A last
/// resort: that crate `expect`s and indexes on what it assumes about a tokenizer.json, and a
/// hostile or damaged file must give an error, not abort a run. (The default panic hook still
/// prints the panic's message before the error.)
fn guarded<T>(file: &str, what: &str, f: impl FnOnce() -> T) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            model_err(file, format!("the tokenizers library failed {what} ({msg}); is this a valid tokenizer.json?"))
        }
    }
}

/// Number of real tokens in each row of a batch.
pub fn token_counts(b: &TextBatch) -> Vec<usize> {
    b.mask.chunks(b.seq).map(|r| r.iter().filter(|&&m| m != 0).count()).collect()
}
