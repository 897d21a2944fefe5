//! The browser test's scenario (web/scenario.json) run natively through the same library code
//! ([`tramway::session::TextSession`]): its JSON output is what `web/test.mjs` requires the
//! browser's WebGPU results to match.
//!
//!   cargo run --release -p tramway-web --bin web-reference -- web/scenario.json > reference.json

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    if let Err(e) = native::run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use serde_json::{json, Value};
    use std::path::Path;
    use tramway::session::{SessionOptions, TextModelBytes, TextSession};
    use tramway::{Gpu, GpuOptions};

    fn read(path: &Path) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn strings(v: &Value, key: &str) -> Result<Vec<String>, String> {
        v[key]
            .as_array()
            .ok_or(format!("scenario: {key} must be a list"))?
            .iter()
            .map(|s| s.as_str().map(String::from).ok_or(format!("scenario: {key} must hold strings")))
            .collect()
    }

    fn num(v: &Value, key: &str) -> Result<f64, String> {
        v[key].as_f64().ok_or(format!("scenario: {key} must be a number"))
    }

    /// Open `model` (a folder relative to the repository root) as the scenario's part `p` says.
    fn open(root: &Path, p: &Value) -> Result<TextSession, String> {
        let dir = root.join(p["model"].as_str().ok_or("scenario: model must be a folder")?);
        let (config, weights, tokenizer) = (
            read(&dir.join("config.json"))?,
            read(&dir.join("model.safetensors"))?,
            read(&dir.join("tokenizer.json"))?,
        );
        let gpu = Gpu::new_blocking(GpuOptions::from_env().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let files = TextModelBytes { config: &config, weights: &weights, tokenizer: &tokenizer };
        let layers = num(p, "layers")? as usize;
        let o = SessionOptions {
            max_len: num(p, "max_len")? as usize,
            layers: (layers > 0).then_some(layers),
            seed: num(p, "seed")? as u64,
        };
        TextSession::open(gpu, &files, &o).map_err(|e| e.to_string())
    }

    /// Every training run of a part: per optimizer, the metrics of each step and the final
    /// class probabilities of the probe texts.
    fn train(root: &Path, p: &Value) -> Result<Value, String> {
        let mut s = open(root, p)?;
        let labels = strings(p, "labels")?;
        let texts = strings(p, "texts")?;
        let classes = strings(p, "classes")?;
        let batch = num(p, "batch")? as usize;
        let mut out = serde_json::Map::new();
        for opt in strings(p, "optimizers")? {
            let cfg = tramway_web::optim_config(&opt, num(p, "lr")? as f32, num(p, "seed")? as u64)
                .map_err(|e| e.to_string())?;
            s.start_training(&classes, cfg).map_err(|e| e.to_string())?;
            let mut steps = Vec::new();
            for k in 0..num(p, "steps")? as usize {
                // Batches cycle through the examples in order (the browser does the same).
                let idx: Vec<usize> = (0..batch).map(|i| (k * batch + i) % texts.len()).collect();
                let t: Vec<&str> = idx.iter().map(|&i| texts[i].as_str()).collect();
                let l: Vec<&str> = idx.iter().map(|&i| labels[i].as_str()).collect();
                let m = pollster::block_on(s.step(&t, &l)).map_err(|e| format!("{opt} step {}: {e}", k + 1))?;
                steps.push(json!({"loss": m.loss, "d": m.d, "gradNorm": m.grad_norm}));
            }
            let probe = strings(p, "probe")?;
            let refs: Vec<&str> = probe.iter().map(String::as_str).collect();
            let probs = pollster::block_on(s.classify(&refs)).map_err(|e| e.to_string())?;
            out.insert(opt, json!({"steps": steps, "probs": probs}));
        }
        Ok(Value::Object(out))
    }

    pub fn run() -> Result<(), String> {
        let path = std::env::args().nth(1).unwrap_or("web/scenario.json".into());
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let sc: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        let root = Path::new(&path).parent().and_then(Path::parent).unwrap_or(Path::new("."));
        let e = &sc["embed"];
        let s = open(root, e)?;
        let sentences = strings(e, "sentences")?;
        let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
        let embeddings = pollster::block_on(s.embed(&refs)).map_err(|e| e.to_string())?;
        drop(s);
        let small = train(root, &sc["small"])?;
        let real = train(root, &sc["real"])?;
        let out = json!({"embed": embeddings, "small": small, "real": real});
        println!("{}", serde_json::to_string(&out).map_err(|e| e.to_string())?);
        Ok(())
    }
}
