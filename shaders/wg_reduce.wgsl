// Workgroup-wide reductions shared by the row kernels (included with //@include wg_reduce).
// A fixed tree over WG lanes (a power of two): the same inputs give bitwise the same result.
// Every lane of the workgroup must call these (uniform control flow).

var<workgroup> red: array<f32, WG>;

fn wg_reduce(lid: u32, v: f32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            if (is_max) { red[lid] = max(red[lid], red[lid + s]); } else { red[lid] += red[lid + s]; }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn wg_sum(lid: u32, v: f32) -> f32 {
    return wg_reduce(lid, v, false);
}
