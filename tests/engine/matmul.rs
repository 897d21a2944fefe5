use super::*;
use tramway::ops::matmul::{fit_tile, matmul, matmul_with, Act, MatView, Matmul, MatmulPath};

const PATHS: [MatmulPath; 3] = [MatmulPath::Register, MatmulPath::Subgroup, MatmulPath::Tiled];
use tramway::ops::reference as r;

/// f32 accumulation over k terms of products in [-1, 1): the error is a random walk of
/// ~sqrt(k) roundings of partial sums of size ~sqrt(k), so 1e-6 * k + 1e-5 relative bounds it
/// with a wide margin while still catching any indexing mistake (which gives O(1) errors).
fn tol(k: usize) -> f64 {
    1e-6 * k as f64 + 1e-6
}

fn check_2d(m: usize, n: usize, k: usize, ta: bool, tb: bool, seed: u64) {
    for path in PATHS {
        check_2d_path(m, n, k, ta, tb, seed, path);
    }
}

fn check_2d_path(m: usize, n: usize, k: usize, ta: bool, tb: bool, seed: u64, path: MatmulPath) {
    let mut rng = Rng::new(seed);
    let a = rng.vec(m * k);
    let b = rng.vec(k * n);
    let at = up_shape(&a, &if ta { [k, m] } else { [m, k] });
    let bt = up_shape(&b, &if tb { [n, k] } else { [k, n] });
    let c = gpu().zeros(&[m, n]).unwrap();
    let mut rc = rec();
    matmul_with(&mut rc, &Matmul::new(&at, ta, &bt, tb, &c).unwrap(), path).unwrap();
    rc.submit().unwrap();
    let want = r::matmul(&a, ta, &b, tb, m, n, k);
    close(&format!("matmul {path:?} {m}x{n}x{k} ta={ta} tb={tb}"), &down(&c), &want, tol(k), 1e-5);
}

/// A product of strided views, no epilogue (set `bias`, `act`, `pre`, `alpha`, `beta` after).
#[allow(clippy::too_many_arguments)]
fn on_views<'a>(
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    batch_inner: usize,
    a: MatView<'a>,
    b: MatView<'a>,
    c: MatView<'a>,
) -> Matmul<'a> {
    Matmul { m, n, k, batch, batch_inner, a, b, c, bias: None, act: Act::None, pre: None, alpha: 1.0, beta: None }
}

#[test]
fn matmul_all_transposes_awkward_sizes() {
    // m < 8 runs the few-rows tile (one row per workgroup row); n = 300 and 260 span several of
    // its 64-column workgroups.
    let sizes = [
        (1, 1, 1),
        (1, 7, 3),
        (5, 1, 9),
        (7, 13, 5),
        (64, 32, 16),
        (65, 33, 17),
        (130, 70, 257),
        (3, 200, 64),
        (1, 300, 64),
        (7, 260, 12),
    ];
    for (i, &(m, n, k)) in sizes.iter().enumerate() {
        for ta in [false, true] {
            for tb in [false, true] {
                check_2d(m, n, k, ta, tb, i as u64 * 4 + ta as u64 * 2 + tb as u64);
            }
        }
    }
}

/// C = op(A) op(B) on device `g` by the given kernel family, read back (A stored [k, m] when
/// transposed, B [n, k]).
fn matmul_on(
    g: &Gpu,
    (a, ta): (&[f32], bool),
    (b, tb): (&[f32], bool),
    (m, n, k): (usize, usize, usize),
    path: MatmulPath,
) -> Vec<f32> {
    let at = g.from_f32(a, &if ta { [k, m] } else { [m, k] }).unwrap();
    let bt = g.from_f32(b, &if tb { [n, k] } else { [k, n] }).unwrap();
    let c = g.zeros(&[m, n]).unwrap();
    let mut rc = g.recorder();
    matmul_with(&mut rc, &Matmul::new(&at, ta, &bt, tb, &c).unwrap(), path).unwrap();
    rc.submit().unwrap();
    g.read_f32_blocking(&c).unwrap()
}

