// Optimizer kernels over flat arena chunks (parameters, gradients and state share one layout,
// so one dispatch per chunk updates every tensor). Scalars that the GPU computes — the global
// gradient norm, the ascent denominator, the trust-region radius d — are read from the S buffer,
// so nothing crosses to the CPU during a step.
//
// S layout (f32): see src/optim/mod.rs (slot constants).

struct Params {
    n: u32, mode: u32, s_in: u32, s_out: u32,
    lr: f32, beta1: f32, beta2: f32, eps: f32,
    wd: f32, bc1: f32, bc2: f32, clip: f32,
    eta: f32, radius: f32, momentum: f32, nesterov: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> W: array<f32>;
@group(0) @binding(2) var<storage, read_write> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> M: array<f32>;
@group(0) @binding(4) var<storage, read_write> V: array<f32>;
@group(0) @binding(5) var<storage, read_write> S: array<f32>;

//@include wg_reduce

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return linear_group(wid, nwg) * WG + lid;
}

// The base updates (AdamW, SGD) are in optim4.wgsl (vec4 over the flat chunks).

// The per-element ascent weight a_i: SAM 1; adaptive (ASAM/TRAM) T^2 with T = |w| + eta;
// Fisher (FSAM) 1 / (1 + eta g^2).
fn ascent_weight(w: f32, g: f32) -> f32 {
    if (MODE == 1u) {
        let t = abs(w) + p.eta;
        return t * t;
    }
    if (MODE == 2u) {
        return 1.0 / (1.0 + p.eta * g * g);
    }
    return 1.0;
}

// Pass 1 of the ascent denominator: V[s_out + group] = sum of a_i g_i^2 over the group's span.
@compute @workgroup_size(WG)
fn ascent_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let grp = linear_group(wid, nwg);
    let start = grp * SPAN;
    let end = min(start + SPAN, p.n);
    var s = 0.0;
    for (var i = start + lid; i < end; i += WG) {
        let g = G[i];
        s += ascent_weight(W[i], g) * g * g;
    }
    let t = wg_sum(lid, s);
    if (lid == 0u) { V[p.s_out + grp] = t; }
}

// The ascent: M = W (backup); W += r * a_i * g_i / (sqrt(S[s_in]) + 1e-12), where the radius
// r = radius * (S[mode] when USE_D, the trust-region distance d; else 1).
@compute @workgroup_size(WG)
fn ascent(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    var r = p.radius;
    if (USE_D) { r *= S[p.s_out]; }
    let w = W[i];
    let g = G[i];
    M[i] = w;
    W[i] = w + r * ascent_weight(w, g) * g / (sqrt(S[p.s_in]) + 1e-12);
}
