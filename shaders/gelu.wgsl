// GELU forward and backward, erf (FORM = 1) or tanh (FORM = 2) form.
// Forward: Y = gelu(X). Backward: DX (=|+=) DY * gelu'(X), ACC selects +=.

struct Params { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> DY: array<f32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;

fn act(x: f32) -> f32 {
    if (FORM == 1u) { return gelu_erf(x); }
    return gelu_tanh(x);
}
fn act_grad(x: f32) -> f32 {
    if (FORM == 1u) { return gelu_erf_grad(x); }
    return gelu_tanh_grad(x);
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    OUT[i] = act(X[i]);
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    if (i >= p.n) { return; }
    var g = DY[i] * act_grad(X[i]);
    if (ACC) { g += OUT[i]; }
    OUT[i] = g;
}
