//! Ranks (and Constant-node values) of inner values, derived by onnxq
//! itself, so the schema checks see them before tract does.
//!
//! tract's own shape inference is what crashes on some malformed nodes (a
//! BatchNormalization whose input is a vector reads past a shape in
//! unchecked code: SIGSEGV), so the checks cannot wait for it. This walks
//! the graph once in topological order and propagates ranks through the
//! ops whose output rank follows from their input ranks and attributes
//! alone (ONNX shape rules: elementwise ops broadcast to the largest rank,
//! Conv/Pool/normalizations keep it, Reshape takes its constant shape's
//! length, …). Ops not listed leave their outputs unknown, and the checks
//! that need those ranks wait for `passes::prepare`'s second round.

use super::super::graph::{Graph, ValueId};
use super::super::node::Node;
use super::super::tensor::Tensor;
use super::super::types::dims_of;
use std::collections::HashMap;

/// What the walk found: ranks of values, and values of Constant outputs.
#[derive(Default)]
pub struct Derived {
    pub ranks: HashMap<ValueId, usize>,
    pub constants: HashMap<ValueId, Tensor>,
}

/// Ops whose only output has the rank of input 0.
const SAME_AS_INPUT0: &[&str] = &[
    "Abs",
    "Acos",
    "Asin",
    "Atan",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "Cos",
    "CumSum",
    "DepthToSpace",
    "DequantizeLinear",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "LpPool",
    "MaxPool",
    "Mish",
    "Neg",
    "Not",
    "PRelu",
    "Pad",
    "QLinearConv",
    "QuantizeLinear",
    "Reciprocal",
    "Relu",
    "Resize",
    "Round",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Trilu",
    "Upsample",
];

/// Elementwise ops with broadcasting: the largest input rank.
const BROADCAST: &[&str] = &[
    "Add",
    "And",
    "BitShift",
    "Div",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Max",
    "Mean",
    "Min",
    "Mod",
    "Mul",
    "Or",
    "Pow",
    "Sub",
    "Sum",
    "Where",
    "Xor",
];

/// Walks `g` and derives what it can.
pub fn derive(g: &Graph) -> Derived {
    let mut d = Derived::default();
    let Ok(order) = g.topo_order() else {
        return d;
    };
    for id in order {
        let Some(node) = g.node(id) else { continue };
        if !node.is_onnx() {
            continue;
        }
        if node.op_type == "Constant" {
            if let (Some(out), Ok(Some(t))) = (node.output(0), node.get_tensor("value")) {
                d.ranks.insert(out, t.dims().len());
                d.constants.insert(out, t);
            }
            continue;
        }
        let rank = |slot: usize| -> Option<usize> {
            let v = node.input(slot)?;
            dims_of(g, v)
                .map(|dims| dims.len())
                .or_else(|| d.ranks.get(&v).copied())
        };
        let value = |slot: usize| -> Option<Vec<i64>> {
            let v = node.input(slot)?;
            let t = g.initializer(v).or_else(|| d.constants.get(&v))?;
            (!t.dtype().is_float())
                .then(|| t.to_i64_vec().ok())
                .flatten()
        };
        let out = output_rank(node, &rank, &value);
        if let Some(r) = out {
            // Every output of these has output 0's rank; of other ops, only
            // output 0 is known (BatchNormalization's running statistics,
            // LayerNormalization's mean are not).
            let outputs: Vec<ValueId> =
                if ["Split", "TopK", "Dropout"].contains(&node.op_type.as_str()) {
                    node.outputs.iter().flatten().copied().collect()
                } else {
                    node.output(0).into_iter().collect()
                };
            for v in outputs {
                d.ranks.insert(v, r);
            }
        }
    }
    d
}

/// The rank of `node`'s output 0, when its inputs' ranks and constants decide it.
fn output_rank(
    node: &Node,
    rank: &dyn Fn(usize) -> Option<usize>,
    value: &dyn Fn(usize) -> Option<Vec<i64>>,
) -> Option<usize> {
    let op = node.op_type.as_str();
    let axes_count = || -> Option<usize> {
        match node.get_ints("axes").ok().flatten() {
            Some(a) => Some(a.len()),
            None => value(1).map(|a| a.len()),
        }
    };
    if SAME_AS_INPUT0.contains(&op) {
        return rank(0);
    }
    if BROADCAST.contains(&op) {
        return (0..node.inputs.len())
            .map(rank)
            .try_fold(0, |a, r| Some(a.max(r?)));
    }
    match op {
        "Flatten" | "Gemm" | "NonZero" => Some(2),
        "MatMul" | "MatMulInteger" => matmul(rank(0), rank(1)),
        "QLinearMatMul" => matmul(rank(0), rank(3)),
        "Shape" | "Range" => Some(1),
        "Size" => Some(0),
        "Reshape" => value(1).map(|s| s.len()),
        "ConstantOfShape" => value(0).map(|s| s.len()),
        "Expand" => Some(value(1)?.len().max(rank(0)?)),
        "Transpose" => node
            .get_ints("perm")
            .ok()
            .flatten()
            .map(|p| p.len())
            .or_else(|| rank(0)),
        "Concat" => (0..node.inputs.len()).find_map(rank),
        "Unsqueeze" => Some(rank(0)? + axes_count()?),
        "Squeeze" => rank(0)?.checked_sub(axes_count()?),
        "Gather" => Some((rank(0)? + rank(1)?).checked_sub(1)?),
        "GatherElements" => rank(1),
        "ArgMax" | "ArgMin" => {
            let r = rank(0)?;
            if node.get_int("keepdims").ok().flatten().unwrap_or(1) == 0 {
                r.checked_sub(1)
            } else {
                Some(r)
            }
        }
        _ if op.starts_with("Reduce") => {
            let r = rank(0)?;
            let flag = |name: &str, default: i64| {
                node.get_int(name).ok().flatten().unwrap_or(default) != 0
            };
            if flag("keepdims", 1) || (flag("noop_with_empty_axes", 0) && axes_count().is_none()) {
                return Some(r);
            }
            // keepdims=0: one axis fewer per listed axis (all, when none
            // are listed).
            match axes_count() {
                Some(n) => r.checked_sub(n),
                None if node.inputs.len() < 2 => Some(0),
                None => None,
            }
        }
        _ => None,
    }
}

/// numpy's matmul rule: a vector operand loses its axis.
fn matmul(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    let (a, b) = (a?, b?);
    Some(match (a, b) {
        (0, _) | (_, 0) => return None,
        (1, 1) => 0,
        (1, b) => b - 1,
        (a, 1) => a - 1,
        (a, b) => a.max(b),
    })
}
