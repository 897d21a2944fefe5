// Activations forward and backward: GELU erf form (FORM = 1), GELU tanh form (FORM = 2), tanh
// (FORM = 3, BERT's pooler). Forward: Y = act(X). Backward from the pre-activation X:
// DX (=|+=) DY * act'(X), ACC selects +=.

struct Params { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> DY: array<f32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;

fn act(x: f32) -> f32 {
    if (FORM == 1u) { return gelu_erf(x); }
    if (FORM == 2u) { return gelu_tanh(x); }
    return tanh_safe(x);
}
fn act_grad(x: f32) -> f32 {
    if (FORM == 1u) { return gelu_erf_grad(x); }
    if (FORM == 2u) { return gelu_tanh_grad(x); }
    let t = tanh_safe(x);
    return 1.0 - t * t;
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
