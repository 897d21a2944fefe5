//! CPU references for every kernel: plain Rust, f64 accumulation, written for clarity rather
//! than speed. Tests compare the GPU against these, and these against finite differences.

/// Strided batched matmul, same semantics as [`crate::ops::matmul::Matmul`] (no epilogue):
/// returns `alpha * A[z] . B[z]` for every z as a dense `[batch, m, n]` array.
pub fn matmul_strided(
    a: &[f32],
    a_view: (usize, usize, usize, usize, usize),
    b: &[f32],
    b_view: (usize, usize, usize, usize, usize),
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    batch_inner: usize,
) -> Vec<f64> {
    let mut out = vec![0.0; batch * m * n];
    for z in 0..batch {
        let (zo, zi) = (z / batch_inner, z % batch_inner);
        let ab = a_view.0 + zo * a_view.3 + zi * a_view.4;
        let bb = b_view.0 + zo * b_view.3 + zi * b_view.4;
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for kk in 0..k {
                    s += a[ab + i * a_view.1 + kk * a_view.2] as f64 * b[bb + kk * b_view.1 + j * b_view.2] as f64;
                }
                out[(z * m + i) * n + j] = s;
            }
        }
    }
    out
}

/// `op(A) . op(B)` for row-major 2-D matrices.
pub fn matmul(a: &[f32], ta: bool, b: &[f32], tb: bool, m: usize, n: usize, k: usize) -> Vec<f64> {
    let av = if ta { (0, 1, m, 0, 0) } else { (0, k, 1, 0, 0) };
    let bv = if tb { (0, 1, k, 0, 0) } else { (0, n, 1, 0, 0) };
    matmul_strided(a, av, b, bv, m, n, k, 1, 1)
}

pub fn erf(x: f64) -> f64 {
    libm::erf(x)
}

pub fn gelu_erf(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}
pub fn gelu_erf_grad(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2)) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}
const C_TANH: f64 = 0.7978845608028654;
pub fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + (C_TANH * (x + 0.044715 * x * x * x)).tanh())
}
pub fn gelu_tanh_grad(x: f64) -> f64 {
    let t = (C_TANH * (x + 0.044715 * x * x * x)).tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C_TANH * (1.0 + 3.0 * 0.044715 * x * x)
}

/// LayerNorm (or RMSNorm when `rms`) forward: (y, mean, rstd) per row.
pub fn norm(
    x: &[f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    cols: usize,
    eps: f64,
    rms: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let rows = x.len() / cols;
    let (mut y, mut means, mut rstds) = (vec![0.0; x.len()], vec![0.0; rows], vec![0.0; rows]);
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let mean = if rms { 0.0 } else { row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64 };
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for c in 0..cols {
            y[r * cols + c] = (row[c] as f64 - mean) * rstd * gamma[c] as f64 + beta.map_or(0.0, |b| b[c] as f64);
        }
        means[r] = mean;
        rstds[r] = rstd;
    }
    (y, means, rstds)
}

/// Norm backward: (dx, dgamma, dbeta), recomputing the statistics from x.
pub fn norm_backward(
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    cols: usize,
    eps: f64,
    rms: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let rows = x.len() / cols;
    let (_, means, rstds) = norm(x, gamma, None, cols, eps, rms);
    let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; cols], vec![0.0; cols]);
    for r in 0..rows {
        let (mean, rstd) = (means[r], rstds[r]);
        let xh: Vec<f64> = (0..cols).map(|c| (x[r * cols + c] as f64 - mean) * rstd).collect();
        let g: Vec<f64> = (0..cols).map(|c| dy[r * cols + c] as f64 * gamma[c] as f64).collect();
        let mg = if rms { 0.0 } else { g.iter().sum::<f64>() / cols as f64 };
        let mgx = g.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / cols as f64;
        for c in 0..cols {
            dx[r * cols + c] = rstd * (g[c] - mg - xh[c] * mgx);
            dg[c] += dy[r * cols + c] as f64 * xh[c];
            db[c] += dy[r * cols + c] as f64;
        }
    }
    (dx, dg, db)
}

