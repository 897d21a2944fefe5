use super::*;
use tramway::ops::kl::*;
use tramway::ops::reference as r;

fn kl_mean_gpu(p: &[f32], q: &[f32], cols: usize, kind: KlKind) -> f32 {
    let rows = p.len() / cols;
    let (pt, qt) = (up_shape(p, &[rows, cols]), up_shape(q, &[rows, cols]));
    let out = gpu().zeros(&[1]).unwrap();
    let mut rc = rec();
    kl_mean(&mut rc, &pt, &qt, &out, 0, kind, 1.0, None).unwrap();
    rc.submit().unwrap();
    down(&out)[0]
}

/// The worked numbers of tram.md section 5.1 (computed by hand there).
#[test]
fn kl_worked_examples_from_the_spec() {
    let (p, q) = ([0.0f32, 0.0], [3f32.ln(), 0.0]);
    let cases = [(KlKind::Forward, 0.143841), (KlKind::Reverse, 0.130812), (KlKind::Symmetric, 0.274653)];
    for (kind, want) in cases {
        close(&format!("{kind:?}"), &[kl_mean_gpu(&p, &q, 2, kind)], &[want], 1e-6, 0.0);
    }
    let (p3, q3) = ([1.0f32, 0.0, -1.0], [0.0f32, 0.5, 0.0]);
    close("3-class forward", &[kl_mean_gpu(&p3, &q3, 3, KlKind::Forward)], &[0.339617], 1e-6, 0.0);
    close("3-class reverse", &[kl_mean_gpu(&p3, &q3, 3, KlKind::Reverse)], &[0.339161], 1e-6, 0.0);
    // Shift invariance and zero at equality.
    let shifted = [p3[0] + 5.0, p3[1] + 5.0, p3[2] + 5.0];
    close("shift", &[kl_mean_gpu(&shifted, &q3, 3, KlKind::Forward)], &[0.339617], 2e-6, 0.0);
    assert!(kl_mean_gpu(&q3, &q3, 3, KlKind::Symmetric).abs() < 1e-7);
}

#[test]
fn kl_rows_mean_and_backward_all_kinds() {
    for (ci, &(rows, cols)) in [(1, 1), (1, 2), (6, 5), (33, 130)].iter().enumerate() {
        let mut rng = Rng::new(ci as u64);
        let p: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 3.0).collect();
        let q: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 3.0).collect();
        let kls = r::kl_rows(&p, &q, cols);
        for (mode, kind) in [KlKind::Forward, KlKind::Reverse, KlKind::Symmetric].into_iter().enumerate() {
            let pick = |(f, rv): (f64, f64)| [f, rv, f + rv][mode];
            let (pt, qt) = (up_shape(&p, &[rows, cols]), up_shape(&q, &[rows, cols]));
            let rowt = gpu().zeros(&[rows]).unwrap();
            let prior = rng.vec(rows * cols);
            let (dq, dp) = (up(&prior), gpu().zeros(&[rows * cols]).unwrap());
            let mut rc = rec();
            kl_rows(&mut rc, &pt, &qt, &rowt, kind, None).unwrap();
            kl_backward(&mut rc, &pt, &qt, &dq, Some(&dp), kind, 0.5, false, None).unwrap();
            rc.submit().unwrap();
            let want_rows: Vec<f64> = kls.iter().map(|&k| pick(k)).collect();
            // Differences of f32 log-probabilities: 1e-6 absolute per row.
            close(&format!("{kind:?} rows"), &down(&rowt), &want_rows, 2e-6, 1e-5);
            let (wdq, wdp) = r::kl_backward(&p, &q, cols, mode as u32, 0.5);
            close(&format!("{kind:?} dq"), &down(&dq), &wdq, 1e-6, 1e-5);
            close(&format!("{kind:?} dp"), &down(&dp), &wdp, 1e-6, 1e-5);
            let total = |p: &[f32], q: &[f32]| 0.5 * r::kl_rows(p, q, cols).into_iter().map(pick).sum::<f64>();
            fd_check(&format!("{kind:?} dq reference"), &q, &wdq, 10, |x| total(&p, x));
            fd_check(&format!("{kind:?} dp reference"), &p, &wdp, 10, |x| total(x, &q));
        }
    }
}

