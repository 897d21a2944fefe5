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
//
// A4 (with SG, where A is contiguous along k and 16-byte aligned: the NN products dY . W and
// P . V): lane l loads A as vec4s along k for tile rows l, l + WGX, ... (TMW = ceil(TM / WGX)
// of them; rows past the tile are clamped loads nobody reads), and row i's value at k0 + e reaches every lane as component e of load
// i / WGX broadcast from lane i % WGX: the same broadcasts per k with a quarter of the A loads
// (TMW vec4s per four k instead of TM scalars per WGX k), and fewer registers holding A.
//
// AM4 (with SG, where A is contiguous along m, i.e. stored transposed, 16-byte aligned, m and TM
// multiples of 4: the TN products dY^T . X): each subgroup row takes TM consecutive rows, whose
// values at one k are TMQ = TM / 4 vec4s. The lanes load them for KTR k at a time (NLD loads a
// lane, NLD WGX = TMQ KTR): vec4 f of a trip, for k offset f / TMQ and rows 4 (f % TMQ) ..
// + 3, is lane f % WGX's load f / WGX, and row i at offset t arrives as component i % 4 of vec4
// f = t TMQ + i / 4, broadcast: one vec4 load per lane per WGX / TMQ k instead of TM scalars per
// WGX k.
//
// PANEL (where B is wider than A is tall, n > m: dX = dY . W at a small batch): workgroups
// numbered down B's column panels instead of along A's row blocks, so that the workgroups that
// run one after another (and side by side on a CPU driver's threads) read the same k x WGX TN
// panel of B, the larger operand, and find it in the cache.
//
// PREFETCH (A4, CPU drivers): B's panel is walked down k at a stride of a whole row of B (6 KB
// for a 1536-wide W), which a CPU's prefetchers do not follow, so the first subgroup to walk a
// panel waited on memory at every trip (the later ones find it in the cache: lavapipe runs a
// workgroup's subgroups one after another). That subgroup touches the panel's cache lines PFD
// rows ahead, one vec4 load per lane per line of a trip; the values are summed into `touched`,
// kept alive by a never-taken branch on `p.zero` (always 0), and never reach C.
//
// BAND (part of AM4, CPU drivers): TN walks dY down k at a stride of a whole row (6 KB at the
// FFN), each subgroup reading only its own TM rows there, two cache lines of each k row: every
// subgroup waits on memory at every trip (a page per k row, which no prefetcher crosses), and a
// trip's long body leaves the out-of-order core no room to overlap one trip's misses with the
// next.
// Before its walk the first subgroup touches the whole workgroup's band of A (its WGY TM rows,
// all k) and B's panel, BAL and BBL loads per k row (one a cache line), k rows spread over the
// lanes: a burst of independent misses the core overlaps, after which the walks find the band
// in the cache. The values go into `touched`, as for PREFETCH.
//@include matmul_common

//@if AV4
@group(0) @binding(1) var<storage, read_write> A: array<vec4<f32>>;
fn read_a(i: u32) -> f32 {
    return A[i / 4u][i % 4u];
}
//@end
//@if !AV4
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
fn read_a(i: u32) -> f32 {
    return A[i];
}
//@end
@group(0) @binding(2) var<storage, read_write> B: array<vec4<f32>>;