/// The subgroup kernels sum each output in the plain kernels' order: the same bits.
#[track_caller]
fn assert_same_bits(what: &str, got: &[f32], plain: &[f32]) {
    assert_eq!(got.len(), plain.len(), "{what}: lengths");
    assert!(
        got.iter().zip(plain).all(|(x, y)| x.to_bits() == y.to_bits()),
        "{what}: not bitwise the plain kernels' result"
    );
}

/// The kernels that share A across a subgroup: where the device's subgroups are workgroup rows
/// (lavapipe's are, and CI runs there, so the path cannot silently fall back), at sizes around
/// their tiles (24 and 16 rows, 2 column groups) and k blocks (full blocks only, a tail only,
/// both; vec4 along n and along k), against the CPU and bitwise against the plain register
/// kernels (the same order of operations per output).
#[test]
fn subgroup_matmul_matches_the_plain_kernels() {
    let info = gpu().adapter_info();
    if info.name.contains("llvmpipe") && gpu().features().contains(wgpu::Features::SUBGROUP) {
        assert_eq!(gpu().subgroup_rows(), Some(8), "lavapipe's subgroups are rows of 8 invocations");
    }
    if gpu().subgroup_rows().is_none() {
        // The subgroup path falls back to the plain kernels here: nothing to compare.
        println!("{}: the subgroup matmuls do not run on this adapter", info.name);
        return;
    }
    // Around the default tiles: 24 x 2 groups of four columns (96 rows x 64 columns a
    // workgroup, for both along k below 384 rows), 32 x 2 (128 rows: A read as vec4s along k
    // or m, and both along k from 384 rows; a workgroup row wholly past m leaves at once, as in
    // 132 x 36 x 44) and 16 x 2 (B along n with plain A loads: m not a multiple of 4 or
    // k not); the matrices smaller than a workgroup's block run fitted tiles (`fit_tile`: 8 x 4
    // takes 2 rows x 1 group, 37 x 44 takes 10 x 2). A read as vec4s: along k (A not
    // transposed, k a multiple of 4: 64 x 68 x 100, 97 x 68 x 40, 68 x 36 x 44, 100 x 36 x 44),
    // along m (A transposed, m a multiple of 4, the fitted rows rounded up to a row quad: 132 x
    // 36 x 44 at 32 rows with a last block beyond m, 100 x 36 x 44 at 28 (25 rounded up) and 68
    // x 36 x 44 at 20 (17), both with a k tail, 64 x 68 x 100 at 16, 48 x 32 x 40 at 12, 32 x
    // 20 x 36 at 8, 8 x 4 x 8 at 4 (2 rounded up: two subgroups of four rows, two that leave;
    // one trip of 8 k), 16 x 8 x 3 at 4, all tail); with B transposed and k a multiple of 4,
    // A's rows spread over the lanes, rows past a fitted tile included (37 x 44 x 44: 10 rows, two loads a lane), and from 384 rows
    // the 32-row tile, its last block's rows past m left at once (400 x 20 x 16: one subgroup
    // of 16 rows and three that leave; 385 x 12 x 8: one row). Every tile height of the vec4
    // loads: the next test.
    let sizes = [
        (8, 4, 8),
        (16, 8, 3),
        (17, 12, 16),
        (37, 44, 44),
        (9, 36, 1003),
        (64, 68, 100),
        (33, 4, 9),
        (49, 33, 36),
        (48, 32, 40),
        (95, 64, 24),
        (97, 68, 40),
        (63, 60, 32),
        (65, 28, 12),
        (68, 36, 44),
        (32, 20, 36),
        (100, 36, 44),
        (132, 36, 44),
        (400, 20, 16),
        (385, 12, 8),
    ];
    for (i, &(m, n, k)) in sizes.iter().enumerate() {
        for ta in [false, true] {
            for tb in [false, true] {
                let mut rng = Rng::new(100 + i as u64);
                let (a, b) = (rng.vec(m * k), rng.vec(k * n));
                let run = |path| matmul_on(gpu(), (&a, ta), (&b, tb), (m, n, k), path);
                let (sg, plain) = (run(MatmulPath::Subgroup), run(MatmulPath::Register));
                let what = format!("subgroup matmul {m}x{n}x{k} ta={ta} tb={tb}");
                close(&what, &sg, &r::matmul(&a, ta, &b, tb, m, n, k), tol(k), 1e-5);
                assert_same_bits(&what, &sg, &plain);
            }
        }
    }
}

