// Softmax over the last dimension with an optional key-padding mask and causal mask, and its
// backward. Rows are (z, i) with z = batch * heads + head and i the query position, so the
// attention scores [batch * heads, tq, cols] use it directly. Masked scores become NEG_BIG
// (finite), whose exp is exactly 0. One workgroup of WG invocations per row.
//
// Bindings: 1 X (fwd) / Y (bwd), 2 MASK [batch, cols] u32 (1 = attend), 3 OUT (Y or DX), 4 DY.

struct Params { rows: u32, cols: u32, tq: u32, heads: u32, scale: f32, causal_off: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> MASK: array<u32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(4) var<storage, read_write> DY: array<f32>;

//@include wg_reduce

fn score(row: u32, base: u32, j: u32) -> f32 {
    let i = row % p.tq;
    let b = (row / p.tq) / p.heads;
    var v = X[base + j] * p.scale;
    if (HAS_MASK) {
        if (MASK[b * p.cols + j] == 0u) { v = NEG_BIG; }
    }
    if (CAUSAL) {
        if (j > i + p.causal_off) { v = NEG_BIG; }
    }
    return v;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg);
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var m = NEG_BIG;
    for (var j = lid; j < p.cols; j += WG) { m = max(m, score(row, base, j)); }
    m = wg_reduce(lid, m, true);
    var s = 0.0;
    for (var j = lid; j < p.cols; j += WG) { s += exp(score(row, base, j) - m); }
    let inv = 1.0 / wg_reduce(lid, s, false);
    for (var j = lid; j < p.cols; j += WG) {
        OUT[base + j] = exp(score(row, base, j) - m) * inv;
    }
}

// DX = scale * Y * (DY - sum(DY * Y)); masked entries have Y = 0 and get 0.
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg);
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var s = 0.0;
    for (var j = lid; j < p.cols; j += WG) { s += DY[base + j] * X[base + j]; }
    let dot = wg_reduce(lid, s, false);
    for (var j = lid; j < p.cols; j += WG) {
        OUT[base + j] = p.scale * X[base + j] * (DY[base + j] - dot);
    }
}

// One invocation per row (CPU drivers, chosen by the Rust side on CPU adapters): a row of
// attention scores is short (the sequence length), and on lavapipe a workgroup's tree reduction
// costs a coroutine switch per barrier, while an invocation's serial loop over the row costs
// nothing extra. The same three passes as `forward`, summed left to right. Rows are
// invocations: 64 per workgroup, groups laid out as `linear_group`.
@compute @workgroup_size(64)
fn forward_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg) * 64u + lid;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var m = NEG_BIG;
    for (var j = 0u; j < p.cols; j++) { m = max(m, score(row, base, j)); }
    var s = 0.0;
    for (var j = 0u; j < p.cols; j++) { s += exp(score(row, base, j) - m); }
    let inv = 1.0 / s;
    for (var j = 0u; j < p.cols; j++) {
        OUT[base + j] = exp(score(row, base, j) - m) * inv;
    }
}

@compute @workgroup_size(64)
fn backward_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg) * 64u + lid;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var dot = 0.0;
    for (var j = 0u; j < p.cols; j++) { dot += DY[base + j] * X[base + j]; }
    for (var j = 0u; j < p.cols; j++) {
        OUT[base + j] = p.scale * X[base + j] * (DY[base + j] - dot);
    }
}
