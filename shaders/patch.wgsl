// Token assembly for vision transformers: the CLS token in front of each image's patch
// embeddings, plus position embeddings.
//   assemble:           X[b, s, c] = (s == 0 ? CLS[c] : PE[(b * np + s - 1), c]) + POS[s, c]
//   assemble_backward:  DPE[(b * np + s - 1), c] = DX[b, s, c]
//                       DPOS[s, c] += sum_b DX[b, s, c];  DCLS[c] += sum_b DX[b, 0, c]
// The batch sums run in a fixed order: deterministic, no atomics. One invocation per (s, c).

struct Params { batch: u32, seq: u32, cols: u32, _a: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> PE: array<f32>;
@group(0) @binding(3) var<storage, read_write> POS: array<f32>;
@group(0) @binding(4) var<storage, read_write> CLS: array<f32>;

@compute @workgroup_size(WG)
fn assemble(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    if (i >= p.seq * p.cols) { return; }
    let s = i / p.cols;
    let c = i % p.cols;
    let np = p.seq - 1u;
    for (var b = 0u; b < p.batch; b++) {
        var v = CLS[c];
        if (s > 0u) { v = PE[(b * np + s - 1u) * p.cols + c]; }
        X[(b * p.seq + s) * p.cols + c] = v + POS[s * p.cols + c];
    }
}

@compute @workgroup_size(WG)
fn assemble_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * WG + lid;
    if (i >= p.seq * p.cols) { return; }
    let s = i / p.cols;
    let c = i % p.cols;
    let np = p.seq - 1u;
    var sum = 0.0;
    for (var b = 0u; b < p.batch; b++) {
        let d = X[(b * p.seq + s) * p.cols + c];
        sum += d;
        if (s > 0u) { PE[(b * np + s - 1u) * p.cols + c] = d; }
    }
    POS[s * p.cols + c] += sum;
    if (s == 0u) { CLS[c] += sum; }
}
