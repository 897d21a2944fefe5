// Pieces of LLaMA-style decoders.
//
// rope: rotary position embedding, Hugging Face's rotate_half layout. Rows are (batch, position)
//   of `heads` heads of 2*HALF values; position = row % seq. For j < HALF with angle a(pos, j)
//   (cos/sin from a table the CPU computes in f64: WGSL's sin/cos lose accuracy at large
//   angles), OUT[j] = X[j] cos - X[j+HALF] sin * SIGN, OUT[j+HALF] = X[j+HALF] cos + X[j] sin * SIGN.
//   SIGN = -1 is the inverse rotation, i.e. the backward pass.
// repeat: grouped-query attention's K/V heads repeated to the query heads,
//   OUT[r, h, d] = X[r, h / group, d]; backward sums each group, DX[r, k, d] = sum_g DY[r, k*group+g, d].
// swiglu: OUT = silu(G) * U; backward DG = DY * U * silu'(G), DU = DY * silu(G).

struct Params { n: u32, heads: u32, half: u32, seq: u32, group: u32, sign: f32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@group(0) @binding(4) var<storage, read_write> D: array<f32>;
@group(0) @binding(5) var<storage, read_write> E: array<f32>;

// A = X, B = table [seq, HALF] cos then [seq, HALF] sin, C = OUT; one invocation per pair.
@compute @workgroup_size(WG)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    let j = i % p.half;
    let rh = i / p.half;
    let row = rh / p.heads;
    let pos = row % p.seq;
    let base = rh * 2u * p.half;
    let c = B[pos * p.half + j];
    let s = B[(p.seq + pos) * p.half + j] * p.sign;
    let x1 = A[base + j];
    let x2 = A[base + j + p.half];
    C[base + j] = x1 * c - x2 * s;
    C[base + j + p.half] = x2 * c + x1 * s;
}

// A = X [rows, heads / group, HALF], C = OUT [rows, heads, HALF] (HALF here is the head dim).
@compute @workgroup_size(WG)
fn repeat_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    let d = i % p.half;
    let h = (i / p.half) % p.heads;
    let r = i / (p.half * p.heads);
    let kv = p.heads / p.group;
    C[i] = A[(r * kv + h / p.group) * p.half + d];
}

// A = DY [rows, heads, HALF], C = DX [rows, heads / group, HALF]; one invocation per DX element.
@compute @workgroup_size(WG)
fn repeat_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    let kv = p.heads / p.group;
    let d = i % p.half;
    let k = (i / p.half) % kv;
    let r = i / (p.half * kv);
    var s = 0.0;
    for (var g = 0u; g < p.group; g++) {
        s += A[(r * p.heads + k * p.group + g) * p.half + d];
    }
    C[i] = s;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// A = G, B = U, C = OUT.
@compute @workgroup_size(WG)
fn swiglu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    let g = A[i];
    C[i] = g * sigmoid(g) * B[i];
}

// A = G, B = U, C = DY, D = DG, E = DU.
@compute @workgroup_size(WG)
fn swiglu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    let g = A[i];
    let s = sigmoid(g);
    let dy = C[i];
    D[i] = dy * B[i] * (s + g * s * (1.0 - s));
    E[i] = dy * g * s;
}
