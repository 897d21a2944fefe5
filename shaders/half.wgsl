// 16-bit weights kept packed on the device, two per u32 (the even element in the low half):
// bfloat16 (BF16 true) or IEEE half (false). They are unpacked to f32 here, so no adapter
// feature is needed and everything downstream accumulates in f32.
// unpack: OUT[i] = W[off + i] for i < n.
// gather: OUT[r, c] = W[(ids[r] - row0) * cols + c] for the rows whose id is in this block
// (the embedding gather of a 16-bit table).
struct Params { n: u32, off: u32, rows: u32, cols: u32, block_rows: u32, cgroups: u32, row0: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> W: array<u32>;
@group(0) @binding(2) var<storage, read_write> IDX: array<u32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;

fn half_at(e: u32) -> f32 {
    let word = W[e >> 1u];
    let h = select(word & 0xFFFFu, word >> 16u, (e & 1u) == 1u);
    if (BF16) {
        return bitcast<f32>(h << 16u);
    }
    return unpack2x16float(h).x;
}

@compute @workgroup_size(WG)
fn unpack(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    OUT[i] = half_at(p.off + i);
}

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let r = g / p.cgroups;
    let c = (g % p.cgroups) * WG + lid;
    if (r >= p.rows || c >= p.cols) { return; }
    let id = IDX[r];
    if (id < p.row0 || id - p.row0 >= p.block_rows) { return; }
    OUT[r * p.cols + c] = half_at((id - p.row0) * p.cols + c);
}
