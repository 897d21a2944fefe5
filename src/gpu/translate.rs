//! Every kernel, translated for every platform wgpu targets (native only): naga validates the
//! WGSL of a [`KernelSpec`] and writes it as SPIR-V (Vulkan), GLSL ES 3.1 compute (GL), Metal
//! Shading Language (Metal) and HLSL (DX12), and the entry point is checked against the limits
//! of the strictest common targets, so a shader that one of them would refuse is found here
//! rather than on a user's Mac or Windows machine.
//!
//! Kernels that use subgroup operations (the matmuls that share A across a subgroup, chosen
//! only on devices that offer subgroups and pass a layout probe) are validated with the
//! subgroup capability and written for the targets whose wgpu backends offer subgroups:
//! SPIR-V 1.3 (Vulkan 1.1), MSL 2.2 and HLSL shader model 6.0; wgpu's GL backend has no subgroups,
//! so they have no GLSL.

use super::kernel::{expand, KernelSpec};
use crate::error::{Error, Result};
use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};
use naga::{AddressSpace, Module, ShaderStage};

/// Limits every target shares: WebGPU's defaults (what a browser grants without asking) and
/// Apple's per-stage buffer count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortableLimits {
    /// WebGPU `maxStorageBuffersPerShaderStage` (default 8).
    pub storage_buffers: u32,
    /// WebGPU `maxUniformBuffersPerShaderStage` (default 12).
    pub uniform_buffers: u32,
    /// Metal: buffers of all kinds per stage (31).
    pub buffers: u32,
    /// WebGPU `maxComputeWorkgroupStorageSize` (16 KiB; Apple allows 32 KiB).
    pub workgroup_bytes: u32,
    /// WebGPU `maxComputeInvocationsPerWorkgroup` (256).
    pub invocations: u32,
    /// WebGPU `maxComputeWorkgroupSizeX/Y/Z` (256, 256, 64).
    pub workgroup_size: [u32; 3],
}

impl Default for PortableLimits {
    fn default() -> Self {
        PortableLimits {
            storage_buffers: 8,
            uniform_buffers: 12,
            buffers: 31,
            workgroup_bytes: 16384,
            invocations: 256,
            workgroup_size: [256, 256, 64],
        }
    }
}

/// One kernel in every target language.
#[derive(Clone, Debug)]
pub struct Translation {
    /// `shader::entry {constants}` (the pipeline's label).
    pub label: String,
    pub wgsl: String,
    pub spirv: Vec<u32>,
    /// Empty for a subgroup kernel (no GL device runs one).
    pub glsl: String,
    pub msl: String,
    pub hlsl: String,
    /// What the entry point uses, for the limits: storage and uniform buffers, workgroup
    /// memory in bytes, workgroup size.
    pub storage_buffers: u32,
    pub uniform_buffers: u32,
    pub workgroup_bytes: u32,
    /// Whether the kernel uses subgroup operations (and so needs SPIR-V 1.3 / Vulkan 1.1, HLSL
    /// shader model 6.0, and a device that offers subgroups).
    pub subgroups: bool,
    pub workgroup_size: [u32; 3],
}

fn fail(label: &str, target: &str, message: String) -> Error {
    Error::Gpu { context: format!("translating {label} to {target}"), message }
}

