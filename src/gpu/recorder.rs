//! The recorder: many dispatches (and copies) go into one command buffer and one submit.
//!
//! Parameters of every dispatch are packed into one uniform buffer, each block at a 256-byte
//! aligned dynamic offset, written with a single `write_buffer` at submit time. Bind groups are
//! cached by (kernel, bound ranges, parameter buffer), so a training step that records the same
//! dispatches every step reuses them all.

use super::{Gpu, Kernel, Tensor, ALIGN};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// A kernel's parameter block: a sequence of 4-byte words matching the WGSL `struct Params`
/// field by field (all fields are `u32`, `i32` or `f32`).
#[derive(Clone, Debug, Default)]
pub struct Params(pub(crate) Vec<u32>);

impl Params {
    pub fn new() -> Self {
        Params(Vec::with_capacity(16))
    }
    /// Append a `u32` field.
    pub fn u(mut self, v: u32) -> Self {
        self.0.push(v);
        self
    }
    /// Append a `u32` field from a size (sizes above u32 are refused earlier by binding limits).
    pub fn n(self, v: usize) -> Self {
        self.u(v as u32)
    }
    /// Append an `f32` field.
    pub fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut w = self.0.clone();
        // WGSL uniform structs are sized in multiples of 16 bytes.
        while w.is_empty() || !w.len().is_multiple_of(4) {
            w.push(0);
        }
        bytemuck::cast_slice(&w).to_vec()
    }
}

/// Split a 1-D workgroup count into a grid within the per-dimension limit. Shaders recover the
/// linear index as `wid.x + wid.y * num_workgroups.x` (see `linear_group` in common.wgsl).
pub fn grid_1d(groups: u32, max_per_dim: u32) -> [u32; 3] {
    if groups <= max_per_dim {
        [groups, 1, 1]
    } else {
        let y = groups.div_ceil(max_per_dim);
        [groups.div_ceil(y), y, 1]
    }
}

enum Cmd {
    Dispatch {
        kernel: Arc<Kernel>,
        bufs: Vec<(wgpu::Buffer, u64, u64)>,
        /// The bound tensors' liveness tokens, for the bind-group cache.
        live: Vec<Weak<()>>,
        poff: u64,
        psize: u64,
        groups: [u32; 3],
        /// Floating-point operations of the dispatch, for the profiler (0: not counted).
        #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // profiling is native only
        flops: u64,
        /// What the profile's shape table calls this dispatch (a matmul's layout and shape);
        /// only kept while profiling.
        #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
        detail: Option<String>,
    },
    Copy {
        src: wgpu::Buffer,
        src_off: u64,
        dst: wgpu::Buffer,
        dst_off: u64,
        bytes: u64,
    },
    Clear {
        buf: wgpu::Buffer,
        off: u64,
        bytes: u64,
    },
}

/// Collects commands; [`Recorder::submit`] sends them as one command buffer.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    cmds: Vec<Cmd>,
    params: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct BindKey {
    layout: wgpu::BindGroupLayout,
    uniform: wgpu::Buffer,
    psize: u64,
    bufs: Vec<(wgpu::Buffer, u64, u64)>,
}

/// Bind groups survive across submits. A bind group holds on to the buffers it binds, so the
/// next submit after the last tensor of a buffer is dropped removes every entry that binds it
/// (the entry could never be used again, and it would keep that memory allocated — a loop over
/// batches with fresh activations grew by gigabytes); so does a parameter buffer leaving the
/// pool. Also bounded in count, and emptied by [`super::Gpu::trim`].
#[derive(Default)]
pub(crate) struct BindCache(Mutex<HashMap<BindKey, CachedGroup>>, std::sync::atomic::AtomicU64);

/// A cached bind group and the liveness tokens of the tensors it binds.
type CachedGroup = (wgpu::BindGroup, Vec<Weak<()>>);

impl BindCache {
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    /// Bind groups created so far.
    pub(crate) fn created(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Remove the entries that bind parameter buffer `u` (it is being dropped).
    pub(crate) fn forget_uniform(&self, u: &wgpu::Buffer) {
        self.0.lock().unwrap().retain(|k, _| k.uniform != *u);
    }
}
const BIND_CACHE_MAX: usize = 8192;

impl Cmd {
    /// Add this command's `secs` to the device's profile: under its kernel (with its FLOPs and
    /// bound bytes, and its detail for the per-shape table), or as a copy or clear.
    #[cfg(not(target_arch = "wasm32"))]
    fn profile(&self, gpu: &Gpu, secs: f64) {
        match self {
            Cmd::Dispatch { kernel, bufs, flops, detail, .. } => {
                gpu.profile_record(&kernel.name, detail.as_deref(), secs, *flops, bufs.iter().map(|b| b.2).sum())
            }
            Cmd::Copy { bytes, .. } => gpu.profile_record("copy", None, secs, 0, 2 * bytes),
            Cmd::Clear { bytes, .. } => gpu.profile_record("clear", None, secs, 0, *bytes),
        }
    }
}

impl<'g> Recorder<'g> {
    pub(crate) fn new(gpu: &'g Gpu) -> Self {
        Recorder { gpu, cmds: Vec::new(), params: Vec::new() }
    }

