// Variant of matmul.wgsl for operands that are both contiguous along k (A row-major, B stored
// as [n, k], i.e. x . W^T with Hugging Face weights, and Q . K^T): A and B are read as vec4
// along k, four times fewer load instructions per FMA, which is what CPU drivers are limited
// by. Requires k, every offset and every stride to be multiples of 4 (the Rust side checks).
// Same Params and epilogue as matmul.wgsl; A and B indices below are in vec4 units.
//
// Each invocation computes TM rows x TN groups of four consecutive columns (as matmul_n4.wgsl),
// so that with C4 (n and C's offsets multiples of 4) the epilogue stores, and reads the bias,
// as one vec4 per group and row instead of four scalars; a column of the group is its own row
// of B, read along k.
//
// SG (CPU drivers): A shared across the subgroup, as in matmul_n4.wgsl: lane l loads the vec4
// A[row, 4 (k0 + l) ..] and subgroupBroadcast hands each of the WGX vec4s to every lane of the
// workgroup row, WGX times fewer A loads; the same order of operations per output as without.
//
// AR (with SG, unless plain A loads are asked for): instead of every lane holding a vec4 of
// each of the TM rows for WGX steps of k, lane l loads, one k step at a time, the vec4s of tile
// rows l, l + WGX, ... (TMW = ceil(TM / WGX) of them; rows past the tile are clamped loads
// nobody reads) and row i arrives as lane i % WGX's load i / WGX, broadcast. The same loads and
// broadcasts per k, a WGX-th of the registers holding A: 1.4x faster x·Wᵀ on lavapipe.
//@include matmul_common

@group(0) @binding(1) var<storage, read_write> A: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> B: array<vec4<f32>>;

// SAME_AB: both operands are one range (X·Xᵀ, Q·Kᵀ of a fused QKV), bound once as A; B is read
// through A's binding (WebGPU refuses two writable bindings of one range).
fn read_b(i: u32) -> vec4<f32> {
    if (SAME_AB) { return A[i]; }
    return B[i];
}

// One output's sum, four k at a time, in the order of k (as the scalar kernel and the CPU
// reference sum it), one scalar per output: on a SIMD driver each vec4 is four registers, and
// 16 rows x 4 columns of scalar sums (64 registers) took 2-4 % off a MiniLM training step
// against a vec4 per output summed at the end (12 x 4 = 192), BENCHMARKS.md.
fn acc(c: f32, a: vec4<f32>, b: vec4<f32>) -> f32 {
    return fma(a.w, b.w, fma(a.z, b.z, fma(a.y, b.y, fma(a.x, b.x, c))));
}

// The four outputs of a column group, each its own scalar sum (the components of c).
fn acc4(c: vec4<f32>, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(acc(c.x, a, b0), acc(c.y, a, b1), acc(c.z, a, b2), acc(c.w, a, b3));
}