/// Every tile height the vec4 loads of A serve, on devices of their own with the tile forced
/// (`GpuOptions::matmul_tile`): along m (TN, `AM4`), the trip of KTR k and NLD loads a lane
/// depends on the rows (4 rows: 8 k of 1 load; 8: 4 k of 1; 12: 8 k of 3; 16: 4 k of 2; 20:
/// 8 k of 5; 24: 4 k of 3; 28: 8 k of 7; 32: 4 k of 4; its first subgroup touches the
/// workgroup's band of A and B's panel first, `BAND`), along k (NN, `A4`, 1-4 spread loads a
/// lane), and with B transposed as well (NT, `matmul_k4` with A's rows spread over the lanes,
/// where k is a multiple of 4). Sizes: one trip, several with a k tail, only a tail, and the
/// last block past m. Against the CPU and bitwise against the plain kernels of the default
/// device.
#[test]
fn vec4_a_loads_match_the_plain_kernels_at_every_tile_height() {
    if gpu().subgroup_rows().is_none() {
        println!("{}: the subgroup matmuls do not run on this adapter", gpu().adapter_info().name);
        return;
    }
    let sizes = [(96, 12, 32), (100, 20, 77), (36, 8, 5), (196, 16, 40)];
    for (tm, tn) in [(4, 3), (8, 2), (12, 1), (16, 2), (20, 1), (24, 2), (28, 1), (32, 2)] {
        let opts = GpuOptions { matmul_tile: Some([tm, tn, 8, 8]), ..GpuOptions::from_env().unwrap() };
        let g = Gpu::new_blocking(opts).unwrap();
        for (i, &(m, n, k)) in sizes.iter().enumerate() {
            for (ta, tb) in [(false, false), (true, false), (false, true)] {
                let mut rng = Rng::new(300 + i as u64);
                let (a, b) = (rng.vec(m * k), rng.vec(k * n));
                let got = matmul_on(&g, (&a, ta), (&b, tb), (m, n, k), MatmulPath::Subgroup);
                let plain = matmul_on(gpu(), (&a, ta), (&b, tb), (m, n, k), MatmulPath::Register);
                let what = format!("tile {tm} x {tn}: matmul {m}x{n}x{k} ta={ta} tb={tb}");
                close(&what, &got, &r::matmul(&a, ta, &b, tb, m, n, k), tol(k), 1e-5);
                assert_same_bits(&what, &got, &plain);
            }
        }
    }
}

/// Where B is wider than A is tall (n > m), `matmul_n4` numbers its workgroups down B's column
/// panels (`PANEL`), and with A read as vec4s along k (k >= 128) its first subgroup touches B's
/// panel eight rows ahead (`PREFETCH`, values that must never reach C). Several panels of 64
/// columns and blocks of 128 rows, the last of each partial; k of one trip, of a few, and of
/// the prefetching walks (128, 132: the last touches clamped to B's last row); A along k (NN)
/// and, where m is a multiple of 4, along m (TN). Against the CPU and bitwise against the plain
/// kernels.
#[test]
fn panel_order_covers_every_tile_of_a_wide_b() {
    let sizes = [(100, 200, 44), (97, 260, 128), (193, 388, 4), (8, 1000, 36), (120, 130, 132)];
    for (i, &(m, n, k)) in sizes.iter().enumerate() {
        for ta in [false, true] {
            let mut rng = Rng::new(400 + i as u64);
            let (a, b) = (rng.vec(m * k), rng.vec(k * n));
            let want = r::matmul(&a, ta, &b, false, m, n, k);
            let run = |path| matmul_on(gpu(), (&a, ta), (&b, false), (m, n, k), path);
            let (sg, plain) = (run(MatmulPath::Subgroup), run(MatmulPath::Register));
            let what = format!("matmul {m}x{n}x{k} ta={ta}");
            close(&format!("subgroup {what}"), &sg, &want, tol(k), 1e-5);
            close(&format!("plain {what}"), &plain, &want, tol(k), 1e-5);
            assert_same_bits(&format!("subgroup {what}"), &sg, &plain);
        }
    }
}

