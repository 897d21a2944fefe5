// Counter-based random numbers: Philox4x32-10 keyed by a 64-bit seed, with the counter
// (block, offset_lo, offset_hi, 0). Element e uses word e % 4 of block e / 4, so a stream is
// fully determined by (seed, offset) and can be regenerated anywhere (dropout backward
// recomputes its mask instead of storing it). 32x32->64 products are built from 16-bit halves
// because WGSL has no 64-bit integers without an optional feature.

struct Params { n: u32, seed_lo: u32, seed_hi: u32, off_lo: u32, off_hi: u32, a: f32, b: f32, c: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> IN: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;

fn mulhi(a: u32, b: u32) -> u32 {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let hl = a_hi * b_lo;
    let lh = a_lo * b_hi;
    let hh = a_hi * b_hi;
    let cross = (ll >> 16u) + (hl & 0xFFFFu) + lh;
    return hh + (hl >> 16u) + (cross >> 16u);
}

fn philox(block: u32) -> vec4<u32> {
    var c = vec4<u32>(block, p.off_lo, p.off_hi, 0u);
    var k = vec2<u32>(p.seed_lo, p.seed_hi);
    for (var r = 0u; r < 10u; r++) {
        let hi0 = mulhi(0xD2511F53u, c.x);
        let lo0 = 0xD2511F53u * c.x;
        let hi1 = mulhi(0xCD9E8D57u, c.z);
        let lo1 = 0xCD9E8D57u * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// [0, 1) with 24 bits.
fn unit(x: u32) -> f32 {
    return f32(x >> 8u) * (1.0 / 16777216.0);
}

fn block_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return linear_group(wid, nwg) * WG + lid;
}

// OUT[e] = a + (b - a) * u
@compute @workgroup_size(WG)
fn fill_uniform(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let blk = block_index(wid, nwg, lid);
    let r = philox(blk);
    for (var l = 0u; l < 4u; l++) {
        let e = blk * 4u + l;
        if (e < p.n) { OUT[e] = p.a + (p.b - p.a) * unit(r[l]); }
    }
}

// OUT[e] = a + b * z, z ~ N(0, 1) by Box-Muller on word pairs (0, 1) and (2, 3).
@compute @workgroup_size(WG)
fn fill_normal(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let blk = block_index(wid, nwg, lid);
    let r = philox(blk);
    var z: array<f32, 4>;
    for (var h = 0u; h < 2u; h++) {
        let u1 = f32((r[2u * h] >> 8u) + 1u) * (1.0 / 16777216.0);
        let u2 = unit(r[2u * h + 1u]);
        let rad = sqrt(-2.0 * log(u1));
        let th = 6.283185307179586 * u2;
        z[2u * h] = rad * cos(th);
        z[2u * h + 1u] = rad * sin(th);
    }
    for (var l = 0u; l < 4u; l++) {
        let e = blk * 4u + l;
        if (e < p.n) { OUT[e] = p.a + p.b * z[l]; }
    }
}

// Dropout with drop probability a and keep scale c = 1 / (1 - a): OUT = keep ? IN * c : 0.
// The backward is the same map applied to the incoming gradient (ACC adds into OUT).
@compute @workgroup_size(WG)
fn dropout(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let blk = block_index(wid, nwg, lid);
    let r = philox(blk);
    for (var l = 0u; l < 4u; l++) {
        let e = blk * 4u + l;
        if (e < p.n) {
            var v = select(0.0, IN[e] * p.c, unit(r[l]) >= p.a);
            if (ACC) { v += OUT[e]; }
            OUT[e] = v;
        }
    }
}