/// Row weights (a language model's scored tokens): the weighted rows, their weighted mean, and
/// the gradient of coef * sum_r w_r KL_r, against the f64 reference; zero-weight rows get a
/// zero gradient whatever their logits.
#[test]
fn kl_with_row_weights() {
    for (ci, &(rows, cols)) in [(1, 3), (7, 5), (33, 130)].iter().enumerate() {
        let mut rng = Rng::new(50 + ci as u64);
        let p: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 3.0).collect();
        let q: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 3.0).collect();
        // Every third row weightless (padding), the others sharing 1.
        let live = (0..rows).filter(|r| r % 3 != 2).count() as f32;
        let w: Vec<f32> = (0..rows).map(|r| if r % 3 != 2 { 1.0 / live } else { 0.0 }).collect();
        let kls = r::kl_rows(&p, &q, cols);
        for (mode, kind) in [KlKind::Forward, KlKind::Reverse, KlKind::Symmetric].into_iter().enumerate() {
            let pick = |(f, rv): (f64, f64)| [f, rv, f + rv][mode];
            let (pt, qt, wt) = (up_shape(&p, &[rows, cols]), up_shape(&q, &[rows, cols]), up(&w));
            let rowt = gpu().zeros(&[rows]).unwrap();
            let mean = gpu().zeros(&[2]).unwrap();
            let prior = rng.vec(rows * cols);
            let (dq, dp) = (up(&prior), gpu().zeros(&[rows * cols]).unwrap());
            let mut rc = rec();
            kl_rows(&mut rc, &pt, &qt, &rowt, kind, Some(&wt)).unwrap();
            kl_mean(&mut rc, &pt, &qt, &mean, 1, kind, 2.0, Some(&wt)).unwrap();
            kl_backward(&mut rc, &pt, &qt, &dq, Some(&dp), kind, 0.5, true, Some(&wt)).unwrap();
            rc.submit().unwrap();
            let want_rows: Vec<f64> = kls.iter().zip(&w).map(|(&k, &wr)| pick(k) * wr as f64).collect();
            close(&format!("{kind:?} weighted rows"), &down(&rowt), &want_rows, 2e-6, 1e-5);
            let want_mean = 2.0 * want_rows.iter().sum::<f64>();
            close(&format!("{kind:?} weighted mean"), &down(&mean)[1..], &[want_mean], 2e-6, 1e-5);
            // Per-row coefficient 0.5 * w_r: the unweighted reference with coef 1, scaled per row.
            let (gq, gp) = r::kl_backward(&p, &q, cols, mode as u32, 1.0);
            let scale = |g: &[f64], add: &[f32]| -> Vec<f64> {
                g.iter().enumerate().map(|(i, &x)| add[i] as f64 + 0.5 * w[i / cols] as f64 * x).collect()
            };
            close(&format!("{kind:?} weighted dq"), &down(&dq), &scale(&gq, &prior), 1e-6, 1e-5);
            close(&format!("{kind:?} weighted dp"), &down(&dp), &scale(&gp, &vec![0.0; rows * cols]), 1e-6, 1e-5);
            let got = down(&dq);
            for r in (0..rows).filter(|r| r % 3 == 2) {
                assert_eq!(&got[r * cols..(r + 1) * cols], &prior[r * cols..(r + 1) * cols], "row {r} has weight 0");
            }
        }
    }
    // A weights tensor of the wrong length is refused by name.
    let (pt, qt) = (up_shape(&[0.0; 6], &[2, 3]), up_shape(&[0.0; 6], &[2, 3]));
    let out = gpu().zeros(&[2]).unwrap();
    let e = kl_rows(&mut rec(), &pt, &qt, &out, KlKind::Forward, Some(&up(&[1.0; 3]))).unwrap_err();
    assert!(e.to_string().contains("row weights"), "{e}");
}
