//! Op handlers: one registry keyed by op type, one file per op family.
//!
//! A handler looks at one node (through [`Cx`]) and returns a
//! [`Decision`]: which inputs are quantized activations, weights or biases,
//! and where each quantized output's parameters come from; or why the node
//! stays float. Handlers never edit the graph: [`super::materialize`] is the
//! one place that builds QuantizeLinear/DequantizeLinear nodes.
//!
//! | file | ops | default |
//! |---|---|---|
//! | `conv.rs` | Conv, ConvTranspose | yes |
//! | `matmul.rs` | MatMul, Gemm | yes |
//! | `movement.rs` | Reshape, Transpose, Flatten, Squeeze, Unsqueeze, MaxPool, Slice, Gather, Split, Pad, Resize (nearest), Concat (equal parameters) | yes |
//! | `activation.rs` | Relu, Clip | yes |
//! | `activation.rs` | LeakyRelu, Sigmoid, Softmax | with `--op-types` |
//! | `elementwise.rs` | Add, Mul, AveragePool, GlobalAveragePool | with `--op-types` |

mod activation;
mod conv;
mod elementwise;
mod matmul;
mod movement;

use super::plan::{ActSpec, Decision, Plan};
use super::QuantizeConfig;
use crate::error::Result;
use crate::ir::{DataType, Graph, Node, NodeId, Tensor, ValueId};
use std::collections::HashSet;

/// Plans one node.
pub trait Handler: Sync {
    fn plan(&self, cx: &Cx) -> Result<Decision>;
}

/// A registry entry.
pub struct Entry {
    pub op: &'static str,
    pub handler: &'static dyn Handler,
    /// Whether the op is quantized without being named in `--op-types`.
    pub default: bool,
}

impl Entry {
    const fn new(op: &'static str, handler: &'static dyn Handler, default: bool) -> Self {
        Entry {
            op,
            handler,
            default,
        }
    }
}

/// Every op with a handler.
pub static HANDLERS: &[Entry] = &[
    Entry::new("Conv", &conv::Conv, true),
    Entry::new("ConvTranspose", &conv::Conv, true),
    Entry::new("MatMul", &matmul::MatMul, true),
    Entry::new("Gemm", &matmul::Gemm, true),
    Entry::new("Reshape", &movement::Movement, true),
    Entry::new("Transpose", &movement::Movement, true),
    Entry::new("Flatten", &movement::Movement, true),
    Entry::new("Squeeze", &movement::Movement, true),
    Entry::new("Unsqueeze", &movement::Movement, true),
    Entry::new("MaxPool", &movement::Movement, true),
    Entry::new("Slice", &movement::Movement, true),
    Entry::new("Gather", &movement::Movement, true),
    Entry::new("Split", &movement::Movement, true),
    Entry::new("Pad", &movement::Movement, true),
    Entry::new("Resize", &movement::Movement, true),
    Entry::new("Concat", &movement::Concat, true),
    Entry::new("Relu", &activation::Narrowing, true),
    Entry::new("Clip", &activation::Narrowing, true),
    Entry::new("LeakyRelu", &activation::Requantize, false),
    Entry::new("Sigmoid", &activation::Requantize, false),
    Entry::new("Softmax", &activation::Requantize, false),
    Entry::new("Add", &elementwise::Binary, false),
    Entry::new("Mul", &elementwise::Binary, false),
    Entry::new("AveragePool", &elementwise::Unary, false),
    Entry::new("GlobalAveragePool", &elementwise::Unary, false),
];

/// The handler of `op`, if any.
pub fn entry(op: &str) -> Option<&'static Entry> {
    HANDLERS.iter().find(|e| e.op == op)
}

/// Op types quantized by default.
pub fn default_op_types() -> impl Iterator<Item = &'static str> {
    HANDLERS.iter().filter(|e| e.default).map(|e| e.op)
}

/// What a handler sees: the graph, the plan so far (producers are planned
/// before consumers), the node and its settings.
pub struct Cx<'a> {
    pub graph: &'a Graph,
    pub plan: &'a Plan,
    pub cfg: &'a QuantizeConfig,
    pub id: NodeId,
    pub node: &'a Node,
    /// Weights per channel for this node (global setting or node override).
    pub per_channel: bool,
    /// Nodes that stay float (excluded, or not selected).
    pub float_nodes: &'a HashSet<NodeId>,
    pub consts: &'a HashSet<ValueId>,
}