//@if SG
// One-dimensional workgroups (subgroup builtins need them): invocation li is lane li % WGX of
// tile row li / WGX.
@compute @workgroup_size(WGX * WGY, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let lid = vec2<u32>(li % WGX, li / WGX);
//@end
//@if !SG
@compute @workgroup_size(WGX, WGY, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
//@end
    //@if PANEL
    let wl = wg.x + wg.y * nwg.x;
    let wid = vec3<u32>(wl / nwg.y, wl % nwg.y, wg.z);
    //@end
    //@if !PANEL
    let wid = wg;
    //@end
    let zo = wid.z / p.batch_inner;
    let zi = wid.z % p.batch_inner;
    let a_base = p.a_off + zo * p.a_bo + zi * p.a_bi;
    let b_base = (p.b_off + zo * p.b_bo + zi * p.b_bi) / 4u;
    let c_base = p.c_off + zo * p.c_bo + zi * p.c_bi;
    // Each workgroup row takes TM consecutive rows (for AM4, the vec4s of one k); a row wholly
    // past the matrix (the last block of 192 rows in 32-row tiles) leaves at once instead of
    // computing the clamped last row TM times. It is one subgroup with SG, so the subgroup
    // operations below still see every lane of theirs.
    let row0 = wid.y * (WGY * TM) + lid.y * TM;
    if (row0 >= p.m) {
        return;
    }
    // Column groups of four: group g covers columns 4g .. 4g + 3.
    let g0 = wid.x * (WGX * TN) + lid.x;
    let mlast = p.m - 1u;
    let glast = p.n / 4u - 1u;
    let brs = p.b_rs / 4u;
    //@for i in 0..TM
    let ar{i} = a_base + min(row0 + {i}u, mlast) * p.a_rs;
    //@end
    //@for j in 0..TN
    let bc{j} = b_base + min(g0 + {j}u * WGX, glast);
    //@end
    //@for i in 0..TM
    //@for j in 0..TN
    var c{i}_{j} = vec4<f32>(0.0);
    //@end
    //@end
    //@if TOUCHED
    var touched = vec4<f32>(0.0);
    //@end
    //@if SG
    let lane = lid.x;
    //@if A4
    // k and every offset and stride of A are multiples of 4 (the Rust side checks).
    let kfull = p.k;
    //@for j in 0..TMW
    let ra{j} = (a_base + min(row0 + {j}u * WGX + lane, mlast) * p.a_rs) / 4u;
    //@end
    // Four k a trip, the four B loads of each column group first, then row by row the four
    // products into each sum in turn: on a CPU driver the sums live on the stack (TM x TN
    // vec4s are far more than the registers), and four FMAs per load and store of a sum ran
    // NN 1.1-1.2x faster than one (eight k a trip: slower, more B values spilled).
    //@if PREFETCH
    // A trip's four rows of the panel are WGX TN / 4 cache lines each: lane l's load u touches
    // line f / 4 of row f % 4, f = u WGX + l.
    let panel = b_base + wid.x * (WGX * TN);
    //@end
    for (var k0 = 0u; k0 < kfull; k0 += 4u) {
        //@if PREFETCH
        if (lid.y == 0u) {
            //@for u in 0..PFB
            touched += B[min(panel + 4u * (({u}u * WGX + lane) / 4u), b_base + glast) + min(k0 + PFD + ({u}u * WGX + lane) % 4u, p.k - 1u) * brs];
            //@end
        }
        //@end
        //@for j in 0..TMW
        let al{j} = A[ra{j} + k0 / 4u];
        //@end
        //@for e in 0..4
        //@for j in 0..TN
        let b{j}_{e} = B[bc{j} + (k0 + {e}u) * brs];
        //@end
        //@end
        //@for i in 0..TM
        {
            //@for e in 0..4
            let a{e} = vec4<f32>(subgroupBroadcast(al{i/WGX}[{e}], {i%WGX}u));
            //@end
            //@for j in 0..TN
            //@for e in 0..4
            c{i}_{j} = fma(a{e}, b{j}_{e}, c{i}_{j});
            //@end
            //@end
        }
        //@end
    }
    //@end
    //@if AM4
    // A trip covers KTR k: the TMQ x KTR vec4s of the tile's rows there, numbered f = t TMQ + q
    // (k offset t, row quad q), are the NLD loads of the WGX lanes, load u of lane l being
    // f = u WGX + l. Four k a trip where the lanes share them evenly (the 32-row tile: four
    // loads a lane; one a trip there ran no faster than the scalar loads, eight slower; 8-row
    // heads: one), else the fewest k that they do; the sums updated KTR times in turn, as for A4
    // (1.1-1.2x).
    let kfull = p.k - p.k % KTR;
    let acs = p.a_cs / 4u;
    //@for u in 0..NLD
    let ao{u} = (a_base + min(row0 + 4u * (({u}u * WGX + lane) % TMQ), p.m - 4u)) / 4u + (({u}u * WGX + lane) / TMQ) * acs;
    //@end
    // BAND (top).
    if (lid.y == 0u) {
        let band = (a_base + wid.y * (WGY * TM)) / 4u;
        let alast = (a_base + p.m - 4u) / 4u;
        let panel = b_base + wid.x * (WGX * TN);
        for (var kk = lane; kk < p.k; kk += WGX) {
            // Each k row's lines from the one its band (panel) starts in, the last clamped to
            // the row (buffers start on a line: bindings are 256-byte aligned).
            let ar = band + kk * acs;
            let br = panel + kk * brs;
            //@for q in 0..BAL
            touched += A[min((ar & ~3u) + 4u * {q}u, alast + kk * acs)];
            //@end
            //@for q in 0..BBL
            touched += B[min((br & ~3u) + 4u * {q}u, b_base + glast + kk * brs)];
            //@end
        }
    }
    for (var k0 = 0u; k0 < kfull; k0 += KTR) {
        //@for u in 0..NLD
        let al{u} = A[ao{u} + k0 * acs];
        //@end
        //@for t in 0..KTR
        //@for j in 0..TN
        let b{j}_{t} = B[bc{j} + (k0 + {t}u) * brs];
        //@end
        //@end
        //@for i in 0..TM
        {
            //@for t in 0..KTR
            //@let f = t * TMQ + i / 4
            let a{t} = vec4<f32>(subgroupBroadcast(al{f/WGX}[{i%4}], {f%WGX}u));
            //@end
            //@for j in 0..TN
            //@for t in 0..KTR
            c{i}_{j} = fma(a{t}, b{j}_{t}, c{i}_{j});
            //@end
            //@end
        }
        //@end
    }
    //@end
    //@if !AV4
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
    //@end
    //@if TOUCHED
    if (p.zero != 0u) {
        c0_0 += touched;
    }
    //@end
    //@if !SG
    let kfull = 0u;
    //@end
    for (var kk = kfull; kk < p.k; kk++) {
        //@for i in 0..TM
        let a{i} = vec4<f32>(read_a(ar{i} + kk * p.a_cs));
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
