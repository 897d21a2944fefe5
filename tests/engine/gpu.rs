use super::*;
use tramway::gpu::ArenaBuilder;
use tramway::Error;

#[test]
fn tensors_beyond_the_binding_limit_are_refused_clearly() {
    let limit = gpu().max_binding_bytes();
    let n = (limit / 4 + 1) as usize;
    match gpu().zeros(&[n]) {
        Err(Error::Limit { limit_name, .. }) => {
            assert_eq!(limit_name, "max_storage_buffer_binding_size")
        }
        other => panic!("expected a limit error, got {other:?}"),
    }
    let mut ab = ArenaBuilder::new();
    ab.add("wte", &[n]);
    let e = ab.build(gpu(), "params").unwrap_err().to_string();
    assert!(e.contains("wte") && e.contains("max_storage_buffer_binding_size"), "{e}");
}

#[test]
fn upload_of_wrong_length_is_an_error() {
    let t = gpu().zeros(&[2, 3]).unwrap();
    let e = gpu().write_f32(&t, &[1.0; 5]).unwrap_err().to_string();
    assert!(e.contains("5 values") && e.contains("[2, 3]"), "{e}");
}

#[test]
fn recorder_copy_zero_and_many_dispatches_in_one_submit() {
    let a = up(&[1.0, 2.0, 3.0]);
    let b = gpu().zeros(&[3]).unwrap();
    let c = up(&[5.0, 5.0, 5.0]);
    let mut rc = rec();
    rc.copy(&a, &b).unwrap();
    for _ in 0..100 {
        tramway::ops::elementwise::axpby(&mut rc, 1.0, &a, 1.0, &b).unwrap();
    }
    rc.zero(&c);
    assert_eq!(rc.len(), 102);
    rc.submit().unwrap();
    assert_eq!(down(&b), vec![101.0, 202.0, 303.0]);
    assert_eq!(down(&c), vec![0.0; 3]);
}

