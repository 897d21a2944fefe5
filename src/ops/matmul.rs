//! Batched strided matmul with bias and GELU epilogues (shaders/matmul.wgsl).

use super::fits_u32;
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, KernelSpec, Params, Recorder, Tensor};

/// A strided matrix inside a tensor: element (i, j) of batch z = (zo, zi) lives at
/// `off + zo*bo + zi*bi + i*rs + j*cs`. Transposing is swapping `rs` and `cs`.
#[derive(Clone, Copy, Debug)]
pub struct MatView<'a> {
    pub t: &'a Tensor,
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
    pub bo: usize,
    pub bi: usize,
}

impl<'a> MatView<'a> {
    /// A row-major `[.., rows, cols]` tensor; batches are consecutive `rows * cols` blocks.
    pub fn row_major(t: &'a Tensor, rows: usize, cols: usize) -> Self {
        MatView { t, off: 0, rs: cols, cs: 1, bo: rows * cols, bi: 0 }
    }
    /// The transpose of this view.
    pub fn t(self) -> Self {
        MatView { rs: self.cs, cs: self.rs, ..self }
    }
    /// Largest element index touched for the given extents.
    fn last(&self, rows: usize, cols: usize, outer: usize, inner: usize) -> usize {
        self.off + (outer - 1) * self.bo + (inner - 1) * self.bi + (rows - 1) * self.rs + (cols - 1) * self.cs
    }
}

/// Activation applied in the epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    /// 0.5 x (1 + erf(x / sqrt 2)) (BERT, ViT).
    GeluErf,
    /// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GPT-2).
    GeluTanh,
    /// tanh (BERT's pooler).
    Tanh,
}

impl Act {
    /// The shader's code for this activation (EPI / FORM constants).
    pub fn code(self) -> u32 {
        match self {
            Act::None => 0,
            Act::GeluErf => 1,
            Act::GeluTanh => 2,
            Act::Tanh => 3,
        }
    }
}

