// Transpose of a row-major [rows, cols] matrix X (offset and row stride in vec4 units) into a
// contiguous row-major [cols, rows] Y. One invocation per 4 x 4 block, read as four vec4 rows
// and written as four vec4 rows: every load and store is a vec4 (CPU drivers pay per load
// instruction). Requires rows, cols, the offset and the row stride to be multiples of 4.

struct Params { rows: u32, cols: u32, x_off: u32, x_rs: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> X: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> Y: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    let r4 = p.rows / 4u;
    let c4 = p.cols / 4u;
    if (i >= r4 * c4) { return; }
    // Consecutive invocations take consecutive vec4 columns of the same four rows of X.
    let br = i / c4;
    let bc = i % c4;
    let x = p.x_off + 4u * br * p.x_rs + bc;
    let x0 = X[x];
    let x1 = X[x + p.x_rs];
    let x2 = X[x + 2u * p.x_rs];
    let x3 = X[x + 3u * p.x_rs];
    let y = 4u * bc * r4 + br;
    Y[y] = vec4<f32>(x0.x, x1.x, x2.x, x3.x);
    Y[y + r4] = vec4<f32>(x0.y, x1.y, x2.y, x3.y);
    Y[y + 2u * r4] = vec4<f32>(x0.z, x1.z, x2.z, x3.z);
    Y[y + 3u * r4] = vec4<f32>(x0.w, x1.w, x2.w, x3.w);
}
