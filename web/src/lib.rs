//! tramway for JavaScript: a text model loaded from bytes, sentence embeddings and step-by-step
//! fine-tuning with any tramway optimizer, on the browser's WebGPU. A thin layer over
//! [`tramway::session::TextSession`]; see `web/README.md` for the JavaScript API.
//!
//! Natively this crate builds to nothing but [`optim_config`] (shared with the reference
//! program that `web/test.sh` compares the browser against).

use tramway::optim::{Method, OptimConfig, Schedule};

/// The optimizer the page and the reference program build from a name and a learning rate:
/// the command line's defaults ([`Method::preset`]), a constant rate, gradients clipped to
/// norm 1.
pub fn optim_config(name: &str, lr: f32, seed: u64) -> tramway::Result<OptimConfig> {
    let (base, method) = Method::preset(name)?;
    Ok(OptimConfig { base, method, lr, schedule: Schedule::Constant, clip: Some(1.0), seed })
}

// A session's RefCell is held across the GPU awaits on purpose: a second call while one runs
// gets `try_borrow_mut`'s "busy" error, never a panic or interleaved steps.
#[cfg(target_arch = "wasm32")]
#[allow(clippy::await_holding_refcell_ref)]
mod js {
    use super::optim_config;
    use std::cell::RefCell;
    use std::rc::Rc;
    use tramway::session::{SessionOptions, TextModelBytes, TextSession};
    use tramway::{Gpu, GpuOptions};
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = console)]
        fn error(s: &str);
    }

    /// Rust panics (a bug, never bad input) go to the console with their message.
    #[wasm_bindgen(start)]
    fn start() {
        std::panic::set_hook(Box::new(|info| error(&format!("tramway panicked: {info}"))));
    }

    fn js_err(e: tramway::Error) -> JsError {
        JsError::new(&e.to_string())
    }

    /// What one training step reports.
    #[wasm_bindgen]
    #[derive(Clone, Copy)]
    pub struct StepMetrics {
        /// Loss at the parameters before the step.
        pub loss: f32,
        /// TRAM's trust-region distance d (0 for other optimizers).
        pub d: f32,
        #[wasm_bindgen(js_name = gradNorm)]
        pub grad_norm: f32,
        #[wasm_bindgen(js_name = paramNorm)]
        pub param_norm: f32,
        /// Steps taken so far.
        pub step: u32,
    }

    /// A text model (BERT, RoBERTa/XLM-R, MiniLM) on the browser's GPU.
    #[wasm_bindgen]
    pub struct Session {
        inner: Rc<RefCell<TextSession>>,
        adapter: String,
        hidden: usize,
    }

    impl Session {
        /// The session, or an error when a call on it is still running (each call awaits the
        /// GPU; JavaScript must await one before starting the next).
        fn busy(&self) -> Result<std::cell::RefMut<'_, TextSession>, JsError> {
            self.inner
                .try_borrow_mut()
                .map_err(|_| JsError::new("this Session is busy with another call: await each call before the next"))
        }
    }

    #[wasm_bindgen]
    impl Session {
        /// Open the browser's GPU and load a model from the bytes of its `config.json`,
        /// `model.safetensors` and `tokenizer.json`. `maxLen`: tokens per text at most;
        /// `layers`: keep only the first layers (0 keeps all); `seed`: seeds a new head.
        pub async fn open(
            config: Vec<u8>,
            weights: Vec<u8>,
            tokenizer: Vec<u8>,
            max_len: u32,
            layers: u32,
            seed: u32,
        ) -> Result<Session, JsError> {
            let gpu = Gpu::new(GpuOptions::default()).await.map_err(js_err)?;
            let info = gpu.adapter_info();
            // Browsers may keep the adapter's name to themselves.
            let name = if info.name.is_empty() { "WebGPU adapter" } else { info.name.as_str() };
            let adapter = format!("{name} ({:?}, {:?})", info.backend, info.device_type);
            let files = TextModelBytes { config: &config, weights: &weights, tokenizer: &tokenizer };
            let opts = SessionOptions {
                max_len: max_len as usize,
                layers: (layers > 0).then_some(layers as usize),
                seed: seed as u64,
            };
            let s = TextSession::open(gpu, &files, &opts).map_err(js_err)?;
            let hidden = s.config().hidden_size;
            Ok(Session { inner: Rc::new(RefCell::new(s)), adapter, hidden })
        }

        /// The adapter the session runs on: name, backend and device type.
        #[wasm_bindgen(getter)]
        pub fn adapter(&self) -> String {
            self.adapter.clone()
        }

        /// Width of an embedding.
        #[wasm_bindgen(getter, js_name = hiddenSize)]
        pub fn hidden_size(&self) -> usize {
            self.hidden
        }

        /// Layers the model runs.
        #[wasm_bindgen(getter)]
        pub fn layers(&self) -> Result<usize, JsError> {
            Ok(self.busy()?.config().num_layers)
        }

        /// The head's class names.
        #[wasm_bindgen(getter)]
        pub fn labels(&self) -> Result<Vec<String>, JsError> {
            Ok(self.busy()?.labels().to_vec())
        }

        /// Sentence embeddings (mean-pooled, unit length), `texts.length × hiddenSize` values
        /// row by row.
        pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<f32>, JsError> {
            let inner = self.inner.clone();
            let s = inner.try_borrow_mut().map_err(|_| JsError::new("this Session is busy"))?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Ok(s.embed(&refs).await.map_err(js_err)?.concat())
        }

        /// Put a head for `labels` on the model and start optimizer `optimizer` (adamw, sgd,
        /// sam, asam, fsam, tram-x, tram-prev, tram-init, tram-ema, tram-fisher, r3f, trpo,
        /// mesa) at learning rate `lr`.
        #[wasm_bindgen(js_name = startTraining)]
        pub fn start_training(&self, labels: Vec<String>, optimizer: &str, lr: f32, seed: u32) -> Result<(), JsError> {
            let cfg = optim_config(optimizer, lr, seed as u64).map_err(js_err)?;
            self.busy()?.start_training(&labels, cfg).map_err(js_err)
        }

        /// One optimizer step on `texts` with class names `labels`.
        pub async fn step(&self, texts: Vec<String>, labels: Vec<String>) -> Result<StepMetrics, JsError> {
            let inner = self.inner.clone();
            let mut s = inner.try_borrow_mut().map_err(|_| JsError::new("this Session is busy"))?;
            let t: Vec<&str> = texts.iter().map(String::as_str).collect();
            let l: Vec<&str> = labels.iter().map(String::as_str).collect();
            let m = s.step(&t, &l).await.map_err(js_err)?;
            Ok(StepMetrics {
                loss: m.loss,
                d: m.d,
                grad_norm: m.grad_norm,
                param_norm: m.param_norm,
                step: s.steps() as u32,
            })
        }

        /// Class probabilities, `texts.length × labels.length` values row by row.
        pub async fn classify(&self, texts: Vec<String>) -> Result<Vec<f32>, JsError> {
            let inner = self.inner.clone();
            let mut s = inner.try_borrow_mut().map_err(|_| JsError::new("this Session is busy"))?;
            let t: Vec<&str> = texts.iter().map(String::as_str).collect();
            Ok(s.classify(&t).await.map_err(js_err)?.concat())
        }
    }

    /// The optimizer names `startTraining` takes.
    #[wasm_bindgen(js_name = optimizerNames)]
    pub fn optimizer_names() -> Vec<String> {
        tramway::optim::METHOD_NAMES.iter().map(|s| s.to_string()).collect()
    }
}
