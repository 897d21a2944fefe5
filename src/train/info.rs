//! `tramway info`: every adapter the compiled-in backends see, each opened and checked (a
//! matmul of each family and a sum against the CPU), then the chosen one's limits and features.

use crate::error::Result;
use crate::gpu::{enumerate, Gpu, GpuOptions};

/// The report, as text.
pub fn report() -> Result<String> {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let opts = GpuOptions::from_env()?;
    let all = pollster::block_on(enumerate(opts.backends.unwrap_or(wgpu::Backends::all())));
    line(format!(
        "adapters ({}), each opened and checked (a matmul of each family, a sum, against the CPU):",
        all.len()
    ));
    for a in &all {
        let i = &a.info;
        line(format!("  - {} [{:?}, {:?}] driver: {} {}", i.name, i.backend, i.device_type, i.driver, i.driver_info));
        let o = GpuOptions {
            backends: Some(wgpu::Backends::from(i.backend)),
            adapter: Some(i.name.clone()),
            ..opts.clone()
        };
        let t0 = std::time::Instant::now();
        let r = Gpu::new_blocking(o).and_then(|g| pollster::block_on(crate::ops::self_check(&g)));
        match r {
            Ok(()) => line(format!("    works ({:.1} s to open, compile and check)", t0.elapsed().as_secs_f64())),
            Err(e) => line(format!("    does not work: {e}")),
        }
    }
    let gpu = Gpu::new_blocking(opts)?;
    let i = gpu.adapter_info();
    line(format!("chosen: {} [{:?}, {:?}]", i.name, i.backend, i.device_type));
    line("  (set TRAMWAY_BACKEND=vulkan|metal|dx12|gl or TRAMWAY_ADAPTER=<name substring> to choose)".into());
    let l = gpu.limits();
    line("limits:".into());
    let rows: [(&str, u64); 12] = [
        ("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size),
        ("max_buffer_size", l.max_buffer_size),
        ("max_storage_buffers_per_shader_stage", l.max_storage_buffers_per_shader_stage as u64),
        ("max_uniform_buffer_binding_size", l.max_uniform_buffer_binding_size),
        ("max_compute_workgroup_storage_size", l.max_compute_workgroup_storage_size as u64),
        ("max_compute_invocations_per_workgroup", l.max_compute_invocations_per_workgroup as u64),
        ("max_compute_workgroup_size_x", l.max_compute_workgroup_size_x as u64),
        ("max_compute_workgroup_size_y", l.max_compute_workgroup_size_y as u64),
        ("max_compute_workgroups_per_dimension", l.max_compute_workgroups_per_dimension as u64),
        ("max_bind_groups", l.max_bind_groups as u64),
        ("min_storage_buffer_offset_alignment", l.min_storage_buffer_offset_alignment as u64),
        ("min_uniform_buffer_offset_alignment", l.min_uniform_buffer_offset_alignment as u64),
    ];
    for (k, v) in rows {
        line(format!("  {k:<40} {v}"));
    }
    let chosen = all.iter().find(|a| a.info.name == i.name && a.info.backend == i.backend);
    if let Some(a) = chosen {
        line("adapter features:".into());
        let f = a.features;
        for (name, flag) in [
            ("SHADER_F16", wgpu::Features::SHADER_F16),
            ("SUBGROUP", wgpu::Features::SUBGROUP),
            ("TIMESTAMP_QUERY", wgpu::Features::TIMESTAMP_QUERY),
            ("SHADER_INT64", wgpu::Features::SHADER_INT64),
            ("SHADER_FLOAT32_ATOMIC", wgpu::Features::SHADER_FLOAT32_ATOMIC),
            ("PIPELINE_CACHE", wgpu::Features::PIPELINE_CACHE),
        ] {
            line(format!("  {name:<40} {}", if f.contains(flag) { "yes" } else { "no" }));
        }
        line(format!("  (all features: {:?})", f));
    }
    line(format!(
        "device features requested by tramway: {:?} (kernels use core WGSL f32/u32 only; timestamps are for --profile)",
        gpu.features()
    ));
    Ok(out)
}