#[test]
fn fitted_tiles_cover_small_matrices_and_keep_the_tile_of_large_ones() {
    // (tile rows, groups, m, n, lanes, workgroup rows) -> (rows, groups)
    for (tm, tn, m, n, want) in [
        (16, 2, 24, 32, (6, 1)), // one attention head: 24 x 32 in one 4-row, 8-lane workgroup
        (16, 2, 192, 384, (16, 2)),
        (16, 2, 1, 1, (1, 1)),
        (16, 2, 63, 60, (16, 2)),
        (24, 1, 24, 24, (6, 1)),
        (16, 2, 37, 44, (10, 2)),
    ] {
        let got = fit_tile(tm, tn, m, n, 8, 4);
        assert_eq!(got, want, "fit_tile({tm}, {tn}, {m}, {n})");
        // The fitted block still covers the matrix.
        assert!((4 * got.0) as usize >= m.min(4 * tm as usize) && (32 * got.1) as usize >= n.min(32 * tn as usize));
    }
}

#[test]
fn matmul_long_reduction() {
    check_2d(9, 11, 3001, false, true, 77);
}

#[test]
fn matmul_bias_gelu_pre_and_accumulate() {
    // k = 28 with B transposed takes the vec4-along-k path, k = 29 the scalar one; n = 44 with B
    // not transposed the vec4-along-n path with the vec4 epilogue, with B transposed and k = 28
    // the vec4-along-k path with it; n = 45 the scalar epilogue.
    for (m, n, k, tb) in [(37, 45, 29, false), (37, 45, 28, true), (37, 44, 29, false), (70, 44, 28, true)] {
        for path in PATHS {
            epilogue_case(m, n, k, tb, path);
        }
    }
}

fn epilogue_case(m: usize, n: usize, k: usize, tb: bool, path: MatmulPath) {
    let mut rng = Rng::new(5);
    let (a, b, bias, c0) = (rng.vec(m * k), rng.vec(k * n), rng.vec(n), rng.vec(m * n));
    let at = up_shape(&a, &[m, k]);
    let bt = up_shape(&b, &if tb { [n, k] } else { [k, n] });
    let biast = up(&bias);
    let prod = r::matmul(&a, false, &b, tb, m, n, k);
    for act in [Act::None, Act::GeluErf, Act::GeluTanh, Act::Tanh] {
        let c = up_shape(&c0, &[m, n]);
        let pre = gpu().zeros(&[m, n]).unwrap();
        let mut rc = rec();
        let mm = Matmul::new(&at, false, &bt, tb, &c)
            .unwrap()
            .bias(&biast)
            .act(act)
            .alpha(0.5)
            .accumulate(0.25)
            .store_pre(&pre);
        matmul_with(&mut rc, &mm, path).unwrap();
        rc.submit().unwrap();
        let want_pre: Vec<f64> = (0..m * n).map(|i| 0.5 * prod[i] + bias[i % n] as f64).collect();
        let want: Vec<f64> = (0..m * n)
            .map(|i| {
                let x = want_pre[i];
                let y = match act {
                    Act::None => x,
                    Act::GeluErf => r::gelu_erf(x),
                    Act::GeluTanh => r::gelu_tanh(x),
                    Act::Tanh => x.tanh(),
                };
                y + 0.25 * c0[i] as f64
            })
            .collect();
        // GELU-erf uses an erf approximation with 1.5e-7 absolute error: within tol.
        close(&format!("pre {act:?}"), &down(&pre), &want_pre, tol(k), 1e-5);
        close(&format!("epilogue {act:?}"), &down(&c), &want, tol(k), 1e-5);
    }
}

