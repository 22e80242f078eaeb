//! Conv and ConvTranspose (ONNX operators "Conv", opset 1/11/22, and
//! "ConvTranspose"): the activation `X` quantized, the constant weight `W`
//! int8 per output channel (Conv: axis 0 of `[M, C/g, k…]`; ConvTranspose:
//! axis 1 of `[C, M/g, k…]`, only when `group = 1`, since with groups axis 1
//! does not index output channels), the bias `B` int32 at
//! `x_scale · w_scale[m]`. A non-constant weight is quantized as a second
//! activation (per tensor).

use super::{Cx, Handler};
use crate::error::Result;
use crate::quantize::plan::{Decision, InputRole};

pub struct Conv;

impl Handler for Conv {
    fn plan(&self, cx: &Cx) -> Result<Decision> {
        let node = cx.node;
        let (Some(_), Some(w), Some(y)) = (node.input(0), node.input(1), node.output(0)) else {
            return Ok(Decision::float("needs inputs X, W and output Y"));
        };
        if let Err(d) = cx.unary_io() {
            return Ok(d);
        }
        let transpose = node.op_type == "ConvTranspose";
        let group = node.get_int("group")?.unwrap_or(1);
        let mut inputs = vec![(0, InputRole::Activation)];
        let weight = cx.float_const(w);
        let channel_axis = match (transpose, group) {
            (false, _) => Some(0),
            (true, 1) => Some(1),
            (true, _) => None,
        };
        match weight {
            Some(t) if t.dims().len() >= 2 => {
                let axis = channel_axis.and_then(|a| cx.channel_axis(a));
                inputs.push((
                    1,
                    InputRole::Weight {
                        axis,
                        act_type: false,
                    },
                ));
                // Output channels: Conv M = W[0]; ConvTranspose M = W[1]·group.
                let m = if transpose {
                    t.dims()[1] * group.max(1) as usize
                } else {
                    t.dims()[0]
                };
                if let Some(b) = node.input(2).and_then(|b| cx.float_const(b)) {
                    if b.dims() == [m] {
                        inputs.push((
                            2,
                            InputRole::Bias {
                                x: 0,
                                w: 1,
                                axis: 0,
                            },
                        ));
                    }
                }
            }
            Some(_) => return Ok(Decision::float("weight has fewer than 2 dimensions")),
            None => {
                if let Some(why) = cx.not_activation(w) {
                    return Ok(Decision::Float(why));
                }
                inputs.push((1, InputRole::Activation));
            }
        }
        Ok(Decision::Quantize {
            inputs,
            outputs: vec![(0, cx.output_spec(y))],
        })
    }
}
