//! MatMul and Gemm (ONNX operators "MatMul", opset 13, and "Gemm", opset
//! 13): activations quantized; a constant operand stored int8, per column
//! when it is the 2-D right-hand side (MatMul `B[K, N]`: axis 1; Gemm: axis
//! 1, or 0 with `transB = 1`), per tensor otherwise. MatMul of two
//! activations (attention) quantizes both as activations. Gemm's `C` becomes
//! an int32 bias when `alpha = beta = 1`, `B` is a weight and `C` is one row
//! (`[N]` or `[1, N]`); otherwise it stays float.

use super::{Cx, Handler};
use crate::error::Result;
use crate::quantize::plan::{Decision, InputRole};

pub struct MatMul;

/// Role of operand `slot`: weight (per channel along `axis` when allowed)
/// or activation; `Err` with the reason it can be neither.
fn operand(cx: &Cx, slot: usize, axis: Option<usize>) -> Result<InputRole, String> {
    let Some(v) = cx.node.input(slot) else {
        return Err(format!("input {slot} is missing"));
    };
    if cx.float_const(v).is_some() {
        return Ok(InputRole::Weight {
            axis: axis.and_then(|a| cx.channel_axis(a)),
            act_type: false,
        });
    }
    match cx.not_activation(v) {
        Some(why) => Err(why),
        None => Ok(InputRole::Activation),
    }
}

/// Roles of A and B (B per channel along `b_axis` when a weight); not both
/// constant.
fn operands(cx: &Cx, b_axis: Option<usize>) -> Result<(InputRole, InputRole), Decision> {
    let a = operand(cx, 0, None).map_err(Decision::Float)?;
    let b = operand(cx, 1, b_axis).map_err(Decision::Float)?;
    if is_weight(&a) && is_weight(&b) {
        return Err(Decision::float("both operands are constant"));
    }
    Ok((a, b))
}

fn is_weight(r: &InputRole) -> bool {
    matches!(r, InputRole::Weight { .. })
}

impl Handler for MatMul {
    fn plan(&self, cx: &Cx) -> Result<Decision> {
        let Some(y) = cx.node.output(0) else {
            return Ok(Decision::float("no output"));
        };
        if let Err(d) = cx.check_output(y) {
            return Ok(d);
        }
        let b_axis = cx
            .node
            .input(1)
            .and_then(|b| cx.float_const(b))
            .filter(|t| t.dims().len() == 2)
            .map(|_| 1);
        let (a, b) = match operands(cx, b_axis) {
            Ok(ab) => ab,
            Err(d) => return Ok(d),
        };
        Ok(Decision::Quantize {
            inputs: vec![(0, a), (1, b)],
            outputs: vec![(0, cx.output_spec(y))],
        })
    }
}

pub struct Gemm;

impl Handler for Gemm {
    fn plan(&self, cx: &Cx) -> Result<Decision> {
        let node = cx.node;
        let Some(y) = node.output(0) else {
            return Ok(Decision::float("no output"));
        };
        if let Err(d) = cx.check_output(y) {
            return Ok(d);
        }
        let trans_b = node.get_int("transB")?.unwrap_or(0) != 0;
        let alpha = node.get_float("alpha")?.unwrap_or(1.0);
        let beta = node.get_float("beta")?.unwrap_or(1.0);
        let b_const = node.input(1).and_then(|b| cx.float_const(b));
        let b_axis = b_const
            .filter(|t| t.dims().len() == 2)
            .map(|_| if trans_b { 0 } else { 1 });
        let (a, b) = match operands(cx, b_axis) {
            Ok(ab) => ab,
            Err(d) => return Ok(d),
        };
        let mut inputs = vec![(0, a), (1, b)];
        let n = b_const.and_then(|t| t.dims().get(if trans_b { 0 } else { 1 }).copied());
        let c = node.input(2).and_then(|c| cx.float_const(c));
        if let (Some(n), Some(c), InputRole::Activation, true) = (n, c, a, is_weight(&b)) {
            let row = c.dims() == [n] || c.dims() == [1, n];
            if row && alpha == 1.0 && beta == 1.0 {
                let axis = c.dims().len() - 1;
                inputs.push((2, InputRole::Bias { x: 0, w: 1, axis }));
            }
        }
        Ok(Decision::Quantize {
            inputs,
            outputs: vec![(0, cx.output_spec(y))],
        })
    }
}
