//! Facts derived from the graph's structure: which values are constant.

use super::graph::Graph;
use super::ValueId;
use std::collections::HashSet;

/// Ops whose output differs from run to run or depends on more than their
/// inputs: never treated as constant.
pub const NONDETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "If",
    "Loop",
    "Scan",
];

/// Values that are constant: initializers that are not overridable graph
/// inputs (in IR < 4 every initializer is listed as an input and still
/// constant: `listed_inputs_are_constant`), Constant outputs, and outputs of
/// deterministic default-domain nodes whose inputs are all constant.
pub fn constant_values(g: &Graph, listed_inputs_are_constant: bool) -> HashSet<ValueId> {
    let mut consts: HashSet<ValueId> = g
        .initializers()
        .map(|(v, _)| v)
        .filter(|&v| listed_inputs_are_constant || !g.is_graph_input(v))
        .collect();
    let Ok(order) = g.topo_order() else {
        return consts;
    };
    for id in order {
        let Some(node) = g.node(id) else { continue };
        let foldable = node.is_onnx()
            && !NONDETERMINISTIC.contains(&node.op_type.as_str())
            && node.implicit_inputs.is_empty()
            && node.inputs.iter().flatten().all(|v| consts.contains(v));
        if foldable {
            consts.extend(node.outputs.iter().flatten());
        }
    }
    consts
}
