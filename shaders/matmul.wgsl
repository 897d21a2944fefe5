// Batched, strided matmul with a fused epilogue:
//   C[z] = act(alpha * op(A[z]) . op(B[z]) + bias) (+ beta * C[z])
// Transposes are strides: A(i, k) = A[a_base + i*a_rs + k*a_cs], B(k, j) = B[b_base + k*b_rs + j*b_cs],
// so N/T for either operand, head-interleaved attention layouts and column slices need no copies.
// The batch index z splits as (z / batch_inner, z % batch_inner) with a stride for each part
// (e.g. batch and head).
//
// Register blocking: each invocation owns TM x TN outputs, rows lid.y + i*WGY and columns
// lid.x + j*WGX of the workgroup tile, so neighbouring invocations touch neighbouring columns.
// Per k it loads TM + TN values for TM*TN FMAs; on CPU drivers (lavapipe) loads per FMA is
// what limits speed. Out-of-range rows/columns are clamped for loading (always in bounds, no
// branches in the loop) and skipped when storing.
//
// Constants: TM, TN, WGX, WGY, EPI (0 none, 1 GELU-erf, 2 GELU-tanh, 3 tanh), HAS_BIAS, STORE_PRE
// (also write the pre-activation, for the GELU backward), ACC (add beta * old C).

struct Params {
    m: u32, n: u32, k: u32, batch_inner: u32,
    a_off: u32, a_rs: u32, a_cs: u32, a_bo: u32,
    a_bi: u32, b_off: u32, b_rs: u32, b_cs: u32,
    b_bo: u32, b_bi: u32, c_off: u32, c_rs: u32,
    c_bo: u32, c_bi: u32, bias_off: u32, pre_off: u32,
    alpha: f32, beta: f32, _p0: u32, _p1: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> B: array<f32>;
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

@compute @workgroup_size(WGX, WGY, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let zo = wid.z / p.batch_inner;
    let zi = wid.z % p.batch_inner;
    let a_base = p.a_off + zo * p.a_bo + zi * p.a_bi;
    let b_base = p.b_off + zo * p.b_bo + zi * p.b_bi;
    let c_base = p.c_off + zo * p.c_bo + zi * p.c_bi;
    let row0 = wid.y * (WGY * TM) + lid.y;
    let col0 = wid.x * (WGX * TN) + lid.x;
    let mlast = p.m - 1u;
    let nlast = p.n - 1u;
    //@for i in 0..TM
    let ar{i} = a_base + min(row0 + {i}u * WGY, mlast) * p.a_rs;
    //@end
    //@for j in 0..TN
    let bc{j} = b_base + min(col0 + {j}u * WGX, nlast) * p.b_cs;
    //@end
    //@for i in 0..TM
    //@for j in 0..TN
    var c{i}_{j} = 0.0;
    //@end
    //@end
    var ak = 0u;
    var bk = 0u;
    for (var kk = 0u; kk < p.k; kk++) {
        //@for i in 0..TM
        let a{i} = A[ar{i} + ak];
        //@end
        //@for j in 0..TN
        let b{j} = B[bc{j} + bk];
        //@end
        //@for i in 0..TM
        //@for j in 0..TN
        c{i}_{j} = fma(a{i}, b{j}, c{i}_{j});
        //@end
        //@end
        ak += p.a_cs;
        bk += p.b_rs;
    }
    //@for i in 0..TM
    //@for j in 0..TN
    store(row0 + {i}u * WGY, col0 + {j}u * WGX, c_base, c{i}_{j});
    //@end
    //@end
}
