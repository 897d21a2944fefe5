// Shared by the matmul kernels (//@include matmul_common): the parameter block, the bias /
// output / pre-activation bindings and the epilogue. Each kernel declares A and B itself (f32
// or vec4 arrays).

struct Params {
    m: u32, n: u32, k: u32, batch_inner: u32,
    a_off: u32, a_rs: u32, a_cs: u32, a_bo: u32,
    a_bi: u32, b_off: u32, b_rs: u32, b_cs: u32,
    b_bo: u32, b_bi: u32, c_off: u32, c_rs: u32,
    c_bo: u32, c_bi: u32, bias_off: u32, pre_off: u32,
    alpha: f32, beta: f32, _p0: u32, _p1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read_write> BIAS: array<f32>;
@group(0) @binding(4) var<storage, read_write> C: array<f32>;
@group(0) @binding(5) var<storage, read_write> PRE: array<f32>;

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

