// Whether the subgroups of a one-dimensional workgroup of ROWS * SGS invocations (the subgroup
// matmuls' workgroup: ROWS tile rows of SGS lanes) are its SGS-wide
// runs of consecutive invocations (lane = local_invocation_index % SGS), which the *_sg matmul
// kernels assume when they treat each run as one row of their tile (neither Vulkan nor WebGPU
// promises that mapping). Every invocation writes 1 where its lane, its subgroup's size and the
// values broadcast from the first and last lanes of its subgroup agree with it, 0 elsewhere.
struct Params { unused: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> OUT: array<u32>;

@compute @workgroup_size(SGS * ROWS, 1, 1)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) size: u32,
) {
    let row = subgroupBroadcast(li / SGS, 0u);
    let last = subgroupBroadcast(li % SGS, SGS - 1u);
    let ok = size == SGS && lane == li % SGS && row == li / SGS && last == SGS - 1u;
    OUT[wid.x * (SGS * ROWS) + li] = select(0u, 1u, ok);
}
