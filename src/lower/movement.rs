//! Data movement on int8 tensors, and `Concat` with requantized inputs.
//!
//! `move_int8` matches `DQ(x_q) → M → Q(p)` where `M` only moves or selects
//! elements (Reshape, Transpose, Flatten, Squeeze, Unsqueeze, MaxPool,
//! Slice, Gather, Split, Pad, Resize-nearest, Identity, DepthToSpace,
//! SpaceToDepth, Tile, Expand) and `p` equals the DQ's parameters. Such ops
//! commute with dequantization exactly, so `M` runs on `x_q` and produces
//! the Q's output; a reader of `M`'s float output that is not such a Q gets
//! a DequantizeLinear of the int8 result (the same values). Pad's constant
//! becomes its quantized value (zero point when absent). Only at opsets
//! whose type constraints admit 8-bit integers for `M` (MaxPool 12, Pad 11,
//! Flatten 9, Resize 10).
//!
//! `concat` matches `DQ(x_i) → Concat → Q(y)`: inputs with `y`'s parameters
//! feed the int8 Concat directly, others through a requantizing
//! `DequantizeLinear → QuantizeLinear(y)` pair — `Q(concat(x)) =
//! concat(Q(x_i))` elementwise, so this is exact.

use super::pattern::{self, dq_producing, q_node, Dq, QParams};
use super::Cx;
use crate::error::Result;
use crate::ir::{NodeId, ValueId};

/// The first opset at which op `op` accepts (u)int8 data, and the input
/// slot holding the data.
fn int8_since(op: &str) -> Option<(i64, usize)> {
    Some(match op {
        "Reshape" | "Transpose" | "Squeeze" | "Unsqueeze" | "Slice" | "Gather" | "Split"
        | "Identity" | "DepthToSpace" | "SpaceToDepth" | "Tile" | "Expand" => (1, 0),
        "Flatten" => (9, 0),
        "Resize" => (10, 0),
        "Pad" => (11, 0),
        "MaxPool" => (12, 0),
        _ => return None,
    })
}

/// The float-domain `DequantizeLinear` of int8 value `q` into `out`.
fn dequantize_into(cx: &mut Cx, q: ValueId, p: &QParams, out: ValueId) {
    let base = cx.g.value_name(out).to_string();
    let ins = vec![Some(q), Some(p.scale_value), p.zero_point_value];
    cx.add(
        &format!("{base}/DequantizeLinear"),
        "DequantizeLinear",
        "",
        ins,
        vec![out],
        vec![],
    );
}

/// Points output `slot` of `id` (float `old`) at an int8 value: the output of
/// a Q consumer with parameters `p` when there is one (that Q goes), a new
/// value otherwise. Every other reader of `old` reads a DequantizeLinear of
/// the int8 value. Returns whether a Q was absorbed.
fn retarget_output(cx: &mut Cx, id: NodeId, slot: usize, old: ValueId, p: &QParams) -> bool {
    let consumers: Vec<(NodeId, usize)> = cx.g.value(old).consumers().to_vec();
    let mut same_qs: Vec<pattern::Qn> = consumers
        .iter()
        .filter_map(|&(c, s)| (s == 0).then(|| q_node(cx.g, c)).flatten())
        .filter(|q| q.p.same_scalar(p))
        .collect();
    // The first such Q's output becomes this op's output (its name stays);
    // a further one whose output is a graph output or read by a subgraph
    // keeps its Q (its name must not change), reading the DequantizeLinear.
    if same_qs.len() > 1 {
        let first = same_qs.remove(0);
        same_qs.retain(|q| pattern::replaceable(cx.g, q.output));
        same_qs.insert(0, first);
    }
    let new = match same_qs.first() {
        Some(q) => q.output,
        None => {
            let base = format!("{}/quantized", cx.g.value_name(old));
            cx.g.new_value(&base)
        }
    };
    cx.g.set_output(id, slot, Some(new));
    for q in &same_qs {
        cx.remove(q.node);
        if q.output != new {
            cx.g.replace_uses(q.output, new);
        }
    }
    let still_read = !cx.g.value(old).consumers().is_empty() || cx.g.is_graph_output(old);
    if still_read {
        dequantize_into(cx, new, p, old);
    }
    !same_qs.is_empty()
}

/// Whether some output of `id` is read by a Q with parameters `p`.
fn feeds_same_q(cx: &Cx, id: NodeId, p: &QParams) -> bool {
    let Some(node) = cx.g.node(id) else {
        return false;
    };
    node.outputs.iter().flatten().any(|&o| {
        cx.g.value(o)
            .consumers()
            .iter()
            .any(|&(c, s)| s == 0 && q_node(cx.g, c).is_some_and(|q| q.p.same_scalar(p)))
    })
}

