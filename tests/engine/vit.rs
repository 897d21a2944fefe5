use super::encoder::{check_grads, fixture, rel_err, LOGITS_TOL};
use super::*;
use tramway::data::batch::ImageBatch;
use tramway::io::hf::read_weights;
use tramway::models::vit::Vit;
use tramway::models::vit::VitConfig;

/// ViT logits, loss and every gradient against PyTorch (same tolerances as the encoders).
#[test]
fn vit_matches_pytorch() {
    vision_matches_pytorch("vit");
}

/// DINOv2: LayerScale, positions interpolated from a 4x4 to a 3x3 grid, [CLS, mean] head.
#[test]
fn dinov2_matches_pytorch() {
    vision_matches_pytorch("dinov2");
}

fn vision_matches_pytorch(name: &str) {
    let dir = fixture(name);
    let text = std::fs::read_to_string(dir.join("model/config.json")).unwrap();
    let mut cfg = VitConfig::parse("config.json", &text).unwrap();
    let exp = read_weights(&dir.join("expected.safetensors")).unwrap();
    let pixels = &exp.tensors["pixel_values"];
    cfg.input_size = pixels.shape[2];
    let model = Vit::load(gpu(), cfg, &read_weights(&dir.join("model")).unwrap(), 0).unwrap();
    let labels: Vec<u32> = exp.ints("labels").unwrap().1.iter().map(|&v| v as u32).collect();
    let batch = ImageBatch { batch: pixels.shape[0], pixels: pixels.data.clone(), labels: Some(labels) };
    let mut acts = model.acts(gpu(), batch.batch).unwrap();
    model.upload(gpu(), &mut acts, &batch).unwrap();
    let mut rc = rec();
    model.params.zero_grads(&mut rc);
    model.forward(&mut rc, &acts, true, None).unwrap();
    model.backward(&mut rc, &acts).unwrap();
    rc.submit().unwrap();
    let e = rel_err(&down(&acts.logits), &exp.tensors["logits"].data);
    assert!(e < LOGITS_TOL, "{name}: logits off by {e:.2e}");
    let (loss, want) = (down(&acts.loss)[0], exp.tensors["loss"].data[0]);
    assert!((((loss - want) / want).abs() as f64) < LOGITS_TOL, "{name}: loss {loss} vs {want}");
    check_grads(gpu(), name, &model.params, &exp);
}

#[test]
fn patchify_matches_conv_layout() {
    // 1 image, 2 channels, 4x4 pixels, patch 2: patch (0, 1) row = [c0 rows 0-1 cols 2-3, c1 ...].
    let px: Vec<f32> = (0..32).map(|v| v as f32).collect();
    let p = tramway::ops::patch::patchify(&px, 1, 2, 4, 4, 2).unwrap();
    assert_eq!(&p[8..16], &[2.0, 3.0, 6.0, 7.0, 18.0, 19.0, 22.0, 23.0]);
    assert!(tramway::ops::patch::patchify(&px, 1, 2, 4, 4, 3).is_err());
}

#[test]
fn assemble_forward_backward() {
    use tramway::ops::patch::{assemble, assemble_backward};
    use tramway::ops::reference as r;
    for (ci, &(batch, seq, cols)) in [(1, 1, 1), (2, 5, 3), (3, 17, 70)].iter().enumerate() {
        let mut rng = Rng::new(ci as u64);
        let (pe, cls, pos) = (rng.vec(batch * (seq - 1) * cols), rng.vec(cols), rng.vec(seq * cols));
        let dx = rng.vec(batch * seq * cols);
        let (g0, p0) = (rng.vec(cols), rng.vec(seq * cols));
        let x = gpu().zeros(&[batch * seq * cols]).unwrap();
        let dpe = gpu().zeros(&[batch * (seq - 1) * cols]).unwrap();
        let (dcls, dpos) = (up(&g0), up(&p0));
        let mut rc = rec();
        assemble(&mut rc, &up(&pe), &up(&cls), &up(&pos), &x, batch, seq).unwrap();
        assemble_backward(&mut rc, &up(&dx), &dpe, &dcls, &dpos, batch, seq).unwrap();
        rc.submit().unwrap();
        close("assemble", &down(&x), &r::assemble(&pe, &cls, &pos, batch, seq), 1e-7, 1e-6);
        // The backward is the transpose of a sum: dpe copies rows, dcls/dpos sum over the batch.
        let f = |pe: &[f32], cls: &[f32], pos: &[f32]| dot(&dx, &r::assemble(pe, cls, pos, batch, seq));
        let grad = |which: usize, x: &[f32]| -> Vec<f64> {
            (0..x.len())
                .map(|i| {
                    let mut xp = x.to_vec();
                    xp[i] += 1.0;
                    let base = match which {
                        0 => f(x, &cls, &pos),
                        1 => f(&pe, x, &pos),
                        _ => f(&pe, &cls, x),
                    };
                    let up = match which {
                        0 => f(&xp, &cls, &pos),
                        1 => f(&pe, &xp, &pos),
                        _ => f(&pe, &cls, &xp),
                    };
                    up - base // exact: the map is linear
                })
                .collect()
        };
        close("dpe", &down(&dpe), &grad(0, &pe), 1e-6, 1e-6);
        let wc: Vec<f64> = grad(1, &cls).iter().zip(&g0).map(|(a, &b)| a + b as f64).collect();
        close("dcls", &down(&dcls), &wc, 1e-6, 1e-6);
        let wp: Vec<f64> = grad(2, &pos).iter().zip(&p0).map(|(a, &b)| a + b as f64).collect();
        close("dpos", &down(&dpos), &wp, 1e-6, 1e-6);
    }
}