#[test]
fn kernel_expansion_unrolls_loops() {
    use tramway::gpu::{expand, KernelSpec};
    let src = expand(
        &KernelSpec::new("matmul", "main", 5)
            .u("TM", 2)
            .u("TN", 3)
            .u("WGX", 8)
            .u("WGY", 8)
            .u("EPI", 0)
            .b("HAS_BIAS", false)
            .b("STORE_PRE", false)
            .b("ACC", false)
            .b("C4", false),
    )
    .unwrap();
    assert!(src.contains("var c1_2 = 0.0;") && !src.contains("c2_0") && !src.contains("//@for"));
    // `//@if NAME` keeps a block where the bool constant is true, `//@if !NAME` where false: the
    // subgroup builtins reach only the SG variant.
    // A read as scalars (a4 0), as vec4s along k (1) or along m (2).
    let n4v = |sg: Option<bool>, c4: bool, a4: u32| {
        let tm = if a4 == 0 { 2 } else { 4 };
        let mut spec = KernelSpec::new("matmul_n4", "main", 5)
            .u("TM", tm)
            .u("TN", 1)
            .u("WGX", 4)
            .u("WGY", 2)
            .u("EPI", 0)
            .b("HAS_BIAS", false)
            .b("STORE_PRE", false)
            .b("ACC", false)
            .b("C4", c4)
            .b("A4", a4 == 1)
            .b("AM4", a4 == 2)
            .b("AV4", a4 > 0)
            .u("TMW", if a4 == 1 { 1 } else { 0 })
            .u("TMQ", 1)
            .u("KTR", if a4 == 2 { 16 } else { 1 })
            .u("NLD", if a4 == 2 { 4 } else { 0 })
            .b("PANEL", a4 == 1)
            .b("PREFETCH", a4 == 1)
            .u("BAL", 1)
            .u("BBL", 1)
            .b("TOUCHED", a4 > 0)
            .u("PFD", 8)
            .u("PFB", if a4 == 1 { 1 } else { 0 });
        if let Some(sg) = sg {
            spec = spec.b("SG", sg);
        }
        expand(&spec)
    };
    let n4c = |sg: Option<bool>, c4: bool| n4v(sg, c4, 0);
    let n4 = |sg: Option<bool>| n4c(sg, false);
    // Row i of the tile: component i % 4 (along k: k0 + e) of lane i % WGX's load i / WGX; along
    // m, component i % 4 of vec4 f = t TMQ + i / 4 (k0 + t), lane f % WGX's load f / WGX: with
    // one row quad (TMQ 1) and 4 lanes, a trip of KTR = 16 k takes NLD = 4 loads a lane, and
    // k0 + 15 is lane 3's last load.
    let along_k = n4v(Some(true), false, 1).unwrap();
    assert!(along_k.contains("subgroupBroadcast(al0[3], 3u)") && along_k.contains("A: array<vec4<f32>>"), "{along_k}");
    // PANEL: workgroups numbered down the column panels; PREFETCH: with one column group of 4
    // lanes, a panel row is one cache line and lane l's one load touches row k0 + PFD + l.
    assert!(along_k.contains("let wid = vec3<u32>(wl / nwg.y, wl % nwg.y, wg.z);"), "{along_k}");
    assert!(
        along_k.contains("min(k0 + PFD + (0u * WGX + lane) % 4u, p.k - 1u) * brs]")
            && !along_k.contains("(1u * WGX + lane)")
    );
    assert!(along_k.contains("if (p.zero != 0u) {"), "{along_k}");
    let along_m = n4v(Some(true), false, 2).unwrap();
    assert!(along_m.contains("let wid = wg;") && !along_m.contains("k0 + PFD"), "{along_m}");
    // BAND: before the walks the first subgroup touches one line of the band of A and of B's
    // panel per k row (BAL = BBL = 1), and the values are kept alive the same way.
    assert!(
        along_m.contains("touched += A[min((ar & ~3u) + 4u * 0u, alast + kk * acs)];")
            && along_m.contains("touched += B[min((br & ~3u) + 4u * 0u, b_base + glast + kk * brs)];")
            && !along_m.contains("4u * 1u, alast")
            && along_m.contains("if (p.zero != 0u) {"),
        "{along_m}"
    );
    assert!(along_m.contains("subgroupBroadcast(al3[3], 3u)") && !along_m.contains("al4"), "{along_m}");
    assert!(along_m.contains("subgroupBroadcast(al2[1], 1u)") && !along_m.contains("//@let"), "{along_m}");
    let with = n4(Some(true)).unwrap();
    let without = n4(Some(false)).unwrap();
    // C4: the vec4 epilogue, C bound as vec4s; otherwise four scalar stores per accumulator.
    let c4 = n4c(Some(true), true).unwrap();
    assert!(c4.contains("store4(row0 + 1u,") && c4.contains("C: array<vec4<f32>>") && !c4.contains("c0_0.x);"));
    assert!(with.contains("C: array<f32>"), "{with}");
    assert!(with.contains("c0_0.x);") && !with.contains("store4("), "{with}");
    assert!(with.contains("subgroupBroadcast(al1, 3u)") && !with.contains("subgroupBroadcast(al1, 4u)"), "{with}");
    assert!(with.contains("local_invocation_index") && !with.contains("let kfull = 0u;"), "{with}");
    assert!(!without.contains("subgroupBroadcast(a") && without.contains("let kfull = 0u;"), "{without}");
    let directive = |t: &str| t.lines().any(|l| l.trim_start().starts_with("//@"));
    assert!(!directive(&with) && !directive(&without));
    let e = n4(None).unwrap_err().to_string();
    assert!(e.contains("matmul_n4") && e.contains("//@if SG"), "{e}");
}