/// Masked, scaled softmax over rows laid out as [batch * heads, tq, cols].
pub fn softmax(
    x: &[f32],
    cols: usize,
    scale: f64,
    mask: Option<&[u32]>,
    causal: bool,
    tq: usize,
    heads: usize,
) -> Vec<f64> {
    let rows = x.len() / cols;
    let mut y = vec![0.0; x.len()];
    for r in 0..rows {
        let (i, b) = (r % tq, r / tq / heads);
        let s: Vec<f64> = (0..cols)
            .map(|j| {
                let masked = mask.is_some_and(|m| m[b * cols + j] == 0) || (causal && j > i + (cols - tq));
                if masked {
                    -1e30
                } else {
                    x[r * cols + j] as f64 * scale
                }
            })
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
        for j in 0..cols {
            y[r * cols + j] = (s[j] - m).exp() / z;
        }
    }
    y
}

/// Softmax backward from the output y: `scale * y * (dy - sum(dy * y))`.
pub fn softmax_backward(y: &[f64], dy: &[f32], cols: usize, scale: f64) -> Vec<f64> {
    let mut dx = vec![0.0; y.len()];
    for r in 0..y.len() / cols {
        let o = r * cols;
        let dot: f64 = (0..cols).map(|j| dy[o + j] as f64 * y[o + j]).sum();
        for j in 0..cols {
            dx[o + j] = scale * y[o + j] * (dy[o + j] as f64 - dot);
        }
    }
    dx
}

/// Attention on dense `[B, T, H*D]` q, k, v: (out, probs).
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    b: usize,
    t: usize,
    h: usize,
    d: usize,
    mask: Option<&[u32]>,
    causal: bool,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let hd = h * d;
    let mut probs = vec![0.0; b * h * t * t];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..t {
                let row: Vec<f64> = (0..t)
                    .map(|j| {
                        let masked = mask.is_some_and(|m| m[bi * t + j] == 0) || (causal && j > i);
                        if masked {
                            -1e30
                        } else {
                            scale
                                * (0..d)
                                    .map(|x| {
                                        q[(bi * t + i) * hd + hi * d + x] as f64
                                            * k[(bi * t + j) * hd + hi * d + x] as f64
                                    })
                                    .sum::<f64>()
                        }
                    })
                    .collect();
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
                for j in 0..t {
                    probs[((bi * h + hi) * t + i) * t + j] = (row[j] - m).exp() / z;
                }
            }
        }
    }
    let mut out = vec![0.0; b * t * hd];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..t {
                for x in 0..d {
                    out[(bi * t + i) * hd + hi * d + x] = (0..t)
                        .map(|j| probs[((bi * h + hi) * t + i) * t + j] * v[(bi * t + j) * hd + hi * d + x] as f64)
                        .sum();
                }
            }
        }
    }
    (out, probs)
}

