//! Kernels: WGSL sources from `shaders/`, specialised by constants, compiled once and cached.
//!
//! A kernel variant is named by a [`KernelSpec`]: the shader file, the entry point and a list of
//! constants. The constants are prepended to the source as WGSL `const` declarations, and they
//! also drive a tiny unrolling preprocessor (see [`expand`]) so that register-blocked kernels are
//! written once in the `.wgsl` file yet compiled with their loops fully unrolled.
//!
//! Binding convention shared by every shader: `@binding(0)` is a uniform parameter block bound
//! with a dynamic offset, `@binding(1..=n)` are storage buffers declared `read_write`. Declaring
//! every storage binding writable lets two views of one arena chunk meet in a dispatch (wgpu
//! tracks usage per buffer, and read-only plus writable would conflict).

use super::Gpu;
use crate::error::{Error, Result};
use std::fmt::Write as _;
use std::sync::Arc;

/// A specialisation constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Def {
    U(u32),
    I(i32),
    B(bool),
    /// An f32, stored as its bits so specs stay hashable.
    F(u32),
    /// A type alias (`alias NAME = ty;`), e.g. `f32` or `vec4<f32>`.
    Ty(&'static str),
}

impl Def {
    pub fn f(x: f32) -> Def {
        Def::F(x.to_bits())
    }
    fn wgsl(&self) -> String {
        match *self {
            Def::U(v) => format!("u32 = {v}u"),
            Def::I(v) => format!("i32 = {v}i"),
            Def::B(v) => format!("bool = {v}"),
            Def::F(b) => format!("f32 = {:?}f", f32::from_bits(b)),
            Def::Ty(t) => t.to_string(),
        }
    }
}

/// Names one compiled kernel variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelSpec {
    pub shader: &'static str,
    pub entry: &'static str,
    pub defs: Vec<(&'static str, Def)>,
    /// Number of storage bindings after the uniform block.
    pub storage: u32,
}

impl KernelSpec {
    pub fn new(shader: &'static str, entry: &'static str, storage: u32) -> Self {
        KernelSpec { shader, entry, defs: Vec::new(), storage }
    }
    pub fn def(mut self, name: &'static str, v: Def) -> Self {
        self.defs.push((name, v));
        self
    }
    pub fn u(self, name: &'static str, v: u32) -> Self {
        self.def(name, Def::U(v))
    }
    pub fn b(self, name: &'static str, v: bool) -> Self {
        self.def(name, Def::B(v))
    }
}

/// A compiled compute pipeline and its bind-group layout.
/// A compile's error scope, awaited later on the web ([`Gpu::check`]).
#[cfg(target_arch = "wasm32")]
pub(crate) type ScopeFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Option<wgpu::Error>>>>;

pub struct Kernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) storage: u32,
    pub(crate) label: String,
    /// `shader::entry` (the profiler's row).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // profiling is native only
    pub(crate) name: String,
}

