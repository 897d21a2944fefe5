// Optimizer kernels over flat arena chunks (parameters, gradients and state share one layout,
// so one dispatch per chunk updates every tensor), reading and writing W, G, M, V as vec4 (four
// times fewer load and store instructions, which CPU drivers are limited by; arena chunks are
// multiples of 64 floats). Scalars that the GPU computes — the global gradient norm, the ascent
// denominator, the trust-region radius d — are read from the S buffer, so nothing crosses to
// the CPU during a step. Per-workgroup partial sums (each workgroup covers SPAN elements, a
// fixed tree: bitwise reproducible) go to P[s_out + group].
//
// S layout (f32): see src/optim/mod.rs (slot constants).

struct Params {
    n: u32, mode: u32, s_in: u32, s_out: u32,
    lr: f32, beta1: f32, beta2: f32, eps: f32,
    wd: f32, bc1: f32, bc2: f32, clip: f32,
    eta: f32, radius: f32, momentum: f32, nesterov: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> W: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> G: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> M: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> V: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> S: array<f32>;
@group(0) @binding(6) var<storage, read_write> P: array<f32>;

//@include wg_reduce

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return linear_group(wid, nwg) * WG + lid;
}

// Gradient scale from global-norm clipping: S[s_in] holds the norm (clip <= 0: off).
fn clip_coef() -> f32 {
    if (p.clip <= 0.0) { return 1.0; }
    return min(1.0, p.clip / (S[p.s_in] + 1e-6));
}

// AdamW (decoupled weight decay, bias correction): M = first moment, V = second moment.
fn adamw_at(i: u32, c: f32) -> vec4<f32> {
    let g = G[i] * c;
    let m = p.beta1 * M[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * V[i] + (1.0 - p.beta2) * g * g;
    M[i] = m;
    V[i] = v;
    var w = W[i] * (1.0 - p.lr * p.wd);
    w -= p.lr * (m / p.bc1) / (sqrt(v / p.bc2) + p.eps);
    W[i] = w;
    return w;
}

// SGD as PyTorch: g += wd * w; b = momentum * b + g (b = g at the first step, mode = 1);
// step along b, or g + momentum * b with Nesterov. M = momentum buffer.
fn sgd_at(i: u32, c: f32) -> vec4<f32> {
    let g = G[i] * c + p.wd * W[i];
    var d = g;
    if (p.momentum > 0.0) {
        var b = g;
        if (p.mode == 0u) { b = p.momentum * M[i] + g; }
        M[i] = b;
        d = b;
        if (p.nesterov != 0u) { d = g + p.momentum * b; }
    }
    let w = W[i] - p.lr * d;
    W[i] = w;
    return w;
}

// The base updates also sum the updated w^2 (the finite guard's parameter norm needs no second
// pass over the parameters).
fn update_span(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, sgd: bool) {
    let grp = linear_group(wid, nwg);
    let start = grp * (SPAN / 4u);
    let end = min(start + SPAN / 4u, p.n / 4u);
    let c = clip_coef();
    var s = 0.0;
    for (var i = start + lid; i < end; i += WG) {
        var w: vec4<f32>;
        if (sgd) { w = sgd_at(i, c); } else { w = adamw_at(i, c); }
        s += dot(w, w);
    }
    let t = wg_sum(lid, s);
    if (lid == 0u) { P[p.s_out + grp] = t; }
}

@compute @workgroup_size(WG)
fn adamw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    update_span(wid, nwg, lid, false);
}

@compute @workgroup_size(WG)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    update_span(wid, nwg, lid, true);
}

// The per-element ascent weight a_i: SAM 1; adaptive (ASAM/TRAM) T^2 with T = |w| + eta;
// Fisher (FSAM) 1 / (1 + eta g^2).
fn ascent_weight(w: vec4<f32>, g: vec4<f32>) -> vec4<f32> {
    if (MODE == 1u) {
        let t = abs(w) + p.eta;
        return t * t;
    }
    if (MODE == 2u) {
        return 1.0 / (1.0 + p.eta * g * g);
    }
    return vec4<f32>(1.0);
}

// Pass 1 of the ascent denominator: P[s_out + group] = sum of a_i g_i^2 over the group's span.
@compute @workgroup_size(WG)
fn ascent_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let grp = linear_group(wid, nwg);
    let start = grp * (SPAN / 4u);
    let end = min(start + SPAN / 4u, p.n / 4u);
    var s = 0.0;
    for (var i = start + lid; i < end; i += WG) {
        let g = G[i];
        s += dot(ascent_weight(W[i], g) * g, g);
    }
    let t = wg_sum(lid, s);
    if (lid == 0u) { P[p.s_out + grp] = t; }
}

// The ascent: M = W (backup); W += r * a_i * g_i / (sqrt(S[s_in]) + 1e-12), where the radius
// r = radius * (S[s_out] when USE_D, the trust-region distance d; else 1). One vec4 per lane.
@compute @workgroup_size(WG)
fn ascent(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n / 4u) { return; }
    var r = p.radius;
    if (USE_D) { r *= S[p.s_out]; }
    let w = W[i];
    let g = G[i];
    M[i] = w;
    W[i] = w + r * ascent_weight(w, g) * g / (sqrt(S[p.s_in]) + 1e-12);
}
