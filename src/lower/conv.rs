//! `Conv` ⇒ `QLinearConv`.
//!
//! Matches
//! ```text
//! DQ(x_q) ─┐
//! DQ(w_q) ─┼─ Conv ─ [Relu | Clip] ─ Q(y)
//! DQ(b_q) ─┘
//! ```
//! with per-tensor 8-bit `x` and `y`, a constant 8-bit `w` (per tensor, or
//! per output channel on axis 0 with equal zero points, as onnxruntime
//! requires), and an optional constant int32 bias at scale
//! `x_scale · w_scale[c]` with zero point 0 (ONNX `QLinearConv`, opset 10).
//! A Relu/Clip between the Conv and Q is absorbed when the Q's saturation
//! clamps at least as tightly ([`pattern::clamp_absorbed`]).
//!
//! Emits `QLinearConv(x_q, x_scale, x_zp, w_q, w_scale, w_zp, y_scale, y_zp
//! [, b_q])` with the Conv's attributes (groups, pads, strides, dilations,
//! auto_pad), producing the Q's output. Refuses (QDQ stays) on anything
//! else: float bias, non-constant weights or scales, mixed per-channel zero
//! points, a bias scale that is not the product.

use super::pattern::{self, dq_producing, sole_consumer, sole_q, Dq, Qn};
use super::Cx;
use crate::error::Result;
use crate::ir::{DataType, NodeId, Tensor, ValueId};

/// Whether `b`'s scale is `x_scale · w_scale[c]` (relative 1e-6, as the
/// quantizer computes it in float32) with zero points 0.
pub(super) fn bias_matches(b: &Dq, x: &Dq, w: &Dq, channels: usize) -> bool {
    if b.p.dtype != DataType::Int32 || b.p.zero_point.iter().any(|&z| z != 0) {
        return false;
    }
    let bs = &b.p.scale;
    if bs.len() != 1 && bs.len() != channels {
        return false;
    }
    (0..channels).all(|c| {
        let ws = w.p.scale[if w.p.scale.len() == 1 { 0 } else { c }];
        let want = x.p.scale[0] * ws;
        let got = bs[if bs.len() == 1 { 0 } else { c }];
        (got - want).abs() <= 1e-6 * want.abs()
    })
}

/// The weight's zero point as an input value (QLinear ops require one).
pub(super) fn zero_point_input(cx: &mut Cx, d: &Dq, base: &str) -> Option<ValueId> {
    if let Some(z) = d.p.zero_point_value {
        return Some(z);
    }
    let dims = if d.p.scalar {
        vec![]
    } else {
        vec![d.p.scale.len()]
    };
    let n = d.p.scale.len();
    let t = match d.p.dtype {
        DataType::Uint8 => Tensor::from_u8(dims, &vec![0u8; n]),
        DataType::Int8 => Tensor::from_i8(dims, &vec![0i8; n]),
        _ => return None,
    };
    Some(cx.constant(&format!("{base}/zero_point"), t))
}

/// The output zero point of a QLinear op closing with `q`.
pub(super) fn y_zero_point(cx: &mut Cx, q: &Qn, base: &str) -> Option<ValueId> {
    if let Some(z) = q.p.zero_point_value {
        return Some(z);
    }
    let t = q.p.scalar_tensor(0)?;
    Some(cx.constant(&format!("{base}/y_zero_point"), t))
}

/// The activation input of a QLinear op: per-tensor 8-bit DQ.
pub(super) fn activation_dq(cx: &Cx, v: ValueId) -> Option<Dq> {
    dq_producing(cx.g, v).filter(|d| d.p.is_scalar_8bit())
}

/// The Q closing the pattern after `y`, through an absorbable Relu/Clip.
/// Returns the Q and the clamp node to remove with it.
pub(super) fn closing_q(cx: &Cx, y: ValueId) -> Option<(Qn, Option<NodeId>)> {
    if let Some(q) = sole_q(cx.g, y) {
        return Some((q, None)).filter(|(q, _)| q.p.is_scalar_8bit());
    }
    let (cid, clamp) = sole_consumer(cx.g, y)?;
    let (lo, hi) = pattern::clamp_bounds(cx.g, clamp)?;
    let q = sole_q(cx.g, clamp.output(0)?)?;
    (q.p.is_scalar_8bit() && pattern::clamp_absorbed(&q.p, lo, hi)).then_some((q, Some(cid)))
}

pub fn qlinear_conv(cx: &mut Cx, id: NodeId) -> Result<Option<&'static str>> {
    let Some(node) = cx.g.node(id) else {
        return Ok(None);
    };
    let (Some(xv), Some(wv), Some(yv)) = (node.input(0), node.input(1), node.output(0)) else {
        return Ok(None);
    };
    let bv = node.input(2);
    let attrs = node.attrs.clone();
    let name = node.name.clone();
    let Some(x) = activation_dq(cx, xv) else {
        return Ok(None);
    };
    let Some(w) = dq_producing(cx.g, wv) else {
        return Ok(None);
    };
    let Some(wt) = cx.g.initializer(w.input) else {
        return Ok(None);
    };
    let channels = wt.dims().first().copied().unwrap_or(0);
    let w_ok = matches!(w.p.dtype, DataType::Uint8 | DataType::Int8)
        && (w.p.scalar || (w.p.axis == 0 && w.p.scale.len() == channels))
        && w.p.zero_point.windows(2).all(|p| p[0] == p[1]);
    if !w_ok {
        return Ok(None);
    }
    let b = match bv {
        None => None,
        Some(bv) => match dq_producing(cx.g, bv) {
            Some(b)
                if cx.g.initializer(b.input).is_some() && bias_matches(&b, &x, &w, channels) =>
            {
                Some(b)
            }
            _ => return Ok(None),
        },
    };
    let Some((q, clamp)) = closing_q(cx, yv) else {
        return Ok(None);
    };
    let Some(wz) = zero_point_input(cx, &w, &format!("{name}/w")) else {
        return Ok(None);
    };
    let Some(xz) = zero_point_input(cx, &x, &format!("{name}/x")) else {
        return Ok(None);
    };
    let Some(yz) = y_zero_point(cx, &q, &name) else {
        return Ok(None);
    };
    cx.remove(id);
    if let Some(c) = clamp {
        cx.remove(c);
    }
    cx.remove(q.node);
    let mut inputs = vec![
        Some(x.input),
        Some(x.p.scale_value),
        Some(xz),
        Some(w.input),
        Some(w.p.scale_value),
        Some(wz),
        Some(q.p.scale_value),
        Some(yz),
    ];
    if let Some(b) = b {
        inputs.push(Some(b.input));
    }
    cx.add(&name, "QLinearConv", "", inputs, vec![q.output], attrs);
    Ok(Some("Conv → QLinearConv"))
}
