//! Fine-tune a text classifier with TRAM-x from the library, save it as a Hugging Face folder,
//! and classify new sentences with the saved model.
//!
//!   models/fetch.sh minilm && cargo run --release --example finetune_classifier [MODEL_DIR]

use std::path::PathBuf;
use tramway::ops::kl::KlKind;
use tramway::optim::{Base, KlNorm, Method, OptimConfig, Schedule, TramRef};
use tramway::train::{finetune, Classifier, FinetuneOptions, TaskKind};
use tramway::{Gpu, GpuOptions};

fn main() -> tramway::Result<()> {
    let model = PathBuf::from(std::env::args().nth(1).unwrap_or("models/all-MiniLM-L6-v2".into()));
    let out = std::env::temp_dir().join("tramway-example-finetune");
    // A tiny labelled set (a real one is a CSV, TSV or JSONL file with text and label columns).
    std::fs::create_dir_all(&out).map_err(|source| tramway::Error::Io { path: out.display().to_string(), source })?;
    let train = out.join("train.csv");
    let rows = "text,label\n\"a wonderful, moving film\",positive\na dull mess,negative\nbrilliant acting,positive\n\
                boring and far too long,negative\nI loved every minute,positive\nawful script,negative\n";
    std::fs::write(&train, rows).map_err(|source| tramway::Error::Io { path: train.display().to_string(), source })?;

    // TRAM-x (tram.md): the ascent radius is the KL distance between the model's outputs on
    // clean and on noised input embeddings; AdamW takes the step.
    let steps = 8;
    let options = FinetuneOptions {
        task: TaskKind::TextClassification,
        model,
        train: train.clone(),
        evals: vec![("train".into(), train)],
        text_column: "text".into(),
        label_column: "label".into(),
        optim: OptimConfig {
            base: Base::adamw(),
            method: Method::Tram {
                reference: TramRef::Noise { std: 0.1, uniform: false },
                adaptive: true,
                kl: KlKind::Forward,
                kl_norm: KlNorm::Mean,
                tr_scale: 1.0,
            },
            lr: 5e-4,
            schedule: Schedule::Linear { warmup: 1, total: steps },
            clip: Some(1.0),
            seed: 1,
        },
        batch_size: 4,
        steps: Some(steps),
        epochs: 1.0,
        max_len: 16,
        eval_every: 0,
        save_every: 0,
        log_every: 1,
        max_eval: None,
        eval_batch_size: None,
        image_size: None,
        save_final: true,
        out: out.join("run"),
        resume: None,
        metrics: None,
        progress: true,
        profile: None,
        lora: None,
        merge: false,
        freeze_base: false,
    };
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let summary = finetune(&gpu, &options)?;
    println!(
        "{} steps, last loss {:.4}, training-set accuracy {:.2}",
        summary.steps, summary.final_loss, summary.evals[0].accuracy
    );

    // The saved folder (config.json with id2label, model.safetensors, tokenizer files) loads in
    // `transformers` as BertForSequenceClassification, and here:
    let saved = out.join("run/final");
    let mut classifier = Classifier::load(&gpu, &saved, 16)?;
    let texts = ["what a great film", "a total waste of time"];
    for (text, p) in texts.iter().zip(classifier.predict(&texts, 2)?) {
        let best = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
        println!("{text:?}: {} ({:.2})", classifier.labels[best], p[best]);
    }
    println!("saved to {}", saved.display());
    Ok(())
}
