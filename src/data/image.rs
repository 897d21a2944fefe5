//! Images for vision models: decode (PNG, JPEG), resize and crop, rescale and normalise as the
//! folder's `preprocessor_config.json` says (ImageNet statistics when it is absent).
//!
//! Resizing uses bilinear filtering, not PIL's bicubic, so pixels agree with Hugging Face's image
//! processors exactly only for images already at the crop size (the tests use such images).

use crate::error::{Error, Result};
use std::path::Path;

/// How pixels become model input `[3, size, size]`.
#[derive(Clone, Debug)]
pub struct ImagePrep {
    /// Side of the square the model sees.
    pub size: usize,
    /// Resize the shorter side to this before the centre crop (None: straight to `size`).
    pub shortest_edge: Option<usize>,
    pub rescale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl ImagePrep {
    /// From `<dir>/preprocessor_config.json` if present (crop size, shortest edge, mean, std,
    /// rescale factor); `size` when the file gives no crop size.
    pub fn from_dir(dir: &Path, size: usize) -> Result<Self> {
        let mut p = ImagePrep {
            size,
            shortest_edge: None,
            rescale: 1.0 / 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        };
        let path = dir.join("preprocessor_config.json");
        if !path.is_file() {
            return Ok(p);
        }
        let bad = |m: String| Error::Model { file: path.display().to_string(), message: m };
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).map_err(|source| Error::Io { path: path.display().to_string(), source })?,
        )
        .map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let triple = |k: &str| -> Result<Option<[f32; 3]>> {
            match v.get(k) {
                None => Ok(None),
                Some(a) => {
                    let xs: Vec<f32> = a
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect())
                        .unwrap_or_default();
                    if xs.len() != 3 {
                        return Err(bad(format!("{k} must be three numbers")));
                    }
                    Ok(Some([xs[0], xs[1], xs[2]]))
                }
            }
        };
        if let Some(m) = triple("image_mean")? {
            p.mean = m;
        }
        if let Some(s) = triple("image_std")? {
            p.std = s;
        }
        if let Some(r) = v.get("rescale_factor").and_then(|x| x.as_f64()) {
            p.rescale = r as f32;
        }
        if let Some(h) = v.get("crop_size").and_then(|c| c.get("height")).and_then(|x| x.as_u64()) {
            p.size = h as usize;
        }
        p.shortest_edge =
            v.get("size").and_then(|s| s.get("shortest_edge")).and_then(|x| x.as_u64()).map(|x| x as usize);
        Ok(p)
    }

    /// Decode `path` and return `[3, size, size]` normalised pixels.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>> {
        let img = image::open(path).map_err(|e| Error::Model {
            file: path.display().to_string(),
            message: format!("cannot read the image: {e}"),
        })?;
        let mut rgb = img.to_rgb8();
        let s = self.size as u32;
        if rgb.width() != s || rgb.height() != s {
            let short = self.shortest_edge.map(|e| e as u32).unwrap_or(s).max(s);
            let (w, h) = (rgb.width(), rgb.height());
            let (nw, nh) = if w <= h {
                (short, (h as u64 * short as u64 / w as u64) as u32)
            } else {
                ((w as u64 * short as u64 / h as u64) as u32, short)
            };
            rgb = image::imageops::resize(&rgb, nw.max(s), nh.max(s), image::imageops::FilterType::Triangle);
            let (x, y) = ((rgb.width() - s) / 2, (rgb.height() - s) / 2);
            rgb = image::imageops::crop_imm(&rgb, x, y, s, s).to_image();
        }
        let n = self.size * self.size;
        let mut out = vec![0f32; 3 * n];
        for (i, px) in rgb.pixels().enumerate() {
            for c in 0..3 {
                out[c * n + i] = (px[c] as f32 * self.rescale - self.mean[c]) / self.std[c];
            }
        }
        Ok(out)
    }
}
