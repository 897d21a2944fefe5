// Shared by the matmul kernels (//@include matmul_common): the parameter block, the bias /
// output / pre-activation bindings and the epilogue. Each kernel declares A and B itself (f32
// or vec4 arrays).

struct Params {
    m: u32, n: u32, k: u32, batch_inner: u32,
    a_off: u32, a_rs: u32, a_cs: u32, a_bo: u32,
    a_bi: u32, b_off: u32, b_rs: u32, b_cs: u32,
    b_bo: u32, b_bi: u32, c_off: u32, c_rs: u32,
    c_bo: u32, c_bi: u32, bias_off: u32, pre_off: u32,
    alpha: f32, beta: f32, zero: u32, _p1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
//@if !C4
@group(0) @binding(3) var<storage, read_write> BIAS: array<f32>;
@group(0) @binding(4) var<storage, read_write> C: array<f32>;
@group(0) @binding(5) var<storage, read_write> PRE: array<f32>;
//@end
//@if C4
// C4 (matmul_n4, where n, C's offset and strides, the bias and pre-activation offsets are
// multiples of 4): the epilogue works on four consecutive columns at once, one vec4 load or
// store where the scalar form has four (CPU drivers pay per load and store instruction).
@group(0) @binding(3) var<storage, read_write> BIAS: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> C: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> PRE: array<vec4<f32>>;

fn act4(v: vec4<f32>) -> vec4<f32> {
    if (EPI == 1u) {
        return vec4<f32>(gelu_erf(v.x), gelu_erf(v.y), gelu_erf(v.z), gelu_erf(v.w));
    } else if (EPI == 2u) {
        return vec4<f32>(gelu_tanh(v.x), gelu_tanh(v.y), gelu_tanh(v.z), gelu_tanh(v.w));
    } else if (EPI == 3u) {
        return vec4<f32>(tanh_safe(v.x), tanh_safe(v.y), tanh_safe(v.z), tanh_safe(v.w));
    }
    return v;
}

// Columns col .. col + 3 of one row (col a multiple of 4; n is, so all four are in range when
// the first is). The same operations per element as store().
fn store4(row: u32, col: u32, c_base: u32, acc: vec4<f32>) {
    if (row >= p.m || col >= p.n) {
        return;
    }
    let idx = c_base + row * p.c_rs + col;
    var v = p.alpha * acc;
    if (HAS_BIAS) {
        v += BIAS[(p.bias_off + col) / 4u];
    }
    if (STORE_PRE) {
        PRE[(p.pre_off + idx - p.c_off) / 4u] = v;
    }
    v = act4(v);
    if (ACC) {
        v += p.beta * C[idx / 4u];
    }
    C[idx / 4u] = v;
}
//@end
//@if !C4

fn store(row: u32, col: u32, c_base: u32, acc: f32) {
    if (row >= p.m || col >= p.n) {
        return;
    }
    let idx = c_base + row * p.c_rs + col;
    var v = p.alpha * acc;
    if (HAS_BIAS) {
        v += BIAS[p.bias_off + col];
    }
    if (STORE_PRE) {
        PRE[p.pre_off + idx - p.c_off] = v;
    }
    if (EPI == 1u) {
        v = gelu_erf(v);
    } else if (EPI == 2u) {
        v = gelu_tanh(v);
    } else if (EPI == 3u) {
        v = tanh_safe(v);
    }
    if (ACC) {
        v += p.beta * C[idx];
    }
    C[idx] = v;
}
//@end
