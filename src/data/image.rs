//! Images for vision models: decode (PNG, JPEG), resize and crop, rescale and normalise as the
//! folder's `preprocessor_config.json` says (ImageNet statistics when it is absent).
//!
//! Resizing uses bilinear filtering, not PIL's bicubic, so pixels agree with Hugging Face's image
//! processors exactly only for images already at the crop size (the tests use such images).

use crate::error::{Error, Result};
use std::path::Path;

/// The largest side of the square a model sees, and of `shortest_edge` (a 4096² input is 16M
/// pixels; larger values are almost certainly mistakes and would allocate gigabytes).
pub const MAX_PREP_SIZE: usize = 4096;
/// The largest image side decoded (PNG, JPEG, IDX).
pub const MAX_IMAGE_SIDE: u32 = 16384;
/// The most memory one image's decoding may allocate.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;
/// The most pixels the resized image (before the centre crop) may have: bounds what an extreme
/// aspect ratio (a 1×16384 strip resized to a shortest side of 224 would be 224×3.7M) costs.
pub const MAX_RESIZED_PIXELS: u64 = 1 << 26;
/// The most bytes an IDX file may hold once decompressed.
pub const MAX_IDX_BYTES: u64 = 1 << 33;

/// How pixels become model input `[3, size, size]`.
#[derive(Clone, Debug)]
pub struct ImagePrep {
    /// Side of the square the model sees (1..=[`MAX_PREP_SIZE`]).
    pub size: usize,
    /// Resize the shorter side to this before the centre crop (None: straight to `size`).
    pub shortest_edge: Option<usize>,
    pub rescale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// A side or size from `preprocessor_config.json`: an integer in 1..=MAX_PREP_SIZE.
fn prep_side(key: &str, v: &serde_json::Value) -> std::result::Result<usize, String> {
    let x = match (v.as_u64(), v.as_f64()) {
        (Some(x), _) => x as f64,
        (None, Some(x)) if x.fract() == 0.0 => x,
        _ => return Err(format!("{key} = {v} is not valid: expected an integer in 1..={MAX_PREP_SIZE}")),
    };
    if !(1.0..=MAX_PREP_SIZE as f64).contains(&x) {
        return Err(format!("{key} = {v} is out of range: expected an integer in 1..={MAX_PREP_SIZE}"));
    }
    Ok(x as usize)
}

impl ImagePrep {
    /// From `<dir>/preprocessor_config.json` if present (crop size, shortest edge, mean, std,
    /// rescale factor); `size` when the file gives no crop size. Every value is checked: sizes
    /// in 1..=[`MAX_PREP_SIZE`], finite means, finite positive standard deviations and rescale
    /// factor; an error names the file and the key.
    pub fn from_dir(dir: &Path, size: usize) -> Result<Self> {
        let mut p = ImagePrep {
            size,
            shortest_edge: None,
            rescale: 1.0 / 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        };
        let path = dir.join("preprocessor_config.json");
        let file = path.display().to_string();
        if !path.is_file() {
            p.check().map_err(|m| Error::Model { file, message: m })?;
            return Ok(p);
        }
        let bad = |m: String| Error::Model { file: file.clone(), message: m };
        let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: file.clone(), source })?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let Some(obj) = v.as_object() else {
            return Err(bad("expected a JSON object of settings".into()));
        };
        let get = |k: &str| obj.get(k).filter(|x| !x.is_null());
        // Three finite numbers (or one, for every channel).
        let triple = |k: &str| -> Result<Option<[f32; 3]>> {
            let Some(a) = get(k) else { return Ok(None) };
            let xs: Option<Vec<f64>> = match a {
                serde_json::Value::Array(a) if a.len() == 3 => a.iter().map(|x| x.as_f64()).collect(),
                x => x.as_f64().map(|x| vec![x; 3]),
            };
            match xs {
                Some(xs) if xs.iter().all(|x| (x.abs() as f32).is_finite()) => {
                    Ok(Some([xs[0] as f32, xs[1] as f32, xs[2] as f32]))
                }
                _ => Err(bad(format!("{k} = {a} is not valid: expected three finite numbers (R, G, B)"))),
            }
        };
        if let Some(m) = triple("image_mean")? {
            p.mean = m;
        }
        if let Some(s) = triple("image_std")? {
            if s.iter().any(|&x| x <= 0.0) {
                return Err(bad(format!("image_std = {s:?} is out of range: every value must be > 0")));
            }
            p.std = s;
        }
        if let Some(r) = get("rescale_factor") {
            match r.as_f64() {
                Some(x) if x > 0.0 && (x as f32).is_finite() && x as f32 > 0.0 => p.rescale = x as f32,
                _ => return Err(bad(format!("rescale_factor = {r} is not valid: expected a finite number > 0"))),
            }
        }
        // crop_size: {height, width} (square) or one integer.
        match get("crop_size") {
            None => {}
            Some(serde_json::Value::Object(c)) => {
                let side = |k: &str| c.get(k).filter(|x| !x.is_null()).map(|x| prep_side(&format!("crop_size.{k}"), x));
                match (side("height").transpose().map_err(bad)?, side("width").transpose().map_err(bad)?) {
                    (Some(h), Some(w)) if h != w => {
                        return Err(bad(format!(
                            "crop_size {h}x{w} (height x width) is not square; tramway crops square images"
                        )))
                    }
                    (Some(h), _) | (None, Some(h)) => p.size = h,
                    (None, None) => {}
                }
            }
            Some(x) => p.size = prep_side("crop_size", x).map_err(bad)?,
        }
        // size: {shortest_edge} (resize, then centre crop), {height, width} or an integer
        // (resize straight to the model's size); every size given is checked.
        match get("size") {
            None => {}
            Some(serde_json::Value::Object(s)) => {
                let sides = ["shortest_edge", "height", "width"];
                for (k, x) in s.iter().filter(|(k, x)| sides.contains(&k.as_str()) && !x.is_null()) {
                    let side = prep_side(&format!("size.{k}"), x).map_err(bad)?;
                    if k == "shortest_edge" {
                        p.shortest_edge = Some(side);
                    }
                }
            }
            Some(x) => {
                prep_side("size", x).map_err(bad)?;
            }
        }
        p.check().map_err(bad)?;
        Ok(p)
    }

    /// The fields in range (they are public, so checked again before use).
    fn check(&self) -> std::result::Result<(), String> {
        let side = |what: &str, x: usize| {
            if x == 0 || x > MAX_PREP_SIZE {
                return Err(format!("{what} {x} is out of range: expected 1..={MAX_PREP_SIZE}"));
            }
            Ok(())
        };
        side("image size", self.size)?;
        if let Some(e) = self.shortest_edge {
            side("shortest_edge", e)?;
        }
        let fin = |x: &f32| x.is_finite();
        let valid = self.rescale.is_finite()
            && self.rescale > 0.0
            && self.mean.iter().all(fin)
            && self.std.iter().all(|x| fin(x) && *x > 0.0);
        if !valid {
            return Err(format!(
                "rescale {}, mean {:?}, std {:?}: expected finite values, rescale and std > 0",
                self.rescale, self.mean, self.std
            ));
        }
        // Each value finite is not enough: (255 * rescale - mean) / std must be too.
        for c in 0..3 {
            for px in [0.0f32, 255.0] {
                if !((px * self.rescale - self.mean[c]) / self.std[c]).is_finite() {
                    return Err(format!(
                        "rescale_factor {}, image_mean {:?} and image_std {:?} make non-finite pixel values",
                        self.rescale, self.mean, self.std
                    ));
                }
            }
        }
        Ok(())
    }

    /// Decode `path` (PNG or JPEG, by content) and return `[3, size, size]` normalised pixels.
    /// Images larger than [`MAX_IMAGE_SIDE`] on a side or needing more than
    /// [`MAX_DECODE_BYTES`] to decode are refused.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>> {
        let file = path.display().to_string();
        let bad = |m: String| Error::Model { file: file.clone(), message: m };
        let reader = image::ImageReader::open(path)
            .and_then(|r| r.with_guessed_format())
            .map_err(|source| Error::Io { path: file.clone(), source })?;
        let mut reader = reader;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_IMAGE_SIDE);
        limits.max_image_height = Some(MAX_IMAGE_SIDE);
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        reader.limits(limits);
        let img = reader.decode().map_err(|e| match e {
            image::ImageError::Limits(e) => bad(format!(
                "the image is too large to decode ({e}); tramway decodes images of at most \
                 {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels and {} MiB",
                MAX_DECODE_BYTES >> 20
            )),
            e => bad(format!("cannot read the image: {e}")),
        })?;
        self.prepare(img.to_rgb8()).map_err(bad)
    }

    /// `[3, size, size]` normalised pixels from 8-bit pixels `[height, width, channels]`
    /// (1 channel: grey, repeated to RGB; 3: RGB).
    pub fn from_pixels(&self, width: usize, height: usize, channels: usize, px: &[u8]) -> Result<Vec<f32>> {
        let bad = |m: String| Error::Model { file: "image pixels".into(), message: m };
        let n = width.checked_mul(height).and_then(|n| n.checked_mul(channels));
        if !(channels == 1 || channels == 3)
            || n != Some(px.len())
            || width > MAX_IMAGE_SIDE as usize
            || height > MAX_IMAGE_SIDE as usize
        {
            return Err(bad(format!(
                "{} bytes for a {width}x{height} image of {channels} channels (expected 1 or 3 channels, sides of \
                 at most {MAX_IMAGE_SIDE})",
                px.len()
            )));
        }
        let rgb = image::RgbImage::from_fn(width as u32, height as u32, |x, y| {
            let i = (y as usize * width + x as usize) * channels;
            if channels == 1 {
                image::Rgb([px[i]; 3])
            } else {
                image::Rgb([px[i], px[i + 1], px[i + 2]])
            }
        });
        self.prepare(rgb).map_err(bad)
    }

    fn prepare(&self, mut rgb: image::RgbImage) -> std::result::Result<Vec<f32>, String> {
        self.check()?;
        let s = self.size as u32;
        let (w, h) = (rgb.width(), rgb.height());
        if w == 0 || h == 0 {
            return Err(format!("the image is empty ({w}x{h} pixels)"));
        }
        if w != s || h != s {
            let short = self.shortest_edge.unwrap_or(self.size).max(self.size) as u64;
            let (w64, h64) = (w as u64, h as u64);
            let (nw, nh) = if w <= h { (short, h64 * short / w64) } else { (w64 * short / h64, short) };
            let (nw, nh) = (nw.max(s as u64), nh.max(s as u64));
            if nw * nh > MAX_RESIZED_PIXELS {
                return Err(format!(
                    "a {w}x{h} image resized to a shortest side of {short} would be {nw}x{nh} pixels (more than \
                     {MAX_RESIZED_PIXELS}): its aspect ratio is too extreme"
                ));
            }
            rgb = image::imageops::resize(&rgb, nw as u32, nh as u32, image::imageops::FilterType::Triangle);
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

/// Parse an IDX file of unsigned bytes (gzipped or not): (dimensions, data). The data must be
/// exactly what the dimensions need (at most [`MAX_IDX_BYTES`]); a gzipped file is inflated
/// only as far as that, so a decompression bomb costs no more than the header claims.
fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    use std::io::Read;
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    let gz = bytes.starts_with(&[0x1f, 0x8b]);
    let mut r: Box<dyn Read> =
        if gz { Box::new(flate2::read::GzDecoder::new(&bytes[..])) } else { Box::new(&bytes[..]) };
    let read_err = |e: std::io::Error| {
        if gz {
            bad(path, format!("not a valid gzip file: {e}"))
        } else {
            bad(path, format!("cannot read: {e}"))
        }
    };
    // Read up to `n` bytes (fewer only at the end of the data).
    let mut take = |n: u64| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut r).take(n).read_to_end(&mut out).map_err(read_err)?;
        Ok(out)
    };
    let magic = take(4)?;
    if magic.len() < 4 || magic[..3] != [0, 0, 0x08] {
        return Err(bad(path, "not an IDX file of unsigned bytes (expected magic 00 00 08 nd)"));
    }
    let nd = magic[3] as usize;
    let head = take(4 * nd as u64)?;
    if nd == 0 || head.len() < 4 * nd {
        return Err(bad(path, "truncated IDX header"));
    }
    let dims: Vec<usize> =
        head.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let n = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).filter(|&n| n <= MAX_IDX_BYTES);
    let Some(n) = n else {
        return Err(bad(
            path,
            format!("IDX dimensions {dims:?} describe more than {MAX_IDX_BYTES} bytes; tramway reads at most that"),
        ));
    };
    let data = take(n + 1)?;
    if data.len() as u64 != n {
        let found = if data.len() as u64 > n { "more".to_string() } else { data.len().to_string() };
        return Err(bad(path, format!("IDX dimensions {dims:?} need {n} bytes of data, the file has {found}")));
    }
    Ok((dims, data))
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
        let side = 1..=MAX_IMAGE_SIDE as usize;
        if n == 0 || !side.contains(&h) || !side.contains(&w) {
            return Err(bad(
                path,
                format!(
                    "IDX images of dimensions {dims:?}: expected at least one image and sides of 1 to {MAX_IMAGE_SIDE} \
                     pixels"
                ),
            ));
        }
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
                match px.get(k * n..(k + 1) * n) {
                    Some(p) => prep.from_pixels(*w, *h, *c, p).map_err(|e| match e {
                        Error::Model { message, .. } => bad(&self.path, format!("image {k}: {message}")),
                        e => e,
                    }),
                    None => Err(bad(&self.path, format!("internal: image {k} is outside the pixel array"))),
                }
            }
            (Source::Array(_), None) => Err(bad(&self.path, "internal: array image without pixels")),
        }
    }
}
