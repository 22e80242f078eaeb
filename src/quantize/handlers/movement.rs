//! Data-movement ops: Reshape, Transpose, Flatten, Squeeze, Unsqueeze,
//! MaxPool, Slice, Gather, Split, Pad, Resize (nearest), Concat.
//!
//! They only move, select or compare values, so on a quantized input their
//! outputs take exactly the input's parameters (same scale and zero-point
//! initializers) and the op can run on int8 unchanged. They are quantized
//! only when their data input already is (they never start an int8 region).
//! Conditions: Pad pads with 0 (or edge/reflect), which every range contains;
//! Resize only in `nearest` mode (linear modes compute new values); Gather
//! on a quantized data input (an embedding table stays float); MaxPool's
//! indices output stays int64. Concat shares parameters only when every
//! input already has the same ones; with `Concat` named in `--op-types` it
//! also joins inputs of different ranges (each input keeps its scale, the
//! output gets its own range), which is what QLinearConcat computes.

use super::{Cx, Handler};
use crate::error::Result;
use crate::quantize::plan::{ActSpec, Decision, InputRole};

pub struct Movement;

impl Handler for Movement {
    fn plan(&self, cx: &Cx) -> Result<Decision> {
        let node = cx.node;
        let Some(x) = node.input(0) else {
            return Ok(Decision::float("no data input"));
        };
        if !cx.plan.is_quantized(x) {
            return Ok(Decision::float(format!(
                "data input '{}' is float",
                cx.name(x)
            )));
        }
        match node.op_type.as_str() {
            "Resize" => {
                let mode = node.get_string("mode")?.unwrap_or_else(|| "nearest".into());
                if mode != "nearest" {
                    return Ok(Decision::float(format!(
                        "Resize mode '{mode}' computes new values"
                    )));
                }
            }
            "Pad" => {
                let mode = node
                    .get_string("mode")?
                    .unwrap_or_else(|| "constant".into());
                let value = match node.input(2) {
                    Some(v) => match cx.graph.initializer(v).map(|t| t.to_f32_vec()) {
                        Some(Ok(vals)) => vals.first().copied().unwrap_or(0.0),
                        _ => return Ok(Decision::float("pad value is not a constant")),
                    },
                    None => node.get_float("value")?.unwrap_or(0.0),
                };
                if mode == "constant" && value != 0.0 {
                    return Ok(Decision::float(format!("pads with {value}, not 0")));
                }
            }
            _ => {}
        }
        // MaxPool: only Y (indices are int64); Split: every output.
        let outputs: Vec<(usize, ActSpec)> = match node.op_type.as_str() {
            "Split" => node
                .outputs
                .iter()
                .enumerate()
                .filter_map(|(i, o)| o.map(|_| (i, ActSpec::Share(x))))
                .collect(),
            _ => vec![(0, ActSpec::Share(x))],
        };
        for &(slot, _) in &outputs {
            if let Some(o) = node.output(slot) {
                if let Err(d) = cx.check_output(o) {
                    return Ok(d);
                }
            }
        }
        Ok(Decision::Quantize {
            inputs: vec![(0, InputRole::Activation)],
            outputs,
        })
    }
}

pub struct Concat;

impl Handler for Concat {
    fn plan(&self, cx: &Cx) -> Result<Decision> {
        let node = cx.node;
        let Some(y) = node.output(0) else {
            return Ok(Decision::float("no output"));
        };
        let inputs: Vec<_> = node.inputs.iter().flatten().copied().collect();
        let Some(&first) = inputs.first() else {
            return Ok(Decision::float("no inputs"));
        };
        if let Err(d) = cx.check_output(y) {
            return Ok(d);
        }
        let root = cx.plan.root(first);
        let shared = root.is_some() && inputs.iter().all(|&v| cx.plan.root(v) == root);
        let roles: Vec<(usize, InputRole)> = node
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_some())
            .map(|(i, _)| (i, InputRole::Activation))
            .collect();
        if shared {
            return Ok(Decision::Quantize {
                inputs: roles,
                outputs: vec![(0, ActSpec::Share(first))],
            });
        }
        if !cx.cfg.concat_requantize {
            return Ok(Decision::float(
                "inputs have different quantization parameters (name Concat in --op-types to requantize)",
            ));
        }
        for &v in &inputs {
            if let Some(why) = cx.not_activation(v) {
                return Ok(Decision::Float(why));
            }
        }
        Ok(Decision::Quantize {
            inputs: roles,
            outputs: vec![(0, ActSpec::Calibrated)],
        })
    }
}