/// Validate `spec`'s WGSL with naga and translate its entry point to SPIR-V, GLSL, MSL and
/// HLSL, checking it against `limits`.
pub fn translate(spec: &KernelSpec, limits: &PortableLimits) -> Result<Translation> {
    let label = format!("{}::{} {:?}", spec.shader, spec.entry, spec.defs);
    let wgsl = expand(spec)?;
    let module: Module =
        naga::front::wgsl::parse_str(&wgsl).map_err(|e| fail(&label, "naga IR", e.emit_to_string(&wgsl)))?;
    // No optional capability (what every backend supports), else subgroups (see the module
    // docs); any other capability is refused.
    let (info, subgroups): (ModuleInfo, bool) =
        match Validator::new(ValidationFlags::all(), Capabilities::empty()).validate(&module) {
            Ok(info) => (info, false),
            Err(plain) => Validator::new(ValidationFlags::all(), Capabilities::SUBGROUP)
                .subgroup_stages(ShaderStages::COMPUTE)
                .subgroup_operations(SubgroupOperationSet::all())
                .validate(&module)
                .map(|info| (info, true))
                .map_err(|sg| {
                    let (plain, sg) = (plain.emit_to_string(&wgsl), sg.emit_to_string(&wgsl));
                    fail(&label, "naga IR (validation)", format!("{plain}\nwith the subgroup capability: {sg}"))
                })?,
        };
    let (ep_index, ep) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, e)| e.name == spec.entry && e.stage == ShaderStage::Compute)
        .ok_or_else(|| fail(&label, "naga IR", format!("no compute entry point {}", spec.entry)))?;
    // Resources the entry point uses.
    let used = info.get_entry_point(ep_index);
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).map_err(|e| fail(&label, "layout", e.to_string()))?;
    let (mut storage, mut uniform, mut wg_bytes) = (0u32, 0u32, 0u32);
    for (h, g) in module.global_variables.iter() {
        if used[h].is_empty() {
            continue;
        }
        match g.space {
            AddressSpace::Storage { .. } => storage += 1,
            AddressSpace::Uniform => uniform += 1,
            AddressSpace::WorkGroup => wg_bytes += layouter[g.ty].size,
            _ => {}
        }
    }
    let size = ep.workgroup_size;
    let over = |what: &str, got: u32, max: u32| -> Result<()> {
        if got > max {
            return Err(fail(&label, "the portable limits", format!("{what} is {got}, above the limit {max}")));
        }
        Ok(())
    };
    over("storage buffers per stage (WebGPU default)", storage, limits.storage_buffers)?;
    over("uniform buffers per stage (WebGPU default)", uniform, limits.uniform_buffers)?;
    over("buffers per stage (Metal)", storage + uniform, limits.buffers)?;
    over("workgroup memory in bytes (WebGPU default)", wg_bytes, limits.workgroup_bytes)?;
    over("invocations per workgroup (WebGPU default)", size.iter().product(), limits.invocations)?;
    for (i, axis) in ["x", "y", "z"].iter().enumerate() {
        over(&format!("workgroup size {axis} (WebGPU default)"), size[i], limits.workgroup_size[i])?;
    }

    let spv_options = spv::Options { lang_version: if subgroups { (1, 3) } else { (1, 0) }, ..Default::default() };
    let spirv = spv::write_vec(
        &module,
        &info,
        &spv_options,
        Some(&spv::PipelineOptions { shader_stage: ShaderStage::Compute, entry_point: spec.entry.to_string() }),
    )
    .map_err(|e| fail(&label, "SPIR-V", e.to_string()))?;

    let mut glsl_text = String::new();
    let glsl_options =
        glsl::Options { version: glsl::Version::Embedded { version: 310, is_webgl: false }, ..Default::default() };
    let glsl_pipeline = glsl::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: spec.entry.to_string(),
        multiview: None,
    };
    if !subgroups {
        glsl::Writer::new(&mut glsl_text, &module, &info, &glsl_options, &glsl_pipeline, Default::default())
            .and_then(|mut w| w.write().map(|_| ()))
            .map_err(|e| fail(&label, "GLSL ES 3.10", e.to_string()))?;
    }

    let msl_pipeline = msl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, spec.entry.to_string())),
        ..Default::default()
    };
    // SIMD-group functions need MSL 2.0 on macOS, 2.2 on iOS.
    let msl_options = msl::Options { lang_version: if subgroups { (2, 2) } else { (1, 0) }, ..Default::default() };
    let (msl_text, _) = msl::write_string(&module, &info, &msl_options, &msl_pipeline)
        .map_err(|e| fail(&label, "MSL", e.to_string()))?;

    let mut hlsl_text = String::new();
    let shader_model = if subgroups { hlsl::ShaderModel::V6_0 } else { hlsl::ShaderModel::V5_1 };
    let hlsl_options = hlsl::Options { shader_model, ..Default::default() };
    let hlsl_pipeline = hlsl::PipelineOptions { entry_point: Some((ShaderStage::Compute, spec.entry.to_string())) };
    hlsl::Writer::new(&mut hlsl_text, &hlsl_options, &hlsl_pipeline)
        .write(&module, &info, None)
        .map_err(|e| fail(&label, "HLSL", e.to_string()))?;

    Ok(Translation {
        label,
        wgsl,
        spirv,
        glsl: glsl_text,
        msl: msl_text,
        hlsl: hlsl_text,
        storage_buffers: storage,
        uniform_buffers: uniform,
        workgroup_bytes: wg_bytes,
        workgroup_size: size,
        subgroups,
    })
}

impl Translation {
    /// A file name stem for this kernel: `shader.entry.<hash of the constants>`.
    pub fn stem(&self, spec: &KernelSpec) -> String {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in format!("{:?}", spec.defs).bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        format!("{}.{}.{:012x}", spec.shader, spec.entry, h & 0xffff_ffff_ffff)
    }

    /// Write `STEM.wgsl`, `.spv`, `.comp` (GLSL; none for a subgroup kernel), `.metal` and
    /// `.hlsl` into `dir`.
    pub fn write(&self, spec: &KernelSpec, dir: &std::path::Path) -> Result<()> {
        let stem = self.stem(spec);
        let io = |p: std::path::PathBuf, bytes: &[u8]| {
            std::fs::write(&p, bytes).map_err(|source| Error::Io { path: p.display().to_string(), source })
        };
        io(dir.join(format!("{stem}.wgsl")), self.wgsl.as_bytes())?;
        io(dir.join(format!("{stem}.spv")), &self.spirv.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>())?;
        if !self.subgroups {
            io(dir.join(format!("{stem}.comp")), self.glsl.as_bytes())?;
        }
        io(dir.join(format!("{stem}.metal")), self.msl.as_bytes())?;
        io(dir.join(format!("{stem}.hlsl")), self.hlsl.as_bytes())
    }
}
