// The base updates, AdamW and SGD, over flat arena chunks with W, G, M, V read and written as
// vec4 (four times fewer load and store instructions, which CPU drivers are limited by; arena
// chunks are multiples of 64 floats). The Params and S layout of optim.wgsl. Each workgroup
// covers SPAN elements and writes the sum of the updated w^2 over them to P[s_out + group]
// (a fixed tree: bitwise reproducible), so the finite guard's parameter norm costs no second
// pass over the parameters.

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
