//! The GPU runtime: adapter choice, device, tensors and arenas, kernels, recording and readback.
//!
//! Everything here works on native backends (Vulkan, Metal, DX12, GL) and on WebGPU in a browser:
//! no threads, no files, and readback is a future (native callers use the `*_blocking` helpers).

mod arena;
mod kernel;
mod readback;
mod recorder;
mod tensor;

pub use arena::{Arena, ArenaBuilder, Part};
pub use kernel::{expand, Def, Kernel, KernelSpec};
#[cfg(not(target_arch = "wasm32"))]
pub mod translate;
pub use recorder::{grid_1d, Params, Recorder};
pub use tensor::{DType, Tensor};

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Every binding offset we create is a multiple of this, the largest value any adapter may demand
/// for `min_storage_buffer_offset_alignment` / `min_uniform_buffer_offset_alignment`.
pub const ALIGN: u64 = 256;

/// Storage binding slots that can hold a placeholder at once: the placeholder buffer has one
/// block per slot, so two absent inputs of a dispatch never share a range.
pub(crate) const DUMMY_SLOTS: u64 = 16;

/// What the profiler needs for GPU timestamps between the commands of one submit.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) const PROFILE_FEATURES: wgpu::Features = wgpu::Features::TIMESTAMP_QUERY
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);

/// One row of a profile ([`Gpu::profile_stop`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileRow {
    /// `shader::entry`, `copy` or `clear`.
    pub kernel: String,
    /// Empty in the per-kernel table; in the per-shape table, what the dispatches computed (a
    /// matmul's layout and shape).
    pub detail: String,
    pub calls: u64,
    pub seconds: f64,
    /// Floating-point operations (matmuls: 2·m·n·k per product), 0 where not counted.
    pub flops: u64,
    /// Bytes of the bound buffers (an upper bound on the traffic of one call), summed.
    pub bytes: u64,
}

/// A rate with two decimals, or three significant digits below 1 (a one-row matmul's 0.004
/// GFLOP/s must not print as 0.00).
fn three_digits(v: f64) -> String {
    if v >= 1.0 || v == 0.0 {
        format!("{v:.2}")
    } else {
        let decimals = (2.0 - v.log10().floor()).clamp(2.0, 12.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// A profile as a markdown table: calls, milliseconds, share of the total, GFLOP/s where FLOPs
/// are counted, GB/s of the bound bytes.
pub fn profile_table(rows: &[ProfileRow]) -> String {
    let total: f64 = rows.iter().map(|r| r.seconds).sum::<f64>().max(1e-12);
    let mut out =
        String::from("| kernel | calls | ms | share | GFLOP/s | GB/s (bytes bound) |\n|---|---|---|---|---|---|\n");
    for r in rows {
        let rate = |n: u64| if n > 0 { three_digits(n as f64 / r.seconds.max(1e-12) / 1e9) } else { String::new() };
        let (gflops, gbs) = (rate(r.flops), rate(r.bytes));
        out.push_str(&format!(
            "| {} | {} | {:.3} | {:.1} % | {} | {} |\n",
            r.kernel,
            r.calls,
            r.seconds * 1e3,
            100.0 * r.seconds / total,
            gflops,
            gbs
        ));
    }
    out.push_str(&format!(
        "| total | {} | {:.3} | 100 % | | |\n",
        rows.iter().map(|r| r.calls).sum::<u64>(),
        total * 1e3
    ));
    out
}

/// The per-shape rows of a profile ([`Gpu::profile_stop_detailed`]) as a markdown table: the
/// kernel, what its dispatches computed (a matmul's layout — A then B, `N` as stored, `T`
/// transposed, `S` strided — and batch x m x n x k), calls, milliseconds, share of `step`
/// seconds, GFLOP/s.
pub fn profile_shape_table(rows: &[ProfileRow], step: f64) -> String {
    let mut out = String::from(
        "| kernel | layout, shape | calls | ms | share of the step | GFLOP/s |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let gflops =
            if r.flops > 0 { three_digits(r.flops as f64 / r.seconds.max(1e-12) / 1e9) } else { String::new() };
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.1} % | {} |\n",
            r.kernel,
            r.detail,
            r.calls,
            r.seconds * 1e3,
            100.0 * r.seconds / step.max(1e-12),
            gflops
        ));
    }
    out
}

