//! Facts derived from the graph's structure: which values are constant,
//! the bounds a Relu/Clip clamps to, and the interval outside which every
//! reader of a value computes a constant ([`flat_outside`]).

use super::graph::Graph;
use super::node::Node;
use super::ValueId;
use std::collections::HashSet;

/// Ops whose output differs from run to run or depends on more than their
/// inputs: never treated as constant.
pub const NONDETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "If",
    "Loop",
    "Scan",
];

/// Values that are constant: initializers that are not overridable graph
/// inputs (in IR < 4 every initializer is listed as an input and still
/// constant: `listed_inputs_are_constant`), Constant outputs, and outputs of
/// deterministic default-domain nodes whose inputs are all constant.
pub fn constant_values(g: &Graph, listed_inputs_are_constant: bool) -> HashSet<ValueId> {
    let mut consts: HashSet<ValueId> = g
        .initializers()
        .map(|(v, _)| v)
        .filter(|&v| listed_inputs_are_constant || !g.is_graph_input(v))
        .collect();
    let Ok(order) = g.topo_order() else {
        return consts;
    };
    for id in order {
        let Some(node) = g.node(id) else { continue };
        let foldable = node.is_onnx()
            && !NONDETERMINISTIC.contains(&node.op_type.as_str())
            && node.implicit_inputs.is_empty()
            && node.inputs.iter().flatten().all(|v| consts.contains(v));
        if foldable {
            consts.extend(node.outputs.iter().flatten());
        }
    }
    consts
}

/// The bounds `(lo, hi)` a Relu or Clip clamps its input to (infinite when
/// open); `None` for other ops or a Clip whose bounds are not constants.
pub fn clamp_bounds(g: &Graph, node: &Node) -> Option<(f32, f32)> {
    match node.op_type.as_str() {
        "Relu" => Some((0.0, f32::INFINITY)),
        "Clip" => {
            let bound = |slot: usize, attr: &str, default: f32| -> Option<f32> {
                if let Some(v) = node.input(slot) {
                    let t = g.initializer(v)?;
                    return t.to_f32_vec().ok()?.first().copied();
                }
                Some(node.get_float(attr).ok()?.unwrap_or(default))
            };
            Some((
                bound(1, "min", f32::NEG_INFINITY)?,
                bound(2, "max", f32::INFINITY)?,
            ))
        }
        _ => None,
    }
}

/// `x` clamped to `[lo, hi]` without panicking on an inverted or NaN
/// interval (`hi` below `lo` counts as `lo`; a NaN bound clamps nothing).
pub fn clamp_to(x: f32, (lo, hi): (f32, f32)) -> f32 {
    x.max(lo).min(hi.max(lo))
}

/// How far [`flat_outside`] follows a value through scalar affine ops.
const FLAT_DEPTH: usize = 6;

/// The interval `[lo, hi]` outside which every reader of `v` computes a
/// constant, so that values below `lo` (above `hi`) can be replaced by
/// `lo` (`hi`) without changing any result: a quantization range clamped
/// to it loses nothing. Readers understood (others, a graph output or a
/// subgraph read leave the side open):
/// - Relu (below 0), Clip with constant bounds, HardSigmoid (below
///   `-β/α`, above `(1-β)/α`), HardSwish (below −3);
/// - `Add`/`Sub`/`Mul`/`Div` by a one-element constant, whose output's
///   readers are flat (the interval mapped back through the affine map);
/// - `Mul(v, u)` where `u`, computed from `v`, is 0 whenever `v ≤ a`
///   (`u` = Relu, Clip at 0 or HardSigmoid of an affine function of `v`,
///   possibly scaled): hard-swish written out as `v · Clip(v + 3, 0, 6) / 6`
///   or `v · HardSigmoid(v)`.
///
/// `None` when neither side is bounded.
pub fn flat_outside(g: &Graph, v: ValueId) -> Option<(f32, f32)> {
    let (lo, hi) = readers_flat(g, v, 0);
    (lo.is_finite() || hi.is_finite()).then_some((lo, hi))
}

fn readers_flat(g: &Graph, v: ValueId, depth: usize) -> (f32, f32) {
    const OPEN: (f32, f32) = (f32::NEG_INFINITY, f32::INFINITY);
    let uses = g.value(v).consumers();
    if depth > FLAT_DEPTH || uses.is_empty() || g.is_graph_output(v) || g.has_implicit_uses(v) {
        return OPEN;
    }
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &(c, slot) in uses {
        let Some(node) = g.node(c) else { return OPEN };
        let (a, b) = reader_flat(g, node, v, slot, depth);
        // A NaN bound (a Clip's, from the file) leaves its side open.
        let (a, b) = (
            if a.is_nan() { f32::NEG_INFINITY } else { a },
            if b.is_nan() { f32::INFINITY } else { b },
        );
        lo = lo.min(a);
        hi = hi.max(b);
        if lo == f32::NEG_INFINITY && hi == f32::INFINITY {
            return OPEN;
        }
    }
    (lo, hi)
}

