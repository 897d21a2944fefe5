// KL divergence between rows of two logit tensors P (reference / target) and Q (current),
// softmax over the last dimension, in f32 with max-subtraction:
//   MODE 0 forward   KL(p || q) = sum p (log p - log q)
//   MODE 1 reverse   KL(q || p)
//   MODE 2 symmetric forward + reverse
// rows: ROWKL[r] = the divergence of row r (the mean over rows is a reduce.wgsl pass).
// backward: DQ (and DP when HAS_DP) (=|+=) coef * d(row KL)/d(logits), ACC selects +=.
// WEIGHTED: per-row weights w (a language model's real tokens, normalised to sum 1): `rows`
// writes w[r] * KL_r reading w from the DP binding (unused there), `backward` differentiates
// coef * sum_r w[r] KL_r reading w from the ROWKL binding (unused there).

struct Params { rows: u32, cols: u32, _a: u32, _b: u32, coef: f32, _c: u32, _d: u32, _e: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> P: array<f32>;
@group(0) @binding(2) var<storage, read_write> Q: array<f32>;
@group(0) @binding(3) var<storage, read_write> ROWKL: array<f32>;
@group(0) @binding(4) var<storage, read_write> DQ: array<f32>;
@group(0) @binding(5) var<storage, read_write> DP: array<f32>;

//@include wg_reduce

// (log-normaliser of P, of Q) for the row at base: max + log(sum exp(x - max)).
fn lses(lid: u32, base: u32) -> vec2<f32> {
    var mp = NEG_BIG;
    var mq = NEG_BIG;
    for (var j = lid; j < p.cols; j += WG) {
        mp = max(mp, P[base + j]);
        mq = max(mq, Q[base + j]);
    }
    mp = wg_reduce(lid, mp, true);
    mq = wg_reduce(lid, mq, true);
    var sp = 0.0;
    var sq = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        sp += exp(P[base + j] - mp);
        sq += exp(Q[base + j] - mq);
    }
    sp = wg_reduce(lid, sp, false);
    sq = wg_reduce(lid, sq, false);
    return vec2<f32>(mp + log(sp), mq + log(sq));
}

// (forward KL, reverse KL) of the row.
fn both(lid: u32, base: u32, l: vec2<f32>) -> vec2<f32> {
    var f = 0.0;
    var r = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        let lp = P[base + j] - l.x;
        let lq = Q[base + j] - l.y;
        f += exp(lp) * (lp - lq);
        r += exp(lq) * (lq - lp);
    }
    return vec2<f32>(wg_reduce(lid, f, false), wg_reduce(lid, r, false));
}

@compute @workgroup_size(WG)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg);
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    let kl = both(lid, base, lses(lid, base));
    if (lid == 0u) {
        var v = kl.x;
        if (MODE == 1u) { v = kl.y; } else if (MODE == 2u) { v = kl.x + kl.y; }
        if (WEIGHTED) { v *= DP[row]; }
        ROWKL[row] = v;
    }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg);
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    let l = lses(lid, base);
    let kl = both(lid, base, l);
    var coef = p.coef;
    if (WEIGHTED) { coef *= ROWKL[row]; }
    for (var j = lid; j < p.cols; j += WG) {
        let lp = P[base + j] - l.x;
        let lq = Q[base + j] - l.y;
        let pp = exp(lp);
        let qq = exp(lq);
        var dq = 0.0;
        var dp = 0.0;
        if (MODE != 1u) {
            dq += qq - pp;
            dp += pp * (lp - lq - kl.x);
        }
        if (MODE != 0u) {
            dq += qq * (lq - lp - kl.y);
            dp += pp - qq;
        }
        dq *= coef;
        dp *= coef;
        if (ACC) { dq += DQ[base + j]; }
        DQ[base + j] = dq;
        if (HAS_DP) {
            if (ACC) { dp += DP[base + j]; }
            DP[base + j] = dp;
        }
    }
}
