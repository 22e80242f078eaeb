//! Activations.
//!
//! - Relu, Clip (default): after a quantized computing node, that node's
//!   output was already given this op's output range (see
//!   [`Cx::output_spec`]); the activation then shares those parameters and
//!   is exact on int8 (a runtime may drop it). On any other quantized input
//!   the output gets its own range. Never starts an int8 region.
//! - LeakyRelu, Sigmoid, Softmax (with `--op-types`): input and output
//!   quantized with their own ranges; Sigmoid and Softmax outputs use the
//!   exact range [0, 1] instead of a calibrated one.

use super::{Cx, Handler};
use crate::error::Result;
use crate::quantize::plan::{ActSpec, Decision, InputRole};

pub struct Narrowing;

impl Handler for Narrowing {
    fn plan(&self, cx: &Cx) -> Result<Decision> {
        let (Some(x), Some(y)) = (cx.node.input(0), cx.node.output(0)) else {
            return Ok(Decision::float("needs an input and an output"));
        };
        let Some(spec) = cx.plan.activations.get(&x) else {
            return Ok(Decision::float(format!("input '{}' is float", cx.name(x))));
        };
        if let Err(d) = cx.check_output(y) {
            return Ok(d);
        }
        let out = if *spec == ActSpec::RangeOf(y) {
            ActSpec::Share(x)
        } else {
            ActSpec::Calibrated
        };
        Ok(Decision::Quantize {
            inputs: vec![(0, InputRole::Activation)],
            outputs: vec![(0, out)],
        })
    }
}

pub struct Requantize;

impl Handler for Requantize {
    fn plan(&self, cx: &Cx) -> Result<Decision> {
        if let Err(d) = cx.unary_io() {
            return Ok(d);
        }
        let out = match cx.node.op_type.as_str() {
            "Sigmoid" | "Softmax" => ActSpec::Fixed(0.0, 1.0),
            _ => ActSpec::Calibrated,
        };
        Ok(Decision::Quantize {
            inputs: vec![(0, InputRole::Activation)],
            outputs: vec![(0, out)],
        })
    }
}
