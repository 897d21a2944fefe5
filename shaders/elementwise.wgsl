// Elementwise kernels over contiguous tensors of n elements. VT is f32 or vec4<f32> (VW = 1 or
// 4): the vec4 form is used when n is a multiple of 4 and halves the load count on CPU drivers.
// The grid is 2-D (see linear_group); WG invocations per workgroup.

struct Params { n: u32, alpha: f32, beta: f32, cols: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> X: array<VT>;
@group(0) @binding(2) var<storage, read_write> Y: array<VT>;
@group(0) @binding(3) var<storage, read_write> Z: array<VT>;
@group(0) @binding(4) var<storage, read_write> COLV: array<VT>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return linear_group(wid, nwg) * WG + lid;
}

// Z = alpha * X + beta * Y (Y only when HAS_Y)
@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n / VW) { return; }
    var z = VT(p.alpha) * X[i];
    if (HAS_Y) { z += VT(p.beta) * Y[i]; }
    Z[i] = z;
}

// Z = alpha * X * Y
@compute @workgroup_size(WG)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n / VW) { return; }
    Z[i] = VT(p.alpha) * X[i] * Y[i];
}

// Y = alpha * X + beta * Y (axpy when beta = 1); Y = beta * Y when !HAS_X. Z unused.
@compute @workgroup_size(WG)
fn axpby(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n / VW) { return; }
    var y = VT(p.beta) * Y[i];
    if (HAS_X) { y += VT(p.alpha) * X[i]; }
    Y[i] = y;
}

// Z = X * COLV[column] (+ beta * Y when HAS_Y): a per-column scale of a [n / cols, cols]
// matrix (LayerScale), cols a multiple of VW.
@compute @workgroup_size(WG)
fn mulcol(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n / VW) { return; }
    var z = X[i] * COLV[i % (p.cols / VW)];
    if (HAS_Y) { z += VT(p.beta) * Y[i]; }
    Z[i] = z;
}
