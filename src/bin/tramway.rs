//! The `tramway` command line.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use tramway::gpu::{enumerate, Gpu, GpuOptions};

#[derive(Parser)]
#[command(
    name = "tramway",
    version,
    about = "Fine-tune transformers on any GPU wgpu reaches"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every GPU adapter, the one tramway would choose, its limits and features.
    Info,
}

fn info() -> tramway::Result<()> {
    let opts = GpuOptions::from_env()?;
    let all = pollster::block_on(enumerate(opts.backends.unwrap_or(wgpu::Backends::all())));
    println!("adapters ({}):", all.len());
    for a in &all {
        let i = &a.info;
        println!(
            "  - {} [{:?}, {:?}] driver: {} {}",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        );
    }
    let gpu = Gpu::new_blocking(opts)?;
    let i = gpu.adapter_info();
    println!("chosen: {} [{:?}, {:?}]", i.name, i.backend, i.device_type);
    println!("  (set TRAMWAY_BACKEND=vulkan|metal|dx12|gl or TRAMWAY_ADAPTER=<name substring> to choose)");
    let l = gpu.limits();
    println!("limits:");
    let rows: [(&str, u64); 12] = [
        (
            "max_storage_buffer_binding_size",
            l.max_storage_buffer_binding_size,
        ),
        ("max_buffer_size", l.max_buffer_size),
        (
            "max_storage_buffers_per_shader_stage",
            l.max_storage_buffers_per_shader_stage as u64,
        ),
        (
            "max_uniform_buffer_binding_size",
            l.max_uniform_buffer_binding_size,
        ),
        (
            "max_compute_workgroup_storage_size",
            l.max_compute_workgroup_storage_size as u64,
        ),
        (
            "max_compute_invocations_per_workgroup",
            l.max_compute_invocations_per_workgroup as u64,
        ),
        (
            "max_compute_workgroup_size_x",
            l.max_compute_workgroup_size_x as u64,
        ),
        (
            "max_compute_workgroup_size_y",
            l.max_compute_workgroup_size_y as u64,
        ),
        (
            "max_compute_workgroups_per_dimension",
            l.max_compute_workgroups_per_dimension as u64,
        ),
        ("max_bind_groups", l.max_bind_groups as u64),
        (
            "min_storage_buffer_offset_alignment",
            l.min_storage_buffer_offset_alignment as u64,
        ),
        (
            "min_uniform_buffer_offset_alignment",
            l.min_uniform_buffer_offset_alignment as u64,
        ),
    ];
    for (k, v) in rows {
        println!("  {k:<40} {v}");
    }
    let chosen = all
        .iter()
        .find(|a| a.info.name == i.name && a.info.backend == i.backend);
    if let Some(a) = chosen {
        println!("adapter features:");
        let f = a.features;
        for (name, flag) in [
            ("SHADER_F16", wgpu::Features::SHADER_F16),
            ("SUBGROUP", wgpu::Features::SUBGROUP),
            ("TIMESTAMP_QUERY", wgpu::Features::TIMESTAMP_QUERY),
            ("SHADER_INT64", wgpu::Features::SHADER_INT64),
            (
                "SHADER_FLOAT32_ATOMIC",
                wgpu::Features::SHADER_FLOAT32_ATOMIC,
            ),
            ("PIPELINE_CACHE", wgpu::Features::PIPELINE_CACHE),
        ] {
            println!(
                "  {name:<40} {}",
                if f.contains(flag) { "yes" } else { "no" }
            );
        }
        println!("  (all features: {:?})", f);
    }
    println!(
        "device features requested by tramway: {:?} (core WGSL f32/u32 only)",
        gpu.features()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Info => info(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