    /// The device this recorder records for.
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Number of commands recorded so far.
    pub fn len(&self) -> usize {
        self.cmds.len()
    }
    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// Record one dispatch of `kernel` over `groups` workgroups. `tensors` fill storage bindings
    /// 1..=n in order.
    pub fn dispatch(
        &mut self,
        kernel: &Arc<Kernel>,
        params: Params,
        tensors: &[&Tensor],
        groups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_counted(kernel, params, tensors, groups, 0)
    }

    /// [`Recorder::dispatch`] with the dispatch's floating-point operations, which a profile
    /// turns into GFLOP/s.
    pub fn dispatch_counted(
        &mut self,
        kernel: &Arc<Kernel>,
        params: Params,
        tensors: &[&Tensor],
        groups: [u32; 3],
        flops: u64,
    ) -> Result<()> {
        self.dispatch_detailed(kernel, params, tensors, groups, flops, String::new)
    }

    /// [`Recorder::dispatch_counted`] with a description (a matmul's layout and shape) under
    /// which a profile also sums the dispatch, in its per-shape table; `detail` is only called
    /// while profiling.
    pub fn dispatch_detailed(
        &mut self,
        kernel: &Arc<Kernel>,
        params: Params,
        tensors: &[&Tensor],
        groups: [u32; 3],
        flops: u64,
        detail: impl FnOnce() -> String,
    ) -> Result<()> {
        if tensors.len() as u32 != kernel.storage {
            return Err(Error::Gpu {
                context: kernel.label.clone(),
                message: format!("{} tensors bound, the kernel has {} storage bindings", tensors.len(), kernel.storage),
            });
        }
        let max = self.gpu.limits().max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(Error::Limit {
                what: format!("dispatch of {} over {groups:?} workgroups", kernel.label),
                needed: *groups.iter().max().unwrap() as u64,
                limit: max as u64,
                limit_name: "max_compute_workgroups_per_dimension",
                hint: String::new(),
            });
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let bytes = params.bytes();
        let poff = self.params.len() as u64;
        self.params.extend_from_slice(&bytes);
        self.params.resize(self.params.len().div_ceil(ALIGN as usize) * ALIGN as usize, 0);
        let bufs = tensors
            .iter()
            .enumerate()
            .map(|(slot, t)| {
                let b = t.binding();
                let mut offset = b.offset;
                // One placeholder per slot: an absent input bound in slot i uses the i-th block of
                // the placeholder buffer, so two absent inputs never share a range.
                if *b.buffer == self.gpu.dummy {
                    offset = (slot as u64 % super::DUMMY_SLOTS) * ALIGN;
                }
                (b.buffer.clone(), offset, b.size.map(|s| s.get()).unwrap_or(4))
            })
            .collect::<Vec<_>>();
        // Every binding is writable; WebGPU (browsers) refuses two writable bindings whose byte
        // ranges overlap, so no backend may see one either.
        for (i, a) in bufs.iter().enumerate() {
            for (j, b) in bufs.iter().enumerate().skip(i + 1) {
                if a.0 == b.0 && a.1 < b.1 + b.2 && b.1 < a.1 + a.2 {
                    return Err(Error::Gpu {
                        context: kernel.label.clone(),
                        message: format!(
                            "bindings {} and {} overlap (bytes {}..{} and {}..{} of one buffer): WebGPU refuses \
                             two writable bindings of one range",
                            i + 1,
                            j + 1,
                            a.1,
                            a.1 + a.2,
                            b.1,
                            b.1 + b.2
                        ),
                    });
                }
            }
        }
        let live = tensors.iter().map(|t| Arc::downgrade(&t.live)).collect();
        self.cmds.push(Cmd::Dispatch {
            kernel: kernel.clone(),
            bufs,
            live,
            poff,
            psize: bytes.len() as u64,
            groups,
            flops,
            detail: self.gpu.profiling().then(detail).filter(|d| !d.is_empty()),
        });
        Ok(())
    }