/// One matmul: `C[z] = act(alpha * A[z] . B[z] + bias) (+ beta * C[z] when beta is set)`,
/// with A `m x k`, B `k x n`, C `m x n` (C's column stride must be 1), z over `batch` with
/// `batch_inner` splitting it into (z / inner, z % inner).
#[derive(Clone, Copy, Debug)]
pub struct Matmul<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub batch_inner: usize,
    pub a: MatView<'a>,
    pub b: MatView<'a>,
    pub c: MatView<'a>,
    /// Bias of length `n` (tensor, element offset), added before the activation.
    pub bias: Option<(&'a Tensor, usize)>,
    pub act: Act,
    /// Also store the pre-activation (same layout as C, at this tensor and offset).
    pub pre: Option<(&'a Tensor, usize)>,
    pub alpha: f32,
    /// Accumulate: add `beta * C` (the old contents) to the result.
    pub beta: Option<f32>,
}

impl<'a> Matmul<'a> {
    /// Plain 2-D (or batched by leading dims) product of row-major tensors with optional
    /// transposes: `C = op(A) . op(B)`. A is `[.., m, k]` (or `[.., k, m]` when `ta`), B is
    /// `[.., k, n]` (or `[.., n, k]` when `tb`), C is `[.., m, n]`.
    pub fn new(a: &'a Tensor, ta: bool, b: &'a Tensor, tb: bool, c: &'a Tensor) -> Result<Self> {
        let (sa, sb, sc) = (a.shape(), b.shape(), c.shape());
        if sa.len() < 2 || sb.len() < 2 || sc.len() < 2 {
            return shape_err("matmul", format!("operands must be at least 2-D, got {sa:?}, {sb:?}, {sc:?}"));
        }
        let d2 = |s: &[usize]| (s[s.len() - 2], s[s.len() - 1]);
        let (ar, ac) = d2(sa);
        let (br, bc) = d2(sb);
        let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if tb { (bc, br) } else { (br, bc) };
        if k != k2 || sc[sc.len() - 2] != m || sc[sc.len() - 1] != n {
            return shape_err(
                "matmul",
                format!("op(A) {m}x{k} (A {sa:?}, transposed: {ta}) . op(B) {k2}x{n} (B {sb:?}, transposed: {tb}) does not fit C {sc:?}"),
            );
        }
        let batch: usize = sc[..sc.len() - 2].iter().product();
        let bat = |s: &[usize]| s[..s.len() - 2].iter().product::<usize>();
        let (ba, bb) = (bat(sa), bat(sb));
        if (ba != batch && ba != 1) || (bb != batch && bb != 1) {
            return shape_err("matmul", format!("batch dims of {sa:?} and {sb:?} do not match C {sc:?}"));
        }
        let mut av = MatView::row_major(a, ar, ac);
        let mut bv = MatView::row_major(b, br, bc);
        if ta {
            av = av.t();
        }
        if tb {
            bv = bv.t();
        }
        if ba == 1 {
            av.bo = 0;
        }
        if bb == 1 {
            bv.bo = 0;
        }
        Ok(Matmul {
            m,
            n,
            k,
            batch,
            batch_inner: 1,
            a: av,
            b: bv,
            c: MatView::row_major(c, m, n),
            bias: None,
            act: Act::None,
            pre: None,
            alpha: 1.0,
            beta: None,
        })
    }
    pub fn bias(mut self, bias: &'a Tensor) -> Self {
        self.bias = Some((bias, 0));
        self
    }
    pub fn act(mut self, act: Act) -> Self {
        self.act = act;
        self
    }
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
    /// Accumulate into C: `C = result + beta * C`.
    pub fn accumulate(mut self, beta: f32) -> Self {
        self.beta = Some(beta);
        self
    }
    pub fn store_pre(mut self, pre: &'a Tensor) -> Self {
        self.pre = Some((pre, 0));
        self
    }
}

/// Register tile: (rows per invocation, cols per invocation, workgroup x, workgroup y); in the
/// vec4 kernels (`matmul_n4`, `matmul_k4`) the cols are groups of four columns.
/// `GpuOptions::matmul_tile` (`TRAMWAY_MATMUL_TILE=TMxTNxWGXxWGY`) overrides it (benchmark sweeps).
pub fn tile(gpu: &Gpu) -> (u32, u32, u32, u32) {
    if let Some([tm, tn, wx, wy]) = gpu.matmul_tile() {
        return (tm, tn, wx, wy);
    }
    // 8x4 outputs per invocation in 8x8 workgroups: the best measured register block on
    // lavapipe (lavapipe.md) and a reasonable one on GPUs until a tiled path is tuned there.
    (8, 4, 8, 8)
}

/// Register tile of the kernels that share A across a subgroup (`matmul_n4`, `matmul_k4` with `SG`):
/// (rows, column groups, workgroup y); the workgroup is one subgroup wide. The rows and groups
/// are those of `matmul_n4` with plain (scalar) A loads, as for strided views of A; the vec4
/// loads of A have their own ([`SUBGROUP_TILE_VEC4_A`], [`SUBGROUP_TILE_AM4`], [`SUBGROUP_TILE_K4`]). With A loads shared
/// by the 8 lanes of a lavapipe subgroup, tall tiles pay: 16 rows x 2 groups in 8x4 workgroups
/// ran the MiniLM shapes 1.5-2x faster than the plain kernels' best (8x4 in 8x8). On the Intel
/// Xeon VM 24 x 2 was 2.5 % faster than 16 x 2 in the training loop; on the AMD EPYC VM (the
/// same machine type another day) 24 x 2 was the slowest tile tried and 16 x 2 the fastest
/// (10th percentile of loop steps 614 against 652 ms, eight alternated runs; 16 x 1, 24 x 1,
/// 8 x 2 between), and it put the layouts of `bench_kernels --parity` level. BENCHMARKS.md.
/// `TRAMWAY_MATMUL_TILE` overrides its rows and column groups; the workgroup stays the shape
/// [`Gpu::subgroup_rows`] probed (one subgroup wide, `SUBGROUP_TILE.2` rows).
pub const SUBGROUP_TILE: (u32, u32, u32) = (16, 2, 4);

/// The same for the kernel that reads both operands along k (`matmul_k4`: the forward x·Wᵀ and
/// Q·Kᵀ): 24 rows x 2 groups of four consecutive columns (the epilogue stores vec4s), 192
/// scalar sums (the kernel sums each output four k at a time). With A's rows spread over the
/// lanes (`AR` in the shader: three vec4s of A a lane instead of 24), 24 x 2 took the AdamW
/// loop step on the AMD EPYC VM to 537 ms median / 472 ms 10th percentile against 619 / 501
/// for 24 x 1 (six alternated runs; in `bench_kernels --parity` +5-10 %). Before the spread rows
/// 24 x 1 had been the best there, and 16 x 4 on the Intel VM (BENCHMARKS.md). The workgroup is
/// the same (`SUBGROUP_TILE.2` rows).
pub const SUBGROUP_TILE_K4: (u32, u32) = (24, 2);

/// x·Wᵀ from [`K4_TALL_ROWS`] rows up (a batch of 16 x 24 tokens and more): 32 rows x 2 groups,
/// 128 rows a workgroup. In-process in `bench_kernels --parity` (operands out of cache, medians
/// of four runs) it ran 1.09-1.19x the rate of 24 x 2 at 384-2048 rows; at 192 rows (the MiniLM
/// step's 8 x 24 tokens) 0.87-1.00x, so smaller matrices keep [`SUBGROUP_TILE_K4`]
/// (BENCHMARKS.md).
pub const SUBGROUP_TILE_K4_TALL: (u32, u32) = (32, 2);

/// The rows from which x·Wᵀ takes [`SUBGROUP_TILE_K4_TALL`].
pub const K4_TALL_ROWS: usize = 384;

/// The same for `matmul_n4` where A is read as vec4s along k (`A4`: the NN products dY·W and
/// P·V): 32 rows x 2 groups, each workgroup row taking 32 consecutive rows, a row block wholly
/// past m leaving at once (192 rows are then six such rows, two workgroups' worth, four and
/// two). Against 24 x 2 (rows spread over the workgroup's rows, every block full at 192 rows)
/// it ran 0.96-1.10x at the four dX shapes of a 192-token step and 1.06-1.09x at 384-1024 rows
/// (in-process in `bench_kernels --parity`, four sets of six runs; BENCHMARKS.md); 24 x 2 itself
/// had replaced 16 x 2 (1.0-1.3x). TN has its own ([`SUBGROUP_TILE_AM4`]); plain A loads keep
/// [`SUBGROUP_TILE`].
pub const SUBGROUP_TILE_VEC4_A: (u32, u32) = (32, 2);

/// TN (`AM4`) since the chained sums and the column-panel order: 32 rows x 2 groups. A
/// subgroup's rows at one k are then two whole cache lines of dY (24 rows: one and a half, the
/// lines split between subgroups), four vec4 loads a lane for four k. In `bench_kernels
/// --parity`, operands out of cache, TN at the dW shapes ran 0.91-0.99 of the best layout
/// against 0.86-0.92 at 24 x 2; the AdamW loop step was level (408 against 410 ms median, six
/// alternated runs; BENCHMARKS.md).
pub const SUBGROUP_TILE_AM4: (u32, u32) = (32, 2);

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A vec4 kernel's tile (rows, groups of four columns per invocation) shrunk to a matrix smaller
/// than one workgroup's block (wgx lanes x tn groups, wgy x tm rows): the attention products of
/// one head (24 x 32 of a 64 x 64 block) and short chunks would otherwise compute the clamped
/// last row and group over and over, loads and FMAs included. Larger matrices keep the tile, so
/// the kernel variants this adds are bounded by the tile (at most tm x tn of them).
pub fn fit_tile(tm: u32, tn: u32, m: usize, n: usize, wgx: u32, wgy: u32) -> (u32, u32) {
    let rows = (m as u64).div_ceil(wgy as u64).clamp(1, tm as u64) as u32;
    let groups = (n as u64).div_ceil(4).div_ceil(wgx as u64).clamp(1, tn as u64) as u32;
    (rows, groups)
}

/// Which matmul kernel family runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulPath {
    /// Register-blocked straight from storage buffers (vec4 along k when both operands are
    /// k-contiguous, along n when B is n-contiguous): for CPU drivers such as lavapipe, where
    /// workgroup memory is no faster.
    Register,
    /// [`MatmulPath::Register`] with each A load shared across a subgroup (`subgroupBroadcast`)
    /// and a taller tile ([`SUBGROUP_TILE`]), where [`Gpu::subgroup_rows`] holds; elsewhere (and
    /// for layouts without a vec4 kernel) the same as `Register`. Identical results: each
    /// output's sum runs in the same order.
    Subgroup,
    /// Tiles staged in workgroup memory, then register-blocked: for GPUs.
    Tiled,
}

