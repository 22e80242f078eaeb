//! onnxruntime's com.microsoft QLinear operators (`--target ort` only).
//!
//! Each matches `DQ(x_i) → op → Q(y)` with per-tensor 8-bit parameters of
//! one type and emits the contrib op of onnxruntime's `contrib_defs`, with
//! the op's attributes:
//! - `Add`, `Mul` ⇒ `QLinearAdd`, `QLinearMul` (A, A_scale, A_zp, B,
//!   B_scale, B_zp, C_scale, C_zp);
//! - `AveragePool` ⇒ `QLinearAveragePool`, `GlobalAveragePool` ⇒
//!   `QLinearGlobalAveragePool`, `Sigmoid` ⇒ `QLinearSigmoid`, `LeakyRelu`
//!   ⇒ `QLinearLeakyRelu` (X, X_scale, X_zp, Y_scale, Y_zp), NCHW
//!   (`channels_last = 0`);
//! - `Concat` ⇒ `QLinearConcat` (Y_scale, Y_zp, then X_i, X_i_scale,
//!   X_i_zp) when the input parameters differ; equal ones make a plain int8
//!   Concat (`movement`).

use super::conv::{y_zero_point, zero_point_input};
use super::movement::concat_parts;
use super::pattern::{dq_producing, sole_q, Dq};
use super::{Cx, MS_DOMAIN};
use crate::error::Result;
use crate::ir::node::attr;
use crate::ir::{NodeId, ValueId};

/// `x, x_scale, x_zp` of one input.
fn triple(cx: &mut Cx, d: &Dq, base: &str) -> Option<[Option<ValueId>; 3]> {
    let z = zero_point_input(cx, d, base)?;
    Some([Some(d.input), Some(d.p.scale_value), Some(z)])
}

pub fn qlinear_binary(cx: &mut Cx, id: NodeId) -> Result<Option<&'static str>> {
    let Some(node) = cx.g.node(id) else {
        return Ok(None);
    };
    let (Some(av), Some(bv), Some(yv)) = (node.input(0), node.input(1), node.output(0)) else {
        return Ok(None);
    };
    let (op, label) = match node.op_type.as_str() {
        "Add" => ("QLinearAdd", "Add → com.microsoft.QLinearAdd"),
        _ => ("QLinearMul", "Mul → com.microsoft.QLinearMul"),
    };
    let name = node.name.clone();
    let scalar = |v| dq_producing(cx.g, v).filter(|d| d.p.is_scalar_8bit());
    let (Some(a), Some(b)) = (scalar(av), scalar(bv)) else {
        return Ok(None);
    };
    let Some(q) = sole_q(cx.g, yv).filter(|q| q.p.is_scalar_8bit()) else {
        return Ok(None);
    };
    if a.p.dtype != q.p.dtype || b.p.dtype != q.p.dtype {
        return Ok(None);
    }
    let (Some(ta), Some(tb), Some(yz)) = (
        triple(cx, &a, &format!("{name}/a")),
        triple(cx, &b, &format!("{name}/b")),
        y_zero_point(cx, &q, &name),
    ) else {
        return Ok(None);
    };
    cx.remove(id);
    cx.remove(q.node);
    let mut ins: Vec<Option<ValueId>> = ta.into_iter().chain(tb).collect();
    ins.extend([Some(q.p.scale_value), Some(yz)]);
    cx.add(&name, op, MS_DOMAIN, ins, vec![q.output], vec![]);
    Ok(Some(label))
}

pub fn qlinear_unary(cx: &mut Cx, id: NodeId) -> Result<Option<&'static str>> {
    let Some(node) = cx.g.node(id) else {
        return Ok(None);
    };
    let (Some(xv), Some(yv)) = (node.input(0), node.output(0)) else {
        return Ok(None);
    };
    let name = node.name.clone();
    let mut attrs = Vec::new();
    let (op, label) = match node.op_type.as_str() {
        "AveragePool" => {
            let dil = node.get_ints("dilations").ok().flatten();
            if dil.is_some_and(|d| d.iter().any(|&k| k != 1)) || node.output(1).is_some() {
                return Ok(None);
            }
            attrs = node
                .attrs
                .iter()
                .filter(|a| a.name() != "dilations")
                .cloned()
                .collect();
            attrs.push(attr::int("channels_last", 0));
            (
                "QLinearAveragePool",
                "AveragePool → com.microsoft.QLinearAveragePool",
            )
        }
        "GlobalAveragePool" => {
            attrs.push(attr::int("channels_last", 0));
            (
                "QLinearGlobalAveragePool",
                "GlobalAveragePool → com.microsoft.QLinearGlobalAveragePool",
            )
        }
        "Sigmoid" => ("QLinearSigmoid", "Sigmoid → com.microsoft.QLinearSigmoid"),
        "LeakyRelu" => {
            let alpha = node.get_float("alpha").ok().flatten().unwrap_or(0.01);
            attrs.push(attr::float("alpha", alpha));
            (
                "QLinearLeakyRelu",
                "LeakyRelu → com.microsoft.QLinearLeakyRelu",
            )
        }
        _ => return Ok(None),
    };
    let Some(x) = dq_producing(cx.g, xv).filter(|d| d.p.is_scalar_8bit()) else {
        return Ok(None);
    };
    let Some(q) = sole_q(cx.g, yv).filter(|q| q.p.is_scalar_8bit() && q.p.dtype == x.p.dtype)
    else {
        return Ok(None);
    };
    let (Some(tx), Some(yz)) = (
        triple(cx, &x, &format!("{name}/x")),
        y_zero_point(cx, &q, &name),
    ) else {
        return Ok(None);
    };
    cx.remove(id);
    cx.remove(q.node);
    let mut ins: Vec<Option<ValueId>> = tx.into_iter().collect();
    ins.extend([Some(q.p.scale_value), Some(yz)]);
    cx.add(&name, op, MS_DOMAIN, ins, vec![q.output], attrs);
    Ok(Some(label))
}

pub fn qlinear_concat(cx: &mut Cx, id: NodeId) -> Result<Option<&'static str>> {
    let Some((ins, q)) = concat_parts(cx, id) else {
        return Ok(None);
    };
    if ins.iter().all(|d| d.p.same_scalar(&q.p)) {
        return Ok(None); // a plain int8 Concat
    }
    let Some(node) = cx.g.node(id) else {
        return Ok(None);
    };
    let name = node.name.clone();
    let axis = node.get_int("axis").ok().flatten().unwrap_or(0);
    let Some(yz) = y_zero_point(cx, &q, &name) else {
        return Ok(None);
    };
    let mut all = vec![Some(q.p.scale_value), Some(yz)];
    for (k, d) in ins.iter().enumerate() {
        let Some(t) = triple(cx, d, &format!("{name}/x{k}")) else {
            return Ok(None);
        };
        all.extend(t);
    }
    cx.remove(id);
    cx.remove(q.node);
    cx.add(
        &name,
        "QLinearConcat",
        MS_DOMAIN,
        all,
        vec![q.output],
        vec![attr::int("axis", axis)],
    );
    Ok(Some("Concat → com.microsoft.QLinearConcat"))
}
