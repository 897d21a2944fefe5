use super::*;
use tramway::gpu::ArenaBuilder;
use tramway::ops::reduce::*;

fn sums(xs: &[&[f32]]) -> (f64, f64) {
    let s = xs.iter().flat_map(|x| x.iter()).map(|&v| v as f64).sum();
    let q = xs.iter().flat_map(|x| x.iter()).map(|&v| (v as f64).powi(2)).sum();
    (s, q)
}

// f32 partial sums of 4096 elements then a tree over partials: the roundings have random signs,
// so the absolute error grows like sqrt(n), not n (measured: 2.4e-5 on the sum, 6.5e-4 = 4e-8
// relative on the sum of squares, 6e-6 on the norm, 0 on 2 a[0]); atol 1e-6 * sqrt(n) = 3.2e-4
// plus 1e-6 relative. (1e-6 * n = 0.1 passed a norm that left out any single term, a[0] included.)
#[test]
fn sum_sumsq_norm_across_tensors_and_long_inputs() {
    let mut rng = Rng::new(3);
    // Lengths not divisible by 4 (the scalar pass) and divisible by 4 (the vec4 pass, reduce4).
    let (a, b, c, d) = (rng.vec(1), rng.vec(4097), rng.vec(100_003), rng.vec(12_292));
    let (at, bt, ct, dt) = (up(&a), up(&b), up(&c), up(&d));
    let out = gpu().zeros(&[4]).unwrap();
    let mut rc = rec();
    reduce(&mut rc, &[&at, &bt, &ct, &dt], Reduction::Sum, 1.0, &out, 0, false).unwrap();
    reduce(&mut rc, &[&at, &bt, &ct, &dt], Reduction::SumSquares, 0.5, &out, 1, false).unwrap();
    reduce(&mut rc, &[&at, &bt, &ct, &dt], Reduction::L2Norm, 1.0, &out, 2, false).unwrap();
    reduce(&mut rc, &[&at], Reduction::Sum, 1.0, &out, 3, false).unwrap();
    reduce(&mut rc, &[&at], Reduction::Sum, 1.0, &out, 3, true).unwrap();
    rc.submit().unwrap();
    let (s, q) = sums(&[&a, &b, &c, &d]);
    let n = (a.len() + b.len() + c.len() + d.len()) as f64;
    close("reductions", &down(&out), &[s, 0.5 * q, q.sqrt(), 2.0 * a[0] as f64], 1e-6 * n.sqrt(), 1e-6);
}

#[test]
fn arena_norm_spans_several_chunks_and_is_deterministic() {
    let mut ab = ArenaBuilder::new().max_chunk_bytes(3072);
    let shapes: [&[usize]; 5] = [&[3, 5], &[700], &[1], &[10, 70], &[33]];
    for (i, s) in shapes.iter().enumerate() {
        ab.add(format!("t{i}"), s);
    }
    let arena = ab.build(gpu(), "params").unwrap();
    assert!(arena.chunks().len() >= 3, "expected several chunks, got {}", arena.chunks().len());
    let mut rng = Rng::new(8);
    let data: Vec<Vec<f32>> = (0..arena.len()).map(|i| rng.vec(arena.numel(i))).collect();
    for (i, d) in data.iter().enumerate() {
        arena.write(gpu(), i, d).unwrap();
    }
    let out = gpu().zeros(&[1]).unwrap();
    let run = || {
        let mut rc = rec();
        arena_norm(&mut rc, &arena, &out, 0).unwrap();
        rc.submit().unwrap();
        down(&out)[0]
    };
    let refs: Vec<&[f32]> = data.iter().map(|d| &d[..]).collect();
    let (_, q) = sums(&refs);
    let got = run();
    close("arena norm", &[got], &[q.sqrt()], 0.0, 1e-6);
    assert_eq!(got.to_bits(), run().to_bits());
    for (i, d) in data.iter().enumerate() {
        assert_eq!(&down(arena.get(i)), d, "arena tensors must not overlap");
    }
}

#[test]
fn row_mean_and_colsum() {
    for (ci, &(rows, cols)) in [(1, 1), (3, 7), (130, 65), (2, 1000)].iter().enumerate() {
        let mut rng = Rng::new(ci as u64);
        let x = rng.vec(rows * cols);
        let prior = rng.vec(cols);
        let xt = up(&x);
        let means = gpu().zeros(&[rows + 1]).unwrap();
        let cs = up(&prior);
        let mut rc = rec();
        row_mean(&mut rc, &xt, rows, cols, 2.0, &means, 1).unwrap();
        colsum(&mut rc, &xt, rows, cols, &cs, true, 0.5).unwrap();
        rc.submit().unwrap();
        let mut want = vec![0.0];
        want.extend(
            (0..rows).map(|r| 2.0 * x[r * cols..(r + 1) * cols].iter().map(|&v| v as f64).sum::<f64>() / cols as f64),
        );
        close("row_mean", &down(&means), &want, 1e-6, 1e-5);
        let wc: Vec<f64> =
            (0..cols).map(|c| prior[c] as f64 + 0.5 * (0..rows).map(|r| x[r * cols + c] as f64).sum::<f64>()).collect();
        close("colsum", &down(&cs), &wc, 1e-6 * rows as f64, 1e-6);
    }
}
