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
        Ok(self.prepare(img.to_rgb8()))
    }

    /// `[3, size, size]` normalised pixels from 8-bit pixels `[height, width, channels]`
    /// (1 channel: grey, repeated to RGB; 3: RGB).
    pub fn from_pixels(&self, width: usize, height: usize, channels: usize, px: &[u8]) -> Vec<f32> {
        let rgb = image::RgbImage::from_fn(width as u32, height as u32, |x, y| {
            let i = (y as usize * width + x as usize) * channels;
            if channels == 1 {
                image::Rgb([px[i]; 3])
            } else {
                image::Rgb([px[i], px[i + 1], px[i + 2]])
            }
        });
        self.prepare(rgb)
    }

    fn prepare(&self, mut rgb: image::RgbImage) -> Vec<f32> {
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
        out
    }

    /// The `preprocessor_config.json` that reproduces this preparation (written next to a
    /// fine-tuned vision model, so that evaluation sees images as training did).
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "image_processor_type": "BitImageProcessor",
            "do_resize": true,
            "size": {"shortest_edge": self.shortest_edge.unwrap_or(self.size)},
            "do_center_crop": true,
            "crop_size": {"height": self.size, "width": self.size},
            "do_rescale": true,
            "rescale_factor": self.rescale,
            "do_normalize": true,
            "image_mean": self.mean,
            "image_std": self.std,
        })
    }
}

/// Where an image's pixels are.
#[derive(Clone, Debug)]
enum Source {
    File(std::path::PathBuf),
    /// Image `i` of the set's pixel array.
    Array(usize),
}

/// A labelled image dataset: a folder with one sub-folder per class (PNG/JPEG files), or an IDX
/// pair (`*images-idx3-ubyte[.gz]` with its `*labels-idx1-ubyte[.gz]`, as MNIST and Fashion-MNIST
/// ship; class names from a `classes.txt` beside it, one per line, else the label numbers).
#[derive(Clone, Debug)]
pub struct ImageSet {
    pub path: std::path::PathBuf,
    items: Vec<(Source, String)>,
    /// For arrays: (width, height, channels, pixels of every image).
    array: Option<(usize, usize, usize, std::sync::Arc<Vec<u8>>)>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Model { file: path.display().to_string(), message: msg.into() }
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("not a valid gzip file: {e}")))?;
        return Ok(out);
    }
    Ok(bytes)
}

/// Parse an IDX file of unsigned bytes: (dimensions, data).
fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let b = read_maybe_gz(path)?;
    if b.len() < 4 || b[0] != 0 || b[1] != 0 || b[2] != 0x08 {
        return Err(bad(path, "not an IDX file of unsigned bytes (expected magic 00 00 08 nd)"));
    }
    let nd = b[3] as usize;
    if nd == 0 || b.len() < 4 + 4 * nd {
        return Err(bad(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes([b[4 + 4 * i], b[5 + 4 * i], b[6 + 4 * i], b[7 + 4 * i]]) as usize)
        .collect();
    let n: usize = dims.iter().product();
    let data = &b[4 + 4 * nd..];
    if data.len() != n {
        return Err(bad(path, format!("IDX dimensions {dims:?} need {n} bytes of data, the file has {}", data.len())));
    }
    Ok((dims, data.to_vec()))
}

const IMAGE_EXTS: &[&str] = &["png", "jpg", "jpeg"];

impl ImageSet {
    /// Open a class-per-folder directory or an IDX images file.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::open_folder(path)
        } else if path.file_name().map(|n| n.to_string_lossy().contains("images-idx3")).unwrap_or(false) {
            Self::open_idx(path)
        } else if !path.exists() {
            Err(Error::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            })
        } else {
            Err(bad(
                path,
                "expected a folder with one sub-folder per class, or an IDX file named *images-idx3-ubyte[.gz]",
            ))
        }
    }

    fn open_folder(dir: &Path) -> Result<Self> {
        let io = |source| Error::Io { path: dir.display().to_string(), source };
        let mut classes: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        classes.sort();
        let mut items = Vec::new();
        for c in &classes {
            let label = c.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let mut files: Vec<_> = std::fs::read_dir(c)
                .map_err(|source| Error::Io { path: c.display().to_string(), source })?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .map(|e| IMAGE_EXTS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
                        .unwrap_or(false)
                })
                .collect();
            files.sort();
            items.extend(files.into_iter().map(|f| (Source::File(f), label.clone())));
        }
        if items.is_empty() {
            return Err(bad(dir, "no images: expected sub-folders named by class holding .png or .jpg files"));
        }
        Ok(ImageSet { path: dir.to_path_buf(), items, array: None })
    }

    fn open_idx(path: &Path) -> Result<Self> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let labels_path = path.with_file_name(name.replace("images-idx3", "labels-idx1"));
        let (dims, pixels) = read_idx(path)?;
        let (ldims, labels) = read_idx(&labels_path)?;
        let (n, h, w, ch) = match dims[..] {
            [n, h, w] => (n, h, w, 1),
            [n, h, w, c] if c == 1 || c == 3 => (n, h, w, c),
            _ => {
                return Err(bad(
                    path,
                    format!("IDX images must be [n, height, width] or [n, height, width, 1|3], found {dims:?}"),
                ))
            }
        };
        if ldims != [n] {
            return Err(bad(
                &labels_path,
                format!("expected {n} labels (one per image of {}), found dimensions {ldims:?}", path.display()),
            ));
        }
        let classes_file = path.with_file_name("classes.txt");
        let names: Option<Vec<String>> = if classes_file.is_file() {
            let t = std::fs::read_to_string(&classes_file)
                .map_err(|source| Error::Io { path: classes_file.display().to_string(), source })?;
            Some(t.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
        } else {
            None
        };
        let mut items = Vec::with_capacity(n);
        for (i, &l) in labels.iter().enumerate() {
            let label = match &names {
                Some(v) => v.get(l as usize).cloned().ok_or_else(|| {
                    bad(&classes_file, format!("label {l} of image {i} has no name ({} names listed)", v.len()))
                })?,
                None => l.to_string(),
            };
            items.push((Source::Array(i), label));
        }
        Ok(ImageSet { path: path.to_path_buf(), items, array: Some((w, h, ch, std::sync::Arc::new(pixels))) })
    }

    /// Unlabelled image files (for prediction).
    pub fn files(paths: Vec<std::path::PathBuf>) -> ImageSet {
        ImageSet {
            path: std::path::PathBuf::new(),
            items: paths.into_iter().map(|p| (Source::File(p), String::new())).collect(),
            array: None,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// The label of image `i`.
    pub fn label(&self, i: usize) -> &str {
        &self.items[i].1
    }
    /// Keep only the images at `idx` (in that order).
    pub fn select(&self, idx: &[usize]) -> ImageSet {
        ImageSet {
            path: self.path.clone(),
            items: idx.iter().map(|&i| self.items[i].clone()).collect(),
            array: self.array.clone(),
        }
    }
    /// Image `i` as `[3, size, size]` model input.
    pub fn pixels(&self, i: usize, prep: &ImagePrep) -> Result<Vec<f32>> {
        match (&self.items[i].0, &self.array) {
            (Source::File(f), _) => prep.load(f),
            (Source::Array(k), Some((w, h, c, px))) => {
                let n = w * h * c;
                Ok(prep.from_pixels(*w, *h, *c, &px[k * n..(k + 1) * n]))
            }
            (Source::Array(_), None) => Err(bad(&self.path, "internal: array image without pixels")),
        }
    }
}
