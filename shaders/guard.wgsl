// The finite guard of a training step: one invocation at the end of the step's submit checks the
// quantities the step produced (its loss, the gradient norm, the ascent denominator, TRAM's d and
// the updated parameters' norm) and records the first step at which any was NaN or infinite.
// The record is sticky: once set, later steps leave it, so a readback at any later point names
// the step where the run went bad and what went first.
//
// L = the step's [loss, count]; S = the optimizer's scalar buffer (slots in src/optim/mod.rs).
// Non-finite is tested on the bits (exponent all ones): WGSL lets implementations assume that
// floats are finite, so `x != x` could be folded away.

struct Params { step: u32, s_loss: u32, s_bad_step: u32, s_bad_what: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> L: array<f32>;
@group(0) @binding(2) var<storage, read_write> S: array<f32>;

fn nonfinite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

@compute @workgroup_size(1)
fn finite_guard() {
    let loss = L[0];
    S[p.s_loss] = loss;
    var bad = 0u;
    // Bit i is slot i of the scalar buffer; the loss is bit 7 (its slot holds a copy).
    for (var i = 0u; i < p.s_loss; i++) {
        if (nonfinite(S[i])) { bad |= 1u << i; }
    }
    if (nonfinite(loss)) { bad |= 1u << 7u; }
    if (bad != 0u && S[p.s_bad_step] == 0.0) {
        S[p.s_bad_step] = f32(p.step);
        S[p.s_bad_what] = f32(bad);
    }
}
