// LayerNorm (RMS = false) and RMSNorm (RMS = true) over the last dimension, forward and backward.
// One workgroup of WG invocations per row; reductions are fixed-order trees in workgroup memory,
// so results are bitwise reproducible. Parameter gradients are two-pass column sums over blocks
// of RB rows (partials here, the final sum in reduce.wgsl::colsum_finish): no atomics.

struct Params { rows: u32, cols: u32, eps: f32, nblocks: u32 }
@group(0) @binding(0) var<uniform> p: Params;

//@include wg_reduce

// ---- forward: bindings X, GAMMA, BETA, Y, MEAN, RSTD
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> GAMMA: array<f32>;
@group(0) @binding(3) var<storage, read_write> B3: array<f32>;
@group(0) @binding(4) var<storage, read_write> B4: array<f32>;
@group(0) @binding(5) var<storage, read_write> MEAN: array<f32>;
@group(0) @binding(6) var<storage, read_write> RSTD: array<f32>;

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg);
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    let fc = f32(p.cols);
    var mean = 0.0;
    if (!RMS) {
        var s = 0.0;
        for (var c = lid; c < p.cols; c += WG) { s += X[base + c]; }
        mean = wg_sum(lid, s) / fc;
    }
    var ss = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let d = X[base + c] - mean;
        ss += d * d;
    }
    let rstd = inverseSqrt(wg_sum(lid, ss) / fc + p.eps);
    for (var c = lid; c < p.cols; c += WG) {
        var y = (X[base + c] - mean) * rstd * GAMMA[c];
        if (!RMS) { y += B3[c]; }   // B3 = BETA
        B4[base + c] = y;           // B4 = Y
    }
    if (lid == 0u) {
        if (!RMS) { MEAN[row] = mean; }
        RSTD[row] = rstd;
    }
}

// ---- backward dx: bindings X, GAMMA, B3 = DY, B4 = DX, MEAN, RSTD. ACC: DX +=.
@compute @workgroup_size(WG)
fn backward_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg);
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var mean = 0.0;
    if (!RMS) { mean = MEAN[row]; }
    let rstd = RSTD[row];
    var sg = 0.0;
    var sgx = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let g = B3[base + c] * GAMMA[c];
        let xh = (X[base + c] - mean) * rstd;
        sg += g;
        sgx += g * xh;
    }
    let fc = f32(p.cols);
    var mg = wg_sum(lid, sg) / fc;
    let mgx = wg_sum(lid, sgx) / fc;
    if (RMS) { mg = 0.0; }
    for (var c = lid; c < p.cols; c += WG) {
        let g = B3[base + c] * GAMMA[c];
        let xh = (X[base + c] - mean) * rstd;
        var dx = rstd * (g - mg - xh * mgx);
        if (ACC) { dx += B4[base + c]; }
        B4[base + c] = dx;
    }
}

// ---- parameter-gradient partials: bindings X, GAMMA (unused), B3 = DY, B4 = PART, MEAN, RSTD.
// PART[rb * cols + c] = sum over block rb of dy * xhat (dgamma);
// PART[(nblocks + rb) * cols + c] = sum of dy (dbeta; LayerNorm only).
@compute @workgroup_size(WG)
fn backward_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x * WG + lid;
    let rb = wid.y;
    if (c >= p.cols) { return; }
    let r0 = rb * RB;
    let r1 = min(r0 + RB, p.rows);
    var sg = 0.0;
    var sb = 0.0;
    for (var r = r0; r < r1; r++) {
        let dy = B3[r * p.cols + c];
        var mean = 0.0;
        if (!RMS) { mean = MEAN[r]; }
        sg += dy * (X[r * p.cols + c] - mean) * RSTD[r];
        sb += dy;
    }
    B4[rb * p.cols + c] = sg;
    if (!RMS) {
        B4[(p.nblocks + rb) * p.cols + c] = sb;
    }
}
