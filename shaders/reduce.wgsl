// Deterministic reductions: every workgroup sums a fixed span in a fixed order, then a single
// workgroup sums the partials. No atomics, so two runs give bitwise the same result.

struct Params { n: u32, in_off: u32, out_off: u32, cols: u32, scale: f32, nblocks: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> IN: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;

//@include wg_reduce

// Pass 1: OUT[out_off + g] = sum (or sum of squares, SQUARE) of IN[in_off + g*SPAN ..][..n].
@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let start = g * SPAN;
    let end = min(start + SPAN, p.n);
    var s = 0.0;
    for (var i = start + lid; i < end; i += WG) {
        let v = IN[p.in_off + i];
        if (SQUARE) { s += v * v; } else { s += v; }
    }
    let t = wg_sum(lid, s);
    if (lid == 0u) {
        OUT[p.out_off + g] = t;
    }
}

// Pass 2 (one workgroup): OUT[out_off] = scale * sum(IN[in_off..][..n]), then sqrt if SQRT.
@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < p.n; i += WG) {
        s += IN[p.in_off + i];
    }
    var t = wg_sum(lid, s) * p.scale;
    if (SQRT) { t = sqrt(t); }
    if (lid == 0u) {
        if (ACC) { t += OUT[p.out_off]; }
        OUT[p.out_off] = t;
    }
}

// Mean (times scale) of each row of a [n, cols] matrix: one workgroup per row.
@compute @workgroup_size(WG)
fn row_mean(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg);
    if (row >= p.n) { return; }
    var s = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        s += IN[p.in_off + row * p.cols + c];
    }
    let t = wg_sum(lid, s);
    if (lid == 0u) {
        OUT[p.out_off + row] = t / f32(p.cols) * p.scale;
    }
}

// Column sums, pass 1: OUT[rb * cols + c] = sum of IN rows [rb*RB, (rb+1)*RB) in column c
// (the bias gradient of a linear layer). Grid: (ceil(cols / WG), nblocks).
@compute @workgroup_size(WG)
fn colsum_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x * WG + lid;
    if (c >= p.cols) { return; }
    let r0 = wid.y * RB;
    let r1 = min(r0 + RB, p.n);
    var s = 0.0;
    for (var r = r0; r < r1; r++) {
        s += IN[p.in_off + r * p.cols + c];
    }
    OUT[wid.y * p.cols + c] = s;
}

// Column sums, pass 2: OUT[out_off + c] (=|+=) scale * sum_rb IN[in_off + rb * cols + c].
@compute @workgroup_size(WG)
fn colsum_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x * WG + lid;
    if (c >= p.cols) { return; }
    var s = 0.0;
    for (var rb = 0u; rb < p.nblocks; rb++) {
        s += IN[p.in_off + rb * p.cols + c];
    }
    var t = s * p.scale;
    if (ACC) { t += OUT[p.out_off + c]; }
    OUT[p.out_off + c] = t;
}