impl MatmulPath {
    /// The device's choice (`GpuOptions::tiled_matmul`, `TRAMWAY_MATMUL=register|tiled`), else
    /// tiled on GPUs and register-blocked on CPU drivers; register-blocked means `Subgroup` where
    /// the device's subgroups are workgroup rows, unless `TRAMWAY_MATMUL_SUBGROUPS=0`.
    pub fn auto(gpu: &Gpu) -> Self {
        let register = || {
            if !gpu.no_subgroup_matmul() && gpu.subgroup_rows().is_some() {
                MatmulPath::Subgroup
            } else {
                MatmulPath::Register
            }
        };
        match gpu.tiled_matmul() {
            Some(false) => register(),
            Some(true) => MatmulPath::Tiled,
            None if gpu.adapter_info().device_type == wgpu::DeviceType::Cpu => register(),
            None => MatmulPath::Tiled,
        }
    }
}

/// Record one matmul on the kernel family chosen for this adapter ([`MatmulPath::auto`]).
pub fn matmul(rec: &mut Recorder, mm: &Matmul) -> Result<()> {
    let path = MatmulPath::auto(rec.gpu());
    matmul_with(rec, mm, path)
}

/// Record one matmul on the given kernel family.
pub fn matmul_with(rec: &mut Recorder, mm: &Matmul, path: MatmulPath) -> Result<()> {
    let gpu = rec.gpu();
    let Matmul { m, n, k, batch, batch_inner, a, b, c, .. } = *mm;
    if m == 0 || n == 0 || batch == 0 {
        return Ok(());
    }
    if batch_inner == 0 || batch % batch_inner != 0 {
        return shape_err("matmul", format!("batch {batch} is not a multiple of batch_inner {batch_inner}"));
    }
    if c.cs != 1 {
        return shape_err("matmul", "C must have unit column stride");
    }
    let outer = batch / batch_inner;
    let check = |name: &str, v: &MatView, rows: usize, cols: usize| -> Result<()> {
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let last = v.last(rows, cols, outer, batch_inner);
        if last >= v.t.len() {
            return shape_err(
                "matmul",
                format!("{name} view reaches element {last} but its tensor {:?} has {}", v.t.shape(), v.t.len()),
            );
        }
        fits_u32("matmul", last)
    };
    check("A", &a, m, k)?;
    check("B", &b, k, n)?;
    check("C", &c, m, n)?;
    if let Some((bias, off)) = mm.bias {
        if off + n > bias.len() {
            return shape_err("matmul", format!("bias {:?} at offset {off} is shorter than n = {n}", bias.shape()));
        }
    }
    if let Some((pre, off)) = mm.pre {
        let last = c.last(m, n, outer, batch_inner) - c.off + off;
        if last >= pre.len() {
            return shape_err("matmul", format!("pre-activation tensor {:?} is too small for C", pre.shape()));
        }
    }
    if k == 0 {
        return shape_err("matmul", "inner dimension k is 0");
    }
    // A few rows (decoding one token, a short chunk): one row per workgroup row, so that the
    // 64-row block of the general tile does not compute the same clamped row 64 times.
    let few_rows = m < 8 && gpu.matmul_tile().is_none();
    let register = path != MatmulPath::Tiled;
    // Both operands contiguous along k and 16-byte aligned: the vec4 path.
    let k4 = register
        && a.cs == 1
        && b.rs == 1
        && k.is_multiple_of(4)
        && [a.off, a.rs, a.bo, a.bi, b.off, b.cs, b.bo, b.bi].iter().all(|v| v.is_multiple_of(4))
        && !gpu.scalar_matmul();
    // One tensor as both operands (X·Xᵀ, Q·Kᵀ of a fused QKV) is bound once and B read through
    // A's binding: browsers refuse two writable bindings of one range.
    let same_ab = a.t.buffer == b.t.buffer && a.t.offset == b.t.offset && a.t.bytes() == b.t.bytes();
    // Otherwise B contiguous along n (x·W, the backward dY·W and dYᵀ·X, P·V) and 16-byte
    // aligned: B read as vec4 along n.
    let n4 = register
        && !k4
        && !same_ab
        && b.cs == 1
        && n.is_multiple_of(4)
        && [b.off, b.rs, b.bo, b.bi].iter().all(|v| v.is_multiple_of(4))
        && !gpu.scalar_matmul();
    // Subgroups that are workgroup rows (lavapipe): the vec4 kernels can share A's loads.
    let sgs = match path {
        MatmulPath::Subgroup if !few_rows && (k4 || n4) => gpu.subgroup_rows(),
        _ => None,
    };
    // With subgroups to share the loads, matmul_n4 reads A as vec4s too where A is contiguous
    // and 16-byte aligned: along k (NN, `A4`: each lane a vec4 for its share of the rows), or
    // along m (TN, `AM4`: m and the rows multiples of 4). Each vec4 load serves four k (NN) or
    // four rows (TN) instead of one scalar each.
    let vec4_a =
        |strides: [usize; 4]| n4 && sgs.is_some() && !gpu.plain_a() && strides.iter().all(|v| v.is_multiple_of(4));
    let a4 = a.cs == 1 && k.is_multiple_of(4) && vec4_a([a.off, a.rs, a.bo, a.bi]);
    let am4_layout = !a4 && a.rs == 1 && m.is_multiple_of(4) && vec4_a([a.off, a.cs, a.bo, a.bi]);
    // TN counts groups of four columns in both vec4 kernels, single columns in the scalar one.
    let (tm, tn, wgx, wgy) = match path {
        _ if register && few_rows => (1, if k4 { 2 } else { 8 }, 8, 1),
        MatmulPath::Tiled => (4, 4, 16, 16),
        _ => match (sgs, gpu.matmul_tile()) {
            // The workgroup keeps the shape the probe checked: SUBGROUP_TILE.2 rows of one
            // subgroup each.
            (Some(s), Some([tm, tn, _, _])) => (tm, tn, s, SUBGROUP_TILE.2),
            (Some(s), None) if k4 => {
                let (tm, tn) = if m >= K4_TALL_ROWS { SUBGROUP_TILE_K4_TALL } else { SUBGROUP_TILE_K4 };
                let (tm, tn) = fit_tile(tm, tn, m, n, s, SUBGROUP_TILE.2);
                (tm, tn, s, SUBGROUP_TILE.2)
            }
            (Some(s), None) => {
                let (tm, tn) = if a4 {
                    SUBGROUP_TILE_VEC4_A
                } else if am4_layout {
                    SUBGROUP_TILE_AM4
                } else {
                    (SUBGROUP_TILE.0, SUBGROUP_TILE.1)
                };
                let (tm, tn) = fit_tile(tm, tn, m, n, s, SUBGROUP_TILE.2);
                // TN's vec4s along m take whole row quads: a fitted height rounds up to one
                // (24-row heads: three subgroups of 8 rows and one that leaves at once). With
                // the band touched and four k a trip (below), TN of 24-row heads ran 0.97 of NN
                // against 0.79 on plain loads, of 64-row heads 0.98 against 0.65 (BENCHMARKS.md).
                let tm = if am4_layout { tm.next_multiple_of(4) } else { tm };
                (tm, tn, s, SUBGROUP_TILE.2)
            }
            // The plain both-along-k kernel keeps the default tile's outputs per invocation: 8 x 4
            // columns is one group (the vec4-per-output sums of 8 x 4 groups would be 128).
            (None, None) if k4 => {
                let (tm, tn, wx, wy) = tile(gpu);
                (tm, tn.div_ceil(4), wx, wy)
            }
            (None, _) => tile(gpu),
        },
    };
    let shader = match path {
        MatmulPath::Tiled => "matmul_tiled",
        _ if k4 => "matmul_k4",
        _ if n4 => "matmul_n4",
        _ => "matmul",
    };
    let mut spec = KernelSpec::new(shader, "main", 5)
        .u("TM", tm)
        .u("TN", tn)
        .u("WGX", wgx)
        .u("WGY", wgy)
        .u("EPI", mm.act.code())
        .b("HAS_BIAS", mm.bias.is_some())
        .b("STORE_PRE", mm.pre.is_some())
        .b("ACC", mm.beta.is_some())
        .b("SAME_AB", same_ab);
    if path == MatmulPath::Tiled {
        spec = spec.u("BK", 16);
    }
    if k4 || n4 {
        spec = spec.b("SG", sgs.is_some());
    }
    if k4 {
        // With subgroups, each lane loads A's vec4s for its share of the tile's rows, which
        // reach the other lanes by broadcast: the same loads, a subgroup-th of the registers
        // holding A (24 rows x vec4 per lane before). x·Wᵀ ran 1.4x faster (BENCHMARKS.md).
        let ar = sgs.is_some() && !gpu.plain_a();
        spec = spec.b("AR", ar).u("TMW", if ar { tm.div_ceil(wgx) } else { 0 });
    }
    if n4 {
        // AM4 takes the rows' vec4s at KTR k a trip, NLD loads a lane: four k (each sum
        // updated four times in turn, as A4), or the fewest k whose TMQ x KTR vec4s the WGX
        // lanes share evenly where that is more (shader top). Up to four loads a lane had set
        // 16 k at 8 rows and 8 at 16: 0.72 and 0.89 of NN at attention's shapes, four k 1.01
        // and 0.97.
        let tmq = (tm / 4).max(1);
        let am4 = am4_layout && tm.is_multiple_of(4);
        let kt = wgx / gcd(tmq, wgx);
        let ktr = kt * 4 / gcd(kt, 4);
        let prefetch = a4 && k >= 128;
        // Workgroups down B's column panels where B is the larger operand (n > m), and B's
        // panel touched ahead of the first subgroup's walk (shader top): NN at the dX shapes of
        // a 192-token step ran 0.77 of x·Wᵀ before, 0.98 after (BENCHMARKS.md). Not for short
        // walks: P·V of 24-token sequences ran 10 % slower with it.
        spec = spec
            .b("PANEL", n > m)
            .b("PREFETCH", prefetch)
            .u("PFD", 8)
            // Loads a lane that touch a trip's four rows of the panel, WGX TN / 4 lines each.
            .u("PFB", if a4 { (4 * (wgx * tn).div_ceil(4)).div_ceil(wgx) } else { 0 })
            .b("A4", a4)
            .b("AM4", am4)
            // TN's first subgroup touches the workgroup's band of A and B's panel before the
            // walks (BAND in the shader): BAL, BBL loads per k row, one a cache line. At the dW
            // shapes of a 192-token step TN ran 0.96-0.99 of the best layout against 0.83-0.93,
            // and in the step's profile 28-33 against 21-30 GFLOP/s (BENCHMARKS.md).
            .u("BAL", (wgy * tm).div_ceil(16))
            .u("BBL", (wgx * tn).div_ceil(4))
            // Either touch: the values' sum and the branch that keeps it alive.
            .b("TOUCHED", prefetch || am4)
            .b("AV4", a4 || am4)
            .u("TMW", if a4 { tm.div_ceil(wgx) } else { 0 })
            .u("TMQ", tmq)
            .u("KTR", if am4 { ktr } else { 1 })
            .u("NLD", if am4 { tmq * ktr / wgx } else { 0 });
    }
    // The vec4 epilogue of the vec4 kernels: C, the bias and the pre-activation addressed in
    // whole vec4s.
    let c4 = (n4 || k4)
        && n.is_multiple_of(4)
        && !gpu.scalar_epilogue()
        && [c.off, c.rs, c.bo, c.bi].iter().all(|v| v.is_multiple_of(4))
        && mm.bias.is_none_or(|(_, off)| off.is_multiple_of(4))
        && mm.pre.is_none_or(|(_, off)| off.is_multiple_of(4));
    spec = spec.b("C4", c4);
    let kernel = gpu.kernel(&spec)?;
    let dummy = gpu.dummy_tensor();
    let (bias_t, bias_off) = mm.bias.unwrap_or((&dummy, 0));
    let (pre_t, pre_off) = mm.pre.unwrap_or((&dummy, 0));
    let p = Params::new()
        .n(m)
        .n(n)
        .n(k)
        .n(batch_inner)
        .n(a.off)
        .n(a.rs)
        .n(a.cs)
        .n(a.bo)
        .n(a.bi)
        .n(b.off)
        .n(b.rs)
        .n(b.cs)
        .n(b.bo)
        .n(b.bi)
        .n(c.off)
        .n(c.rs)
        .n(c.bo)
        .n(c.bi)
        .n(bias_off)
        .n(pre_off)
        .f(mm.alpha)
        .f(mm.beta.unwrap_or(0.0))
        // `zero`: always 0 (matmul_n4's prefetch loads are kept alive by a branch on it).
        .u(0)
        .u(0);
    // A matmul_n4 or matmul_k4 invocation covers TN groups of four columns.
    let gx = n.div_ceil((wgx * tn) as usize * if n4 || k4 { 4 } else { 1 });
    let gy = m.div_ceil((wgy * tm) as usize);
    let b_bound = if same_ab { &dummy } else { b.t };
    let flops = 2 * (m * n * k * batch) as u64;
    // For a profile's per-shape table: A and B as stored (N), transposed (T) or strided (S).
    let detail = || {
        let side = |v: &MatView| match (v.cs == 1, v.rs == 1) {
            (true, _) => "N",
            (false, true) => "T",
            _ => "S",
        };
        let batched = if batch > 1 { format!("{batch} x ") } else { String::new() };
        format!("{}{} {batched}{m}x{n}x{k}", side(&a), side(&b))
    };
    rec.dispatch_detailed(
        &kernel,
        p,
        &[a.t, b_bound, bias_t, c.t, pre_t],
        [gx as u32, gy as u32, batch as u32],
        flops,
        detail,
    )
}