pub fn move_int8(cx: &mut Cx, id: NodeId) -> Result<Option<&'static str>> {
    let Some(node) = cx.g.node(id) else {
        return Ok(None);
    };
    let Some((since, slot)) = int8_since(&node.op_type) else {
        return Ok(None);
    };
    if cx.opset < since {
        return Ok(None);
    }
    let Some(dq) = node.input(slot).and_then(|v| dq_producing(cx.g, v)) else {
        return Ok(None);
    };
    if !dq.p.is_scalar_8bit() || !feeds_same_q(cx, id, &dq.p) {
        return Ok(None);
    }
    // Outputs a subgraph reads by name cannot be moved.
    if node
        .outputs
        .iter()
        .flatten()
        .any(|&o| cx.g.has_implicit_uses(o))
    {
        return Ok(None);
    }
    let op = node.op_type.clone();
    let name = node.name.clone();
    match op.as_str() {
        "Resize" => {
            let mode = node.get_string("mode").ok().flatten();
            if mode.as_deref().is_some_and(|m| m != "nearest") {
                return Ok(None);
            }
        }
        // The Indices output is unaffected, but keep it simple: only the
        // single-output form.
        "MaxPool" if node.output(1).is_some() => return Ok(None),
        "Pad" => {
            let mode = node.get_string("mode").ok().flatten();
            if mode.as_deref().unwrap_or("constant") == "constant"
                && !quantize_pad_value(cx, id, &dq, &name)
            {
                return Ok(None);
            }
        }
        _ => {}
    }
    let outputs: Vec<(usize, ValueId)> = match cx.g.node(id) {
        Some(n) => n
            .outputs
            .iter()
            .enumerate()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect(),
        None => return Ok(None),
    };
    cx.g.set_input(id, slot, Some(dq.input));
    for (k, old) in outputs {
        retarget_output(cx, id, k, old, &dq.p);
    }
    Ok(Some(match op.as_str() {
        "MaxPool" => "MaxPool on int8",
        "Pad" => "Pad on int8",
        "Resize" => "Resize on int8",
        "Gather" => "Gather on int8",
        "Slice" | "Split" => "Slice/Split on int8",
        _ => "Reshape/Transpose/… on int8",
    }))
}

/// Gives constant-mode Pad `id` its padding value in the integer domain
/// (`Q(value)`, the zero point when there is none). `false` when the value
/// is not a constant.
fn quantize_pad_value(cx: &mut Cx, id: NodeId, dq: &Dq, name: &str) -> bool {
    let value = match cx.g.node(id).and_then(|n| n.input(2)) {
        None => 0.0,
        Some(v) => match cx.g.initializer(v).and_then(|t| t.to_f32_vec().ok()) {
            Some(vals) if vals.len() == 1 => vals[0],
            _ => return false,
        },
    };
    let Some(t) = dq.p.scalar_tensor(dq.p.quantize(value)) else {
        return false;
    };
    let c = cx.constant(&format!("{name}/pad_value"), t);
    cx.g.set_input(id, 2, Some(c));
    true
}

/// The Concat pattern: each input's DQ, and the output Q.
pub(super) fn concat_parts(cx: &Cx, id: NodeId) -> Option<(Vec<Dq>, pattern::Qn)> {
    let node = cx.g.node(id)?;
    let ins: Option<Vec<Dq>> = node
        .inputs
        .iter()
        .map(|v| dq_producing(cx.g, (*v)?).filter(|d| d.p.is_scalar_8bit()))
        .collect();
    let ins = ins?;
    let q = pattern::sole_q(cx.g, node.output(0)?)?;
    (q.p.is_scalar_8bit() && ins.iter().all(|d| d.p.dtype == q.p.dtype)).then_some((ins, q))
}

pub fn concat(cx: &mut Cx, id: NodeId) -> Result<Option<&'static str>> {
    if cx.opset < 4 {
        return Ok(None);
    }
    let Some((ins, q)) = concat_parts(cx, id) else {
        return Ok(None);
    };
    for (slot, d) in ins.iter().enumerate() {
        let v = if d.p.same_scalar(&q.p) {
            d.input
        } else {
            // Requantize: DQ(x_i) → Q(y's parameters).
            let base = format!("{}/requantized", cx.g.value_name(d.input));
            let r = cx.g.new_value(&base);
            let qn = format!("{}/QuantizeLinear", cx.g.value_name(r));
            let qins = vec![Some(d.output), Some(q.p.scale_value), q.p.zero_point_value];
            cx.add(&qn, "QuantizeLinear", "", qins, vec![r], vec![]);
            r
        };
        cx.g.set_input(id, slot, Some(v));
    }
    cx.remove(q.node);
    cx.g.set_output(id, 0, Some(q.output));
    Ok(Some("Concat on int8"))
}
