//! Hugging Face model folders on disk (native only): reading `model.safetensors`, writing a
//! folder atomically. Model-agnostic: each family reads its own `config.json`.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use crate::error::{Error, Result};
    use crate::io::weights::{serialize, HostTensor, Weights};
    use std::io::Write;
    use std::path::Path;

    /// Files copied from the source folder when a model is saved.
    pub const SIDE_FILES: &[&str] = &[
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "sentencepiece.bpe.model",
        "preprocessor_config.json",
    ];

    fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.display().to_string(), source }
    }

    /// Write `bytes` to `path` atomically: a temporary file in the same folder, flushed to
    /// disk, then renamed over the target, so a crash leaves the old file or the new one.
    pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io_err(path))
    }

    /// Write a Hugging Face folder: `config.json`, `model.safetensors` from `state`, the
    /// [`SIDE_FILES`] present in `source` (unless `written` already provides them), and the
    /// `written` files themselves (name, contents).
    pub fn save_folder(
        dir: &Path,
        state: &[(String, HostTensor)],
        config: &serde_json::Value,
        source: Option<&Path>,
        written: &[(&str, Vec<u8>)],
    ) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let st = dir.join("model.safetensors");
        write_atomic(&st, &serialize(&st.display().to_string(), state)?)?;
        let cfg = serde_json::to_string_pretty(config).unwrap_or_default();
        write_atomic(&dir.join("config.json"), cfg.as_bytes())?;
        for (name, bytes) in written {
            write_atomic(&dir.join(name), bytes)?;
        }
        if let Some(src) = source {
            for f in SIDE_FILES {
                let from = src.join(f);
                if from.is_file() && from != dir.join(f) && !written.iter().any(|(n, _)| n == f) {
                    let bytes = read(&from)?;
                    write_atomic(&dir.join(f), &bytes)?;
                }
            }
        }
        Ok(())
    }

    /// Copy the [`SIDE_FILES`] present in `source` into `dir` (each atomically).
    pub fn copy_side_files(source: &Path, dir: &Path) -> Result<()> {
        for f in SIDE_FILES {
            let from = source.join(f);
            if from.is_file() && from != dir.join(f) {
                write_atomic(&dir.join(f), &read(&from)?)?;
            }
        }
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })
    }

    /// Read `<dir>/model.safetensors` (or another safetensors file by path).
    pub fn read_weights(path: &Path) -> Result<Weights> {
        let p = if path.is_dir() { path.join("model.safetensors") } else { path.to_path_buf() };
        let bytes = read(&p)?;
        Weights::parse(&p.display().to_string(), &bytes)
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;
