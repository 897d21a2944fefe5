use super::*;
use tramway::ops::reference as r;
use tramway::ops::softmax::*;

// exp/log in f32 and a tree (workgroup path) or serial (row path) sum over the row: 1e-6
// absolute on probabilities in [0, 1]. Both paths on every case; rows of 130 and 64 columns
// span several workgroups of the row path (64 rows each) and more than one per invocation.
#[test]
fn softmax_masks_forward_backward() {
    for path in [SoftmaxPath::Workgroup, SoftmaxPath::Row] {
        softmax_cases(path);
    }
}

fn softmax_cases(path: SoftmaxPath) {
    let cases = [
        (1, 1, 1, false, false),
        (2, 3, 5, true, false),
        (2, 2, 7, true, true),
        (1, 1, 130, false, true),
        (3, 1, 64, true, false),
        (5, 4, 9, true, false),
    ];
    for (ci, &(batch, heads, t, with_mask, causal)) in cases.iter().enumerate() {
        let mut rng = Rng::new(ci as u64);
        let n = batch * heads * t * t;
        let x: Vec<f32> = rng.vec(n).iter().map(|v| v * 4.0).collect();
        let mask: Vec<u32> = (0..batch * t).map(|i| if i % t == 0 || rng.below(3) > 0 { 1 } else { 0 }).collect();
        let dy = rng.vec(n);
        let xt = up_shape(&x, &[batch * heads * t, t]);
        let mt = gpu().from_u32(&mask, &[batch * t]).unwrap();
        let (y, dx) = (gpu().zeros(&[batch * heads * t, t]).unwrap(), gpu().zeros(&[batch * heads * t, t]).unwrap());
        let m = SoftmaxMask { mask: with_mask.then_some(&mt), causal, tq: t, heads };
        let scale = 0.7;
        let mut rc = rec();
        softmax_with(&mut rc, &xt, &y, scale, &m, path).unwrap();
        softmax_backward_with(&mut rc, &y, &up(&dy), &dx, scale, path).unwrap();
        rc.submit().unwrap();
        let mref = with_mask.then_some(&mask[..]);
        let want = r::softmax(&x, t, scale as f64, mref, causal, t, heads);
        close(&format!("softmax {path:?}"), &down(&y), &want, 1e-6, 1e-5);
        let wdx = r::softmax_backward(&want, &dy, t, scale as f64);
        close(&format!("softmax_backward {path:?}"), &down(&dx), &wdx, 1e-6, 1e-5);
        fd_check("softmax reference", &x, &wdx, 16, |xs| {
            dot(&dy, &r::softmax(xs, t, scale as f64, mref, causal, t, heads))
        });
    }
}

#[test]
fn softmax_rejects_mismatched_mask() {
    let x = gpu().zeros(&[4, 3]).unwrap();
    let y = gpu().zeros(&[4, 3]).unwrap();
    let mask = gpu().zeros_u32(&[5]).unwrap();
    let m = SoftmaxMask { mask: Some(&mask), causal: false, tq: 2, heads: 1 };
    let e = softmax(&mut rec(), &x, &y, 1.0, &m).unwrap_err().to_string();
    assert!(e.contains("mask"), "{e}");
}