/// How to choose and open the device.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Restrict to these backends (`TRAMWAY_BACKEND`); `None` tries all compiled in.
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive substring of the adapter name (`TRAMWAY_ADAPTER`).
    pub adapter: Option<String>,
    /// Keep naga's runtime bounds checks in shaders (`TRAMWAY_CHECKED=1`). Off by default: our
    /// kernels are validated by the test-suite and clamp their own indices.
    pub checked_shaders: bool,
    /// Treat bindings as at most this many bytes (`TRAMWAY_MAX_BINDING`), below the adapter's
    /// limit: to rehearse a smaller device (WebGPU's default is 128 MiB) or test split tensors.
    pub max_binding: Option<u64>,
    /// The matmul kernel family (`TRAMWAY_MATMUL=register|tiled`): `Some(true)` the
    /// workgroup-tiled kernels, `Some(false)` the register-blocked ones, `None` by adapter
    /// (tiled on GPUs, register-blocked on CPU drivers).
    pub tiled_matmul: Option<bool>,
    /// The register-blocked matmul tile (`TRAMWAY_MATMUL_TILE=TMxTNxWGXxWGY`): rows and columns
    /// per invocation, workgroup x and y (benchmark sweeps); `None`: the default per shape.
    pub matmul_tile: Option<[u32; 4]>,
    /// Never take the vec4 matmul kernel (`TRAMWAY_MATMUL_SCALAR=1`; benchmarks).
    pub scalar_matmul: bool,
    /// Never share A across a subgroup in the register-blocked matmuls
    /// (`TRAMWAY_MATMUL_SUBGROUPS=0`; benchmarks and tests of the plain kernels). By default the
    /// subgroup kernels run where [`Gpu::subgroup_rows`] holds.
    pub no_subgroup_matmul: bool,
    /// Store the B-along-n matmul's results one element at a time instead of as vec4s
    /// (`TRAMWAY_MATMUL_SCALAR_EPILOGUE=1`; benchmarks).
    pub scalar_epilogue: bool,
    /// Load A in the subgroup matmuls without spreading its rows over the lanes: the B-along-n
    /// kernel one element at a time, the both-along-k kernel a vec4 of every row in every lane
    /// (`TRAMWAY_MATMUL_PLAIN_A=1`; benchmarks).
    pub plain_a: bool,
    /// The N-th hardware GPU (discrete or integrated, in the driver's order) rather than the
    /// best-ranked adapter (`TRAMWAY_ADAPTER_INDEX`; a Slurm array task sets it from the GPU it
    /// was given, the first entry of `CUDA_VISIBLE_DEVICES`).
    pub adapter_index: Option<usize>,
}

