use super::*;
use tramway::ops::attention::*;
use tramway::ops::reference as r;

/// Part `which` (0 q, 1 k, 2 v) of a fused [B*T, 3*H*D] tensor.
fn view(which: usize, t: &tramway::Tensor, hd: usize) -> HeadView<'_> {
    HeadView { t, off: which * hd, row_stride: 3 * hd }
}

/// Split a fused [B*T, 3*H*D] QKV into dense q, k, v.
fn split(qkv: &[f32], rows: usize, hd: usize) -> [Vec<f32>; 3] {
    let part =
        |p: usize| (0..rows).flat_map(|i| qkv[i * 3 * hd + p * hd..i * 3 * hd + (p + 1) * hd].to_vec()).collect();
    [part(0), part(1), part(2)]
}

// Two chained f32 matmuls around a softmax: errors of ~1e-6 per stage, inputs in [-1, 1).
#[test]
fn attention_fused_qkv_mask_causal_forward_backward() {
    for (ci, &(b, t, h, d, with_mask, causal)) in
        [(1, 1, 1, 1, false, false), (2, 5, 2, 3, true, false), (2, 7, 3, 4, true, true), (1, 33, 2, 8, false, true)]
            .iter()
            .enumerate()
    {
        let s = AttnShape { batch: b, seq: t, heads: h, head_dim: d };
        let hd = h * d;
        let mut rng = Rng::new(ci as u64 + 7);
        let qkv = rng.vec(b * t * 3 * hd);
        let dout = rng.vec(b * t * hd);
        let mask: Vec<u32> = (0..b * t).map(|i| if i % t == 0 || rng.below(4) > 0 { 1 } else { 0 }).collect();
        let prior = rng.vec(b * t * 3 * hd);
        let qkvt = up(&qkv);
        let mt = gpu().from_u32(&mask, &[b * t]).unwrap();
        let out = gpu().zeros(&[b * t * hd]).unwrap();
        let probs = gpu().zeros(&[b * h * t * t]).unwrap();
        let doutt = up(&dout);
        let dqkv = up(&prior);
        let scale = 1.0 / (d as f32).sqrt();
        let maskopt = with_mask.then_some(&mt);
        let mut rc = rec();
        attention(
            &mut rc,
            &s,
            view(0, &qkvt, hd),
            view(1, &qkvt, hd),
            view(2, &qkvt, hd),
            HeadView::dense(&out, &s),
            &probs,
            maskopt,
            causal,
            scale,
        )
        .unwrap();
        attention_backward(
            &mut rc,
            &s,
            view(0, &qkvt, hd),
            view(1, &qkvt, hd),
            view(2, &qkvt, hd),
            &probs,
            HeadView::dense(&doutt, &s),
            view(0, &dqkv, hd),
            view(1, &dqkv, hd),
            view(2, &dqkv, hd),
            scale,
            true,
        )
        .unwrap();
        rc.submit().unwrap();
        let [q, k, v] = split(&qkv, b * t, hd);
        let mref = with_mask.then_some(&mask[..]);
        let (wout, wprobs) = r::attention(&q, &k, &v, b, t, h, d, mref, causal, scale as f64);
        close("attention out", &down(&out), &wout, 1e-5, 1e-5);
        close("attention probs", &down(&probs), &wprobs, 1e-6, 1e-5);
        let (wdq, wdk, wdv) = r::attention_backward(&q, &k, &v, &dout, b, t, h, d, mref, causal, scale as f64);
        let got = down(&dqkv);
        let [gq, gk, gv] = split(&got, b * t, hd);
        let [pq, pk, pv] = split(&prior, b * t, hd);
        let add = |a: &[f64], p: &[f32]| a.iter().zip(p).map(|(x, &y)| x + y as f64).collect::<Vec<_>>();
        close("dq", &gq, &add(&wdq, &pq), 1e-5, 1e-5);
        close("dk", &gk, &add(&wdk, &pk), 1e-5, 1e-5);
        close("dv", &gv, &add(&wdv, &pv), 1e-5, 1e-5);
        let f = |q: &[f32], k: &[f32], v: &[f32]| {
            dot(&dout, &r::attention(q, k, v, b, t, h, d, mref, causal, scale as f64).0)
        };
        fd_check("attention dq reference", &q, &wdq, 10, |x| f(x, &k, &v));
        fd_check("attention dk reference", &k, &wdk, 10, |x| f(&q, x, &v));
        fd_check("attention dv reference", &v, &wdv, 10, |x| f(&q, &k, x));
    }
}

/// Attention of `t` new queries over a K/V cache against the reference causal attention over
/// the whole sequence (its last `t` rows), with grouped-query heads (K/V repeated on the CPU),
/// cache rows past the sequence filled with garbage (they must not be read), t = 1 and
/// t > 1 at past = 0 (a prompt) and later. Two f32 matmuls around a softmax, as above: 1e-5.
#[test]
fn attention_over_a_kv_cache_matches_the_full_causal_attention() {
    for (ci, &(heads, kv, d, past, t)) in
        [(1, 1, 1, 0, 1), (4, 2, 3, 5, 1), (3, 3, 4, 0, 7), (6, 2, 8, 9, 4), (2, 1, 5, 30, 33)].iter().enumerate()
    {
        let (l, cap) = (past + t, past + t + 3);
        let mut rng = Rng::new(100 + ci as u64);
        let q = rng.vec(l * heads * d);
        let kc = rng.vec(cap * kv * d);
        let vc = rng.vec(cap * kv * d);
        let scale = 1.0 / (d as f64).sqrt();
        let rep = |x: &[f32]| -> Vec<f32> {
            r::repeat_heads(&x[..l * kv * d], heads, kv, d).iter().map(|&v| v as f32).collect()
        };
        let (want, _) = r::attention(&q, &rep(&kc), &rep(&vc), 1, l, heads, d, None, true, scale);
        let out = gpu().zeros(&[t, heads * d]).unwrap();
        let s = CachedShape { heads, kv_heads: kv, head_dim: d, past, t };
        let mut rc = rec();
        attention_cached(&mut rc, &s, &up(&q[past * heads * d..]), &up(&kc), &up(&vc), &out, scale as f32).unwrap();
        rc.submit().unwrap();
        close(&format!("cached attention {s:?}"), &down(&out), &want[past * heads * d..], 1e-5, 1e-5);
    }
    let e = attention_cached(
        &mut rec(),
        &CachedShape { heads: 2, kv_heads: 1, head_dim: 2, past: 3, t: 2 },
        &up(&[0.0; 8]),
        &up(&[0.0; 8]),
        &up(&[0.0; 10]),
        &up(&[0.0; 8]),
        1.0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("k cache") && e.contains("holds fewer than the 10 elements"), "{e}");
}
