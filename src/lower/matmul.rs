//! `MatMul` ⇒ `QLinearMatMul`.
//!
//! Matches `DQ(a_q), DQ(b_q) → MatMul → Q(y)` with per-tensor 8-bit `a` and
//! `y`, and `b` either per tensor (an activation: attention's Q·Kᵀ, or a
//! weight) or a constant 2-D weight quantized per column (axis 1), which
//! ONNX `QLinearMatMul` (opset 10) allows for `b_scale`/`b_zero_point`.
//! Batched (3-D, 4-D) operands follow MatMul's broadcasting as before.
//!
//! Emits `QLinearMatMul(a_q, a_scale, a_zp, b_q, b_scale, b_zp, y_scale,
//! y_zp)` producing the Q's output. Refuses (QDQ stays) on per-column
//! scales of a non-2-D or non-constant `b`, or non-constant parameters.

use super::conv::{activation_dq, closing_q, y_zero_point, zero_point_input};
use super::pattern::{dq_producing, Dq};
use super::Cx;
use crate::error::Result;
use crate::ir::{DataType, NodeId, ValueId};

/// `b` of a QLinearMatMul: per tensor, or per column of a constant 2-D
/// tensor.
pub(super) fn b_operand(cx: &Cx, v: ValueId) -> Option<Dq> {
    let b = dq_producing(cx.g, v)?;
    if !matches!(b.p.dtype, DataType::Uint8 | DataType::Int8) {
        return None;
    }
    if b.p.scalar {
        return Some(b);
    }
    let t = cx.g.initializer(b.input)?;
    (t.dims().len() == 2 && b.p.axis == 1 && b.p.scale.len() == t.dims()[1]).then_some(b)
}

/// The inputs of a QLinearMatMul computing `a · b_input` (with `b`'s
/// parameters) into a Q with scale `y_scale`, zero point `y_zp`; `None`
/// when a zero point cannot be built. Adds only initializers.
pub(super) fn inputs(
    cx: &mut Cx,
    name: &str,
    a: &Dq,
    b_input: ValueId,
    b: &Dq,
    y_scale: ValueId,
    y_zp: ValueId,
) -> Option<Vec<Option<ValueId>>> {
    let az = zero_point_input(cx, a, &format!("{name}/a"))?;
    let bz = zero_point_input(cx, b, &format!("{name}/b"))?;
    Some(vec![
        Some(a.input),
        Some(a.p.scale_value),
        Some(az),
        Some(b_input),
        Some(b.p.scale_value),
        Some(bz),
        Some(y_scale),
        Some(y_zp),
    ])
}

pub fn qlinear_matmul(cx: &mut Cx, id: NodeId) -> Result<Option<&'static str>> {
    let Some(node) = cx.g.node(id) else {
        return Ok(None);
    };
    let (Some(av), Some(bv), Some(yv)) = (node.input(0), node.input(1), node.output(0)) else {
        return Ok(None);
    };
    let name = node.name.clone();
    let (Some(a), Some(b)) = (activation_dq(cx, av), b_operand(cx, bv)) else {
        return Ok(None);
    };
    let Some((q, clamp)) = closing_q(cx, yv) else {
        return Ok(None);
    };
    let Some(yz) = y_zero_point(cx, &q, &name) else {
        return Ok(None);
    };
    let Some(ins) = inputs(cx, &name, &a, b.input, &b, q.p.scale_value, yz) else {
        return Ok(None);
    };
    cx.remove(id);
    if let Some(c) = clamp {
        cx.remove(c);
    }
    cx.remove(q.node);
    cx.add(&name, "QLinearMatMul", "", ins, vec![q.output], vec![]);
    Ok(Some("MatMul → QLinearMatMul"))
}
