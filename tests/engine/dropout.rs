//! Models in training mode: dropout masks are reproducible from the key, and the backward
//! pass (which regenerates the masks) is the gradient of the same function, checked by a
//! directional finite difference on the GPU model itself.

use super::encoder::fixture;
use super::*;
use tramway::data::batch::TextBatch;
use tramway::io::hf::read_weights;
use tramway::models::encoder::read_encoder_config;
use tramway::models::encoder::Encoder;
use tramway::nn::{ParamSet, Train};

fn loss_and_grads(model: &Encoder, batch: &TextBatch, train: Option<Train>, grads: bool) -> (f32, Vec<f32>) {
    let mut acts = model.acts(gpu(), batch.batch, batch.seq).unwrap();
    model.upload(gpu(), &mut acts, batch).unwrap();
    let mut rc = rec();
    model.params.zero_grads(&mut rc);
    model.forward(&mut rc, &acts, true, train).unwrap();
    if grads {
        model.backward(&mut rc, &acts).unwrap();
    }
    rc.submit().unwrap();
    (down(&acts.loss)[0], down(&acts.logits))
}

/// Every trainable parameter (or its gradient), by id.
fn flat(p: &ParamSet, grads: bool) -> Vec<Vec<f32>> {
    trainable(p).map(|i| down(if grads { p.grad(i).unwrap() } else { p.p(i) })).collect()
}

fn trainable(p: &ParamSet) -> impl Iterator<Item = usize> + '_ {
    (0..p.len()).filter(|&i| p.trains(i))
}

#[test]
fn encoder_dropout_is_keyed_and_its_gradient_is_exact() {
    let dir = fixture("bert");
    let mut cfg = read_encoder_config(&dir.join("model")).unwrap();
    cfg.hidden_dropout = 0.2;
    cfg.attention_dropout = 0.15;
    let model = Encoder::load(gpu(), cfg, &read_weights(&dir.join("model")).unwrap(), 0).unwrap();
    let exp = read_weights(&dir.join("expected.safetensors")).unwrap();
    let ints = |n: &str| exp.ints(n).unwrap().1.iter().map(|&v| v as u32).collect::<Vec<_>>();
    let shape = exp.ints("input_ids").unwrap().0.clone();
    let batch = TextBatch {
        batch: shape[0],
        seq: shape[1],
        ids: ints("input_ids"),
        mask: ints("attention_mask"),
        types: Some(ints("token_type_ids")),
        labels: Some(ints("labels")),
    };
    check_training_mode(&model.params, &|t, g| loss_and_grads(&model, &batch, t, g));
}

/// Dropout changes the loss, the same key gives the same numbers, and the gradient (masks
/// regenerated in the backward) matches a directional finite difference with the masks fixed.
pub fn check_training_mode(params: &ParamSet, run: &dyn Fn(Option<Train>, bool) -> (f32, Vec<f32>)) {
    let t = Train { seed: 11, step: 4 };
    let (l_eval, _) = run(None, false);
    let (l1, logits1) = run(Some(t), true);
    let g = flat(params, true);
    let (_, logits2) = run(Some(t), false);
    let (l3, _) = run(Some(Train { step: 5, ..t }), false);
    assert_eq!(logits1, logits2, "same key, same masks, same numbers");
    assert!(l1 != l_eval && l1 != l3, "dropout must change the loss ({l_eval}, {l1}, {l3})");
    // Directional derivative: (L(θ + h v) - L(θ - h v)) / 2h = <g, v> with the masks fixed.
    let theta = flat(params, false);
    let mut rng = Rng::new(3);
    let v: Vec<Vec<f32>> = theta.iter().map(|t| rng.vec(t.len())).collect();
    let h = 1e-3f32;
    let at = |sign: f32| {
        for (i, (t, d)) in trainable(params).zip(theta.iter().zip(&v)) {
            let moved: Vec<f32> = t.iter().zip(d).map(|(a, b)| a + sign * h * b).collect();
            gpu().write_f32(params.p(i), &moved).unwrap();
        }
        run(Some(t), false).0 as f64
    };
    let fd = (at(1.0) - at(-1.0)) / (2.0 * h as f64);
    let analytic: f64 = g.iter().zip(&v).flat_map(|(a, b)| a.iter().zip(b)).map(|(&a, &b)| a as f64 * b as f64).sum();
    // f32 losses differ by ~1e-7, divided by 2h: ~1e-4 absolute; 1 % relative otherwise.
    assert!(
        (fd - analytic).abs() <= 2e-4 + 1e-2 * analytic.abs(),
        "directional derivative {fd} vs <g, v> = {analytic}"
    );
}

#[test]
fn vit_dropout_is_keyed_and_its_gradient_is_exact() {
    use tramway::data::batch::ImageBatch;
    use tramway::models::vit::Vit;
    use tramway::models::vit::VitConfig;
    let dir = fixture("vit");
    let mut cfg =
        VitConfig::parse("config.json", &std::fs::read_to_string(dir.join("model/config.json")).unwrap()).unwrap();
    cfg.hidden_dropout = 0.2;
    cfg.attention_dropout = 0.15;
    let model = Vit::load(gpu(), cfg, &read_weights(&dir.join("model")).unwrap(), 0).unwrap();
    let exp = read_weights(&dir.join("expected.safetensors")).unwrap();
    let px = &exp.tensors["pixel_values"];
    let labels = exp.ints("labels").unwrap().1.iter().map(|&v| v as u32).collect();
    let batch = ImageBatch { batch: px.shape[0], pixels: px.data.clone(), labels: Some(labels) };
    let run = |t: Option<Train>, grads: bool| {
        let mut acts = model.acts(gpu(), batch.batch).unwrap();
        model.upload(gpu(), &mut acts, &batch).unwrap();
        let mut rc = rec();
        model.params.zero_grads(&mut rc);
        model.forward(&mut rc, &acts, true, t).unwrap();
        if grads {
            model.backward(&mut rc, &acts).unwrap();
        }
        rc.submit().unwrap();
        (down(&acts.loss)[0], down(&acts.logits))
    };
    check_training_mode(&model.params, &run);
}