    /// Copy all of `src` into `dst` (same element count).
    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        if src.len() != dst.len() {
            return Err(Error::Shape {
                op: "copy",
                message: format!("source {:?} and destination {:?} differ in size", src.shape(), dst.shape()),
            });
        }
        if src.bytes() > 0 {
            self.cmds.push(Cmd::Copy {
                src: src.buffer.clone(),
                src_off: src.offset,
                dst: dst.buffer.clone(),
                dst_off: dst.offset,
                bytes: src.bytes(),
            });
        }
        Ok(())
    }

    /// Set every element of `t` to zero.
    pub fn zero(&mut self, t: &Tensor) {
        if t.bytes() > 0 {
            self.cmds.push(Cmd::Clear { buf: t.buffer.clone(), off: t.offset, bytes: t.bytes() });
        }
    }

    /// [`Recorder::submit`], then await the errors the device reports for it (and for kernels
    /// compiled since the last check): on the web a failed compile or dispatch surfaces here,
    /// naming the kernel, instead of at a later call. Natively the same as `submit`.
    pub async fn submit_checked(self) -> Result<()> {
        let gpu = self.gpu;
        #[cfg(target_arch = "wasm32")]
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let submitted = self.submit();
        #[cfg(target_arch = "wasm32")]
        if let Some(e) = scope.pop().await {
            submitted?;
            return Err(Error::Gpu { context: "submitting recorded kernels".into(), message: e.to_string() });
        }
        submitted?;
        gpu.check("submitting recorded kernels").await
    }

    /// Encode everything into one command buffer and submit it. Returns once submitted; use
    /// [`Gpu::wait`] or a readback to wait for the results.
    pub fn submit(self) -> Result<()> {
        let gpu = self.gpu;
        if self.cmds.is_empty() {
            return Ok(());
        }
        let uniform = gpu.take_uniform(self.params.len().max(16) as u64);
        if !self.params.is_empty() {
            gpu.queue.write_buffer(&uniform, 0, &self.params);
        }
        #[cfg(not(target_arch = "wasm32"))]
        if gpu.profiling() && gpu.features.contains(super::PROFILE_FEATURES) {
            let r = self.submit_timestamped(&uniform);
            gpu.give_uniform(uniform);
            return r.and_then(|_| gpu.take_error("submitting recorded kernels"));
        }
        #[cfg(not(target_arch = "wasm32"))]
        if gpu.profiling() {
            // One command at a time, each waited for and timed.
            gpu.wait()?;
            for cmd in &self.cmds {
                let cb = self.encode(std::slice::from_ref(cmd), &uniform);
                let t0 = std::time::Instant::now();
                gpu.queue.submit([cb]);
                gpu.wait()?;
                let secs = t0.elapsed().as_secs_f64();
                cmd.profile(gpu, secs);
            }
            gpu.give_uniform(uniform);
            return gpu.take_error("submitting recorded kernels");
        }
        let cb = self.encode(&self.cmds, &uniform);
        gpu.queue.submit([cb]);
        gpu.give_uniform(uniform);
        gpu.take_error("submitting recorded kernels")
    }

