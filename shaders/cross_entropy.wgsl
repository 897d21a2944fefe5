// Fused softmax cross-entropy over rows of logits [rows, cols] with u32 targets.
// Rows whose target equals `ignore` (or is out of range) do not count. Three kernels:
//   rows:   ROWLOSS[r] = logsumexp - logit[target], ROWLOSS[rows + r] = 1 if the row counts
//   finish: OUT[0] = mean loss over counted rows (0 if none), OUT[1] = count
//   grad:   DLOGITS = (softmax - onehot) * dscale / count; ignored rows get 0.
// Probabilities are never stored.

struct Params { rows: u32, cols: u32, ignore: u32, _a: u32, dscale: f32, _b: u32, _c: u32, _d: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> LOGITS: array<f32>;
@group(0) @binding(2) var<storage, read_write> TARGETS: array<u32>;
@group(0) @binding(3) var<storage, read_write> ROWLOSS: array<f32>;
@group(0) @binding(4) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(5) var<storage, read_write> DLOGITS: array<f32>;

//@include wg_reduce

fn row_lse(lid: u32, base: u32) -> vec2<f32> {
    var m = NEG_BIG;
    for (var j = lid; j < p.cols; j += WG) { m = max(m, LOGITS[base + j]); }
    m = wg_reduce(lid, m, true);
    var s = 0.0;
    for (var j = lid; j < p.cols; j += WG) { s += exp(LOGITS[base + j] - m); }
    s = wg_reduce(lid, s, false);
    return vec2<f32>(m, log(s));
}

@compute @workgroup_size(WG)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg);
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    let ml = row_lse(lid, base);
    if (lid == 0u) {
        let t = TARGETS[row];
        let valid = t != p.ignore && t < p.cols;
        let loss = ml.x + ml.y - LOGITS[base + min(t, p.cols - 1u)];
        ROWLOSS[row] = select(0.0, loss, valid);
        ROWLOSS[p.rows + row] = select(0.0, 1.0, valid);
    }
}

@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    var c = 0.0;
    for (var r = lid; r < p.rows; r += WG) {
        s += ROWLOSS[r];
        c += ROWLOSS[p.rows + r];
    }
    s = wg_reduce(lid, s, false);
    c = wg_reduce(lid, c, false);
    if (lid == 0u) {
        OUT[0] = select(0.0, s / c, c > 0.0);
        OUT[1] = c;
    }
}

@compute @workgroup_size(WG)
fn grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg);
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    let t = TARGETS[row];
    let valid = t != p.ignore && t < p.cols;
    let ml = row_lse(lid, base);
    let k = select(0.0, p.dscale / max(OUT[1], 1.0), valid);
    for (var j = lid; j < p.cols; j += WG) {
        let q = exp(LOGITS[base + j] - ml.x - ml.y);
        DLOGITS[base + j] = k * (q - select(0.0, 1.0, j == t));
    }
}
