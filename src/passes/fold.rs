//! Constant folding: a deterministic default-domain node whose inputs are all
//! constant is evaluated and replaced by initializers.
//!
//! Evaluation reuses tract (one-node model per folded node), so every op
//! tract implements folds the same way it runs. `Shape` and `Size` of values
//! whose shape is statically known fold too. Left alone: random ops, control
//! flow, QuantizeLinear/DequantizeLinear (weights stay quantized in a QDQ
//! model), nodes tract cannot evaluate, and results larger than the fold
//! limit (ConstantOfShape/Expand/Tile can blow a small model up).

use super::{Pass, PassOptions};
use crate::error::Result;
use crate::ir::analysis::NONDETERMINISTIC;
use crate::ir::graph::Graph;
use crate::ir::tensor::{numel, Tensor};
use crate::ir::types::static_shape;
use crate::ir::{Model, ValueId};

pub struct ConstantFold;

/// Ops never folded, besides the nondeterministic ones.
const KEEP: &[&str] = &[
    "Constant",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
];

impl Pass for ConstantFold {
    fn name(&self) -> &'static str {
        "constant-fold"
    }

    fn run(&self, model: &mut Model, opts: &PassOptions) -> Result<usize> {
        let opsets = model.opset_imports().to_vec();
        let g = &mut model.graph;
        let mut changed = 0;
        for id in g.topo_order()? {
            let Some(node) = g.node(id) else { continue };
            if !node.is_onnx()
                || KEEP.contains(&node.op_type.as_str())
                || NONDETERMINISTIC.contains(&node.op_type.as_str())
                || node.has_subgraphs()
            {
                continue;
            }
            let outs: Vec<(usize, ValueId)> = node
                .outputs
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i, v)))
                .collect();
            if outs.is_empty() {
                continue;
            }
            let results: Vec<Tensor> = if node.is("Shape") || node.is("Size") {
                let Some(dims) = node.input(0).and_then(|x| static_shape(g, x)) else {
                    continue;
                };
                if node.is("Size") {
                    vec![Tensor::from_i64(
                        vec![],
                        &[numel(&dims).unwrap_or(0) as i64],
                    )]
                } else {
                    let r = dims.len() as i64;
                    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                    let start = clamp(node.get_int("start")?.unwrap_or(0));
                    let end = clamp(node.get_int("end")?.unwrap_or(r));
                    let sel: Vec<i64> = dims[start..end.max(start)]
                        .iter()
                        .map(|&d| d as i64)
                        .collect();
                    vec![Tensor::from_i64(vec![sel.len()], &sel)]
                }
            } else {
                let present: Vec<ValueId> = node.inputs.iter().flatten().copied().collect();
                if present.is_empty()
                    || !present
                        .iter()
                        .all(|&v| g.initializer(v).is_some() && !g.is_graph_input(v))
                {
                    continue;
                }
                // ConstantOfShape's element type is that of its `value` (float by default).
                let esize = node
                    .get_tensor("value")
                    .ok()
                    .flatten()
                    .and_then(|t| t.dtype().bits())
                    .map_or(4, |b| b.div_ceil(8));
                if node.is("ConstantOfShape")
                    && !small_enough_shape(g, node.input(0), esize, opts.fold_limit_bytes)
                {
                    continue;
                }
                let feeds: Vec<(String, Tensor)> = present
                    .iter()
                    .filter_map(|&v| {
                        g.initializer(v)
                            .map(|t| (g.value_name(v).to_string(), t.clone()))
                    })
                    .collect();
                let proto = node.to_proto(
                    node.inputs
                        .iter()
                        .map(|v| v.map(|v| g.value_name(v).to_string()).unwrap_or_default())
                        .collect(),
                    node.outputs
                        .iter()
                        .map(|v| v.map(|v| g.value_name(v).to_string()).unwrap_or_default())
                        .collect(),
                );
                match crate::tract::eval_node(&proto, &feeds, &opsets) {
                    Ok(r) => r,
                    // tract cannot evaluate it: the node stays.
                    Err(_) => continue,
                }
            };
            if results.len() != outs.len()
                || results.iter().any(|t| t.byte_len() > opts.fold_limit_bytes)
            {
                continue;
            }
            g.remove_node(id);
            for ((_, v), t) in outs.into_iter().zip(results) {
                g.set_initializer(v, t);
            }
            changed += 1;
        }
        Ok(changed)
    }
}

fn small_enough_shape(g: &Graph, shape: Option<ValueId>, esize: usize, limit: usize) -> bool {
    let Some(dims) = shape
        .and_then(|s| g.initializer(s))
        .and_then(|t| t.to_i64_vec().ok())
    else {
        return false;
    };
    let n = dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    });
    n.and_then(|n| n.checked_mul(esize))
        .is_some_and(|b| b <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::node::attr;
    use crate::passes::testutil::*;

    #[test]
    fn folds_weight_preprocessing_and_static_shapes() {
        // y = x @ Transpose(w) * (2 + 1), with the shape of x read and reused.
        let w = Tensor::from_f32(vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let m0 = model(
            13,
            &[("x", &[4, 2])],
            &["y", "s"],
            vec![
                node(
                    "Transpose",
                    "wt",
                    &["w"],
                    &["wt"],
                    vec![attr::ints("perm", &[1, 0])],
                ),
                node("Add", "k", &["two", "one"], &["k"], vec![]),
                node("MatMul", "mm", &["x", "wt"], &["mm"], vec![]),
                node("Mul", "scale", &["mm", "k"], &["y"], vec![]),
                node("Shape", "shape", &["x"], &["s"], vec![]),
            ],
            vec![
                ("w", w),
                ("two", Tensor::from_f32(vec![], &[2.0])),
                ("one", Tensor::from_f32(vec![], &[1.0])),
            ],
        );
        let mut m = m0.clone();
        let n = ConstantFold.run(&mut m, &PassOptions::default()).unwrap();
        assert_eq!(n, 3);
        assert_eq!(ops(&m), ["MatMul", "Mul"]);
        let g = &m.graph;
        let wt = g.initializer(g.find_value("wt").unwrap()).unwrap();
        assert_eq!(wt.dims(), [2, 3]);
        assert_eq!(wt.to_f32_vec().unwrap(), vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        assert_eq!(
            g.initializer(g.find_value("s").unwrap())
                .unwrap()
                .to_i64_vec()
                .unwrap(),
            vec![4, 2]
        );
        let xs = inputs(&m0, 3);
        assert_close(&run(&m0, &xs), &run(&m, &xs), 0.0);
    }

    #[test]
    fn leaves_random_quantize_and_oversized() {
        let mut m = model(
            13,
            &[("x", &[2])],
            &["y", "big", "r"],
            vec![
                node("DequantizeLinear", "dq", &["q", "s"], &["w"], vec![]),
                node("Add", "add", &["x", "w"], &["y"], vec![]),
                node("ConstantOfShape", "cos", &["shape"], &["big"], vec![]),
                node(
                    "RandomNormal",
                    "rnd",
                    &[],
                    &["r"],
                    vec![attr::ints("shape", &[2])],
                ),
            ],
            vec![
                ("q", Tensor::from_i8(vec![2], &[1, -1])),
                ("s", Tensor::from_f32(vec![], &[0.5])),
                ("shape", Tensor::from_i64(vec![2], &[1024, 1024])),
            ],
        );
        let opts = PassOptions {
            fold_limit_bytes: 1 << 20,
            ..Default::default()
        };
        assert_eq!(ConstantFold.run(&mut m, &opts).unwrap(), 0);
        assert_eq!(ops(&m).len(), 4);
    }
}