impl GpuOptions {
    /// Options from `TRAMWAY_BACKEND` (vulkan|metal|dx12|gl|webgpu), `TRAMWAY_ADAPTER` (name
    /// substring) and `TRAMWAY_CHECKED` (1 to keep shader bounds checks).
    pub fn from_env() -> Result<Self> {
        let mut o = GpuOptions::default();
        if let Ok(v) = std::env::var("TRAMWAY_BACKEND") {
            o.backends = Some(parse_backend(&v)?);
        }
        if let Ok(v) = std::env::var("TRAMWAY_ADAPTER") {
            if !v.is_empty() {
                o.adapter = Some(v);
            }
        }
        if let Ok(v) = std::env::var("TRAMWAY_ADAPTER_INDEX") {
            if !v.is_empty() {
                o.adapter_index = Some(v.trim().parse().map_err(|_| Error::BadSetting {
                    name: "TRAMWAY_ADAPTER_INDEX",
                    value: v.clone(),
                    expected: "the index of a hardware GPU (0, 1, ...)".into(),
                })?);
            }
        }
        if let Ok(v) = std::env::var("TRAMWAY_CHECKED") {
            o.checked_shaders = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Ok(v) = std::env::var("TRAMWAY_MATMUL") {
            o.tiled_matmul = match v.as_str() {
                "tiled" => Some(true),
                "register" => Some(false),
                "" | "auto" => None,
                _ => {
                    return Err(Error::BadSetting {
                        name: "TRAMWAY_MATMUL",
                        value: v,
                        expected: "tiled, register or auto".into(),
                    })
                }
            };
        }
        if let Ok(v) = std::env::var("TRAMWAY_MATMUL_TILE") {
            let t: Vec<u32> = v.split('x').filter_map(|x| x.parse().ok()).collect();
            match t[..] {
                [tm, tn, wx, wy] if t.iter().all(|&x| x > 0) && tm * tn <= 64 && wx * wy <= 256 => {
                    o.matmul_tile = Some([tm, tn, wx, wy])
                }
                _ => {
                    return Err(Error::BadSetting {
                        name: "TRAMWAY_MATMUL_TILE",
                        value: v,
                        expected: "TMxTNxWGXxWGY, positive, TM*TN <= 64 and WGX*WGY <= 256 (e.g. 8x4x8x8)".into(),
                    })
                }
            }
        }
        if let Ok(v) = std::env::var("TRAMWAY_MATMUL_SCALAR") {
            o.scalar_matmul = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Ok(v) = std::env::var("TRAMWAY_MATMUL_SUBGROUPS") {
            o.no_subgroup_matmul = matches!(v.as_str(), "0" | "false" | "no");
        }
        if let Ok(v) = std::env::var("TRAMWAY_MATMUL_SCALAR_EPILOGUE") {
            o.scalar_epilogue = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Ok(v) = std::env::var("TRAMWAY_MATMUL_PLAIN_A") {
            o.plain_a = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Ok(v) = std::env::var("TRAMWAY_MAX_BINDING") {
            let bytes = v.trim().parse::<u64>().ok().filter(|&b| b >= ALIGN);
            o.max_binding = Some(bytes.ok_or_else(|| Error::BadSetting {
                name: "TRAMWAY_MAX_BINDING",
                value: v.clone(),
                expected: "a byte count of at least 256".into(),
            })?);
        }
        Ok(o)
    }
}

/// Parse a backend name as used by `TRAMWAY_BACKEND`.
pub fn parse_backend(v: &str) -> Result<wgpu::Backends> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => wgpu::Backends::VULKAN,
        "metal" | "mtl" => wgpu::Backends::METAL,
        "dx12" | "d3d12" => wgpu::Backends::DX12,
        "gl" | "gles" | "opengl" => wgpu::Backends::GL,
        "webgpu" | "browser" => wgpu::Backends::BROWSER_WEBGPU,
        "all" | "" => wgpu::Backends::all(),
        _ => {
            return Err(Error::BadSetting {
                name: "TRAMWAY_BACKEND",
                value: v.to_string(),
                expected: "one of vulkan, metal, dx12, gl, webgpu".into(),
            })
        }
    })
}

const NO_ADAPTER_HINT: &str = "tramway needs a GPU driver reachable through Vulkan, Metal, DX12, \
GL or WebGPU. On Debian/Ubuntu without a GPU, install the CPU Vulkan driver (lavapipe): \
`sudo apt-get install mesa-vulkan-drivers libvulkan1`. Set TRAMWAY_BACKEND / TRAMWAY_ADAPTER \
to choose among several adapters; `tramway info` lists them.";

/// The opened device and everything cached on it. Cheap to share by reference; all caches are
/// behind mutexes so tests and apps may use one `Gpu` from several threads on native targets.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    checked: bool,
    max_binding: Option<u64>,
    tiled_matmul: Option<bool>,
    matmul_tile: Option<[u32; 4]>,
    scalar_matmul: bool,
    no_subgroup_matmul: bool,
    scalar_epilogue: bool,
    plain_a: bool,
    /// [`Gpu::subgroup_rows`], probed once.
    subgroup_rows: std::sync::OnceLock<Option<u32>>,
    kernels: Mutex<HashMap<KernelSpec, Arc<Kernel>>>,
    /// Uniform buffers for dispatch parameters, reused across submits (queue order makes a
    /// `write_buffer` after a submit safe).
    uniform_pool: Mutex<Vec<wgpu::Buffer>>,
    /// Bytes of every tensor and arena buffer created so far (never decreases): what a run
    /// plans on the device, measured rather than estimated.
    allocated: std::sync::atomic::AtomicU64,
    /// Bound where a kernel's optional input is absent.
    pub(crate) dummy: wgpu::Buffer,
    dummy_live: Arc<()>,
    errors: Arc<Mutex<Vec<String>>>,
    pub(crate) bind_cache: recorder::BindCache,
    scratch: Mutex<HashMap<u32, Tensor>>,
    /// While profiling: per kernel (or copy/clear), calls, seconds, FLOPs and bytes bound.
    profile: Mutex<Option<HashMap<String, ProfileRow>>>,
    /// On the web, compile errors arrive later: each new kernel's error scope, awaited by
    /// [`Gpu::check`].
    #[cfg(target_arch = "wasm32")]
    pub(crate) pending: Mutex<Vec<(String, kernel::ScopeFuture)>>,
}

