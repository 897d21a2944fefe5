//! LLaMA pieces against their CPU references: RoPE (and its inverse as the backward), the
//! grouped-query head repeat and its summing backward, SwiGLU and its gradients.

use super::*;
use tramway::ops::decoder::*;
use tramway::ops::reference as r;

#[test]
fn rope_matches_reference_and_inverts() {
    // (batch, seq, heads, half, theta): a single pair, odd sizes, a long sequence with a large
    // base (angles up to ~500 rad, where WGSL's own sin/cos would be inaccurate).
    for &(b, seq, heads, half, theta) in &[(1, 1, 1, 1, 10000.0), (2, 5, 3, 7, 10000.0), (1, 500, 2, 32, 100000.0)] {
        let mut rng = Rng::new(seq as u64);
        let n = b * seq * heads * 2 * half;
        let x = rng.vec(n);
        let table = up(&rope_table(seq, half, theta));
        let (xt, out, back) = (up(&x), gpu().zeros(&[n]).unwrap(), gpu().zeros(&[n]).unwrap());
        let mut rc = rec();
        rope(&mut rc, &xt, &table, &out, heads, half, seq, false).unwrap();
        rope(&mut rc, &out, &table, &back, heads, half, seq, true).unwrap();
        rc.submit().unwrap();
        // One rotation in f32 from a table rounded to f32: a few ulps of |x|.
        close("rope", &down(&out), &r::rope(&x, heads, half, seq, theta, 1.0), 1e-6, 1e-5);
        close("rope inverse", &down(&back), &x.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-6, 1e-5);
        // The backward is the inverse rotation: <dy, R x> = <R^T dy, x>.
        let dy = rng.vec(n);
        let rx = r::rope(&x, heads, half, seq, theta, 1.0);
        let rtdy = r::rope(&dy, heads, half, seq, theta, -1.0);
        let (a, c) = (dot(&dy, &rx), dot(&x, &rtdy));
        assert!((a - c).abs() < 1e-9 * n as f64, "adjoint: {a} vs {c}");
    }
    let e = rope(&mut rec(), &up(&[0.0; 6]), &up(&[0.0; 4]), &up(&[0.0; 6]), 1, 2, 2, false).unwrap_err();
    assert!(e.to_string().contains("rope"), "{e}");
}

#[test]
fn repeat_heads_and_its_backward() {
    for &(rows, heads, kv, dim) in &[(1, 1, 1, 1), (3, 6, 2, 5), (7, 9, 3, 64), (2, 4, 4, 3)] {
        let mut rng = Rng::new(rows as u64 * 31 + heads as u64);
        let x = rng.vec(rows * kv * dim);
        let dy = rng.vec(rows * heads * dim);
        let (out, dx) = (gpu().zeros(&[rows * heads * dim]).unwrap(), gpu().zeros(&[rows * kv * dim]).unwrap());
        let mut rc = rec();
        repeat_heads(&mut rc, &up(&x), &out, heads, kv, dim).unwrap();
        repeat_heads_backward(&mut rc, &up(&dy), &dx, heads, kv, dim).unwrap();
        rc.submit().unwrap();
        close("repeat", &down(&out), &r::repeat_heads(&x, heads, kv, dim), 0.0, 0.0);
        // The backward is the adjoint of the repeat: check against finite differences of <dy, repeat(x)>,
        // on every coordinate (this is the only check of the GPU backward; 12 samples of 1344 missed
        // a wrong last dimension with probability (63/64)^12 = 83 %).
        let dxv = down(&dx);
        let grad: Vec<f64> = dxv.iter().map(|&v| v as f64).collect();
        fd_check("repeat backward", &x, &grad, x.len(), |xs| dot(&dy, &r::repeat_heads(xs, heads, kv, dim)));
    }
    assert!(repeat_heads(&mut rec(), &up(&[0.0; 4]), &up(&[0.0; 12]), 3, 2, 2).is_err(), "3 heads cannot share 2");
}

#[test]
fn swiglu_matches_reference() {
    for &n in &[1, 63, 1000] {
        let mut rng = Rng::new(n as u64);
        let g: Vec<f32> = rng.vec(n).iter().map(|v| v * 8.0).collect();
        let u = rng.vec(n);
        let dy = rng.vec(n);
        let (y, dg, du) = (gpu().zeros(&[n]).unwrap(), gpu().zeros(&[n]).unwrap(), gpu().zeros(&[n]).unwrap());
        let mut rc = rec();
        swiglu(&mut rc, &up(&g), &up(&u), &y).unwrap();
        swiglu_backward(&mut rc, &up(&g), &up(&u), &up(&dy), &dg, &du).unwrap();
        rc.submit().unwrap();
        let (wy, wdg, wdu) = r::swiglu(&g, &u, &dy);
        close("swiglu", &down(&y), &wy, 1e-6, 1e-5);
        close("swiglu dg", &down(&dg), &wdg, 1e-6, 1e-5);
        close("swiglu du", &down(&du), &wdu, 1e-6, 1e-5);
        // The reference gradients against finite differences of <dy, swiglu(g, u)>.
        let f = |gs: &[f32], us: &[f32]| dot(&dy, &r::swiglu(gs, us, &dy).0);
        fd_check("swiglu dg reference", &g, &wdg, 8, |gs| f(gs, &u));
        fd_check("swiglu du reference", &u, &wdu, 8, |us| f(&g, us));
    }
}
