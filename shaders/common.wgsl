// Helpers shared by every kernel (prepended after the specialisation constants).

// Finite stand-in for -inf in masks: exp() of it underflows to exactly 0 and it never makes NaN.
const NEG_BIG: f32 = -1.0e30;

// Linear workgroup index of a 2-D grid made by `grid_1d` on the Rust side.
fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// erf, Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7, about one f32 ulp near 1.
// WGSL has no erf builtin.
fn erf_approx(x: f32) -> f32 {
    let ax = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * ax);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let y = 1.0 - poly * exp(-ax * ax);
    return select(y, -y, x < 0.0);
}

// tanh with its argument clamped: some drivers compute tanh through exp and overflow to NaN.
fn tanh_safe(x: f32) -> f32 {
    return tanh(clamp(x, -10.0, 10.0));
}

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const INV_SQRT_2: f32 = 0.7071067811865476;
const INV_SQRT_2PI: f32 = 0.3989422804014327;

fn gelu_erf(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * INV_SQRT_2));
}
fn gelu_erf_grad(x: f32) -> f32 {
    return 0.5 * (1.0 + erf_approx(x * INV_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x);
}
fn gelu_tanh(x: f32) -> f32 {
    let t = tanh_safe(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
    return 0.5 * x * (1.0 + t);
}
fn gelu_tanh_grad(x: f32) -> f32 {
    let t = tanh_safe(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
}
