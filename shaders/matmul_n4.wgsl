// Variant of matmul.wgsl for a B contiguous along n (b_cs = 1: x . W with W stored [k, n], the
// backward products dX = dY . W and dW = dY^T . X of Hugging Face Linear layers, and P . V):
// B is read as vec4 along n, so each invocation computes TM rows x TN vec4 column groups with
// TM scalar loads of A and TN vec4 loads of B per k — the load count is what CPU drivers are
// limited by (lavapipe.md). A keeps general strides (row- or column-major). Requires n, b_off,
// b_rs, b_bo and b_bi to be multiples of 4 (the Rust side checks). Same Params and epilogue as
// matmul.wgsl; B indices below are in vec4 units.
//
// SG (CPU drivers, lavapipe: subgroups of WGX = 8 lanes): A shared across the subgroup. The TM
// rows of A an invocation reads are the same for every lane of its workgroup row, so instead of
// each lane loading the same A element, lane l loads A[row, k0 + l] and the WGX values reach
// every lane by subgroupBroadcast (a register shuffle on a SIMD driver, where every load is a
// per-lane loop): WGX times fewer A loads, which pays for taller tiles. Chosen only where a
// probe has shown that subgroups are runs of WGX consecutive invocations (`Gpu::subgroup_rows`);
// the same order of operations per output as without (identical results).
//@include matmul_common

@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> B: array<vec4<f32>>;

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
    let a_base = p.a_off + zo * p.a_bo + zi * p.a_bi;
    let b_base = (p.b_off + zo * p.b_bo + zi * p.b_bi) / 4u;
    let c_base = p.c_off + zo * p.c_bo + zi * p.c_bi;
    let row0 = wid.y * (WGY * TM) + lid.y;
    // Column groups of four: group g covers columns 4g .. 4g + 3.
    let g0 = wid.x * (WGX * TN) + lid.x;
    let mlast = p.m - 1u;
    let glast = p.n / 4u - 1u;
    let brs = p.b_rs / 4u;
    //@for i in 0..TM
    let ar{i} = a_base + min(row0 + {i}u * WGY, mlast) * p.a_rs;
    //@end
    //@for j in 0..TN
    let bc{j} = b_base + min(g0 + {j}u * WGX, glast);
    //@end
    //@for i in 0..TM
    //@for j in 0..TN
    var c{i}_{j} = vec4<f32>(0.0);
    //@end
    //@end
    //@if SG
    let lane = lid.x;
    let kfull = p.k - p.k % WGX;
    for (var k0 = 0u; k0 < kfull; k0 += WGX) {
        //@for i in 0..TM
        let al{i} = A[ar{i} + (k0 + lane) * p.a_cs];
        //@end
        //@for s in 0..WGX
        {
            //@for i in 0..TM
            let a{i} = vec4<f32>(subgroupBroadcast(al{i}, {s}u));
            //@end
            //@for j in 0..TN
            let b{j} = B[bc{j} + (k0 + {s}u) * brs];
            //@end
            //@for i in 0..TM
            //@for j in 0..TN
            c{i}_{j} = fma(a{i}, b{j}, c{i}_{j});
            //@end
            //@end
        }
        //@end
    }
    //@end
    //@if !SG
    let kfull = 0u;
    //@end
    for (var kk = kfull; kk < p.k; kk++) {
        //@for i in 0..TM
        let a{i} = vec4<f32>(A[ar{i} + kk * p.a_cs]);
        //@end
        //@for j in 0..TN
        let b{j} = B[bc{j} + kk * brs];
        //@end
        //@for i in 0..TM
        //@for j in 0..TN
        c{i}_{j} = fma(a{i}, b{j}, c{i}_{j});
        //@end
        //@end
    }
    //@for i in 0..TM
    //@for j in 0..TN
    //@if C4
    store4(row0 + {i}u * WGY, (g0 + {j}u * WGX) * 4u, c_base, c{i}_{j});
    //@end
    //@if !C4
    store(row0 + {i}u * WGY, (g0 + {j}u * WGX) * 4u, c_base, c{i}_{j}.x);
    store(row0 + {i}u * WGY, (g0 + {j}u * WGX) * 4u + 1u, c_base, c{i}_{j}.y);
    store(row0 + {i}u * WGY, (g0 + {j}u * WGX) * 4u + 2u, c_base, c{i}_{j}.z);
    store(row0 + {i}u * WGY, (g0 + {j}u * WGX) * 4u + 3u, c_base, c{i}_{j}.w);
    //@end
    //@end
    //@end
}
