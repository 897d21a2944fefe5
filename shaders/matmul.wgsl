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

//@include matmul_common
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> B: array<f32>;

// SAME_AB: both operands are one range (X·Xᵀ, Q·Kᵀ of a fused QKV), bound once as A; B is read
// through A's binding (WebGPU refuses two writable bindings of one range).
fn read_b(i: u32) -> f32 {
    if (SAME_AB) { return A[i]; }
    return B[i];
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
        let b{j} = read_b(bc{j} + bk);
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