//@if SG
// One-dimensional workgroups (subgroup builtins need them): invocation li is lane li % WGX of
// tile row li / WGX.
@compute @workgroup_size(WGX * WGY, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let lid = vec2<u32>(li % WGX, li / WGX);
//@end
//@if !SG
@compute @workgroup_size(WGX, WGY, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
//@end
    let zo = wid.z / p.batch_inner;
    let zi = wid.z % p.batch_inner;
    let a_base = (p.a_off + zo * p.a_bo + zi * p.a_bi) / 4u;
    let b_base = (p.b_off + zo * p.b_bo + zi * p.b_bi) / 4u;
    let c_base = p.c_off + zo * p.c_bo + zi * p.c_bi;
    // Each workgroup row takes TM consecutive rows; a row wholly past the matrix (the last
    // block of a 32-row tile at m = 480, say) leaves at once instead of computing the clamped
    // last row TM times. It is one subgroup with SG, so the subgroup operations below still see
    // every lane of theirs.
    let row0 = wid.y * (WGY * TM) + lid.y * TM;
    if (row0 >= p.m) {
        return;
    }
    // Column groups of four: group g covers columns 4g .. 4g + 3 (B's rows, clamped to the last).
    let g0 = wid.x * (WGX * TN) + lid.x;
    let mlast = p.m - 1u;
    let nlast = p.n - 1u;
    //@for i in 0..TM
    let ar{i} = a_base + min(row0 + {i}u, mlast) * (p.a_rs / 4u);
    //@end
    //@for j in 0..TN
    //@for e in 0..4
    let bc{j}_{e} = b_base + min((g0 + {j}u * WGX) * 4u + {e}u, nlast) * (p.b_cs / 4u);
    //@end
    //@end
    //@for i in 0..TM
    //@for j in 0..TN
    var c{i}_{j} = vec4<f32>(0.0);
    //@end
    //@end
    let k4 = p.k / 4u;
    //@if SG
    let lane = lid.x;
    //@if AR
    // Lane l loads the vec4s of tile rows l, l + WGX, ... and row i arrives as lane i % WGX's
    // load i / WGX, broadcast (see the top).
    //@for j in 0..TMW
    let ra{j} = a_base + min(row0 + {j}u * WGX + lane, mlast) * (p.a_rs / 4u);
    //@end
    let kfull = k4;
    for (var k0 = 0u; k0 < kfull; k0++) {
        //@for j in 0..TMW
        let al{j} = A[ra{j} + k0];
        //@end
        //@for i in 0..TM
        let a{i} = subgroupBroadcast(al{i/WGX}, {i%WGX}u);
        //@end
        //@for j in 0..TN
        //@for e in 0..4
        let b{j}_{e} = read_b(bc{j}_{e} + k0);
        //@end
        //@end
        //@for i in 0..TM
        //@for j in 0..TN
        c{i}_{j} = acc4(c{i}_{j}, a{i}, b{j}_0, b{j}_1, b{j}_2, b{j}_3);
        //@end
        //@end
    }
    //@end
    //@if !AR
    let kfull = k4 - k4 % WGX;
    for (var k0 = 0u; k0 < kfull; k0 += WGX) {
        //@for i in 0..TM
        let al{i} = A[ar{i} + k0 + lane];
        //@end
        //@for s in 0..WGX
        {
            //@for i in 0..TM
            let a{i} = subgroupBroadcast(al{i}, {s}u);
            //@end
            //@for j in 0..TN
            //@for e in 0..4
            let b{j}_{e} = read_b(bc{j}_{e} + k0 + {s}u);
            //@end
            //@end
            //@for i in 0..TM
            //@for j in 0..TN
            c{i}_{j} = acc4(c{i}_{j}, a{i}, b{j}_0, b{j}_1, b{j}_2, b{j}_3);
            //@end
            //@end
        }
        //@end
    }
    //@end
    //@end
    //@if !SG
    let kfull = 0u;
    //@end
    for (var kk = kfull; kk < k4; kk++) {
        //@for i in 0..TM
        let a{i} = A[ar{i} + kk];
        //@end
        //@for j in 0..TN
        //@for e in 0..4
        let b{j}_{e} = read_b(bc{j}_{e} + kk);
        //@end
        //@end
        //@for i in 0..TM
        //@for j in 0..TN
        c{i}_{j} = acc4(c{i}_{j}, a{i}, b{j}_0, b{j}_1, b{j}_2, b{j}_3);
        //@end
        //@end
    }
    //@for i in 0..TM
    //@for j in 0..TN
    //@if C4
    store4(row0 + {i}u, (g0 + {j}u * WGX) * 4u, c_base, c{i}_{j});
    //@end
    //@if !C4
    store(row0 + {i}u, (g0 + {j}u * WGX) * 4u, c_base, c{i}_{j}.x);
    store(row0 + {i}u, (g0 + {j}u * WGX) * 4u + 1u, c_base, c{i}_{j}.y);
    store(row0 + {i}u, (g0 + {j}u * WGX) * 4u + 2u, c_base, c{i}_{j}.z);
    store(row0 + {i}u, (g0 + {j}u * WGX) * 4u + 3u, c_base, c{i}_{j}.w);
    //@end
    //@end
    //@end
}
