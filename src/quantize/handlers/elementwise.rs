//! Add, Mul (both inputs) and AveragePool, GlobalAveragePool (one input),
//! with `--op-types` only: they compute new values, so input and output
//! each get their own range (what QLinearAdd, QLinearMul and
//! QLinearAveragePool take). A constant operand of Add/Mul is stored
//! quantized like an activation (same type and symmetry, per tensor).

use super::{Cx, Handler};
use crate::error::Result;
use crate::quantize::plan::{Decision, InputRole};

pub struct Binary;

impl Handler for Binary {
    fn plan(&self, cx: &Cx) -> Result<Decision> {
        let node = cx.node;
        let (Some(a), Some(b), Some(y)) = (node.input(0), node.input(1), node.output(0)) else {
            return Ok(Decision::float("needs two inputs and an output"));
        };
        if let Err(d) = cx.check_output(y) {
            return Ok(d);
        }
        let mut inputs = Vec::new();
        for (slot, v) in [(0, a), (1, b)] {
            let role = if cx.float_const(v).is_some() {
                InputRole::Weight {
                    axis: None,
                    act_type: true,
                }
            } else if let Some(why) = cx.not_activation(v) {
                return Ok(Decision::Float(why));
            } else {
                InputRole::Activation
            };
            inputs.push((slot, role));
        }
        if inputs.iter().all(|(_, r)| *r != InputRole::Activation) {
            return Ok(Decision::float("both operands are constant"));
        }
        Ok(Decision::Quantize {
            inputs,
            outputs: vec![(0, cx.output_spec(y))],
        })
    }
}

pub struct Unary;

impl Handler for Unary {
    fn plan(&self, cx: &Cx) -> Result<Decision> {
        let (_, y) = match cx.unary_io() {
            Ok(io) => io,
            Err(d) => return Ok(d),
        };
        Ok(Decision::Quantize {
            inputs: vec![(0, InputRole::Activation)],
            outputs: vec![(0, cx.output_spec(y))],
        })
    }
}