    /// The profiler's submit where timestamps are available: the commands encoded as usual (one
    /// compute pass for consecutive dispatches), a timestamp written before each and after the
    /// last, one submit per query set (at most 4095 commands); then the timestamps are read back
    /// and each command's time recorded.
    #[cfg(not(target_arch = "wasm32"))]
    fn submit_timestamped(&self, uniform: &wgpu::Buffer) -> Result<()> {
        let gpu = self.gpu;
        let period_ns = gpu.queue.get_timestamp_period() as f64;
        for chunk in self.cmds.chunks(wgpu::QUERY_SET_MAX_QUERIES as usize - 1) {
            let n = chunk.len() as u32 + 1;
            let qs = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: n,
            });
            let mut cbs = vec![self.encode_with(chunk, uniform, Some(&qs))];
            let bytes = 8 * n as u64;
            let usage = wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC;
            let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile.resolve"),
                size: bytes,
                usage,
                mapped_at_creation: false,
            });
            let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile.read"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut e = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("resolve") });
            e.resolve_query_set(&qs, 0..n, &resolved, 0);
            e.copy_buffer_to_buffer(&resolved, 0, &staging, 0, bytes);
            cbs.push(e.finish());
            gpu.queue.submit(cbs);
            staging.map_async(wgpu::MapMode::Read, .., |_| {});
            gpu.wait()?;
            let ticks: Vec<u64> = {
                let view = staging
                    .get_mapped_range(..)
                    .map_err(|e| Error::Readback { what: "profile timestamps".into(), message: e.to_string() })?;
                bytemuck::cast_slice::<u8, u64>(&view).to_vec()
            };
            staging.unmap();
            for (cmd, w) in chunk.iter().zip(ticks.windows(2)) {
                let secs = w[1].saturating_sub(w[0]) as f64 * period_ns * 1e-9;
                cmd.profile(gpu, secs);
            }
        }
        Ok(())
    }

    /// Encode `cmds` into one command buffer: consecutive dispatches share a compute pass,
    /// bind groups come from the device's cache.
    fn encode(&self, cmds: &[Cmd], uniform: &wgpu::Buffer) -> wgpu::CommandBuffer {
        self.encode_with(cmds, uniform, None)
    }

    /// [`Recorder::encode`], writing timestamp `i` of `stamps` just before command `i` (inside
    /// the compute pass for a dispatch) and the last one after the last command.
    fn encode_with(
        &self,
        cmds: &[Cmd],
        uniform: &wgpu::Buffer,
        stamps: Option<&wgpu::QuerySet>,
    ) -> wgpu::CommandBuffer {
        let gpu = self.gpu;
        let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tramway") });
        {
            let mut cache = gpu.bind_cache.0.lock().unwrap();
            // Entries whose tensors were dropped since the last submit; then the bound on count.
            cache.retain(|_, (_, live)| live.iter().all(|w| w.strong_count() > 0));
            if cache.len() > BIND_CACHE_MAX {
                cache.clear();
            }
            let mut pass: Option<wgpu::ComputePass<'static>> = None;
            let mut last: Option<*const Kernel> = None;
            for (i, cmd) in cmds.iter().enumerate() {
                if let (Some(qs), Cmd::Dispatch { .. }) = (stamps, cmd) {
                    let p = pass.get_or_insert_with(|| {
                        enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default()).forget_lifetime()
                    });
                    p.write_timestamp(qs, i as u32);
                } else if let Some(qs) = stamps {
                    pass = None;
                    last = None;
                    enc.write_timestamp(qs, i as u32);
                }
                match cmd {
                    Cmd::Dispatch { kernel, bufs, live, poff, psize, groups, .. } => {
                        let key = BindKey {
                            layout: kernel.layout.clone(),
                            uniform: uniform.clone(),
                            psize: *psize,
                            bufs: bufs.clone(),
                        };
                        let bg = cache
                            .entry(key)
                            .or_insert_with(|| {
                                let mut entries = vec![wgpu::BindGroupEntry {
                                    binding: 0,
                                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                        buffer: uniform,
                                        offset: 0,
                                        size: wgpu::BufferSize::new(*psize),
                                    }),
                                }];
                                for (i, (b, off, size)) in bufs.iter().enumerate() {
                                    entries.push(wgpu::BindGroupEntry {
                                        binding: i as u32 + 1,
                                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                            buffer: b,
                                            offset: *off,
                                            size: wgpu::BufferSize::new(*size),
                                        }),
                                    });
                                }
                                gpu.bind_cache.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let bg = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                                    label: None,
                                    layout: &kernel.layout,
                                    entries: &entries,
                                });
                                (bg, live.clone())
                            })
                            .0
                            .clone();
                        let p = pass.get_or_insert_with(|| {
                            enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default()).forget_lifetime()
                        });
                        let kp = Arc::as_ptr(kernel);
                        if last != Some(kp) {
                            p.set_pipeline(&kernel.pipeline);
                            last = Some(kp);
                        }
                        p.set_bind_group(0, &bg, &[*poff as u32]);
                        p.dispatch_workgroups(groups[0], groups[1], groups[2]);
                    }
                    Cmd::Copy { src, src_off, dst, dst_off, bytes } => {
                        pass = None;
                        last = None;
                        enc.copy_buffer_to_buffer(src, *src_off, dst, *dst_off, *bytes);
                    }
                    Cmd::Clear { buf, off, bytes } => {
                        pass = None;
                        last = None;
                        enc.clear_buffer(buf, *off, Some(*bytes));
                    }
                }
            }
            match (stamps, pass.as_mut()) {
                (Some(qs), Some(p)) => p.write_timestamp(qs, cmds.len() as u32),
                (Some(qs), None) => enc.write_timestamp(qs, cmds.len() as u32),
                _ => {}
            }
            drop(pass);
        }
        enc.finish()
    }
}