/// The WGSL files, embedded at build time.
const SHADERS: &[(&str, &str)] = &[
    ("common", include_str!("../../shaders/common.wgsl")),
    ("wg_reduce", include_str!("../../shaders/wg_reduce.wgsl")),
    ("matmul_common", include_str!("../../shaders/matmul_common.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("matmul_k4", include_str!("../../shaders/matmul_k4.wgsl")),
    ("matmul_n4", include_str!("../../shaders/matmul_n4.wgsl")),
    ("probe_subgroup", include_str!("../../shaders/probe_subgroup.wgsl")),
    ("matmul_tiled", include_str!("../../shaders/matmul_tiled.wgsl")),
    ("elementwise", include_str!("../../shaders/elementwise.wgsl")),
    ("activation", include_str!("../../shaders/activation.wgsl")),
    ("layernorm", include_str!("../../shaders/layernorm.wgsl")),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    ("cross_entropy", include_str!("../../shaders/cross_entropy.wgsl")),
    ("embedding", include_str!("../../shaders/embedding.wgsl")),
    ("reduce", include_str!("../../shaders/reduce.wgsl")),
    ("reduce4", include_str!("../../shaders/reduce4.wgsl")),
    ("rng", include_str!("../../shaders/rng.wgsl")),
    ("patch", include_str!("../../shaders/patch.wgsl")),
    ("optim", include_str!("../../shaders/optim.wgsl")),
    ("kl", include_str!("../../shaders/kl.wgsl")),
    ("decoder", include_str!("../../shaders/decoder.wgsl")),
    ("guard", include_str!("../../shaders/guard.wgsl")),
    ("half", include_str!("../../shaders/half.wgsl")),
];

fn shader_source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Build the full WGSL text of a variant: constants, the shared helpers, then the shader with
/// `//@for v in 0..N` … `//@end` blocks unrolled (N a constant name or a literal; `{v}` in the
/// block is replaced by the index, `{v/D}` and `{v%D}` by its quotient and remainder; blocks
/// nest; `//@let w = EXPR` names a value computed from the indices and u32 constants with
/// `+ - * / %` and parentheses, for the rest of its block, used as `{w}`, `{w/D}`, `{w%D}`),
/// `//@if NAME` … `//@end` blocks kept only where
/// the bool constant NAME is true (`//@if !NAME`: false) — for code that must not reach a
/// variant at all, such as subgroup builtins, which need a capability wherever they appear —
/// and `//@include NAME` lines replaced by that shader file (shared pieces such as the
/// workgroup reduction or the matmul epilogue).
pub fn expand(spec: &KernelSpec) -> Result<String> {
    let body = shader_source(spec.shader).ok_or_else(|| Error::Gpu {
        context: format!("kernel {}", spec.shader),
        message: "no such shader file".into(),
    })?;
    let mut out = String::new();
    for (name, v) in &spec.defs {
        match v {
            Def::Ty(t) => writeln!(out, "alias {name} = {t};"),
            _ => writeln!(out, "const {name}: {};", v.wgsl()),
        }
        .ok();
    }
    out.push_str(shader_source("common").unwrap_or(""));
    out.push('\n');
    let lines: Vec<&str> = body.lines().collect();
    Expansion { defs: &spec.defs, shader: spec.shader }.text(&lines, &mut out)?;
    Ok(out)
}

struct Expansion<'a> {
    defs: &'a [(&'static str, Def)],
    shader: &'static str,
}