/// x·Wᵀ with W a view inside a wider tensor (offset, row stride beyond k), as a Linear's weight
/// in a parameter arena: B read along k in place (vec4 where the view is aligned, scalar where
/// not) on every path, against the CPU.
#[test]
fn matmul_nt_of_a_weight_view() {
    for (i, &(m, n, k, off)) in
        [(9, 4, 4, 4), (37, 44, 28, 8), (64, 36, 100, 4), (130, 8, 12, 0), (96, 44, 28, 8), (70, 20, 16, 3)]
            .iter()
            .enumerate()
    {
        let stride = k + 8;
        let mut rng = Rng::new(300 + i as u64);
        let (a, w) = (rng.vec(m * k), rng.vec(off + n * stride));
        let want = r::matmul_strided(&a, (0, k, 1, 0, 0), &w, (off, 1, stride, 0, 0), m, n, k, 1, 1);
        let at = up_shape(&a, &[m, k]);
        let wt = up(&w);
        for path in PATHS {
            let c = gpu().zeros(&[m, n]).unwrap();
            let b = MatView { t: &wt, off, rs: 1, cs: stride, bo: 0, bi: 0 };
            let mm = on_views(m, n, k, 1, 1, MatView::row_major(&at, m, k), b, MatView::row_major(&c, m, n));
            let mut rc = rec();
            matmul_with(&mut rc, &mm, path).unwrap();
            rc.submit().unwrap();
            close(&format!("x.W^T {m}x{n}x{k} at offset {off}, {path:?}"), &down(&c), &want, tol(k), 1e-5);
        }
    }
}

/// The epilogue on views inside larger tensors (C at an offset with a row stride beyond n, the
/// bias and the pre-activation at offsets, two batches), with B as stored (the B-along-n kernel)
/// and transposed (both along k): offsets that are multiples of 4 take the vec4 kernels' vec4
/// stores, others the scalar ones; everything outside the views is left as it was. Against the
/// CPU on every path.
#[test]
fn matmul_epilogue_on_offset_views() {
    for tb in [false, true] {
        for offsets in [(8, 4, 4), (2, 4, 4), (8, 3, 4), (8, 4, 6)] {
            epilogue_on_views_case(tb, offsets);
        }
    }
}

fn epilogue_on_views_case(tb: bool, (c_off, bias_off, pre_off): (usize, usize, usize)) {
    let (m, n, k, batch) = (37, 12, 20, 2);
    let cs = n + 4;
    let mut rng = Rng::new(500 + c_off as u64 * 10 + bias_off as u64);
    let (a, b) = (rng.vec(batch * m * k), rng.vec(batch * k * n));
    let bias = rng.vec(bias_off + n + 3);
    let c_len = c_off + batch * m * cs + 5;
    let c0 = rng.vec(c_len);
    let pre_len = pre_off + batch * m * cs + 5;
    let (at, biast) = (up_shape(&a, &[batch, m, k]), up(&bias));
    // B transposed: stored [batch, n, k], the same matrix.
    let bt = if tb {
        let bnk: Vec<f32> = (0..batch * n * k).map(|i| b[(i / (n * k)) * k * n + (i % k) * n + (i / k) % n]).collect();
        up_shape(&bnk, &[batch, n, k])
    } else {
        up_shape(&b, &[batch, k, n])
    };
    let b_view = if tb { MatView::row_major(&bt, n, k).t() } else { MatView::row_major(&bt, k, n) };
    for path in PATHS {
        let (c, pre) = (up(&c0), gpu().zeros(&[pre_len]).unwrap());
        let c_view = MatView { t: &c, off: c_off, rs: cs, cs: 1, bo: m * cs, bi: 0 };
        let mut mm = on_views(m, n, k, batch, 1, MatView::row_major(&at, m, k), b_view, c_view)
            .act(Act::GeluTanh)
            .alpha(0.5)
            .accumulate(0.25);
        (mm.bias, mm.pre) = (Some((&biast, bias_off)), Some((&pre, pre_off)));
        let mut rc = rec();
        matmul_with(&mut rc, &mm, path).unwrap();
        rc.submit().unwrap();
        let prod = r::matmul_strided(&a, (0, k, 1, m * k, 0), &b, (0, n, 1, k * n, 0), m, n, k, batch, 1);
        let (mut want_c, mut want_pre): (Vec<f64>, Vec<f64>) =
            (c0.iter().map(|&x| x as f64).collect(), vec![0.0; pre_len]);
        for z in 0..batch {
            for i in 0..m {
                for j in 0..n {
                    let idx = c_off + z * m * cs + i * cs + j;
                    let v = 0.5 * prod[(z * m + i) * n + j] + bias[bias_off + j] as f64;
                    want_pre[pre_off + idx - c_off] = v;
                    want_c[idx] = r::gelu_tanh(v) + 0.25 * c0[idx] as f64;
                }
            }
        }
        let what = format!(
            "epilogue on views: C at {c_off}, bias at {bias_off}, pre at {pre_off}, B transposed {tb}, {path:?}"
        );
        close(&what, &down(&c), &want_c, tol(k), 1e-5);
        close(&format!("{what} (pre)"), &down(&pre), &want_pre, tol(k), 1e-5);
    }
}

