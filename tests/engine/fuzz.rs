//! Mutation fuzzing of every parser of user input, in plain `cargo test` (no extra tools): user
//! files must give errors, never panics, and what they accept must be finite and in range.
//!
//! Each target starts from its seed corpus in `tests/fuzz/<target>/` (small valid files, which
//! must be accepted, plus `regress-*` files for bugs found, which must be refused), runs every
//! seed unmutated, then mutated inputs: byte and
//! bit flips, truncation, duplicated and deleted ranges, inserted "interesting" tokens (0, 0xFF,
//! `NaN`, huge numbers, `null`, ...), numbers in text replaced by such tokens, integers written
//! at random offsets, and splices of two corpus files; structure-aware variants mutate only a
//! safetensors header (keeping its length field right) or fix PNG chunk checksums. Inputs a
//! target accepts join the pool, so later mutations start from them.
//!
//! - Budget: a fixed number of inputs per target (the module takes a few seconds); with
//!   `TRAMWAY_FUZZ_SECONDS=N` each target runs for N seconds instead.
//! - Seeds: `TRAMWAY_FUZZ_SEED=n` varies the (deterministic) mutation sequence.
//! - A panic fails the test, naming the target and the input's number, with the input written
//!   to `$TMPDIR/tramway-fuzz-crash-<target>-<n>`; `TRAMWAY_FUZZ_INPUT=<file>` replays one file
//!   through every target that is run (e.g. `cargo test --test engine fuzz::config`).
//! - `cargo test --test engine fuzz::write_seed_corpora -- --ignored` rewrites the seed corpora.

use super::Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tramway::data::image::{ImagePrep, ImageSet};
use tramway::data::table::{label_set, read_examples};
use tramway::data::text::TextTokenizer;
use tramway::io::weights::{serialize, HostTensor, Weights};
use tramway::models::encoder::EncoderConfig;
use tramway::models::gpt2::Gpt2Config;
use tramway::models::llama::LlamaConfig;
use tramway::models::vit::VitConfig;

// ------------------------------------------------------------------------------------------
// The harness.

/// Largest mutated input (duplications would otherwise grow inputs without bound).
const MAX_INPUT: usize = 1 << 16;

/// Generic "interesting" tokens, inserted and substituted by every target.
const INTERESTING: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "-100",
    "0.5",
    "1.0",
    "1e-50",
    "1e38",
    "1e39",
    "1e308",
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "-Infinity",
    "255",
    "256",
    "4096",
    "4097",
    "16385",
    "65536",
    "100000",
    "2147483648",
    "4294967295",
    "4294967296",
    "1000000000000",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "null",
    "true",
    "false",
    "\"\"",
    "\"x\"",
    "[]",
    "[0]",
    "{}",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "\u{0}",
    "\u{7f}",
    "\u{feff}",
    "é",
    "🙂",
    "\n",
    "\r\n",
    "\t",
    ",",
    ":",
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
];

/// Raw byte tokens (not valid UTF-8 on their own).
const INTERESTING_BYTES: &[&[u8]] = &[b"\xff", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x00\x00\x00\x00", b"\x80"];

/// Integers written in binary at random offsets (both endiannesses, 1 to 8 bytes).
const INTERESTING_INTS: &[u64] = &[
    0,
    1,
    2,
    3,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x4000,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
    1 << 32,
    1 << 40,
];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The base seed (`TRAMWAY_FUZZ_SEED`, else fixed).
fn base_seed() -> u64 {
    env_u64("TRAMWAY_FUZZ_SEED").unwrap_or(0x7ea3_f00d)
}

/// FNV-1a of a name (a per-target seed offset).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// `tests/fuzz/<target>`.
fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz").join(target)
}

/// The seed corpus of `target`: (file name, bytes), sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().to_string(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "seed corpus {} is empty", dir.display());
    v
}

/// A scratch folder for one target (targets run on parallel test threads).
fn scratch(target: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tramway-fuzz-{}-{target}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Random edits of byte strings.
struct Mutator {
    rng: Rng,
    /// Extra tokens of the target (key names, type names).
    dict: Vec<Vec<u8>>,
}

impl Mutator {
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.rng.below(n)
        }
    }
    fn coin(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn token(&mut self) -> Vec<u8> {
        let (a, b, c) = (INTERESTING.len(), INTERESTING_BYTES.len(), self.dict.len());
        let i = self.below(a + b + c);
        if i < a {
            INTERESTING[i].as_bytes().to_vec()
        } else if i < a + b {
            INTERESTING_BYTES[i - a].to_vec()
        } else {
            self.dict[i - a - b].clone()
        }
    }
    /// A random range of `v` (possibly empty), biased to short ones.
    fn range(&mut self, len: usize) -> (usize, usize) {
        let start = self.below(len + 1);
        let max = if self.coin(4) { len - start } else { (len - start).min(16) };
        (start, start + self.below(max + 1))
    }

    /// One to four random edits of `input`, possibly splicing in `other`.
    fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut v = input.to_vec();
        let edits = 1 + self.below(4);
        for _ in 0..edits {
            let len = v.len();
            match self.below(11) {
                0 if len > 0 => {
                    let i = self.below(len);
                    v[i] = self.rng.next_u64() as u8;
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    v[i] ^= 1 << self.below(8);
                }
                2 => v.truncate(self.below(len + 1)),
                3 => {
                    let (a, b) = self.range(len);
                    let chunk = v[a..b].to_vec();
                    let at = self.below(len + 1);
                    v.splice(at..at, chunk);
                }
                4 => {
                    let (a, b) = self.range(len);
                    v.drain(a..b);
                }
                5 => {
                    let t = self.token();
                    let at = self.below(len + 1);
                    v.splice(at..at, t);
                }
                6 => {
                    let t = self.token();
                    let (a, b) = self.range(len);
                    v.splice(a..b, t);
                }
                7 | 8 => {
                    // Replace a number (or a JSON literal) with a token.
                    let spans = number_spans(&v);
                    if !spans.is_empty() {
                        let (a, b) = spans[self.below(spans.len())];
                        let t = self.token();
                        v.splice(a..b, t);
                    }
                }
                9 if len > 0 => {
                    let x = INTERESTING_INTS[self.below(INTERESTING_INTS.len())];
                    let n = [1, 2, 4, 8][self.below(4)];
                    let bytes =
                        if self.coin(2) { x.to_le_bytes()[..n].to_vec() } else { x.to_be_bytes()[8 - n..].to_vec() };
                    let at = self.below(len);
                    for (k, b) in bytes.into_iter().enumerate() {
                        if at + k < len {
                            v[at + k] = b;
                        }
                    }
                }
                _ if !other.is_empty() => {
                    let cut = self.below(len + 1);
                    let from = self.below(other.len() + 1);
                    v.truncate(cut);
                    v.extend_from_slice(&other[from..]);
                }
                _ => {}
            }
        }
        v.truncate(MAX_INPUT);
        v
    }
}

