// matmul_k4 (both operands contiguous along k, read as vec4) with A shared across the subgroup,
// for CPU drivers: lane l loads the vec4 A[row, 4 (k0 + l) ..] and subgroupBroadcast hands each
// of the SGS vec4s to every lane of the workgroup row, SGS times fewer A loads (see
// matmul_n4_sg.wgsl for the reasoning and the probe that selects it). Same Params, layout
// requirements, epilogue and per-output order of operations as matmul_k4.wgsl.
//@include matmul_common

@group(0) @binding(1) var<storage, read_write> A: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> B: array<vec4<f32>>;

fn read_b(i: u32) -> vec4<f32> {
    if (SAME_AB) { return A[i]; }
    return B[i];
}

// One-dimensional workgroups (subgroup builtins need them): invocation li is lane li % SGS of
// tile row li / SGS.
@compute @workgroup_size(SGS * WGY, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let lid = vec2<u32>(li % SGS, li / SGS);
    let zo = wid.z / p.batch_inner;
    let zi = wid.z % p.batch_inner;
    let a_base = (p.a_off + zo * p.a_bo + zi * p.a_bi) / 4u;
    let b_base = (p.b_off + zo * p.b_bo + zi * p.b_bi) / 4u;
    let c_base = p.c_off + zo * p.c_bo + zi * p.c_bi;
    let row0 = wid.y * (WGY * TM) + lid.y;
    let col0 = wid.x * (SGS * TN) + lid.x;
    let mlast = p.m - 1u;
    let nlast = p.n - 1u;
    let lane = lid.x;
    //@for i in 0..TM
    let ar{i} = a_base + min(row0 + {i}u * WGY, mlast) * (p.a_rs / 4u);
    //@end
    //@for j in 0..TN
    let bc{j} = b_base + min(col0 + {j}u * SGS, nlast) * (p.b_cs / 4u);
    //@end
    //@for i in 0..TM
    //@for j in 0..TN
    var c{i}_{j} = vec4<f32>(0.0);
    //@end
    //@end
    let k4 = p.k / 4u;
    let kfull = k4 - k4 % SGS;
    for (var k0 = 0u; k0 < kfull; k0 += SGS) {
        //@for i in 0..TM
        let al{i} = A[ar{i} + k0 + lane];
        //@end
        //@for s in 0..SGS
        {
            //@for i in 0..TM
            let a{i} = subgroupBroadcast(al{i}, {s}u);
            //@end
            //@for j in 0..TN
            let b{j} = read_b(bc{j} + k0 + {s}u);
            //@end
            //@for i in 0..TM
            //@for j in 0..TN
            c{i}_{j} = fma(a{i}, b{j}, c{i}_{j});
            //@end
            //@end
        }
        //@end
    }
    for (var kk = kfull; kk < k4; kk++) {
        //@for i in 0..TM
        let a{i} = A[ar{i} + kk];
        //@end
        //@for j in 0..TN
        let b{j} = read_b(bc{j} + kk);
        //@end
        //@for i in 0..TM
        //@for j in 0..TN
        c{i}_{j} = fma(a{i}, b{j}, c{i}_{j});
        //@end
        //@end
    }
    //@for i in 0..TM
    //@for j in 0..TN
    store(row0 + {i}u * WGY, col0 + {j}u * SGS, c_base, (c{i}_{j}.x + c{i}_{j}.y) + (c{i}_{j}.z + c{i}_{j}.w));
    //@end
    //@end
}
