// Workgroup-tiled variant of matmul.wgsl for GPUs with fast workgroup memory: the workgroup
// stages a BK-deep slab of A (BM rows) and B (BN columns) in workgroup memory, then each
// invocation accumulates a TM x TN register block from it. Global loads use the same strides as
// matmul.wgsl, so every transpose and batched layout works; out-of-range rows, columns and the
// k tail load as 0. Same Params and epilogue. Constants: TM, TN, WGX, WGY, BK, EPI, HAS_BIAS,
// STORE_PRE, ACC. (On lavapipe workgroup memory does not help — lavapipe.md — so CPU adapters
// use the register-blocked kernel.)

//@include matmul_common
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> B: array<f32>;

// SAME_AB: both operands are one range (X·Xᵀ, Q·Kᵀ of a fused QKV), bound once as A; B is read
// through A's binding (WebGPU refuses two writable bindings of one range).
fn read_b(i: u32) -> f32 {
    if (SAME_AB) { return A[i]; }
    return B[i];
}

const BM: u32 = WGY * TM;
const BN: u32 = WGX * TN;
const NT: u32 = WGX * WGY;
var<workgroup> As: array<f32, BK * BM>;
var<workgroup> Bs: array<f32, BK * BN>;

@compute @workgroup_size(WGX, WGY, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let zo = wid.z / p.batch_inner;
    let zi = wid.z % p.batch_inner;
    let a_base = p.a_off + zo * p.a_bo + zi * p.a_bi;
    let b_base = p.b_off + zo * p.b_bo + zi * p.b_bi;
    let c_base = p.c_off + zo * p.c_bo + zi * p.c_bi;
    let rowb = wid.y * BM;
    let colb = wid.x * BN;
    //@for i in 0..TM
    //@for j in 0..TN
    var c{i}_{j} = 0.0;
    //@end
    //@end
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // Stage A[rowb.., k0..] as As[k][i] and B[k0.., colb..] as Bs[k][j].
        for (var e = li; e < BK * BM; e += NT) {
            let kk = e / BM;
            let i = e % BM;
            let ok = rowb + i < p.m && k0 + kk < p.k;
            let idx = a_base + min(rowb + i, p.m - 1u) * p.a_rs + min(k0 + kk, p.k - 1u) * p.a_cs;
            As[e] = select(0.0, A[idx], ok);
        }
        for (var e = li; e < BK * BN; e += NT) {
            let kk = e / BN;
            let j = e % BN;
            let ok = colb + j < p.n && k0 + kk < p.k;
            let idx = b_base + min(k0 + kk, p.k - 1u) * p.b_rs + min(colb + j, p.n - 1u) * p.b_cs;
            Bs[e] = select(0.0, read_b(idx), ok);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            //@for i in 0..TM
            let a{i} = As[kk * BM + lid.y + {i}u * WGY];
            //@end
            //@for j in 0..TN
            let b{j} = Bs[kk * BN + lid.x + {j}u * WGX];
            //@end
            //@for i in 0..TM
            //@for j in 0..TN
            c{i}_{j} = fma(a{i}, b{j}, c{i}_{j});
            //@end
            //@end
        }
        workgroupBarrier();
    }
    //@for i in 0..TM
    //@for j in 0..TN
    store(rowb + lid.y + {i}u * WGY, colb + lid.x + {j}u * WGX, c_base, c{i}_{j});
    //@end
    //@end
}