/// `(lo, hi)` outside which `node`, reading `v` at `slot`, is constant.
fn reader_flat(g: &Graph, node: &Node, v: ValueId, slot: usize, depth: usize) -> (f32, f32) {
    const OPEN: (f32, f32) = (f32::NEG_INFINITY, f32::INFINITY);
    if !node.is_onnx() || node.has_subgraphs() {
        return OPEN;
    }
    match node.op_type.as_str() {
        "Relu" | "Clip" if slot == 0 => clamp_bounds(g, node).unwrap_or(OPEN),
        "HardSwish" => (-3.0, f32::INFINITY),
        "HardSigmoid" => match hard_sigmoid_zero(node) {
            Some((alpha, beta)) => (-beta / alpha, (1.0 - beta) / alpha),
            None => OPEN,
        },
        "Mul" | "Add" | "Sub" | "Div" => {
            let Some(out) = node.output(0) else {
                return OPEN;
            };
            if let Some((k, c)) = affine_step(g, node, v) {
                // out = k·v + c: flat outside [lo', hi'] in out.
                let (lo, hi) = readers_flat(g, out, depth + 1);
                let (a, b) = ((lo - c) / k, (hi - c) / k);
                return if k > 0.0 { (a, b) } else { (b, a) };
            }
            if node.is("Mul") {
                let other = node.input(1 - slot.min(1));
                if let Some(a) = other.and_then(|u| zero_below(g, u, v, depth + 1)) {
                    return (a, f32::INFINITY);
                }
            }
            OPEN
        }
        _ => OPEN,
    }
}

/// HardSigmoid's `(α, β)` when `α > 0`.
fn hard_sigmoid_zero(node: &Node) -> Option<(f32, f32)> {
    let alpha = node.get_float("alpha").ok()?.unwrap_or(0.2);
    let beta = node.get_float("beta").ok()?.unwrap_or(0.5);
    (alpha > 0.0 && alpha.is_finite() && beta.is_finite()).then_some((alpha, beta))
}

/// A one-element float constant that is not an overridable graph input.
fn scalar_const(g: &Graph, v: ValueId) -> Option<f32> {
    if g.is_graph_input(v) {
        return None;
    }
    let t = g.initializer(v)?;
    let x = t.to_f32_vec().ok()?;
    (x.len() == 1 && x[0].is_finite()).then_some(x[0])
}

/// `(k, c)` with `node`'s output = `k·v + c`, `k ≠ 0`, for an Add, Sub,
/// Mul or Div of `v` and a one-element constant.
fn affine_step(g: &Graph, node: &Node, v: ValueId) -> Option<(f32, f32)> {
    let (a, b) = (node.input(0)?, node.input(1)?);
    let (k, c) = match node.op_type.as_str() {
        "Add" if a == v => (1.0, scalar_const(g, b)?),
        "Add" if b == v => (1.0, scalar_const(g, a)?),
        "Sub" if a == v => (1.0, -scalar_const(g, b)?),
        "Sub" if b == v => (-1.0, scalar_const(g, a)?),
        "Mul" if a == v => (scalar_const(g, b)?, 0.0),
        "Mul" if b == v => (scalar_const(g, a)?, 0.0),
        "Div" if a == v => (1.0 / scalar_const(g, b)?, 0.0),
        _ => return None,
    };
    (k != 0.0 && k.is_finite()).then_some((k, c))
}

/// The largest `a` such that `u` is 0 whenever `v ≤ a`, for `u` computed
/// from `v` alone: a Relu, a Clip whose lower bound is 0, or a
/// HardSigmoid, of an increasing affine function of `v`, possibly scaled
/// by positive constants.
fn zero_below(g: &Graph, u: ValueId, v: ValueId, depth: usize) -> Option<f32> {
    if depth > FLAT_DEPTH || u == v {
        return None;
    }
    let (_, node) = g.producer_node(u)?;
    if !node.is_onnx() {
        return None;
    }
    let w = node.input(0)?;
    // Where the op's input must be at most for its output to be 0.
    let threshold = match node.op_type.as_str() {
        "Relu" => 0.0,
        "Clip" => {
            let (lo, _) = clamp_bounds(g, node)?;
            if lo != 0.0 {
                return None;
            }
            0.0
        }
        "HardSigmoid" => {
            let (alpha, beta) = hard_sigmoid_zero(node)?;
            -beta / alpha
        }
        "Mul" | "Div" => {
            let (k, c) = affine_step(g, node, w)?;
            return (k > 0.0 && c == 0.0)
                .then(|| zero_below(g, w, v, depth + 1))
                .flatten();
        }
        _ => return None,
    };
    let (k, c) = affine_of(g, w, v, depth)?;
    (k > 0.0).then_some((threshold - c) / k)
}

/// `(k, c)` with `w = k·v + c`, through a chain of scalar affine ops.
fn affine_of(g: &Graph, w: ValueId, v: ValueId, depth: usize) -> Option<(f32, f32)> {
    if w == v {
        return Some((1.0, 0.0));
    }
    if depth > FLAT_DEPTH {
        return None;
    }
    let (_, node) = g.producer_node(w)?;
    if !node.is_onnx() {
        return None;
    }
    let x = node
        .inputs
        .iter()
        .flatten()
        .copied()
        .find(|&x| scalar_const(g, x).is_none())?;
    let (k1, c1) = affine_step(g, node, x)?;
    let (k0, c0) = affine_of(g, x, v, depth + 1)?;
    Some((k1 * k0, k1 * c0 + c1))
}

#[cfg(test)]
mod tests;
