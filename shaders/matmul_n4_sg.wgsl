// matmul_n4 with A shared across the subgroup, for CPU drivers (lavapipe: subgroups of SGS = 8
// lanes). The TM rows of A an invocation reads are the same for every lane of its workgroup
// row, so instead of each lane loading the same A element, lane l loads A[row, k0 + l] and the
// SGS values reach every lane by subgroupBroadcast (a register shuffle on a SIMD driver, where
// every load is a per-lane loop): SGS times fewer A loads, which pays for taller tiles. Chosen
// only where a probe has shown that subgroups are runs of SGS consecutive invocations
// (`Gpu::subgroup_rows`). Same Params, layout requirements and epilogue as matmul_n4.wgsl, and
// the same order of operations per output (identical results).
//@include matmul_common

@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> B: array<vec4<f32>>;

// One-dimensional workgroups (subgroup builtins need them): invocation li is lane li % SGS of
// tile row li / SGS.
@compute @workgroup_size(SGS * WGY, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let lid = vec2<u32>(li % SGS, li / SGS);
    let zo = wid.z / p.batch_inner;
    let zi = wid.z % p.batch_inner;
    let a_base = p.a_off + zo * p.a_bo + zi * p.a_bi;
    let b_base = (p.b_off + zo * p.b_bo + zi * p.b_bi) / 4u;
    let c_base = p.c_off + zo * p.c_bo + zi * p.c_bi;
    let row0 = wid.y * (WGY * TM) + lid.y;
    let g0 = wid.x * (SGS * TN) + lid.x;
    let mlast = p.m - 1u;
    let glast = p.n / 4u - 1u;
    let brs = p.b_rs / 4u;
    let lane = lid.x;
    //@for i in 0..TM
    let ar{i} = a_base + min(row0 + {i}u * WGY, mlast) * p.a_rs;
    //@end
    //@for j in 0..TN
    let bc{j} = b_base + min(g0 + {j}u * SGS, glast);
    //@end
    //@for i in 0..TM
    //@for j in 0..TN
    var c{i}_{j} = vec4<f32>(0.0);
    //@end
    //@end
    let kfull = p.k - p.k % SGS;
    for (var k0 = 0u; k0 < kfull; k0 += SGS) {
        //@for i in 0..TM
        let al{i} = A[ar{i} + (k0 + lane) * p.a_cs];
        //@end
        //@for s in 0..SGS
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
    store(row0 + {i}u * WGY, (g0 + {j}u * SGS) * 4u, c_base, c{i}_{j}.x);
    store(row0 + {i}u * WGY, (g0 + {j}u * SGS) * 4u + 1u, c_base, c{i}_{j}.y);
    store(row0 + {i}u * WGY, (g0 + {j}u * SGS) * 4u + 2u, c_base, c{i}_{j}.z);
    store(row0 + {i}u * WGY, (g0 + {j}u * SGS) * 4u + 3u, c_base, c{i}_{j}.w);
    //@end
    //@end
}