impl Cx<'_> {
    pub fn name(&self, v: ValueId) -> &str {
        self.graph.value_name(v)
    }

    /// A float32 constant (initializer).
    pub fn float_const(&self, v: ValueId) -> Option<&Tensor> {
        self.graph
            .initializer(v)
            .filter(|t| t.dtype() == DataType::Float)
    }

    /// Why `v` cannot be a quantized activation, if it cannot.
    pub fn not_activation(&self, v: ValueId) -> Option<String> {
        let name = self.name(v);
        if self.consts.contains(&v) {
            return Some(format!("input '{name}' is a constant"));
        }
        match crate::ir::types::dtype_of(self.graph, v) {
            Some(DataType::Float) | None => {}
            Some(dt) => return Some(format!("input '{name}' is {}, not float32", dt.name())),
        }
        if self.cfg.tensors.get(name).is_some_and(|t| t.keep_float) {
            return Some(format!("tensor '{name}' is kept float by the recipe"));
        }
        if self.graph.is_graph_output(v) && self.graph.has_implicit_uses(v) {
            return Some(format!(
                "tensor '{name}' is a graph output read by a subgraph"
            ));
        }
        None
    }

    /// Whether output `v` of this node can be quantized.
    pub fn output_ok(&self, v: ValueId) -> bool {
        self.not_activation(v).is_none()
    }

    /// Where the output `v` of a computing node (Conv, MatMul, …) gets its
    /// range: a sole Relu/Clip consumer that will be quantized lends its
    /// output range (the quantization then clips exactly as the activation
    /// does); otherwise the output's own calibrated range.
    pub fn output_spec(&self, v: ValueId) -> ActSpec {
        let g = self.graph;
        let uses = g.value(v).consumers();
        if g.is_graph_output(v) {
            return ActSpec::Calibrated;
        }
        if uses.len() != 1 {
            return Self::within(g, v);
        }
        let (c, slot) = uses[0];
        let Some(consumer) = g.node(c) else {
            return ActSpec::Calibrated;
        };
        let narrowing = consumer.is("Relu") || consumer.is("Clip");
        let bounds_const = consumer
            .inputs
            .iter()
            .skip(1)
            .flatten()
            .all(|b| self.consts.contains(b));
        match consumer.output(0) {
            Some(out)
                if slot == 0
                    && narrowing
                    && bounds_const
                    && !self.float_nodes.contains(&c)
                    && self.output_ok(out) =>
            {
                ActSpec::RangeOf(out)
            }
            _ => Self::within(g, v),
        }
    }

    /// `v`'s own range, clamped where every reader is constant.
    fn within(g: &Graph, v: ValueId) -> ActSpec {
        match crate::ir::analysis::flat_outside(g, v) {
            Some((lo, hi)) => ActSpec::Within(lo, hi),
            None => ActSpec::Calibrated,
        }
    }

    /// Input 0 as a quantizable activation and output 0 as a quantizable
    /// tensor, or the decision to stay float and why.
    pub fn unary_io(&self) -> Result<(ValueId, ValueId), Decision> {
        let (Some(x), Some(y)) = (self.node.input(0), self.node.output(0)) else {
            return Err(Decision::float("needs an input and an output"));
        };
        if let Some(why) = self.not_activation(x) {
            return Err(Decision::Float(why));
        }
        self.check_output(y)?;
        Ok((x, y))
    }

    /// `Err(float decision)` when output `y` cannot be quantized.
    pub fn check_output(&self, y: ValueId) -> Result<(), Decision> {
        if self.output_ok(y) {
            Ok(())
        } else {
            Err(Decision::float(format!(
                "output '{}' cannot be quantized",
                self.name(y)
            )))
        }
    }

    /// Weight spec axis helper: `Some(axis)` when per channel applies.
    pub fn channel_axis(&self, axis: usize) -> Option<usize> {
        self.per_channel.then_some(axis)
    }
}

#[cfg(test)]
mod tests;
