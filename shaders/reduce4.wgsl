// Pass 1 of reduce.wgsl's sums for inputs whose length is a multiple of 4 (arena chunks, most
// tensors): the span read as vec4, four times fewer load instructions (what CPU drivers are
// limited by). The same fixed spans, so the result is still bitwise reproducible.

struct Params { n: u32, in_off: u32, out_off: u32, cols: u32, scale: f32, nblocks: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> IN: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;

//@include wg_reduce

// OUT[out_off + g] = sum (or sum of squares, SQUARE) of IN[g*SPAN ..][..n] (n and SPAN in floats).
@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let start = g * (SPAN / 4u);
    let end = min(start + SPAN / 4u, p.n / 4u);
    var s = 0.0;
    for (var i = start + lid; i < end; i += WG) {
        let v = IN[i];
        if (SQUARE) { s += dot(v, v); } else { s += (v.x + v.y) + (v.z + v.w); }
    }
    let t = wg_sum(lid, s);
    if (lid == 0u) {
        OUT[p.out_off + g] = t;
    }
}