/// Attention backward on dense layouts: (dq, dk, dv).
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    b: usize,
    t: usize,
    h: usize,
    d: usize,
    mask: Option<&[u32]>,
    causal: bool,
    scale: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let hd = h * d;
    let (_, probs) = attention(q, k, v, b, t, h, d, mask, causal, scale);
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for bi in 0..b {
        for hi in 0..h {
            let at = |tt: usize, dd: usize| (bi * t + tt) * hd + hi * d + dd;
            for i in 0..t {
                let p = |j: usize| probs[((bi * h + hi) * t + i) * t + j];
                let dp: Vec<f64> =
                    (0..t).map(|j| (0..d).map(|x| dout[at(i, x)] as f64 * v[at(j, x)] as f64).sum()).collect();
                let dot: f64 = (0..t).map(|j| dp[j] * p(j)).sum();
                for j in 0..t {
                    let ds = scale * p(j) * (dp[j] - dot);
                    for x in 0..d {
                        dv[at(j, x)] += p(j) * dout[at(i, x)] as f64;
                        dq[at(i, x)] += ds * k[at(j, x)] as f64;
                        dk[at(j, x)] += ds * q[at(i, x)] as f64;
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}

/// Mean cross-entropy over counted rows, and dlogits (scaled by dscale / count).
pub fn cross_entropy(logits: &[f32], targets: &[u32], cols: usize, ignore: u32, dscale: f64) -> (f64, f64, Vec<f64>) {
    let rows = targets.len();
    let (mut sum, mut count) = (0.0, 0.0);
    let mut lses = vec![0.0; rows];
    for r in 0..rows {
        let row = &logits[r * cols..(r + 1) * cols];
        let m = row.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        lses[r] = lse;
        let t = targets[r];
        if t != ignore && (t as usize) < cols {
            sum += lse - row[t as usize] as f64;
            count += 1.0;
        }
    }
    let mut d = vec![0.0; logits.len()];
    for r in 0..rows {
        let t = targets[r];
        if t == ignore || t as usize >= cols {
            continue;
        }
        for j in 0..cols {
            let p = (logits[r * cols + j] as f64 - lses[r]).exp();
            d[r * cols + j] = dscale / count * (p - if j == t as usize { 1.0 } else { 0.0 });
        }
    }
    (if count > 0.0 { sum / count } else { 0.0 }, count, d)
}

/// Embedding gather.
pub fn embedding(w: &[f32], dim: usize, ids: &[u32]) -> Vec<f64> {
    ids.iter().flat_map(|&id| w[id as usize * dim..(id as usize + 1) * dim].iter().map(|&v| v as f64)).collect()
}

/// Embedding backward: dw (vocab x dim) accumulated from dout.
pub fn embedding_backward(dout: &[f32], dim: usize, ids: &[u32], vocab: usize) -> Vec<f64> {
    let mut dw = vec![0.0; vocab * dim];
    for (r, &id) in ids.iter().enumerate() {
        for c in 0..dim {
            dw[id as usize * dim + c] += dout[r * dim + c] as f64;
        }
    }
    dw
}

/// Philox4x32-10 block for counter (block, off_lo, off_hi, 0) and key (seed_lo, seed_hi).
pub fn philox(block: u32, seed: u64, offset: u64) -> [u32; 4] {
    let mut c = [block, offset as u32, (offset >> 32) as u32, 0];
    let mut k = [seed as u32, (seed >> 32) as u32];
    for _ in 0..10 {
        let p0 = 0xD2511F53u64 * c[0] as u64;
        let p1 = 0xCD9E8D57u64 * c[2] as u64;
        c = [((p1 >> 32) as u32) ^ c[1] ^ k[0], p1 as u32, ((p0 >> 32) as u32) ^ c[3] ^ k[1], p0 as u32];
        k = [k[0].wrapping_add(0x9E3779B9), k[1].wrapping_add(0xBB67AE85)];
    }
    c
}

/// The raw 32-bit word for element e of stream (seed, offset).
pub fn rng_word(e: usize, seed: u64, offset: u64) -> u32 {
    philox((e / 4) as u32, seed, offset)[e % 4]
}

/// Uniform [0, 1) with 24 bits, as the shader makes it.
pub fn unit(x: u32) -> f64 {
    (x >> 8) as f64 / 16777216.0
}

pub fn uniform(n: usize, seed: u64, offset: u64, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|e| lo + (hi - lo) * unit(rng_word(e, seed, offset))).collect()
}

pub fn normal(n: usize, seed: u64, offset: u64, mean: f64, std: f64) -> Vec<f64> {
    (0..n)
        .map(|e| {
            let w = philox((e / 4) as u32, seed, offset);
            let h = (e % 4) / 2;
            let u1 = ((w[2 * h] >> 8) as f64 + 1.0) / 16777216.0;
            let u2 = unit(w[2 * h + 1]);
            let r = (-2.0 * u1.ln()).sqrt();
            let th = 2.0 * std::f64::consts::PI * u2;
            mean + std * if e % 2 == 0 { r * th.cos() } else { r * th.sin() }
        })
        .collect()
}

pub fn dropout(x: &[f32], p: f64, seed: u64, offset: u64) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(e, &v)| if unit(rng_word(e, seed, offset)) >= p { v as f64 / (1.0 - p) } else { 0.0 })
        .collect()
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
    let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// Per-row (forward, reverse) KL of reference logits p against current logits q.
pub fn kl_rows(p: &[f32], q: &[f32], cols: usize) -> Vec<(f64, f64)> {
    (0..p.len() / cols)
        .map(|r| {
            let lp = log_softmax(&p[r * cols..(r + 1) * cols]);
            let lq = log_softmax(&q[r * cols..(r + 1) * cols]);
            let f = lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum();
            let rv = lp.iter().zip(&lq).map(|(a, b)| b.exp() * (b - a)).sum();
            (f, rv)
        })
        .collect()
}

/// Gradient of coef * sum_rows KL (mode 0 forward, 1 reverse, 2 symmetric): (dq, dp).
pub fn kl_backward(p: &[f32], q: &[f32], cols: usize, mode: u32, coef: f64) -> (Vec<f64>, Vec<f64>) {
    let kls = kl_rows(p, q, cols);
    let (mut dq, mut dp) = (vec![0.0; q.len()], vec![0.0; p.len()]);
    for r in 0..p.len() / cols {
        let lp = log_softmax(&p[r * cols..(r + 1) * cols]);
        let lq = log_softmax(&q[r * cols..(r + 1) * cols]);
        for j in 0..cols {
            let (pp, qq) = (lp[j].exp(), lq[j].exp());
            let (mut gq, mut gp) = (0.0, 0.0);
            if mode != 1 {
                gq += qq - pp;
                gp += pp * (lp[j] - lq[j] - kls[r].0);
            }
            if mode != 0 {
                gq += qq * (lq[j] - lp[j] - kls[r].1);
                gp += pp - qq;
            }
            dq[r * cols + j] = coef * gq;
            dp[r * cols + j] = coef * gp;
        }
    }
    (dq, dp)
}

/// Vision token assembly: `x[b, s] = (s == 0 ? cls : pe[b, s - 1]) + pos[s]`.
pub fn assemble(pe: &[f32], cls: &[f32], pos: &[f32], batch: usize, seq: usize) -> Vec<f64> {
    let c = cls.len();
    let mut x = vec![0.0; batch * seq * c];
    for b in 0..batch {
        for s in 0..seq {
            for j in 0..c {
                let v = if s == 0 { cls[j] } else { pe[(b * (seq - 1) + s - 1) * c + j] };
                x[(b * seq + s) * c + j] = v as f64 + pos[s * c + j] as f64;
            }
        }
    }
    x
}

/// RoPE (rotate_half layout) of `x` `[rows, heads, 2 half]`, position = row % seq; `sign` -1
/// rotates back.
pub fn rope(x: &[f32], heads: usize, half: usize, seq: usize, theta: f64, sign: f64) -> Vec<f64> {
    let mut out = vec![0f64; x.len()];
    for (rh, chunk) in x.chunks(2 * half).enumerate() {
        let pos = (rh / heads) % seq;
        for j in 0..half {
            let a = pos as f64 / theta.powf((2 * j) as f64 / (2 * half) as f64);
            let (c, s) = (a.cos(), a.sin() * sign);
            let (x1, x2) = (chunk[j] as f64, chunk[j + half] as f64);
            out[rh * 2 * half + j] = x1 * c - x2 * s;
            out[rh * 2 * half + j + half] = x2 * c + x1 * s;
        }
    }
    out
}

/// `x` `[rows, kv, dim]` repeated to `[rows, heads, dim]` (head h reads kv head h / (heads/kv)).
pub fn repeat_heads(x: &[f32], heads: usize, kv: usize, dim: usize) -> Vec<f64> {
    let rows = x.len() / (kv * dim);
    let g = heads / kv;
    let mut out = Vec::with_capacity(rows * heads * dim);
    for r in 0..rows {
        for h in 0..heads {
            out.extend(x[(r * kv + h / g) * dim..(r * kv + h / g + 1) * dim].iter().map(|&v| v as f64));
        }
    }
    out
}

/// silu(g) * u, and its gradients (dg, du) for `dy`.
pub fn swiglu(g: &[f32], u: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mut y = Vec::new();
    let mut dg = Vec::new();
    let mut du = Vec::new();
    for i in 0..g.len() {
        let (gi, ui, d) = (g[i] as f64, u[i] as f64, dy[i] as f64);
        let s = sig(gi);
        y.push(gi * s * ui);
        dg.push(d * ui * (s + gi * s * (1.0 - s)));
        du.push(d * gi * s);
    }
    (y, dg, du)
}