/// Byte ranges of numbers (sign, digits, point, exponent) and of `true`/`false`/`null` in text.
fn number_spans(v: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        if c.is_ascii_digit() || (c == b'-' && v.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let s = i;
            i += 1;
            while i < v.len() && (v[i].is_ascii_digit() || b".eE+-".contains(&v[i])) {
                i += 1;
            }
            out.push((s, i));
            continue;
        }
        for lit in [&b"true"[..], b"false", b"null"] {
            if v[i..].starts_with(lit) {
                out.push((i, i + lit.len()));
            }
        }
        i += 1;
    }
    out
}

/// How a target mutates: plain, or structure-aware around the plain mutator.
type Mutate = fn(&mut Mutator, &[u8], &[u8]) -> Vec<u8>;

fn plain(m: &mut Mutator, input: &[u8], other: &[u8]) -> Vec<u8> {
    m.mutate(input, other)
}

/// Run `input` through `run` under `catch_unwind`; a panic fails the test with the input saved.
fn check(target: &str, label: &str, input: &[u8], run: &dyn Fn(&[u8]) -> bool) -> bool {
    match catch_unwind(AssertUnwindSafe(|| run(input))) {
        Ok(accepted) => accepted,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let path = std::env::temp_dir().join(format!("tramway-fuzz-crash-{target}-{label}"));
            let saved = match std::fs::write(&path, input) {
                Ok(()) => format!("the input is at {}", path.display()),
                Err(e) => format!("could not save the input to {}: {e}", path.display()),
            };
            panic!(
                "fuzz target {target} panicked on input {label} (TRAMWAY_FUZZ_SEED={}): {msg}\n{saved}\n\
                 replay: TRAMWAY_FUZZ_INPUT={} cargo test --test engine fuzz::{target}",
                base_seed(),
                path.display()
            );
        }
    }
}

