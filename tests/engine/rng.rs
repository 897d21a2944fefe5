use super::*;
use tramway::ops::reference as r;
use tramway::ops::rng::*;

#[test]
fn uniform_is_bitwise_the_reference_stream() {
    let key = RngKey { seed: 0x1234_5678_9abc_def0, offset: (7 << 32) | 3 };
    for n in [1usize, 5, 4099] {
        let t = gpu().zeros(&[n]).unwrap();
        let mut rc = rec();
        uniform(&mut rc, &t, key, 0.0, 1.0).unwrap();
        rc.submit().unwrap();
        // 24-bit integers times 2^-24 are exact in f32: equality, not tolerance.
        let want: Vec<f32> = r::uniform(n, key.seed, key.offset, 0.0, 1.0).iter().map(|&v| v as f32).collect();
        assert_eq!(down(&t), want);
    }
}

#[test]
fn normal_matches_reference_and_statistics() {
    let n = 200_003;
    let key = RngKey { seed: 42, offset: 9 };
    let t = gpu().zeros(&[n]).unwrap();
    let mut rc = rec();
    normal(&mut rc, &t, key, 0.5, 2.0).unwrap();
    rc.submit().unwrap();
    let got = down(&t);
    // Vulkan only promises sin/cos to 2^-11 absolute (lavapipe uses that freedom), times the
    // Box-Muller radius (<= 5.8 for 24-bit uniforms) and std 2: 6e-3 absolute. The integer
    // stream itself is checked bitwise by the uniform test.
    close("normal", &got, &r::normal(n, key.seed, key.offset, 0.5, 2.0), 6e-3, 1e-5);
    let mean = got.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = got.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    // Standard errors: mean 2/sqrt(n) ~ 0.0045, std ~ 0.003; 5 sigma bounds.
    assert!((mean - 0.5).abs() < 0.023, "mean {mean}");
    assert!((var.sqrt() - 2.0).abs() < 0.016, "std {}", var.sqrt());
}

#[test]
fn dropout_mask_is_reproducible_from_the_key() {
    let n = 10_001;
    let mut rng = Rng::new(1);
    let x = rng.vec(n);
    let dy = rng.vec(n);
    let (xt, y, dx) = (up(&x), gpu().zeros(&[n]).unwrap(), gpu().zeros(&[n]).unwrap());
    let key = RngKey { seed: 5, offset: 77 };
    let p = 0.3;
    let mut rc = rec();
    dropout(&mut rc, &xt, &y, p, key, false).unwrap();
    dropout(&mut rc, &up(&dy), &dx, p, key, false).unwrap();
    rc.submit().unwrap();
    let (gy, gdx) = (down(&y), down(&dx));
    close("dropout", &gy, &r::dropout(&x, p as f64, key.seed, key.offset), 1e-7, 1e-6);
    close("dropout backward", &gdx, &r::dropout(&dy, p as f64, key.seed, key.offset), 1e-7, 1e-6);
    // Same mask forward and backward; about p of the elements dropped.
    assert!(gy.iter().zip(&gdx).all(|(a, b)| (*a == 0.0) == (*b == 0.0)));
    let dropped = gy.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    assert!((dropped - p as f64).abs() < 0.03, "dropped fraction {dropped}");
    // A different offset gives a different mask.
    let y2 = gpu().zeros(&[n]).unwrap();
    let mut rc = rec();
    dropout(&mut rc, &xt, &y2, p, RngKey { seed: 5, offset: 78 }, false).unwrap();
    rc.submit().unwrap();
    assert_ne!(down(&y2), gy);
}
