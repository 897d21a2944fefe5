// Embedding gather and its deterministic backward.
// Forward: OUT[r, c] = W[ids[r], c]  (ids clamped to the vocabulary; the CPU side validates them).
// Backward: one workgroup per (distinct id, column block) sums the rows of DOUT that used the id,
// in ascending position order, and adds the sum to DW[id]. The CPU builds the index (distinct
// ids, segment starts, positions sorted by id) when it uploads the batch, so there are no
// atomics and the result is bitwise reproducible.

struct Params { rows: u32, cols: u32, vocab: u32, cgroups: u32, uniq_off: u32, starts_off: u32, perm_off: u32, nuniq: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> SRC: array<f32>;
@group(0) @binding(2) var<storage, read_write> IDX: array<u32>;
@group(0) @binding(3) var<storage, read_write> DST: array<f32>;

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let r = g / p.cgroups;
    let c = (g % p.cgroups) * WG + lid;
    if (r >= p.rows || c >= p.cols) { return; }
    let id = min(IDX[r], p.vocab - 1u);
    DST[r * p.cols + c] = SRC[id * p.cols + c];
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let u = g / p.cgroups;
    let c = (g % p.cgroups) * WG + lid;
    if (u >= p.nuniq || c >= p.cols) { return; }
    let id = IDX[p.uniq_off + u];
    let j0 = IDX[p.starts_off + u];
    let j1 = IDX[p.starts_off + u + 1u];
    var s = 0.0;
    for (var j = j0; j < j1; j++) {
        s += SRC[IDX[p.perm_off + j] * p.cols + c];
    }
    DST[id * p.cols + c] += s;
}