/// Fuzz `target`: every seed, then mutated inputs for the budget (`iterations` by default).
fn fuzz(target: &str, iterations: usize, dict: &[&str], mutate: Mutate, run: &dyn Fn(&[u8]) -> bool) {
    if let Ok(file) = std::env::var("TRAMWAY_FUZZ_INPUT") {
        let input = std::fs::read(&file).unwrap_or_else(|e| panic!("TRAMWAY_FUZZ_INPUT={file}: {e}"));
        check(target, "replay", &input, run);
        return;
    }
    let seeds = corpus(target);
    let mut pool: Vec<Vec<u8>> = Vec::new();
    for (name, bytes) in &seeds {
        let accepted = check(target, &format!("seed-{name}"), bytes, run);
        // Seeds are valid files (they start mutations from accepted inputs); regression
        // files are the bad inputs that once crashed or were wrongly accepted.
        assert_eq!(accepted, !name.starts_with("regress-"), "fuzz {target}: seed {name}");
        pool.push(bytes.clone());
    }
    let seeds_len = pool.len();
    let deadline = env_u64("TRAMWAY_FUZZ_SECONDS").map(|s| Instant::now() + Duration::from_secs(s));
    let mut m = Mutator {
        rng: Rng::new(base_seed() ^ fnv(target)),
        dict: dict.iter().map(|s| s.as_bytes().to_vec()).collect(),
    };
    let (start, mut n, mut accepted) = (Instant::now(), 0usize, 0usize);
    loop {
        match deadline {
            Some(d) if Instant::now() >= d => break,
            None if n >= iterations => break,
            _ => {}
        }
        let a = m.below(pool.len());
        let b = m.below(pool.len());
        let input = mutate(&mut m, &pool[a], &pool[b]);
        if check(target, &n.to_string(), &input, run) {
            accepted += 1;
            // Keep accepted inputs as starting points (a bounded pool, seeds always kept).
            if pool.len() < seeds_len + 200 {
                pool.push(input);
            } else {
                let i = seeds_len + m.below(200);
                pool[i] = input;
            }
        }
        n += 1;
    }
    eprintln!(
        "fuzz {target}: {} seeds and {n} mutated inputs ({accepted} accepted) in {:.1} s",
        seeds.len(),
        start.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------------------------------
// Targets.

/// Every float a parser accepted is finite.
fn all_finite(w: &Weights) -> bool {
    w.tensors.values().all(|t| t.data.iter().all(|x| x.is_finite()))
}

/// A safetensors file: 8-byte little-endian header length, JSON header, data.
fn split_safetensors(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
    let header = b.get(8..8usize.checked_add(n)?)?;
    Some((header, &b[8 + n..]))
}

/// Mutate only the JSON header of a safetensors file half of the time (its length kept right).
fn safetensors_mutate(m: &mut Mutator, input: &[u8], other: &[u8]) -> Vec<u8> {
    if m.coin(2) {
        if let Some((header, data)) = split_safetensors(input) {
            let other_header = split_safetensors(other).map(|(h, _)| h).unwrap_or(b"");
            let h = m.mutate(header, other_header);
            let mut out = (h.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            return out;
        }
    }
    m.mutate(input, other)
}

#[test]
fn safetensors() {
    let dict = ["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "dtype", "shape", "data_offsets"];
    fuzz("safetensors", 100_000, &dict, safetensors_mutate, &|b| match Weights::parse("fuzz.safetensors", b) {
        Ok(w) => {
            assert!(all_finite(&w), "a non-finite value was accepted");
            for t in w.tensors.values() {
                assert_eq!(t.data.len(), t.shape.iter().product::<usize>(), "data length against shape");
            }
            true
        }
        Err(e) => {
            assert!(e.to_string().contains("fuzz.safetensors"), "the error names the file: {e}");
            false
        }
    });
}

/// The invariants of an accepted config.
fn check_probs(ps: &[f32]) {
    assert!(ps.iter().all(|p| p.is_finite() && (0.0..1.0).contains(p)), "dropout {ps:?}");
}

#[test]
fn config() {
    let dict = [
        "\"model_type\"",
        "\"bert\"",
        "\"roberta\"",
        "\"vit\"",
        "\"dinov2\"",
        "\"gpt2\"",
        "\"llama\"",
        "\"vocab_size\"",
        "\"hidden_size\"",
        "\"num_attention_heads\"",
        "\"num_key_value_heads\"",
        "\"head_dim\"",
        "\"intermediate_size\"",
        "\"layer_norm_eps\"",
        "\"rms_norm_eps\"",
        "\"rope_theta\"",
        "\"rope_scaling\"",
        "\"id2label\"",
        "\"num_labels\"",
        "\"mlp_ratio\"",
        "\"image_size\"",
        "\"patch_size\"",
        "\"n_inner\"",
        "\"eos_token_id\"",
    ];
    fuzz("config", 40_000, &dict, plain, &|b| {
        let text = String::from_utf8_lossy(b);
        let mut ok = false;
        let named = |e: tramway::Error| assert!(e.to_string().starts_with("config.json: "), "{e}");
        match EncoderConfig::parse("config.json", &text) {
            Ok(c) => {
                ok = true;
                assert!(c.layer_norm_eps.is_finite() && c.layer_norm_eps > 0.0);
                check_probs(&[c.hidden_dropout, c.attention_dropout]);
                assert!(c.head_dim() > 0 && c.num_labels() > 0 && c.vocab_size > 0 && c.num_layers > 0);
                let _ = tramway::io::config::with_labels(&c.raw, "BertForSequenceClassification", &c.id2label);
            }
            Err(e) => named(e),
        }
        match VitConfig::parse("config.json", &text) {
            Ok(c) => {
                ok = true;
                assert!(c.layer_norm_eps.is_finite() && c.layer_norm_eps > 0.0);
                check_probs(&[c.hidden_dropout, c.attention_dropout]);
                assert!(c.head_dim() > 0 && c.num_labels() > 0 && c.seq() > 1 && c.pos_grid() > 0);
                assert!(c.intermediate_size > 0 && c.num_channels == 3);
            }
            Err(e) => named(e),
        }
        match Gpt2Config::parse("config.json", &text) {
            Ok(c) => {
                ok = true;
                assert!(c.layer_norm_eps.is_finite() && c.layer_norm_eps > 0.0);
                check_probs(&[c.resid_dropout, c.embd_dropout, c.attn_dropout]);
                assert!(c.head_dim() > 0 && c.inner_size > 0 && c.n_positions > 0);
            }
            Err(e) => named(e),
        }
        match LlamaConfig::parse("config.json", &text) {
            Ok(c) => {
                ok = true;
                assert!(c.rms_norm_eps.is_finite() && c.rms_norm_eps > 0.0);
                assert!(c.rope_theta.is_finite() && c.rope_theta > 0.0);
                check_probs(&[c.attention_dropout]);
                assert!(c.head_dim > 0 && c.head_dim % 2 == 0 && c.num_heads % c.num_kv_heads == 0);
            }
            Err(e) => named(e),
        }
        ok
    });
}

#[test]
fn preprocessor() {
    let dir = scratch("preprocessor");
    let dict = [
        "\"crop_size\"",
        "\"size\"",
        "\"shortest_edge\"",
        "\"height\"",
        "\"width\"",
        "\"image_mean\"",
        "\"image_std\"",
        "\"rescale_factor\"",
        "[0.5, 0.5, 0.5]",
        "[0, 0, 0]",
    ];
    let px: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 37 % 256) as u8).collect();
    fuzz("preprocessor", 5000, &dict, plain, &|b| {
        std::fs::write(dir.join("preprocessor_config.json"), b).unwrap();
        match ImagePrep::from_dir(&dir, 16) {
            Ok(p) => {
                // Prepare a small image when the sizes are small enough to be quick.
                if p.size <= 64 && p.shortest_edge.unwrap_or(0) <= 128 {
                    let out = p.from_pixels(5, 3, 3, &px).expect("a valid image with a valid preparation");
                    assert_eq!(out.len(), 3 * p.size * p.size);
                    assert!(out.iter().all(|x| x.is_finite()), "non-finite pixels from {p:?}");
                }
                true
            }
            Err(e) => {
                assert!(e.to_string().contains("preprocessor_config.json"), "{e}");
                false
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Texts every tokenizer seed encodes (and one made from the input's last bytes).
const TEXTS: &[&str] = &[
    "hello world",
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog again and again.",
    "ünïcödé 🙂 日本語 \u{0} \u{feff}",
    "",
    "  many   spaces\tand\nlines  ",
];

#[test]
fn tokenizer() {
    let dir = scratch("tokenizer");
    let dict = [
        "\"type\"",
        "\"BPE\"",
        "\"WordPiece\"",
        "\"WordLevel\"",
        "\"Unigram\"",
        "\"ByteLevel\"",
        "\"Metaspace\"",
        "\"Whitespace\"",
        "\"BertPreTokenizer\"",
        "\"TemplateProcessing\"",
        "\"Sequence\"",
        "\"SpecialToken\"",
        "\"unk_token\"",
        "\"unk_id\"",
        "\"vocab\"",
        "\"merges\"",
        "\"added_tokens\"",
        "\"normalizer\"",
        "\"pre_tokenizer\"",
        "\"post_processor\"",
        "\"decoder\"",
        "\"padding\"",
        "\"truncation\"",
        "\"[UNK]\"",
        "\"##\"",
        "\"\u{2581}\"",
    ];
    fuzz("tokenizer", 3000, &dict, plain, &|b| {
        std::fs::write(dir.join("tokenizer.json"), b).unwrap();
        let tail = String::from_utf8_lossy(&b[b.len().saturating_sub(48)..]).to_string();
        match TextTokenizer::from_dir(&dir, 16, 0) {
            Ok(t) => {
                let mut texts: Vec<&str> = TEXTS.to_vec();
                texts.push(&tail);
                if let Ok(batch) = t.encode(&texts) {
                    assert_eq!(batch.ids.len(), batch.batch * batch.seq);
                    assert_eq!(batch.mask.len(), batch.batch * batch.seq);
                }
                for text in &texts {
                    if let Ok(ids) = t.ids(text, true) {
                        let _ = t.decode(&ids, true);
                    }
                }
                true
            }
            Err(e) => {
                assert!(e.to_string().contains("tokenizer.json"), "{e}");
                false
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn table() {
    let dir = scratch("table");
    let dict = ["text", "label", "\"text\"", "\"label\"", "\"text\": ", "\"label\": ", "\t", ",\"", "\"\""];
    fuzz("table", 2000, &dict, plain, &|b| {
        let mut ok = false;
        for ext in ["csv", "tsv", "jsonl"] {
            let p = dir.join(format!("data.{ext}"));
            std::fs::write(&p, b).unwrap();
            match read_examples(&p, "text", "label") {
                Ok(rows) => {
                    ok = true;
                    assert!(!rows.is_empty() && rows.iter().all(|r| !r.label.trim().is_empty()));
                    let labels = label_set(rows.iter().map(|r| r.label.as_str()));
                    assert!(!labels.is_empty());
                }
                Err(e) => assert!(e.to_string().contains(&format!("data.{ext}")), "{e}"),
            }
        }
        for ext in ["txt", "jsonl", "csv", "tsv"] {
            let p = dir.join(format!("docs.{ext}"));
            std::fs::write(&p, b).unwrap();
            match tramway::train::read_documents(&p, "text") {
                Ok(docs) => assert!(!docs.is_empty()),
                Err(e) => assert!(e.to_string().contains(&format!("docs.{ext}")), "{e}"),
            }
        }
        ok
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// An IDX pair as one fuzz input: flags (bit 0: gzip both files, bit 1: write classes.txt),
/// the images file's length (u32 LE), the images file, the labels file.
fn idx_pair(flags: u8, images: &[u8], labels: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(&(images.len() as u32).to_le_bytes());
    v.extend_from_slice(images);
    v.extend_from_slice(labels);
    v
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn small_prep() -> ImagePrep {
    ImagePrep { size: 8, shortest_edge: Some(10), rescale: 1.0 / 255.0, mean: [0.5; 3], std: [0.25; 3] }
}

#[test]
fn idx() {
    let dir = scratch("idx");
    let prep = small_prep();
    fuzz("idx", 10_000, &[], plain, &|b| {
        let flags = b.first().copied().unwrap_or(0);
        let n = b.get(1..5).map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize).unwrap_or(0);
        let rest = b.get(5..).unwrap_or(&[]);
        let (images, labels) = rest.split_at(n.min(rest.len()));
        for f in std::fs::read_dir(&dir).unwrap().flatten() {
            let _ = std::fs::remove_file(f.path());
        }
        let gz = flags & 1 != 0;
        let suffix = if gz { ".gz" } else { "" };
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.join(format!("{name}{suffix}"));
            std::fs::write(&p, if gz { gzip(bytes) } else { bytes.to_vec() }).unwrap();
            p
        };
        write("t-labels-idx1-ubyte", labels);
        let path = write("t-images-idx3-ubyte", images);
        if flags & 2 != 0 {
            std::fs::write(dir.join("classes.txt"), "zero\none\ntwo\n").unwrap();
        }
        match ImageSet::open(&path) {
            Ok(set) => {
                assert!(!set.is_empty());
                for i in 0..set.len().min(3) {
                    let _ = set.label(i);
                    let px = set.pixels(i, &prep).expect("the pixels of an image of an accepted IDX file");
                    assert!(px.len() == 3 * 64 && px.iter().all(|x| x.is_finite()));
                }
                true
            }
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("idx") || e.contains("classes.txt"), "the error names the file: {e}");
                false
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// CRC-32 (PNG's), bitwise.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// Recompute every PNG chunk's CRC (so mutations reach the decoder instead of the checksum).
fn fix_png_crcs(v: &mut [u8]) {
    let mut i = 8;
    while i + 12 <= v.len() {
        let n = u32::from_be_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]) as usize;
        let Some(end) = (i + 8).checked_add(n).filter(|&e| e + 4 <= v.len()) else { break };
        let crc = crc32(&v[i + 4..end]);
        v[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        i = end + 4;
    }
}

fn image_mutate(m: &mut Mutator, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = m.mutate(input, other);
    if v.starts_with(b"\x89PNG") && !m.coin(4) {
        fix_png_crcs(&mut v);
    }
    v
}

#[test]
fn image() {
    let dir = scratch("image");
    let prep = small_prep();
    fuzz("image", 6000, &["IHDR", "IDAT", "IEND", "PLTE", "tRNS", "\u{ff}\u{d8}"], image_mutate, &|b| {
        let ext = if b.starts_with(&[0xff, 0xd8]) { "jpg" } else { "png" };
        let p = dir.join(format!("input.{ext}"));
        std::fs::write(&p, b).unwrap();
        match prep.load(&p) {
            Ok(px) => {
                assert!(px.len() == 3 * 64 && px.iter().all(|x| x.is_finite()));
                true
            }
            Err(e) => {
                assert!(e.to_string().contains("input."), "the error names the file: {e}");
                false
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trainer_state() {
    use tramway::train::checkpoint::TrainerState;
    let dict = ["\"step\"", "\"total_steps\"", "\"seed\"", "\"image_size\"", "\"batch_size\""];
    fuzz("trainer_state", 30_000, &dict, plain, &|b| match TrainerState::parse(
        "trainer_state.json",
        &String::from_utf8_lossy(b),
    ) {
        Ok(s) => {
            assert!(s.step <= s.total_steps);
            true
        }
        Err(e) => {
            assert!(e.to_string().contains("trainer_state.json"), "{e}");
            false
        }
    });
}

// ------------------------------------------------------------------------------------------
// Regressions: what the fuzzer and the issue found, with the message each must give.

fn tensor(data: Vec<f32>, shape: &[usize], dtype: safetensors::Dtype) -> HostTensor {
    HostTensor { shape: shape.to_vec(), data, dtype }
}

/// A safetensors file with one F64 tensor (serialize writes F32/F16/BF16 only).
fn f64_file(name: &str, values: &[f64]) -> Vec<u8> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![values.len()], &bytes).unwrap();
    safetensors::serialize(vec![(name.to_string(), view)], None).unwrap()
}

fn nan_file() -> Vec<u8> {
    let mut data: Vec<f32> = (0..24).map(|i| i as f32 * 0.25).collect();
    data[17] = f32::NAN;
    let name = "bert.encoder.layer.0.attention.self.query.weight".to_string();
    serialize("x", &[(name, tensor(data, &[4, 6], safetensors::Dtype::F32))]).unwrap()
}

#[test]
fn non_finite_weights_are_refused() {
    let e = Weights::parse("model.safetensors", &nan_file()).unwrap_err().to_string();
    assert!(
        e.contains("model.safetensors")
            && e.contains("tensor bert.encoder.layer.0.attention.self.query.weight has a non-finite value (NaN)")
            && e.contains("at element 17"),
        "{e}"
    );
    let mut data = vec![0.5f32; 6];
    data[4] = f32::NEG_INFINITY;
    let f16 = serialize("x", &[("w".into(), tensor(data, &[2, 3], safetensors::Dtype::F16))]).unwrap();
    let e = Weights::parse("optimizer.safetensors", &f16).unwrap_err().to_string();
    assert!(e.contains("optimizer.safetensors") && e.contains("(-inf) at element 4"), "{e}");
    // f16 overflow of a finite f32 is infinite too (serialize narrows; the parse refuses it).
    let big = serialize("x", &[("w".into(), tensor(vec![1.0, 1e6], &[2], safetensors::Dtype::F16))]).unwrap();
    let e = Weights::parse("m.safetensors", &big).unwrap_err().to_string();
    assert!(e.contains("(inf) at element 1"), "{e}");
    // F64 beyond f32's range becomes infinite when narrowed.
    let e = Weights::parse("m.safetensors", &f64_file("w", &[1.0, 2.0, 1e300])).unwrap_err().to_string();
    assert!(e.contains("tensor w has a value beyond the range of f32 (1e300 in F64) at element 2"), "{e}");
    let ok = Weights::parse("m.safetensors", &f64_file("w", &[1.0, -2.5])).unwrap();
    assert_eq!(ok.tensors["w"].data, vec![1.0, -2.5]);
}

/// Every safetensors file of the fixtures loads (none holds a non-finite value).
#[test]
fn fixtures_are_finite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut stack = vec![root];
    let mut n = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "safetensors") {
                let w = Weights::parse(&p.display().to_string(), &std::fs::read(&p).unwrap());
                assert!(w.is_ok(), "{}", w.unwrap_err());
                n += 1;
            }
        }
    }
    assert!(n >= 8, "{n} fixture files");
}

fn fixture_config(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}/model/config.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The error of parsing the `name` fixture's config with `key` set to `value` (JSON).
fn config_err(name: &str, key: &str, value: &str) -> String {
    let mut v = fixture_config(name);
    v[key] = serde_json::from_str(value).unwrap();
    let text = v.to_string();
    let e = match name {
        "bert" | "roberta" => EncoderConfig::parse("config.json", &text).err(),
        "vit" | "dinov2" => VitConfig::parse("config.json", &text).err(),
        "gpt2" => Gpt2Config::parse("config.json", &text).err(),
        _ => LlamaConfig::parse("config.json", &text).err(),
    };
    e.map(|e| e.to_string()).unwrap_or_else(|| panic!("{name}: {key} = {value} was accepted"))
}

#[test]
fn config_values_are_range_checked() {
    let has = |e: String, parts: &[&str]| assert!(parts.iter().all(|p| e.contains(p)), "{e}");
    for (model, eps) in [
        ("bert", "layer_norm_eps"),
        ("vit", "layer_norm_eps"),
        ("gpt2", "layer_norm_epsilon"),
        ("llama", "rms_norm_eps"),
    ] {
        has(config_err(model, eps, "-100"), &["config.json", eps, "-100", "out of range", "> 0"]);
        has(config_err(model, eps, "0"), &[eps, "out of range"]);
        has(config_err(model, eps, "1e-50"), &[eps, "out of range"]);
        has(config_err(model, eps, "\"small\""), &[eps, "\"small\"", "a number"]);
    }
    for (model, p) in [
        ("bert", "hidden_dropout_prob"),
        ("roberta", "attention_probs_dropout_prob"),
        ("dinov2", "hidden_dropout_prob"),
        ("gpt2", "resid_pdrop"),
        ("gpt2", "embd_pdrop"),
        ("gpt2", "attn_pdrop"),
        ("llama", "attention_dropout"),
    ] {
        has(config_err(model, p, "1.0"), &[p, "= 1", "[0, 1)"]);
        has(config_err(model, p, "-0.1"), &[p, "-0.1", "[0, 1)"]);
    }
    has(config_err("llama", "rope_theta", "0"), &["rope_theta = 0", "finite number > 0"]);
    has(config_err("llama", "rope_theta", "-5e5"), &["rope_theta", "out of range"]);
    // Sizes: negative, zero, absurd.
    has(config_err("bert", "vocab_size", "-5"), &["vocab_size = -5", "non-negative integer"]);
    has(config_err("bert", "intermediate_size", "0"), &["intermediate_size = 0", "positive"]);
    has(config_err("bert", "vocab_size", "1000000000000"), &["vocab_size = 1000000000000", "out of range"]);
    has(config_err("bert", "vocab_size", "1000000000"), &["vocab_size = 1000000000 x hidden_size = 32", "2^34"]);
    has(config_err("gpt2", "n_embd", "1000000000"), &["n_embd = 1000000000", "2^34"]);
    has(config_err("llama", "hidden_size", "1000000000"), &["hidden_size = 1000000000", "2^34"]);
    has(config_err("llama", "vocab_size", "18446744073709551615"), &["vocab_size", "out of range"]);
    has(config_err("vit", "image_size", "0"), &["image_size = 0", "out of range"]);
    has(config_err("vit", "num_channels", "1"), &["num_channels = 1", "expected 3"]);
    has(config_err("dinov2", "mlp_ratio", "1e30"), &["mlp_ratio", "out of range"]);
    has(config_err("bert", "num_hidden_layers", "100000"), &["num_hidden_layers = 100000", "1024"]);
    has(config_err("roberta", "num_labels", "1000000000000"), &["num_labels = 1000000000000", "out of range"]);
    has(config_err("roberta", "num_labels", "0"), &["num_labels = 0", "out of range"]);
    has(config_err("bert", "id2label", "{\"0\": \"a\", \"00\": \"b\"}"), &["id2label", "twice"]);
    has(config_err("bert", "id2label", "{\"0\": 5}"), &["id2label", "label name"]);
    has(config_err("gpt2", "eos_token_id", "-1"), &["eos_token_id = -1", "token id"]);
    // A DINOv2 mlp_ratio may be fractional (Hugging Face truncates hidden_size * mlp_ratio).
    let mut v = fixture_config("dinov2");
    v["mlp_ratio"] = serde_json::json!(2.5);
    assert_eq!(VitConfig::parse("config.json", &v.to_string()).unwrap().intermediate_size, 80);
    // Not an object at all.
    let e = EncoderConfig::parse("config.json", "[1, 2]").unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("JSON object"), "{e}");
    // Every fixture config still loads.
    for m in ["bert", "roberta"] {
        EncoderConfig::parse("config.json", &fixture_config(m).to_string()).unwrap();
    }
    for m in ["vit", "dinov2"] {
        VitConfig::parse("config.json", &fixture_config(m).to_string()).unwrap();
    }
    Gpt2Config::parse("config.json", &fixture_config("gpt2").to_string()).unwrap();
    for m in ["llama", "llama_tied"] {
        LlamaConfig::parse("config.json", &fixture_config(m).to_string()).unwrap();
    }
}

fn prep_err(dir: &Path, json: &str) -> String {
    std::fs::write(dir.join("preprocessor_config.json"), json).unwrap();
    match ImagePrep::from_dir(dir, 224) {
        Ok(p) => panic!("{json} was accepted: {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn preprocessor_values_are_range_checked() {
    let dir = scratch("prep-regress");
    let has = |e: String, parts: &[&str]| {
        assert!(e.contains("preprocessor_config.json") && parts.iter().all(|p| e.contains(p)), "{e}")
    };
    has(prep_err(&dir, r#"{"size": {"shortest_edge": 100000}}"#), &["size.shortest_edge = 100000", "1..=4096"]);
    has(prep_err(&dir, r#"{"crop_size": {"height": 100000, "width": 100000}}"#), &["crop_size.height = 100000"]);
    has(prep_err(&dir, r#"{"crop_size": 0}"#), &["crop_size = 0", "out of range"]);
    has(prep_err(&dir, r#"{"crop_size": {"height": 224, "width": 200}}"#), &["not square"]);
    has(prep_err(&dir, r#"{"size": {"height": -3, "width": 224}}"#), &["size.height = -3"]);
    has(prep_err(&dir, r#"{"size": {"shortest_edge": 2.5}}"#), &["size.shortest_edge = 2.5", "integer"]);
    has(prep_err(&dir, r#"{"image_std": [0.5, 0, 0.5]}"#), &["image_std", "> 0"]);
    has(prep_err(&dir, r#"{"image_mean": ["a", 0, 0.5]}"#), &["image_mean", "three finite numbers"]);
    has(prep_err(&dir, r#"{"image_mean": [1e39, 0, 0]}"#), &["image_mean", "three finite numbers"]);
    has(prep_err(&dir, r#"{"rescale_factor": -1}"#), &["rescale_factor = -1"]);
    // Each value finite but their combination overflows f32.
    has(prep_err(&dir, r#"{"rescale_factor": 1e37, "image_std": [1e-30, 1, 1]}"#), &["finite"]);
    has(prep_err(&dir, "[]"), &["JSON object"]);
    // Hugging Face's usual forms load.
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 256}, "image_mean": 0.5,
            "image_std": [0.5, 0.5, 0.5], "rescale_factor": 0.00392156862745098}"#,
    )
    .unwrap();
    let p = ImagePrep::from_dir(&dir, 16).unwrap();
    assert_eq!((p.size, p.shortest_edge, p.mean), (224, Some(256), [0.5; 3]));
    std::fs::write(dir.join("preprocessor_config.json"), r#"{"size": {"height": 32, "width": 32}, "crop_size": 24}"#)
        .unwrap();
    assert_eq!(ImagePrep::from_dir(&dir, 16).unwrap().size, 24);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The 0x0 IDX images that divided by zero, and other impossible dimensions.
#[test]
fn idx_dimensions_are_checked() {
    let dir = scratch("idx-regress");
    let open = |images: &[u8], labels: &[u8]| {
        std::fs::write(dir.join("a-labels-idx1-ubyte"), labels).unwrap();
        let p = dir.join("a-images-idx3-ubyte");
        std::fs::write(&p, images).unwrap();
        ImageSet::open(&p).map(|s| s.len()).map_err(|e| e.to_string())
    };
    let labels = [0, 0, 8, 1, 0, 0, 0, 2, 0, 1];
    let e = open(&[0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0], &labels).unwrap_err();
    assert!(e.contains("a-images-idx3-ubyte") && e.contains("[2, 0, 0]") && e.contains("sides of 1 to 16384"), "{e}");
    let e = open(&[0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1], &[0, 0, 8, 1, 0, 0, 0, 0]).unwrap_err();
    assert!(e.contains("at least one image"), "{e}");
    let mut huge = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0x80, 0, 0, 0, 0, 1];
    huge.extend([7; 8]);
    let e = open(&huge, &labels).unwrap_err();
    assert!(e.contains("a-images-idx3-ubyte") && e.contains("need 65536 bytes") && e.contains("has 8"), "{e}");
    let mut over = vec![0, 0, 8, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    over.extend([0, 0, 0, 3]);
    let e = open(&over, &labels).unwrap_err();
    assert!(e.contains("more than 8589934592 bytes"), "{e}");
    // A gzip bomb's header claims little: inflation stops after what the dimensions need.
    let mut bomb = vec![0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1];
    bomb.extend(std::iter::repeat_n(0u8, 8 << 20));
    std::fs::write(dir.join("a-labels-idx1-ubyte"), labels).unwrap();
    let p = dir.join("b-images-idx3-ubyte.gz");
    std::fs::write(dir.join("b-labels-idx1-ubyte.gz"), gzip(&labels)).unwrap();
    std::fs::write(&p, gzip(&bomb)).unwrap();
    let e = ImageSet::open(&p).unwrap_err().to_string();
    assert!(e.contains("b-images-idx3-ubyte.gz") && e.contains("need 2 bytes") && e.contains("has more"), "{e}");
    // A valid pair still opens and its images prepare.
    let set = open(&[0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 9, 9, 200, 200], &labels).unwrap();
    assert_eq!(set, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small PNG with its IHDR claiming `w` x `h` (checksum fixed): the decoder must refuse it
/// before allocating.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut b = Vec::new();
    image::RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3]))
        .write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png)
        .unwrap();
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    fix_png_crcs(&mut b);
    b
}

/// A small JPEG with its SOF claiming `w` x `h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut b = Vec::new();
    image::RgbImage::from_pixel(8, 8, image::Rgb([10, 200, 30]))
        .write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Jpeg)
        .unwrap();
    let sof = b.windows(2).position(|w| w == [0xff, 0xc0]).expect("a baseline SOF0 marker");
    b[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    b
}

#[test]
fn image_decoding_is_bounded() {
    let dir = scratch("image-regress");
    let prep = small_prep();
    let load = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        prep.load(&p).map_err(|e| e.to_string())
    };
    let e = load("bomb.png", &png_claiming(20000, 20000)).unwrap_err();
    assert!(e.contains("bomb.png") && e.contains("too large"), "{e}");
    let e = load("wide.png", &png_claiming(16000, 16000)).unwrap_err();
    assert!(e.contains("wide.png") && e.contains("too large"), "{e}");
    let e = load("bomb.jpg", &jpeg_claiming(60000, 60000)).unwrap_err();
    assert!(e.contains("bomb.jpg") && (e.contains("too large") || e.contains("cannot read")), "{e}");
    let good = png_claiming(2, 2);
    let e = load("cut.png", &good[..good.len() / 2]).unwrap_err();
    assert!(e.contains("cut.png") && e.contains("cannot read the image"), "{e}");
    let e = load("empty.png", b"").unwrap_err();
    assert!(e.contains("empty.png"), "{e}");
    // An extreme aspect ratio would resize to a huge strip.
    let mut strip = Vec::new();
    image::GrayImage::from_pixel(1, 16384, image::Luma([7]))
        .write_to(&mut std::io::Cursor::new(&mut strip), image::ImageFormat::Png)
        .unwrap();
    let big = ImagePrep { size: 512, shortest_edge: Some(4096), ..small_prep() };
    let p = dir.join("strip.png");
    std::fs::write(&p, &strip).unwrap();
    let e = big.load(&p).unwrap_err().to_string();
    assert!(e.contains("strip.png") && e.contains("aspect ratio"), "{e}");
    // A PNG named .jpg is read by its content.
    assert_eq!(load("really-a-png.jpg", &good).unwrap().len(), 3 * 64);
    // Fields set out of range after loading are refused, not used.
    let zero = ImagePrep { size: 0, ..small_prep() };
    let e = zero.from_pixels(2, 2, 1, &[0; 4]).unwrap_err().to_string();
    assert!(e.contains("image size 0"), "{e}");
    let e = prep.from_pixels(2, 2, 3, &[0; 4]).unwrap_err().to_string();
    assert!(e.contains("4 bytes for a 2x2 image of 3 channels"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn jsonl_labels() {
    let dir = scratch("jsonl-regress");
    let read = |body: &str| {
        let p = dir.join("d.jsonl");
        std::fs::write(&p, body).unwrap();
        read_examples(&p, "text", "label").map_err(|e| e.to_string())
    };
    let rows = read(
        "{\"text\": \"a\", \"label\": 0}\n{\"text\": \"b\", \"label\": 12}\n{\"text\": \"c\", \"label\": \"x\"}\n",
    )
    .unwrap();
    assert_eq!(rows.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(), ["0", "12", "x"]);
    for (bad, what) in [("1.5", "fractional"), ("null", "null"), ("{}", "object"), ("[1]", "array"), ("\" \"", "empty")]
    {
        let e =
            read(&format!("{{\"text\": \"a\", \"label\": 1}}\n{{\"text\": \"b\", \"label\": {bad}}}\n")).unwrap_err();
        assert!(e.contains("d.jsonl") && e.contains("line 2") && e.contains("\"label\"") && e.contains(what), "{e}");
    }
    let e = read("[1, 2]\n").unwrap_err();
    assert!(e.contains("line 1") && e.contains("JSON object"), "{e}");
    let e = read("{\"text\": [\"a\"], \"label\": 1}\n").unwrap_err();
    assert!(e.contains("line 1") && e.contains("\"text\"") && e.contains("array"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tokenizer_errors_name_the_file() {
    let dir = scratch("tokenizer-regress");
    std::fs::write(dir.join("tokenizer.json"), "{\"model\": {\"type\": \"BPE\"").unwrap();
    let e = TextTokenizer::from_dir(&dir, 16, 0).err().expect("a malformed tokenizer.json is refused").to_string();
    assert!(e.contains(&dir.join("tokenizer.json").display().to_string()), "{e}");
    // One that makes the tokenizers crate panic when encoding is refused when loading.
    std::fs::copy(corpus_dir("tokenizer").join("regress-template-special-token.json"), dir.join("tokenizer.json"))
        .unwrap();
    let e = TextTokenizer::from_dir(&dir, 16, 0).err().expect("a broken template is refused").to_string();
    assert!(e.contains("tokenizer.json") && e.contains("the tokenizers library failed"), "{e}");
    // A valid one: its errors name the file too.
    std::fs::copy(corpus_dir("tokenizer").join("wordpiece.json"), dir.join("tokenizer.json")).unwrap();
    let t = TextTokenizer::from_dir(&dir, 16, 0).unwrap();
    let e = t.encode(&[]).unwrap_err().to_string();
    assert!(e.contains(&dir.join("tokenizer.json").display().to_string()), "{e}");
    let b = t.encode(&["hello world", "the quick"]).unwrap();
    assert_eq!(b.ids.len(), b.batch * b.seq);
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------------------
// The seed corpora (committed; this rewrites them).

/// GPT-2's byte-to-character map (printable bytes map to themselves).
fn byte_char(b: u8) -> char {
    let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable {
        char::from(b)
    } else {
        let k = (0..b).filter(|&x| !((33..=126).contains(&x) || (161..=172).contains(&x) || x >= 174)).count();
        char::from_u32(256 + k as u32).unwrap()
    }
}

fn added(id: u32, content: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
        "normalized": false, "special": true})
}

fn tokenizer_seeds() -> Vec<(&'static str, String)> {
    use serde_json::json;
    let special = |id: &str, n: u32| json!({"SpecialToken": {"id": id, "type_id": n}});
    let seq = |id: &str, n: u32| json!({"Sequence": {"id": id, "type_id": n}});
    let mut words: Vec<&str> = "[PAD] [UNK] [CLS] [SEP] [MASK] hello world the quick brown fox jumps over lazy dog . \
                                ##s ##ing a b c d e f g h i j k l m n o p q r s t u v w x y z ##a ##e ##o"
        .split(' ')
        .collect();
    words.dedup();
    let vocab: serde_json::Map<String, serde_json::Value> =
        words.iter().enumerate().map(|(i, w)| (w.to_string(), json!(i))).collect();
    let wordpiece = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "[PAD]"), added(1, "[UNK]"), added(2, "[CLS]"), added(3, "[SEP]"), added(4, "[MASK]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0)],
            "pair": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0), seq("B", 1), special("[SEP]", 1)],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": vocab}
    });
    // Byte-level BPE (GPT-2, SmolLM2): the 256 byte characters, then merges.
    let mut bpe_vocab = serde_json::Map::new();
    bpe_vocab.insert("<|endoftext|>".into(), json!(0));
    for b in 0..=255u8 {
        let n = bpe_vocab.len();
        bpe_vocab.insert(byte_char(b).to_string(), json!(n));
    }
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "t h", "Ġ th", "Ġth e"];
    for m in merges {
        let n = bpe_vocab.len();
        bpe_vocab.insert(m.replace(' ', ""), json!(n));
    }
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let bpe = |merges: serde_json::Value| {
        json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [added(0, "<|endoftext|>")],
            "normalizer": null, "pre_tokenizer": byte_level, "post_processor": byte_level, "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": bpe_vocab, "merges": merges}
        })
    };
    let pairs: Vec<serde_json::Value> = merges.iter().map(|m| json!(m.split(' ').collect::<Vec<_>>())).collect();
    // Unigram with Metaspace (T5, XLM-R, multilingual-e5).
    let mut uni = vec![json!(["<pad>", 0.0]), json!(["</s>", 0.0]), json!(["<unk>", 0.0]), json!(["\u{2581}", -2.0])];
    for (i, w) in ["\u{2581}hello", "\u{2581}world", "\u{2581}the", "\u{2581}quick", "ing", "s"].iter().enumerate() {
        uni.push(json!([w, -3.0 - i as f64 * 0.5]));
    }
    for c in "abcdefghijklmnopqrstuvwxyz.".chars() {
        uni.push(json!([c.to_string(), -8.0]));
    }
    let unigram = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "<pad>"), added(1, "</s>"), added(2, "<unk>")],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Nmt"}, {"type": "NFKC"},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true},
        "post_processor": {"type": "TemplateProcessing",
            "single": [seq("A", 0), special("</s>", 0)],
            "pair": [seq("A", 0), special("</s>", 0), seq("B", 0), special("</s>", 0)],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
        "decoder": {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true},
        "model": {"type": "Unigram", "unk_id": 2, "vocab": uni, "byte_fallback": false}
    });
    let wl_vocab: serde_json::Map<String, serde_json::Value> =
        (0..20).map(|i| (format!("w{i}"), json!(i))).chain([("hello".to_string(), json!(20))]).collect();
    let wordlevel = json!({
        "version": "1.0", "truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null, "pad_id": 1,
            "pad_type_id": 0, "pad_token": "w1"},
        "added_tokens": [], "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"},
            {"type": "Split", "pattern": {"Regex": "\\d+"}, "behavior": "Isolated", "invert": false}]},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": wl_vocab, "unk_token": "w3"}
    });
    vec![
        ("wordpiece.json", serde_json::to_string_pretty(&wordpiece).unwrap()),
        ("bpe-bytelevel.json", bpe(json!(merges)).to_string()),
        ("bpe-pair-merges.json", bpe(json!(pairs)).to_string()),
        ("unigram.json", serde_json::to_string_pretty(&unigram).unwrap()),
        ("wordlevel.json", serde_json::to_string_pretty(&wordlevel).unwrap()),
        ("regress-truncated.json", "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\"".into()),
        ("regress-template-special-token.json", broken_template(&unigram)),
    ]
}

/// A tokenizer whose post-processor's template uses a special token its `special_tokens` map
/// does not define (the tokenizers crate then panics on every text).
fn broken_template(tokenizer: &serde_json::Value) -> String {
    let mut t = tokenizer.clone();
    let map = t["post_processor"]["special_tokens"].as_object_mut().unwrap();
    let v = map.remove("</s>").unwrap();
    map.insert("<-s>".into(), v);
    serde_json::to_string_pretty(&t).unwrap()
}

fn encode_image(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut b = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut b), format).unwrap();
    b
}

/// Rewrite `tests/fuzz/**` (run by hand after changing a seed).
#[test]
#[ignore]
fn write_seed_corpora() {
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = corpus_dir(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    use safetensors::Dtype;
    // safetensors
    let t = |n: &str, data: Vec<f32>, shape: &[usize], d: Dtype| (n.to_string(), tensor(data, shape, d));
    let f = |n: usize| (0..n).map(|i| (i as f32 - 3.0) * 0.125).collect::<Vec<f32>>();
    for (name, d) in [("f32", Dtype::F32), ("f16", Dtype::F16), ("bf16", Dtype::BF16)] {
        let file = serialize("x", &[t("a.weight", f(6), &[2, 3], d), t("a.bias", f(3), &[3], d)]).unwrap();
        write("safetensors", &format!("{name}.safetensors"), &file);
    }
    write("safetensors", "empty.safetensors", &serialize("x", &[]).unwrap());
    write(
        "safetensors",
        "scalar-and-zero.safetensors",
        &serialize("x", &[t("s", vec![2.0], &[], Dtype::F32), t("z", vec![], &[0, 4], Dtype::F32)]).unwrap(),
    );
    {
        let ids: Vec<u8> = [3i64, -1, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        let labels: Vec<u8> = [0i32, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let wide: Vec<u8> = [0.5f64, -1.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![
            ("ids".to_string(), safetensors::tensor::TensorView::new(Dtype::I64, vec![3], &ids).unwrap()),
            ("labels".to_string(), safetensors::tensor::TensorView::new(Dtype::I32, vec![2], &labels).unwrap()),
            ("wide".to_string(), safetensors::tensor::TensorView::new(Dtype::F64, vec![2], &wide).unwrap()),
        ];
        write("safetensors", "ints-f64.safetensors", &safetensors::serialize(views, None).unwrap());
    }
    write("safetensors", "regress-nan.safetensors", &nan_file());
    write("safetensors", "regress-f64-overflow.safetensors", &f64_file("w", &[1.0, 1e300]));
    // config.json
    for m in ["bert", "roberta", "vit", "dinov2", "gpt2", "llama"] {
        write("config", &format!("{m}.json"), serde_json::to_string_pretty(&fixture_config(m)).unwrap().as_bytes());
    }
    let edited = |m: &str, k: &str, v: serde_json::Value| {
        let mut c = fixture_config(m);
        c[k] = v;
        serde_json::to_string_pretty(&c).unwrap()
    };
    write("config", "regress-layer-norm-eps.json", edited("bert", "layer_norm_eps", (-100).into()).as_bytes());
    write("config", "regress-huge-vocab.json", edited("gpt2", "vocab_size", 1_000_000_000_000u64.into()).as_bytes());
    write("config", "regress-mlp-ratio.json", edited("dinov2", "mlp_ratio", 1e30.into()).as_bytes());
    write("config", "regress-num-labels.json", edited("roberta", "num_labels", 1_000_000_000_000u64.into()).as_bytes());
    // preprocessor_config.json
    write(
        "preprocessor",
        "dinov2.json",
        br#"{"crop_size": {"height": 14, "width": 14}, "do_center_crop": true, "do_normalize": true,
  "do_rescale": true, "do_resize": true, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
  "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 16}}"#,
    );
    write(
        "preprocessor",
        "vit.json",
        br#"{"do_normalize": true, "do_rescale": true, "do_resize": true, "image_mean": [0.5, 0.5, 0.5],
  "image_std": [0.5, 0.5, 0.5], "resample": 2, "rescale_factor": 0.00392156862745098, "size": {"height": 12, "width": 12}}"#,
    );
    write("preprocessor", "ints.json", br#"{"crop_size": 8, "size": 10, "image_mean": 0.5, "image_std": 0.25}"#);
    write(
        "preprocessor",
        "regress-shortest-edge.json",
        br#"{"size": {"shortest_edge": 100000}, "crop_size": {"height": 100000, "width": 100000}}"#,
    );
    write("preprocessor", "regress-std-zero.json", br#"{"image_std": [0, 0.5, 0.5], "rescale_factor": 1e38}"#);
    // tokenizer.json
    for (name, text) in tokenizer_seeds() {
        write("tokenizer", name, text.as_bytes());
    }
    // tables
    write("table", "basic.csv", b"text,label\nhello world,pos\n\"a, quoted\nline\",neg\nthird,1\n");
    write("table", "basic.tsv", b"text\tlabel\tid\nhello\tpos\t1\nbye\tneg\t2\n");
    write(
        "table",
        "ints.jsonl",
        b"{\"text\": \"a\", \"label\": 0}\n\n{\"text\": \"b\", \"label\": 1, \"x\": [1.5, null]}\n",
    );
    write(
        "table",
        "strings.jsonl",
        "{\"text\": \"\u{e9}t\u{e9} \u{1f642}\", \"label\": \"yes\"}\n{\"text\": \"no\", \"label\": \"no\"}\r\n"
            .as_bytes(),
    );
    write("table", "bom.csv", "\u{feff}text,label\nx,y\n".as_bytes());
    write("table", "regress-float-label.jsonl", b"{\"text\": \"a\", \"label\": 1.5}\n");
    write("table", "regress-not-utf8.csv", b"text,label\n\xff\xfe,1\n");
    // IDX pairs
    let idx = |dims: &[u32], data: &[u8]| {
        let mut v = vec![0u8, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    };
    let grey: Vec<u8> = (0..3 * 4 * 5).map(|i| (i * 41 % 256) as u8).collect();
    write("idx", "grey.idxpair", &idx_pair(0, &idx(&[3, 4, 5], &grey), &idx(&[3], &[0, 1, 2])));
    write("idx", "classes.idxpair", &idx_pair(2, &idx(&[3, 4, 5], &grey), &idx(&[3], &[2, 1, 0])));
    let rgb: Vec<u8> = (0..2 * 3 * 2 * 3).map(|i| (i * 13 % 256) as u8).collect();
    write("idx", "rgb.idxpair", &idx_pair(0, &idx(&[2, 3, 2, 3], &rgb), &idx(&[2], &[1, 1])));
    write("idx", "gz.idxpair", &idx_pair(1, &idx(&[3, 4, 5], &grey), &idx(&[3], &[0, 1, 2])));
    write("idx", "regress-0x0.idxpair", &idx_pair(0, &idx(&[2, 0, 0], &[]), &idx(&[2], &[0, 1])));
    // images
    use image::{DynamicImage, ImageFormat};
    let grad = image::RgbImage::from_fn(7, 5, |x, y| image::Rgb([(x * 36) as u8, (y * 50) as u8, 128]));
    let g8 = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([((x + y) * 16) as u8]));
    write("image", "rgb.png", &encode_image(DynamicImage::ImageRgb8(grad.clone()), ImageFormat::Png));
    write("image", "grey.png", &encode_image(DynamicImage::ImageLuma8(g8.clone()), ImageFormat::Png));
    let rgba16 = image::ImageBuffer::<image::Rgba<u16>, Vec<u16>>::from_fn(3, 4, |x, y| {
        image::Rgba([(x * 20000) as u16, (y * 15000) as u16, 40000, 65535 - (x * 1000) as u16])
    });
    write("image", "rgba16.png", &encode_image(DynamicImage::ImageRgba16(rgba16), ImageFormat::Png));
    write("image", "rgb.jpg", &encode_image(DynamicImage::ImageRgb8(grad), ImageFormat::Jpeg));
    write("image", "grey.jpg", &encode_image(DynamicImage::ImageLuma8(g8), ImageFormat::Jpeg));
    let strip = image::GrayImage::from_fn(1, 300, |_, y| image::Luma([y as u8]));
    write("image", "strip.png", &encode_image(DynamicImage::ImageLuma8(strip), ImageFormat::Png));
    write("image", "regress-huge-ihdr.png", &png_claiming(20000, 20000));
    write("image", "regress-huge-sof.jpg", &jpeg_claiming(60000, 60000));
    let cut = png_claiming(2, 2);
    write("image", "regress-truncated.png", &cut[..cut.len() - 20]);
    // trainer_state.json
    write(
        "trainer_state",
        "state.json",
        br#"{"step": 2, "total_steps": 4, "seed": 9, "optimizer": "tram", "optimizer_settings": "lr 1e-4",
  "task": "TextClassification", "batch_size": 2, "max_len": 16, "image_size": null, "train_examples": 6,
  "train_fingerprint": "0123456789abcdef"}"#,
    );
    write(
        "trainer_state",
        "regress-step-beyond-total.json",
        br#"{"step": 9, "total_steps": 4, "seed": 9, "optimizer": "adamw", "optimizer_settings": "",
  "task": "CausalLm", "batch_size": 1, "max_len": 2, "image_size": 12, "train_examples": 0, "train_fingerprint": ""}"#,
    );
}
