//! Redundant requantization and clamps.
//!
//! - `collapse`: `DQ(x_q, p) → Q(p)` is the identity on every value the DQ
//!   produces (`round((q − zp)·s / s) + zp = q`), so readers of the Q's
//!   output read `x_q`. A `DQ(p) → Q(p')` pair with different parameters is
//!   left as it is: that pair *is* the standard requantization.
//! - `absorb_clamp`: `DQ(x_q) → Relu | Clip(lo, hi) → Q(p)` where `Q`'s
//!   saturation already clamps to `[lo, hi]` (`Q(lo)` = type minimum, `Q(hi)`
//!   = type maximum; for Relu on uint8 that is zero point 0): the clamp
//!   goes, and with equal parameters the DQ/Q pair too. A Relu on int8 with
//!   zero point 0 (symmetric activations) runs on the int8 tensor directly
//!   (Relu accepts int8 from opset 14): `max(q, 0)` in the integer domain is
//!   Relu in the real domain.
//! - `float_output`: `op → Q(p) → DQ(p) → model output` where the op
//!   computes in float32 after lowering (a `MatMulInteger` + int32 bias
//!   rescaled by `Mul`, or a node left in float): the pair only rounds the
//!   model's output to 8 bits, so it goes and the op writes the output
//!   (same name, float32 as before, one rounding fewer).

use super::pattern::{self, dq_producing, q_node, sole_q};
use super::Cx;
use crate::error::Result;
use crate::ir::types::dtype_of;
use crate::ir::{DataType, NodeId};

pub fn collapse(cx: &mut Cx, id: NodeId) -> Result<Option<&'static str>> {
    let Some(q) = q_node(cx.g, id) else {
        return Ok(None);
    };
    let Some(d) = dq_producing(cx.g, q.input) else {
        return Ok(None);
    };
    if !d.p.same_scalar(&q.p) || !pattern::replaceable(cx.g, q.output) {
        return Ok(None);
    }
    cx.remove(id);
    cx.g.replace_uses(q.output, d.input);
    Ok(Some("DequantizeLinear → QuantizeLinear collapsed"))
}

pub fn absorb_clamp(cx: &mut Cx, id: NodeId) -> Result<Option<&'static str>> {
    let Some(node) = cx.g.node(id) else {
        return Ok(None);
    };
    let (Some(x), Some(y)) = (node.input(0), node.output(0)) else {
        return Ok(None);
    };
    let Some((lo, hi)) = pattern::clamp_bounds(cx.g, node) else {
        return Ok(None);
    };
    let is_relu = node.is("Relu");
    let Some(d) = dq_producing(cx.g, x).filter(|d| d.p.is_scalar_8bit()) else {
        return Ok(None);
    };
    let Some(q) = sole_q(cx.g, y).filter(|q| q.p.is_scalar_8bit()) else {
        return Ok(None);
    };
    let same = d.p.same_scalar(&q.p);
    if pattern::clamp_absorbed(&q.p, lo, hi) {
        cx.remove(id);
        if same && pattern::replaceable(cx.g, q.output) {
            cx.remove(q.node);
            cx.g.replace_uses(q.output, d.input);
        } else {
            cx.g.set_input(q.node, 0, Some(d.output));
        }
        return Ok(Some("Relu/Clip absorbed by saturation"));
    }
    let int8_relu =
        is_relu && same && d.p.dtype == DataType::Int8 && d.p.zero_point[0] == 0 && cx.opset >= 14;
    if int8_relu {
        cx.remove(q.node);
        cx.g.set_input(id, 0, Some(d.input));
        cx.g.set_output(id, 0, Some(q.output));
        return Ok(Some("Relu on int8"));
    }
    Ok(None)
}

pub fn float_output(cx: &mut Cx, id: NodeId) -> Result<Option<&'static str>> {
    let g = &*cx.g;
    let Some(out) = g.node(id).and_then(|n| n.output(0)) else {
        return Ok(None);
    };
    if !g.is_graph_output(out) {
        return Ok(None);
    }
    let Some(d) = dq_producing(g, out).filter(|d| d.p.scalar) else {
        return Ok(None);
    };
    let Some(q) = g.producer_node(d.input).and_then(|(qid, _)| q_node(g, qid)) else {
        return Ok(None);
    };
    let only = |v, reader: NodeId| {
        pattern::replaceable(g, v) && matches!(g.value(v).consumers(), [(c, 0)] if *c == reader)
    };
    if !d.p.same_scalar(&q.p) || !only(d.input, id) || !only(q.input, q.node) {
        return Ok(None);
    }
    let Some((pid, producer)) = g.producer_node(q.input) else {
        return Ok(None);
    };
    let Some(slot) = producer.outputs.iter().position(|&o| o == Some(q.input)) else {
        return Ok(None);
    };
    // Float32 for certain: declared so, or a Mul by a float32 constant
    // (the rescale a lowering writes; Mul's operands share one type).
    let float = dtype_of(g, q.input) == Some(DataType::Float)
        || (producer.is("Mul")
            && producer.inputs.iter().flatten().any(|&v| {
                g.initializer(v)
                    .is_some_and(|t| t.dtype() == DataType::Float)
            }));
    if !producer.is_onnx()
        || producer.is("QuantizeLinear")
        || producer.is("DequantizeLinear")
        || pattern::between_qdq(g, producer)
        || !float
    {
        return Ok(None);
    }
    cx.remove(q.node);
    cx.remove(id);
    cx.g.set_output(pid, slot, Some(out));
    Ok(Some("model output left in float (Q/DQ pair dropped)"))
}
