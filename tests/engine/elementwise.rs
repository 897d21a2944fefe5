use super::*;
use tramway::ops::elementwise::*;
use tramway::ops::matmul::Act;
use tramway::ops::reference as r;

type F64Fn = fn(f64) -> f64;

// Single f32 operations: results are within one rounding (rtol 1e-6) of the f64 values.
#[test]
fn add_mul_scale_axpby_all_sizes() {
    for (i, n) in [1usize, 3, 4, 5, 1000, 4097].into_iter().enumerate() {
        let mut rng = Rng::new(i as u64);
        let (x, y) = (rng.vec(n), rng.vec(n));
        let (xt, yt, z) = (up(&x), up(&y), gpu().zeros(&[n]).unwrap());
        let f = |g: &dyn Fn(f64, f64) -> f64| -> Vec<f64> {
            x.iter().zip(&y).map(|(&a, &b)| g(a as f64, b as f64)).collect()
        };
        let mut rc = rec();
        add(&mut rc, &xt, &yt, &z, 0.5, -2.0).unwrap();
        rc.submit().unwrap();
        close("add", &down(&z), &f(&|a, b| 0.5 * a - 2.0 * b), 1e-7, 1e-6);
        let mut rc = rec();
        mul(&mut rc, &xt, &yt, &z, 3.0).unwrap();
        rc.submit().unwrap();
        close("mul", &down(&z), &f(&|a, b| 3.0 * a * b), 1e-7, 1e-6);
        let mut rc = rec();
        scale(&mut rc, &xt, &z, -1.5).unwrap();
        rc.submit().unwrap();
        close("scale", &down(&z), &f(&|a, _| -1.5 * a), 1e-7, 1e-6);
        let mut rc = rec();
        axpby(&mut rc, 2.0, &xt, 0.5, &yt).unwrap();
        scale_inplace(&mut rc, &yt, 4.0).unwrap();
        rc.submit().unwrap();
        close("axpby+scale_inplace", &down(&yt), &f(&|a, b| 4.0 * (2.0 * a + 0.5 * b)), 1e-6, 1e-6);
    }
}

#[test]
fn activations_forward_backward() {
    for act in [Act::GeluErf, Act::GeluTanh, Act::Tanh] {
        for (i, n) in [1usize, 7, 1031].into_iter().enumerate() {
            let mut rng = Rng::new(i as u64 + 40);
            let x: Vec<f32> = rng.vec(n).iter().map(|v| v * 6.0).collect();
            let dy = rng.vec(n);
            let (fw, gr): (F64Fn, F64Fn) = match act {
                Act::GeluErf => (r::gelu_erf, r::gelu_erf_grad),
                Act::GeluTanh => (r::gelu_tanh, r::gelu_tanh_grad),
                _ => (f64::tanh, |x: f64| 1.0 - x.tanh().powi(2)),
            };
            let (xt, dyt, y) = (up(&x), up(&dy), gpu().zeros(&[n]).unwrap());
            let prior = rng.vec(n);
            let dx = up(&prior);
            let mut rc = rec();
            activation(&mut rc, &xt, &y, act).unwrap();
            activation_backward(&mut rc, &xt, &dyt, &dx, act, true).unwrap();
            rc.submit().unwrap();
            // erf is approximated to 1.5e-7 absolute in the shader; exp/tanh within a few ulp.
            close(&format!("{act:?}"), &down(&y), &x.iter().map(|&v| fw(v as f64)).collect::<Vec<_>>(), 1e-6, 1e-5);
            let want: Vec<f64> = (0..n).map(|i| dy[i] as f64 * gr(x[i] as f64) + prior[i] as f64).collect();
            close(&format!("{act:?} backward (accumulate)"), &down(&dx), &want, 1e-6, 1e-5);
            // The reference derivative against finite differences of the reference forward.
            let g: Vec<f64> = (0..n).map(|i| dy[i] as f64 * gr(x[i] as f64)).collect();
            fd_check(&format!("{act:?} reference"), &x, &g, 20, |xs| {
                xs.iter().zip(&dy).map(|(&v, &w)| w as f64 * fw(v as f64)).sum()
            });
        }
    }
}

#[test]
fn mul_cols_scales_columns_and_adds() {
    for (ci, &(rows, cols)) in [(1, 1), (3, 5), (7, 8), (33, 64)].iter().enumerate() {
        let mut rng = Rng::new(ci as u64 + 90);
        let (x, v, y) = (rng.vec(rows * cols), rng.vec(cols), rng.vec(rows * cols));
        let z = gpu().zeros(&[rows * cols]).unwrap();
        let z2 = gpu().zeros(&[rows * cols]).unwrap();
        let mut rc = rec();
        mul_cols(&mut rc, &up(&x), &up(&v), Some(&up(&y)), &z).unwrap();
        mul_cols(&mut rc, &up(&x), &up(&v), None, &z2).unwrap();
        rc.submit().unwrap();
        let want: Vec<f64> = (0..rows * cols).map(|i| x[i] as f64 * v[i % cols] as f64 + y[i] as f64).collect();
        close("mul_cols + y", &down(&z), &want, 1e-7, 1e-6);
        let want: Vec<f64> = (0..rows * cols).map(|i| x[i] as f64 * v[i % cols] as f64).collect();
        close("mul_cols", &down(&z2), &want, 1e-7, 1e-6);
    }
}

#[test]
fn position_map_is_identity_or_a_partition_of_unity() {
    use tramway::ops::patch::position_map;
    let id = position_map(3, 3);
    assert!((0..10).all(|i| (0..10).all(|j| id[i * 10 + j] == if i == j { 1.0 } else { 0.0 })));
    // Bicubic weights of each output position sum to 1; the CLS position passes through.
    for (a, b) in [(4, 3), (37, 16), (2, 5)] {
        let m = position_map(a, b);
        let (no, nn) = (a * a + 1, b * b + 1);
        assert_eq!(m.len(), no * nn);
        assert_eq!(m[0], 1.0);
        for r in 1..nn {
            let s: f32 = m[r * no..(r + 1) * no].iter().sum();
            assert!((s - 1.0).abs() < 1e-5 && m[r * no] == 0.0, "row {r} of {a}->{b} sums to {s}");
        }
    }
}
