//! Load an encoder folder and save it again through tramway (used by tools/check_saved.py to
//! prove that `transformers` loads what tramway writes).
//!
//!   cargo run --example resave -- SRC_DIR DST_DIR

use std::path::Path;
use tramway::io::hf::read_weights;
use tramway::models::encoder::Encoder;
use tramway::models::encoder::{read_encoder_config, save_encoder};
use tramway::{Gpu, GpuOptions};

fn main() -> tramway::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: resave SRC_DIR DST_DIR");
        std::process::exit(2);
    }
    let (src, dst) = (Path::new(&args[1]), Path::new(&args[2]));
    let gpu = Gpu::new_blocking(GpuOptions::from_env()?)?;
    let model = Encoder::load(&gpu, read_encoder_config(src)?, &read_weights(src)?, 0)?;
    save_encoder(&gpu, &model, dst, Some(src))?;
    println!("saved {} parameters to {}", model.params.count(), dst.display());
    Ok(())
}
