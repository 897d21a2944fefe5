use super::*;
use tramway::ops::norm::*;
use tramway::ops::reference as r;

// Row statistics are f32 tree sums over <= a few hundred values: 1e-5 absolute/relative.
fn run(rows: usize, cols: usize, rms: bool, seed: u64) {
    let eps = 1e-5;
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 3.0 + 0.5).collect();
    let gamma: Vec<f32> = rng.vec(cols).iter().map(|v| 1.0 + 0.5 * v).collect();
    let beta = rng.vec(cols);
    let dy = rng.vec(rows * cols);
    let (g0, b0, dx0) = (rng.vec(cols), rng.vec(cols), rng.vec(rows * cols));
    let (xt, gt, bt, dyt) = (up(&x), up(&gamma), up(&beta), up(&dy));
    let xt = xt.reshape(&[rows, cols]).unwrap();
    let y = gpu().zeros(&[rows, cols]).unwrap();
    let (mean, rstd) = (gpu().zeros(&[rows]).unwrap(), gpu().zeros(&[rows]).unwrap());
    let (dx, dg, db) = (up(&dx0), up(&g0), up(&b0));
    let mut rc = rec();
    if rms {
        rmsnorm(&mut rc, &xt, &gt, &y, &rstd, eps).unwrap();
    } else {
        layernorm(&mut rc, &xt, &gt, &bt, &y, &mean, &rstd, eps).unwrap();
    }
    let grads = NormGrads { dx: &dx, accumulate_dx: true, dgamma: Some(&dg), dbeta: Some(&db) };
    norm_backward(&mut rc, &xt, &gt, &dyt, if rms { None } else { Some(&mean) }, &rstd, &grads).unwrap();
    rc.submit().unwrap();
    let what = format!("{} {rows}x{cols}", if rms { "rmsnorm" } else { "layernorm" });
    let (want_y, want_mean, want_rstd) =
        r::norm(&x, &gamma, if rms { None } else { Some(&beta) }, cols, eps as f64, rms);
    close(&format!("{what} y"), &down(&y), &want_y, 1e-5, 1e-5);
    close(&format!("{what} rstd"), &down(&rstd), &want_rstd, 1e-5, 1e-5);
    if !rms {
        close(&format!("{what} mean"), &down(&mean), &want_mean, 1e-5, 1e-5);
    }
    let (wdx, wdg, wdb) = r::norm_backward(&x, &gamma, &dy, cols, eps as f64, rms);
    let add = |a: &[f64], b: &[f32]| a.iter().zip(b).map(|(x, &y)| x + y as f64).collect::<Vec<_>>();
    // dgamma/dbeta sum up to `rows` terms: 1e-5 * rows absolute.
    close(&format!("{what} dx"), &down(&dx), &add(&wdx, &dx0), 1e-5, 1e-5);
    close(&format!("{what} dgamma"), &down(&dg), &add(&wdg, &g0), 1e-5 * rows as f64, 1e-5);
    if !rms {
        close(&format!("{what} dbeta"), &down(&db), &add(&wdb, &b0), 1e-5 * rows as f64, 1e-5);
    } else {
        assert_eq!(down(&db), b0, "rmsnorm must not touch dbeta");
    }
    // Reference backward against finite differences of the reference forward.
    let loss = |xs: &[f32], gs: &[f32]| {
        dot(&dy, &r::norm(xs, gs, if rms { None } else { Some(&beta) }, cols, eps as f64, rms).0)
    };
    fd_check(&format!("{what} dx reference"), &x, &wdx, 12, |xs| loss(xs, &gamma));
    fd_check(&format!("{what} dgamma reference"), &gamma, &wdg, 12, |gs| loss(&x, gs));
}

#[test]
fn layernorm_forward_backward() {
    for (i, &(rows, cols)) in [(1, 1), (1, 7), (5, 64), (130, 33), (3, 300)].iter().enumerate() {
        run(rows, cols, false, i as u64);
    }
}

#[test]
fn rmsnorm_forward_backward() {
    for (i, &(rows, cols)) in [(1, 1), (2, 9), (67, 64), (3, 300)].iter().enumerate() {
        run(rows, cols, true, 100 + i as u64);
    }
}