/// WebGPU refuses two writable bindings of one byte range, so no dispatch may bind one on any
/// backend: the recorder refuses it, naming the kernel and the slots. Absent optional inputs
/// get a placeholder block per slot, and one tensor as both matmul operands is bound once.
#[test]
fn overlapping_writable_bindings_are_refused() {
    use tramway::ops::elementwise::add;
    use tramway::ops::matmul::{matmul, Matmul};
    let x = up(&[1.0, 2.0, 3.0, 4.0]);
    let out = up(&[0.0; 4]);
    let mut r = rec();
    let e = add(&mut r, &x, &out, &out, 1.0, 1.0).unwrap_err().to_string();
    assert!(e.contains("elementwise") && e.contains("overlap") && e.contains("bindings 2 and 3"), "{e}");
    // Two views of one arena chunk that share no byte are fine; x + x (both inputs one range) is not.
    let e = add(&mut r, &x, &x, &out, 1.0, 1.0).unwrap_err().to_string();
    assert!(e.contains("bindings 1 and 2"), "{e}");
    // X·Xᵀ: one binding, B read through A's (and no bias, no pre-activation: two placeholders).
    let m = up_shape(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let g = up_shape(&[0.0; 4], &[2, 2]);
    matmul(&mut r, &Matmul::new(&m, false, &m, true, &g).unwrap()).unwrap();
    r.submit().unwrap();
    assert_eq!(down(&g), vec![14.0, 32.0, 32.0, 77.0]);
}

/// `TRAMWAY_ADAPTER_INDEX` (what a Slurm array task sets from its allocated GPU) names a
/// hardware GPU by index; one beyond them is refused with the list of adapters.
#[test]
fn an_adapter_index_beyond_the_hardware_gpus_is_refused() {
    let o = GpuOptions { adapter_index: Some(99), ..GpuOptions::from_env().unwrap() };
    let e = match Gpu::new_blocking(o) {
        Ok(_) => panic!("index 99 accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("index 99") && e.contains("TRAMWAY_ADAPTER_INDEX") && e.contains("all adapters"), "{e}");
}

/// A loop over batches with fresh tensors each time (embedding texts of varying lengths) must
/// not keep the dropped tensors' memory: a cached bind group holds its buffers, so the cache
/// lets go of every entry that binds a dropped tensor, while entries of live tensors stay.
#[test]
fn dropped_tensors_leave_the_bind_group_cache() {
    let own = tramway::gpu::Gpu::new_blocking(tramway::gpu::GpuOptions::from_env().unwrap()).unwrap();
    let (ka, kb) = (own.from_f32(&[1.0; 8], &[8]).unwrap(), own.zeros(&[8]).unwrap());
    let submit_with = |n: usize| {
        let x = own.from_f32(&vec![2.0; n], &[n]).unwrap();
        let y = own.zeros(&[n]).unwrap();
        let mut r = own.recorder();
        tramway::ops::elementwise::axpby(&mut r, 1.0, &ka, 0.0, &kb).unwrap();
        tramway::ops::elementwise::axpby(&mut r, 1.0, &x, 0.0, &y).unwrap();
        r.submit().unwrap();
        own.read_f32_blocking(&y).unwrap()
    };
    assert_eq!(submit_with(5), vec![2.0; 5]);
    let after_one = own.cached_bind_groups();
    assert!(after_one >= 2, "each dispatch caches its bind group");
    let created = own.created_bind_groups();
    for n in 6..40 {
        assert_eq!(submit_with(n), vec![2.0; n]);
        // The live pair's group is reused, not rebuilt: one new group per submit, the fresh pair's.
        assert_eq!(own.created_bind_groups(), created + (n - 5) as u64);
    }
    // Each submit's fresh pair is gone by the next submit (the last one's is still there); the
    // live pair's entry is reused.
    assert_eq!(own.cached_bind_groups(), after_one, "bind groups of dropped tensors are released");
    // A view of a live tensor keeps its buffer's entries too.
    let view = ka.reshape(&[2, 4]).unwrap();
    drop(ka);
    let mut r = own.recorder();
    tramway::ops::elementwise::axpby(&mut r, 1.0, &view, 0.0, &kb.reshape(&[2, 4]).unwrap()).unwrap();
    let before_view = own.created_bind_groups();
    r.submit().unwrap();
    // The last fresh pair's entry went at this submit; the live pair's stayed and was reused.
    assert_eq!(own.cached_bind_groups(), after_one - 1);
    assert_eq!(own.created_bind_groups(), before_view, "the views bind the same ranges: no new group");
    assert_eq!(own.read_f32_blocking(&kb).unwrap(), vec![1.0; 8]);
}