impl Expansion<'_> {
    fn bad(&self, m: String) -> Error {
        Error::Gpu { context: format!("expanding shader {}", self.shader), message: m }
    }

    /// Expand a whole text (a shader or an included file) into `out`.
    fn text(&self, lines: &[&str], out: &mut String) -> Result<()> {
        let mut pos = 0;
        self.unroll(lines, &mut pos, &[], out, None)?;
        if pos < lines.len() {
            return Err(self.bad(format!("//@end without a block, line {}", pos + 1)));
        }
        Ok(())
    }

    /// Copy `lines` from `pos` to `out` until the `//@end` of the enclosing block (opened on
    /// line index `block`; `pos` is left on the `//@end`) or the end of the text.
    fn unroll(
        &self,
        lines: &[&str],
        pos: &mut usize,
        vars: &[(String, u32)],
        out: &mut String,
        block: Option<usize>,
    ) -> Result<()> {
        // The block's indices, and the values its `//@let` lines name.
        let mut vars = vars.to_vec();
        while *pos < lines.len() {
            let line = lines[*pos];
            let t = line.trim();
            if t == "//@end" {
                return Ok(());
            }
            if let Some(name) = t.strip_prefix("//@include ") {
                let src = shader_source(name.trim())
                    .ok_or_else(|| self.bad(format!("//@include of unknown shader {name}")))?;
                let inc: Vec<&str> = src.lines().collect();
                let mut p = 0;
                self.unroll(&inc, &mut p, &vars, out, None)?;
                if p < inc.len() {
                    return Err(self.bad(format!("//@end without a block, line {} of included {name}", p + 1)));
                }
                *pos += 1;
                continue;
            }
            if let Some(cond) = t.strip_prefix("//@if ") {
                let cond = cond.trim();
                let (negated, name) = match cond.strip_prefix('!') {
                    Some(n) => (true, n.trim()),
                    None => (false, cond),
                };
                let value = match self.defs.iter().find(|(k, _)| *k == name) {
                    Some((_, Def::B(b))) => *b,
                    _ => return Err(self.bad(format!("//@if {name}: not a bool constant of this variant"))),
                };
                let open = *pos;
                *pos += 1;
                let mut sink = String::new();
                self.unroll(lines, pos, &vars, &mut sink, Some(open))?;
                if value != negated {
                    out.push_str(&sink);
                }
                *pos += 1;
                continue;
            }
            if let Some(rest) = t.strip_prefix("//@let ") {
                let (name, expr) = rest.split_once('=').ok_or_else(|| self.bad(format!("bad //@let: {t}")))?;
                let value = self.eval(expr, &vars).map_err(|m| self.bad(format!("{t}: {m}")))?;
                vars.push((name.trim().to_string(), value));
                *pos += 1;
                continue;
            }
            if let Some(rest) = t.strip_prefix("//@for ") {
                // "v in 0..N"
                let (var, range) = rest.split_once(" in 0..").ok_or_else(|| self.bad(format!("bad //@for: {t}")))?;
                let range = range.trim();
                let n = match range.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => match self.defs.iter().find(|(k, _)| *k == range) {
                        Some((_, Def::U(n))) => *n,
                        _ => return Err(self.bad(format!("//@for bound {range} is not a u32 constant"))),
                    },
                };
                let open = *pos;
                let start = *pos + 1;
                let mut end = start;
                for i in 0..n.max(1) {
                    *pos = start;
                    let mut v = vars.clone();
                    v.push((var.trim().to_string(), i));
                    let mut sink = String::new();
                    self.unroll(lines, pos, &v, &mut sink, Some(open))?;
                    if n > 0 {
                        out.push_str(&sink);
                    }
                    end = *pos;
                }
                *pos = end + 1;
                continue;
            }
            let mut l = line.to_string();
            // The latest binding of a name wins (a `//@let` or an inner index shadows).
            for (v, i) in vars.iter().rev() {
                l = l.replace(&format!("{{{v}}}"), &i.to_string());
                l = self.quotients(l, v, *i)?;
            }
            out.push_str(&l);
            out.push('\n');
            *pos += 1;
        }
        match block {
            Some(open) => Err(self.bad(format!("{} on line {} has no //@end", lines[open].trim(), open + 1))),
            None => Ok(()),
        }
    }

    /// The value of a `//@let` expression: u32 literals, the enclosing blocks' indices and
    /// values, u32 constants, `+ - * / %` (the usual precedence, left to right) and parentheses.
    fn eval(&self, expr: &str, vars: &[(String, u32)]) -> std::result::Result<u32, String> {
        let mut toks: Vec<String> = Vec::new();
        let mut chars = expr.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
            } else if c.is_ascii_alphanumeric() || c == '_' {
                let mut w = String::new();
                while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    w.push(c);
                }
                toks.push(w);
            } else if "+-*/%()".contains(c) {
                toks.push(c.to_string());
                chars.next();
            } else {
                return Err(format!("unexpected {c:?}"));
            }
        }
        let mut at = 0;
        let v = self.sum(&toks, &mut at, vars)?;
        match toks.get(at) {
            None => Ok(v),
            Some(t) => Err(format!("unexpected {t:?}")),
        }
    }

    fn sum(&self, toks: &[String], at: &mut usize, vars: &[(String, u32)]) -> std::result::Result<u32, String> {
        let mut v = self.product(toks, at, vars)?;
        while let Some(op) = toks.get(*at).filter(|t| *t == "+" || *t == "-") {
            *at += 1;
            let r = self.product(toks, at, vars)?;
            v = if op == "+" { v.checked_add(r) } else { v.checked_sub(r) }.ok_or("overflow or a negative value")?;
        }
        Ok(v)
    }

    fn product(&self, toks: &[String], at: &mut usize, vars: &[(String, u32)]) -> std::result::Result<u32, String> {
        let mut v = self.atom(toks, at, vars)?;
        while let Some(op) = toks.get(*at).filter(|t| ["*", "/", "%"].contains(&t.as_str())) {
            *at += 1;
            let r = self.atom(toks, at, vars)?;
            v = match op.as_str() {
                "*" => v.checked_mul(r).ok_or("overflow")?,
                _ if r == 0 => return Err("division by zero".into()),
                "/" => v / r,
                _ => v % r,
            };
        }
        Ok(v)
    }

    fn atom(&self, toks: &[String], at: &mut usize, vars: &[(String, u32)]) -> std::result::Result<u32, String> {
        let t = toks.get(*at).ok_or("the expression ends early")?;
        *at += 1;
        if t == "(" {
            let v = self.sum(toks, at, vars)?;
            if toks.get(*at).map(String::as_str) != Some(")") {
                return Err("unclosed (".into());
            }
            *at += 1;
            return Ok(v);
        }
        if let Ok(n) = t.parse::<u32>() {
            return Ok(n);
        }
        if let Some((_, v)) = vars.iter().rev().find(|(n, _)| n == t) {
            return Ok(*v);
        }
        match self.defs.iter().find(|(k, _)| k == t) {
            Some((_, Def::U(v))) => Ok(*v),
            _ => Err(format!("{t} is not an index, a //@let value or a u32 constant")),
        }
    }

    /// `{v/N}` and `{v%N}` in a line of a `//@for v` block: the index divided by N, or its
    /// remainder (N a literal or a u32 constant): row i of a tile is lane i % WGX's load
    /// number i / WGX.
    fn quotients(&self, mut l: String, v: &str, i: u32) -> Result<String> {
        for op in ['/', '%'] {
            let pat = format!("{{{v}{op}");
            while let Some(at) = l.find(&pat) {
                let from = at + pat.len();
                let len = l[from..].find('}').ok_or_else(|| self.bad(format!("unclosed {pat} in: {l}")))?;
                let name = &l[from..from + len];
                let d = match name.parse::<u32>() {
                    Ok(d) => d,
                    Err(_) => match self.defs.iter().find(|(k, _)| *k == name) {
                        Some((_, Def::U(d))) => *d,
                        _ => return Err(self.bad(format!("{pat}{name}}}: {name} is not a u32 constant"))),
                    },
                };
                if d == 0 {
                    return Err(self.bad(format!("{pat}{name}}}: division by zero")));
                }
                let value = if op == '/' { i / d } else { i % d };
                l.replace_range(at..from + len + 1, &value.to_string());
            }
        }
        Ok(l)
    }
}