#[cfg(not(target_arch = "wasm32"))]
/// Rank adapters: a real GPU first, then virtual, then CPU; native APIs before GL.
fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let be = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::BrowserWebGpu => 1,
        _ => 2,
    };
    (ty, be)
}

/// Without a display server (no Wayland, no X), Mesa's Vulkan device-select layer tries to
/// connect to one and prints `error: XDG_RUNTIME_DIR is invalid or not set` twice per instance:
/// noise that reads as a failure. wgpu chooses among the adapters itself, so the layer is
/// switched off through its own variable (`NODEVICE_SELECT=1`) unless the user set it — and
/// only while the process has a single thread, where changing the environment is safe (a
/// program that creates its `Gpu` after starting threads keeps the message).
#[cfg(target_os = "linux")]
fn quiet_headless_vulkan() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let headless = std::env::var_os("WAYLAND_DISPLAY").is_none() && std::env::var_os("DISPLAY").is_none();
        let single_thread = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("Threads:")).map(|l| l[8..].trim() == "1"))
            .unwrap_or(false);
        if headless && single_thread && std::env::var_os("NODEVICE_SELECT").is_none() {
            std::env::set_var("NODEVICE_SELECT", "1");
        }
    });
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    #[cfg(target_os = "linux")]
    quiet_headless_vulkan();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// One adapter as `tramway info` shows it.
pub struct AdapterReport {
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
}

/// Every adapter the compiled-in backends can see (native only: browsers expose one adapter).
#[cfg(not(target_arch = "wasm32"))]
pub async fn enumerate(backends: wgpu::Backends) -> Vec<AdapterReport> {
    let inst = instance(backends);
    let mut v: Vec<AdapterReport> = inst
        .enumerate_adapters(backends)
        .await
        .into_iter()
        .map(|a| AdapterReport { info: a.get_info(), limits: a.limits(), features: a.features() })
        .collect();
    v.sort_by_key(|r| adapter_rank(&r.info));
    v
}

