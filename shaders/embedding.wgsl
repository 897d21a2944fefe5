// Embedding gather and its deterministic backward.
// Forward: OUT[r, c] = W[ids[r] - row0, c] for the rows whose id falls in this block of the table
// (a table above one binding is stored as row blocks; each block is one dispatch). The CPU side
// validates ids against the vocabulary.
// Backward: one workgroup per (distinct id, column block) sums the rows of DOUT that used the id,
// in ascending position order, and adds the sum to DW[id]. The CPU builds the index (distinct
// ids, segment starts, positions sorted by id) when it uploads the batch, so there are no
// atomics and the result is bitwise reproducible.

// Backward over distinct ids u0 .. u0 + count (those inside the block).
struct Params { rows: u32, cols: u32, block_rows: u32, cgroups: u32, row0: u32, nuniq: u32, u0: u32, count: u32 }
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
    let id = IDX[r];
    if (id < p.row0 || id - p.row0 >= p.block_rows) { return; }
    DST[r * p.cols + c] = SRC[(id - p.row0) * p.cols + c];
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let k = g / p.cgroups;
    let c = (g % p.cgroups) * WG + lid;
    if (k >= p.count || c >= p.cols) { return; }
    let u = p.u0 + k;
    let id = IDX[u];
    let j0 = IDX[p.nuniq + u];
    let j1 = IDX[p.nuniq + u + 1u];
    let perm_off = 2u * p.nuniq + 1u;
    var s = 0.0;
    for (var j = j0; j < j1; j++) {
        s += SRC[IDX[perm_off + j] * p.cols + c];
    }
    DST[(id - p.row0) * p.cols + c] += s;
}