impl Gpu {
    /// Every kernel variant this device has compiled so far, sorted by label (what a workload
    /// needs: see `gpu::translate`).
    pub fn kernel_specs(&self) -> Vec<KernelSpec> {
        let mut v: Vec<KernelSpec> = self.kernels.lock().unwrap().keys().cloned().collect();
        v.sort_by_cached_key(|s| format!("{}::{} {:?}", s.shader, s.entry, s.defs));
        v
    }

    /// The compiled kernel for `spec`, compiling it on first use.
    pub fn kernel(&self, spec: &KernelSpec) -> Result<Arc<Kernel>> {
        if let Some(k) = self.kernels.lock().unwrap().get(spec) {
            return Ok(k.clone());
        }
        let k = Arc::new(self.compile(spec)?);
        self.kernels.lock().unwrap().insert(spec.clone(), k.clone());
        Ok(k)
    }

    fn compile(&self, spec: &KernelSpec) -> Result<Kernel> {
        let max = self.limits().max_storage_buffers_per_shader_stage;
        if spec.storage > max {
            return Err(Error::Limit {
                what: format!("kernel {}::{}", spec.shader, spec.entry),
                needed: spec.storage as u64,
                limit: max as u64,
                limit_name: "max_storage_buffers_per_shader_stage",
                hint: String::new(),
            });
        }
        let src = expand(spec)?;
        let label = format!("{}::{} {:?}", spec.shader, spec.entry, spec.defs);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc =
            wgpu::ShaderModuleDescriptor { label: Some(&label), source: wgpu::ShaderSource::Wgsl(src.as_str().into()) };
        let module = if self.checked {
            self.device.create_shader_module(desc)
        } else {
            // SAFETY: every kernel clamps or guards its own indices, and each one is checked
            // against its CPU reference (including ragged sizes) by the test-suite. Set
            // TRAMWAY_CHECKED=1 to compile with naga's runtime checks when debugging.
            unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
        };
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        }];
        for b in 1..=spec.storage {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: b,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
        let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(spec.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu { context: format!("compiling {label}"), message: e.to_string() });
        }
        #[cfg(target_arch = "wasm32")]
        self.pending.lock().unwrap().push((label.clone(), Box::pin(scope.pop())));
        // The profile's row: a variant that shares loads across subgroups gets its own.
        let sg = if spec.defs.contains(&("SG", Def::B(true))) { " (subgroup)" } else { "" };
        let name = format!("{}::{}{sg}", spec.shader, spec.entry);
        Ok(Kernel { pipeline, layout, storage: spec.storage, label, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_lines(text: &str, defs: &[(&'static str, Def)]) -> Result<String> {
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        Expansion { defs, shader: "test" }.text(&lines, &mut out)?;
        Ok(out)
    }

    #[test]
    fn if_blocks_nest_in_for_blocks_and_unmatched_ends_are_refused() {
        let defs = [("N", Def::U(3)), ("ON", Def::B(true)), ("OFF", Def::B(false))];
        let text =
            "a\n//@for i in 0..N\n//@if ON\nx{i}\n//@end\n//@if OFF\ny{i}\n//@end\n//@if !OFF\nz{i}\n//@end\n//@end\nb";
        assert_eq!(expand_lines(text, &defs).unwrap(), "a\nx0\nz0\nx1\nz1\nx2\nz2\nb\n");
        let e = expand_lines("a\n//@if ON\nb", &defs).unwrap_err().to_string();
        assert!(e.contains("//@if ON on line 2 has no //@end"), "{e}");
        let e = expand_lines("a\n//@for i in 0..N\n//@if ON\nb\n//@end", &defs).unwrap_err().to_string();
        assert!(e.contains("//@for i in 0..N on line 2 has no //@end"), "{e}");
        let e = expand_lines("a\n//@end\nb", &defs).unwrap_err().to_string();
        assert!(e.contains("//@end without a block, line 2"), "{e}");
        let e = expand_lines("//@if N\n//@end", &defs).unwrap_err().to_string();
        assert!(e.contains("//@if N: not a bool constant"), "{e}");
    }

    #[test]
    fn loop_indices_divide_and_take_remainders() {
        let defs = [("N", Def::U(5)), ("W", Def::U(2)), ("Z", Def::U(0)), ("ON", Def::B(true))];
        let text = "//@for i in 0..N\nc{i} = a{i/W}[{i%W}] + {i%3} {i/W}\n//@end";
        assert_eq!(
            expand_lines(text, &defs).unwrap(),
            "c0 = a0[0] + 0 0\nc1 = a0[1] + 1 0\nc2 = a1[0] + 2 1\nc3 = a1[1] + 0 1\nc4 = a2[0] + 1 2\n"
        );
        for (bad, why) in [("{i/Z}", "division by zero"), ("{i%ON}", "not a u32 constant"), ("{i/W", "unclosed")] {
            let e = expand_lines(&format!("//@for i in 0..N\n{bad}\n//@end"), &defs).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn let_lines_name_values_of_the_indices_for_the_rest_of_their_block() {
        let defs = [("Q", Def::U(3)), ("W", Def::U(4)), ("ON", Def::B(true))];
        // Row i at k offset t of a tile of 3 row quads: quad number f = t Q + i / 4.
        let text = "//@for t in 0..2\n//@for i in 0..8\n//@let f = t * Q + i / 4\nb{t}{i} = a{f/W}[{i%4}] l{f%W} f{f}\n//@end\n//@end";
        let out = expand_lines(text, &defs).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 16);
        assert_eq!(lines[0], "b00 = a0[0] l0 f0");
        assert_eq!(lines[5], "b05 = a0[1] l1 f1");
        assert_eq!(lines[8], "b10 = a0[0] l3 f3");
        assert_eq!(lines[15], "b17 = a1[3] l0 f4");
        // Precedence, parentheses, shadowing and the scope of a value.
        let text = "//@for i in 0..2\n//@let v = (i + 1) * 2 + 6 % 4 - W / 2\n//@let i = v * 10\n{i} {v}\n//@end\n{i}";
        assert_eq!(expand_lines(text, &defs).unwrap(), "20 2\n40 4\n{i}\n");
        for (bad, why) in [
            ("1 / (i - i)", "division by zero"),
            ("ON + 1", "ON is not an index"),
            ("(i + 1", "unclosed ("),
            ("i - 1", "negative"),
            ("i +", "ends early"),
            ("i ^ 2", "unexpected '^'"),
            ("i 2", "unexpected \"2\""),
        ] {
            let e = expand_lines(&format!("//@for i in 0..1\n//@let x = {bad}\n{{x}}\n//@end"), &defs)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