async fn choose_adapter(opts: &GpuOptions) -> Result<wgpu::Adapter> {
    let backends = opts.backends.unwrap_or(wgpu::Backends::PRIMARY);
    let inst = instance(backends);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let mut adapters = inst.enumerate_adapters(backends).await;
        if adapters.is_empty() && opts.backends.is_none() {
            // GL last: it lacks f16 and subgroups, and probing it prints EGL noise on headless
            // machines, so it is only tried when no native API has an adapter.
            adapters = instance(wgpu::Backends::GL).enumerate_adapters(wgpu::Backends::GL).await;
        }
        let names: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
            })
            .collect();
        if let Some(want) = &opts.adapter {
            let w = want.to_lowercase();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&w));
            if adapters.is_empty() {
                return Err(Error::NoAdapter {
                    detail: format!(
                        " whose name contains {want:?} (TRAMWAY_ADAPTER); available: {}",
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    ),
                    hint: NO_ADAPTER_HINT.into(),
                });
            }
        }
        if let Some(i) = opts.adapter_index {
            let hw = |a: &wgpu::Adapter| {
                matches!(a.get_info().device_type, wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu)
            };
            adapters.retain(hw);
            if i >= adapters.len() {
                return Err(Error::NoAdapter {
                    detail: format!(
                        " with index {i} among the hardware GPUs (TRAMWAY_ADAPTER_INDEX): there are {}; all adapters: {}",
                        adapters.len(),
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    ),
                    hint: NO_ADAPTER_HINT.into(),
                });
            }
            return Ok(adapters.swap_remove(i));
        }
        adapters.sort_by_key(|a| adapter_rank(&a.get_info()));
        adapters.into_iter().next().ok_or_else(|| Error::NoAdapter {
            detail: match opts.backends {
                Some(b) => format!(" for backends {b:?} (TRAMWAY_BACKEND)"),
                None => String::new(),
            },
            hint: NO_ADAPTER_HINT.into(),
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        inst.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::NoAdapter { detail: format!(": {e}"), hint: NO_ADAPTER_HINT.into() })
    }
}

impl Gpu {
    /// Choose an adapter (a real GPU first) and open it with the adapter's own limits.
    pub async fn new(opts: GpuOptions) -> Result<Self> {
        let adapter = choose_adapter(&opts).await?;
        let info = adapter.get_info();
        // Our kernels need only core WGSL (f32, u32); optional features are requested where the
        // adapter offers them, and only kernels chosen after a check use them: timestamps
        // between commands, for the profiler, and subgroups, for the matmul kernels that share
        // A across a subgroup once `subgroup_rows` has probed the layout. Native only (browsers
        // coarsen timestamps, and their subgroups are not probed).
        #[cfg(not(target_arch = "wasm32"))]
        let features = adapter.features() & (PROFILE_FEATURES | wgpu::Features::SUBGROUP);
        #[cfg(target_arch = "wasm32")]
        let features = wgpu::Features::empty();
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tramway"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|source| Error::RequestDevice { adapter: info.name.clone(), source })?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        // One 256-byte block per storage binding slot (see `Recorder::dispatch`).
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: ALIGN * DUMMY_SLOTS,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let gpu = Gpu {
            device,
            queue,
            info,
            limits,
            features,
            checked: opts.checked_shaders,
            max_binding: opts.max_binding,
            tiled_matmul: opts.tiled_matmul,
            matmul_tile: opts.matmul_tile,
            scalar_matmul: opts.scalar_matmul,
            no_subgroup_matmul: opts.no_subgroup_matmul,
            scalar_epilogue: opts.scalar_epilogue,
            plain_a: opts.plain_a,
            subgroup_rows: Default::default(),
            kernels: Mutex::default(),
            uniform_pool: Mutex::default(),
            allocated: Default::default(),
            dummy,
            dummy_live: Arc::new(()),
            errors,
            bind_cache: Default::default(),
            scratch: Mutex::default(),
            profile: Mutex::default(),
            #[cfg(target_arch = "wasm32")]
            pending: Mutex::default(),
        };
        // CPU drivers choose the subgroup matmuls by the probe: run it now, before any work
        // (its first use would otherwise fall inside a recording).
        if gpu.info.device_type == wgpu::DeviceType::Cpu {
            let _ = gpu.subgroup_rows();
        }
        Ok(gpu)
    }