/// Head-interleaved batched product, as attention uses it: z = (batch, head) with separate
/// strides, reading Q and K as column slices of one fused tensor.
#[test]
fn matmul_batched_two_level_strides() {
    // head_dim 5: scalar path; head_dim 4: every stride and offset is a multiple of 4, vec4 path.
    for path in PATHS {
        batched_case(5, path);
        batched_case(4, path);
    }
}

fn batched_case(d: usize, path: MatmulPath) {
    let (bsz, t, h) = (3, 9, 2);
    let row = 3 * h * d;
    let mut rng = Rng::new(9);
    let qkv = rng.vec(bsz * t * row);
    let qt = up(&qkv);
    let s = gpu().zeros(&[bsz * h * t * t]).unwrap();
    let a = MatView { t: &qt, off: 0, rs: row, cs: 1, bo: t * row, bi: d };
    let b = MatView { t: &qt, off: h * d, rs: row, cs: 1, bo: t * row, bi: d }.t();
    let c = MatView { t: &s, off: 0, rs: t, cs: 1, bo: h * t * t, bi: t * t };
    let mm = on_views(t, t, d, bsz * h, h, a, b, c);
    let mut rc = rec();
    matmul_with(&mut rc, &mm, path).unwrap();
    rc.submit().unwrap();
    let want = r::matmul_strided(&qkv, (0, row, 1, t * row, d), &qkv, (h * d, 1, row, t * row, d), t, t, d, bsz * h, h);
    close("qk^T", &down(&s), &want, tol(d), 1e-5);
}

#[test]
fn matmul_is_bitwise_deterministic() {
    let mut rng = Rng::new(11);
    let (m, n, k) = (50, 60, 70);
    let at = up_shape(&rng.vec(m * k), &[m, k]);
    let bt = up_shape(&rng.vec(k * n), &[k, n]);
    let run = || {
        let c = gpu().zeros(&[m, n]).unwrap();
        let mut rc = rec();
        matmul(&mut rc, &Matmul::new(&at, false, &bt, false, &c).unwrap()).unwrap();
        rc.submit().unwrap();
        down(&c)
    };
    let (x, y) = (run(), run());
    assert!(x.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn matmul_rejects_bad_shapes_and_out_of_range_views() {
    let a = gpu().zeros(&[4, 5]).unwrap();
    let b = gpu().zeros(&[6, 3]).unwrap();
    let c = gpu().zeros(&[4, 3]).unwrap();
    let e = Matmul::new(&a, false, &b, false, &c).unwrap_err().to_string();
    assert!(e.contains("4x5") && e.contains("6x3"), "{e}");
    // A view that reaches past its tensor must be refused before it reaches the shader.
    let b2 = gpu().zeros(&[5, 3]).unwrap();
    let mut mm = Matmul::new(&a, false, &b2, false, &c).unwrap();
    mm.a.off = 3;
    let e = matmul(&mut rec(), &mm).unwrap_err().to_string();
    assert!(e.contains("A view reaches element"), "{e}");
}
