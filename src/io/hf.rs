//! Hugging Face model folders on disk (native only): `config.json` + `model.safetensors`.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use crate::error::{Error, Result};
    use crate::io::config::EncoderConfig;
    use crate::io::weights::Weights;
    use std::path::Path;

    fn read(path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Read and validate `<dir>/config.json`.
    pub fn read_encoder_config(dir: &Path) -> Result<EncoderConfig> {
        let p = dir.join("config.json");
        let bytes = read(&p)?;
        let text = String::from_utf8_lossy(&bytes);
        EncoderConfig::parse(&p.display().to_string(), &text)
    }

    /// Read `<dir>/model.safetensors` (or another safetensors file by path).
    pub fn read_weights(path: &Path) -> Result<Weights> {
        let p = if path.is_dir() {
            path.join("model.safetensors")
        } else {
            path.to_path_buf()
        };
        let bytes = read(&p)?;
        Weights::parse(&p.display().to_string(), &bytes)
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;