    /// [`Gpu::new`] for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: GpuOptions) -> Result<Self> {
        pollster::block_on(Self::new(opts))
    }

    /// The adapter this device was opened on.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
    /// The limits the device was opened with (the adapter's own).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }
    /// Optional features enabled on the device.
    pub fn features(&self) -> wgpu::Features {
        self.features
    }
    /// The underlying wgpu device, for apps that embed tramway next to their own GPU work.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }
    /// The underlying wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The matmul family asked for ([`GpuOptions::tiled_matmul`]).
    pub fn tiled_matmul(&self) -> Option<bool> {
        self.tiled_matmul
    }
    /// The register tile asked for ([`GpuOptions::matmul_tile`]).
    pub fn matmul_tile(&self) -> Option<[u32; 4]> {
        self.matmul_tile
    }
    /// Whether the vec4 matmul kernel is off ([`GpuOptions::scalar_matmul`]).
    pub fn scalar_matmul(&self) -> bool {
        self.scalar_matmul
    }
    /// Whether the subgroup matmul kernels are off ([`GpuOptions::no_subgroup_matmul`]).
    pub fn no_subgroup_matmul(&self) -> bool {
        self.no_subgroup_matmul
    }
    /// Whether the matmul epilogue stores one element at a time ([`GpuOptions::scalar_epilogue`]).
    pub fn scalar_epilogue(&self) -> bool {
        self.scalar_epilogue
    }
    /// Whether the subgroup matmuls load A without spreading its rows over the lanes
    /// ([`GpuOptions::plain_a`]).
    pub fn plain_a(&self) -> bool {
        self.plain_a
    }

    /// The subgroup size where the subgroups of a one-dimensional workgroup are its runs of
    /// consecutive invocations (`subgroup_invocation_id = local_invocation_index % size`), which
    /// the matmul kernels that share A across a subgroup assume; `None` where the device has no
    /// subgroups, their size varies, or a probe dispatch (run once, on first use) finds another
    /// layout. Neither Vulkan nor WebGPU promises that mapping; lavapipe (8 lanes) has it.
    pub fn subgroup_rows(&self) -> Option<u32> {
        *self.subgroup_rows.get_or_init(|| self.probe_subgroup_rows())
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn probe_subgroup_rows(&self) -> Option<u32> {
        let size = self.info.subgroup_min_size;
        if !self.features.contains(wgpu::Features::SUBGROUP)
            || size != self.info.subgroup_max_size
            || !(4..=64).contains(&size)
        {
            return None;
        }
        let rows = crate::ops::matmul::SUBGROUP_TILE.2;
        let groups = 3u32;
        let Ok(out) = self.zeros_u32(&[(groups * size * rows) as usize]) else { return None };
        // Errors pending from earlier work are the caller's: set aside while the probe's own
        // submit checks for errors, then put back.
        let pending = std::mem::take(&mut *self.errors.lock().unwrap_or_else(|e| e.into_inner()));
        let run = || -> Result<bool> {
            let spec = KernelSpec::new("probe_subgroup", "main", 1).u("SGS", size).u("ROWS", rows);
            let kernel = self.kernel(&spec)?;
            let mut rec = self.recorder();
            rec.dispatch(&kernel, Params::new().u(0), &[&out], [groups, 1, 1])?;
            rec.submit()?;
            Ok(self.read_u32_blocking(&out)?.iter().all(|&v| v == 1))
        };
        // A failed probe (a driver that rejects the kernel) only means the plain kernels run.
        let ok = matches!(run(), Ok(true));
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        let mut restored = pending;
        restored.append(&mut errors);
        *errors = restored;
        drop(errors);
        // The probe's buffer is not a run's memory (`allocated_bytes`).
        self.allocated.fetch_sub(out.buffer.size(), std::sync::atomic::Ordering::Relaxed);
        ok.then_some(size)
    }

    #[cfg(target_arch = "wasm32")]
    fn probe_subgroup_rows(&self) -> Option<u32> {
        None
    }

    /// Largest byte size one storage binding (hence one tensor) may have on this device.
    pub fn max_binding_bytes(&self) -> u64 {
        let b = self.limits.max_storage_buffer_binding_size;
        b.min(self.limits.max_buffer_size).min(self.max_binding.unwrap_or(u64::MAX)) / ALIGN * ALIGN
    }

    /// Errors wgpu reported outside an error scope since the last call (validation of recorded
    /// commands, device loss). Returned as one [`Error::Gpu`].
    pub fn take_error(&self, context: &str) -> Result<()> {
        let mut e = self.errors.lock().unwrap();
        if e.is_empty() {
            Ok(())
        } else {
            let message = e.join("\n");
            e.clear();
            Err(Error::Gpu { context: context.to_string(), message })
        }
    }

    /// Await every error the device may still report for work recorded so far: on the web,
    /// where a browser validates compiles and submits asynchronously, the error scopes of new
    /// kernels (an error names the kernel) and then any uncaptured error; on native backends,
    /// which report synchronously, the same as [`Gpu::take_error`]. Call it after a submit to
    /// have a failure surface there rather than at a later, unrelated call.
    pub async fn check(&self, context: &str) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        {
            let pending = std::mem::take(&mut *self.pending.lock().unwrap());
            for (label, scope) in pending {
                if let Some(e) = scope.await {
                    return Err(Error::Gpu { context: format!("compiling {label}"), message: e.to_string() });
                }
            }
        }
        self.take_error(context)
    }

    /// Wait until all submitted work is done (native); a no-op on the web, where the browser
    /// drives the queue.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu { context: "waiting for the queue".into(), message: e.to_string() })
    }

    /// Start profiling, until [`Gpu::profile_stop`]: every submit times each of its commands.
    /// Where the adapter has timestamp queries inside encoders and passes (lavapipe and most
    /// native drivers), the commands run in one submit as usual with a GPU timestamp between
    /// each two,
    /// so the times add up to the step; elsewhere each command is submitted alone, waited for
    /// and timed on the wall clock (the submit overhead then inflates the total). Native only.
    pub fn profile_start(&self) {
        // The subgroup probe (run once per device) is never part of a profile.
        let _ = self.subgroup_rows();
        *self.profile.lock().unwrap() = Some(HashMap::new());
    }

    /// Stop profiling and return one row per kernel (`shader::entry`), copy and clear, slowest
    /// first.
    pub fn profile_stop(&self) -> Vec<ProfileRow> {
        self.profile_stop_detailed().0
    }

    /// [`Gpu::profile_stop`], and one row per kernel and detail (a matmul's layout and shape:
    /// `NT 192x1536x384`), slowest first: the same dispatches summed by what they computed.
    pub fn profile_stop_detailed(&self) -> (Vec<ProfileRow>, Vec<ProfileRow>) {
        let (mut detailed, mut rows): (Vec<ProfileRow>, Vec<ProfileRow>) =
            self.profile.lock().unwrap().take().unwrap_or_default().into_values().partition(|r| !r.detail.is_empty());
        rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        detailed.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        (rows, detailed)
    }

    /// Whether the profiler times commands by GPU timestamps (else one submit per command).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn timestamped_profile(&self) -> bool {
        self.features.contains(PROFILE_FEATURES)
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn profiling(&self) -> bool {
        self.profile.lock().unwrap().is_some()
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn profile_record(&self, name: &str, detail: Option<&str>, seconds: f64, flops: u64, bytes: u64) {
        if let Some(p) = self.profile.lock().unwrap().as_mut() {
            let mut add = |key: String, detail: &str| {
                let r = p.entry(key).or_insert_with(|| ProfileRow {
                    kernel: name.to_string(),
                    detail: detail.to_string(),
                    ..Default::default()
                });
                r.calls += 1;
                r.seconds += seconds;
                r.flops += flops;
                r.bytes += bytes;
            };
            add(name.to_string(), "");
            if let Some(d) = detail {
                add(format!("{name}\u{0}{d}"), d);
            }
        }
    }

    /// Release what the device keeps between submits for speed: the cached bind groups (which
    /// hold on to every buffer they bind; those of dropped tensors go at the next submit, this
    /// releases them at once) and the scratch tensors. Call it after dropping a model — the
    /// fine-tuning loop does at the end of each run — or whenever memory matters more than
    /// the next few submits' bind-group creation.
    pub fn trim(&self) {
        self.bind_cache.clear();
        self.scratch.lock().unwrap().clear();
    }

    /// How many bind groups are cached (see [`Gpu::trim`]).
    pub fn cached_bind_groups(&self) -> usize {
        self.bind_cache.len()
    }

    /// How many bind groups this device has created (a diagnostic: a step that records the same
    /// dispatches as the last one creates none).
    pub fn created_bind_groups(&self) -> u64 {
        self.bind_cache.created()
    }

    /// Start recording a batch of dispatches that is submitted as one command buffer.
    pub fn recorder(&self) -> Recorder<'_> {
        Recorder::new(self)
    }

    /// A scratch tensor of `elems` f32 for kernel intermediates (partial sums, attention score
    /// gradients), one per `slot`, grown on demand and reused. Safe to reuse across ops and
    /// submits because the queue runs dispatches in order with barriers between them.
    pub(crate) fn scratch(&self, slot: u32, elems: usize) -> Result<Tensor> {
        let mut s = self.scratch.lock().unwrap();
        if let Some(t) = s.get(&slot) {
            if t.len() >= elems {
                return Ok(Tensor { shape: vec![elems], ..t.clone() });
            }
        }
        let t = self.zeros(&[elems.max(1).next_power_of_two()])?;
        s.insert(slot, t.clone());
        Ok(Tensor { shape: vec![elems], ..t })
    }

    /// A small tensor (16 bytes, one vec4) bound where a kernel's optional input is absent (never
    /// read). The recorder moves it to a block of its own for each binding slot.
    pub(crate) fn dummy_tensor(&self) -> Tensor {
        Tensor {
            buffer: self.dummy.clone(),
            offset: 0,
            shape: vec![4],
            dtype: DType::F32,
            live: self.dummy_live.clone(),
        }
    }

    /// Bytes of the tensors and arenas created on this device so far (freed ones included).
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn count_allocation(&self, bytes: u64) {
        self.allocated.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn take_uniform(&self, size: u64) -> wgpu::Buffer {
        let mut pool = self.uniform_pool.lock().unwrap();
        if let Some(i) = pool.iter().position(|b| b.size() >= size) {
            return pool.swap_remove(i);
        }
        drop(pool);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: size.next_power_of_two().max(4096),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    pub(crate) fn give_uniform(&self, b: wgpu::Buffer) {
        let mut pool = self.uniform_pool.lock().unwrap();
        if pool.len() < 8 {
            pool.push(b);
        } else {
            self.bind_cache.forget_uniform(&b);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn profile_rates_keep_three_digits_below_one() {
        assert_eq!(super::three_digits(24.254), "24.25");
        assert_eq!(super::three_digits(0.17), "0.170");
        assert_eq!(super::three_digits(0.0043), "0.00430");
        assert_eq!(super::three_digits(0.0), "0.00");
        assert!(super::three_digits(1e-9).parse::<f64>().unwrap() > 0.0);
    }
}
