//! Removing what computes nothing.
//!
//! - [`RemoveNoOps`]: Identity; Dropout in inference (no `training_mode`
//!   input set to true, mask output unused; before opset 7 only with
//!   `is_test=1`); Reshape to the shape the input already has; Transpose with
//!   the identity permutation; Cast to the type the input already has.
//! - [`RemoveDeadNodes`]: nodes none of whose outputs is used, and
//!   initializers nothing reads.
//! - [`DedupInitializers`]: identical initializers (type, shape, bytes)
//!   merged into the first.
//!
//! Graph inputs and outputs keep their names; values read by subgraphs are
//! never redirected (see `Graph::splice_out`).

use super::{Pass, PassOptions};
use crate::error::Result;
use crate::ir::graph::Graph;
use crate::ir::tensor::DataType;
use crate::ir::types::{dtype_of, static_shape};
use crate::ir::{Model, Node, NodeId, ValueId};
use prost::bytes::Bytes;
use std::collections::HashMap;

pub struct RemoveNoOps;
pub struct RemoveDeadNodes;
pub struct DedupInitializers;

/// Whether `node` passes its input 0 through unchanged.
fn is_no_op(g: &Graph, node: &Node, opset: i64) -> Result<bool> {
    if !node.is_onnx() {
        return Ok(false);
    }
    Ok(match node.op_type.as_str() {
        "Identity" => true,
        "Dropout" => {
            let training = match node.input(2) {
                None => false,
                Some(t) => match g.initializer(t).and_then(|t| t.to_i64_vec().ok()) {
                    Some(v) => v.iter().any(|&b| b != 0),
                    None => true, // decided at run time: leave it
                },
            };
            let legacy_training = opset < 7 && node.get_int("is_test")?.unwrap_or(0) == 0;
            !training && !legacy_training
        }
        "Transpose" => match node.get_ints("perm")? {
            Some(p) => p.iter().enumerate().all(|(i, &v)| v == i as i64),
            None => node
                .input(0)
                .and_then(|x| static_shape(g, x))
                .is_some_and(|s| s.len() <= 1),
        },
        "Cast" => {
            let to = node
                .get_int("to")?
                .and_then(|c| DataType::from_code(c as i32));
            let from = node.input(0).and_then(|x| dtype_of(g, x));
            to.is_some() && to == from
        }
        "Reshape" => {
            let (Some(x), Some(s)) = (node.input(0), node.input(1)) else {
                return Ok(false);
            };
            let (Some(dims), Some(target)) = (
                static_shape(g, x),
                g.initializer(s).and_then(|t| t.to_i64_vec().ok()),
            ) else {
                return Ok(false);
            };
            let allow_zero = node.get_int("allowzero")?.unwrap_or(0) != 0;
            target.len() == dims.len()
                && target
                    .iter()
                    .zip(&dims)
                    .all(|(&t, &d)| t == d as i64 || (t == 0 && !allow_zero))
        }
        _ => false,
    })
}

impl Pass for RemoveNoOps {
    fn name(&self) -> &'static str {
        "remove-no-ops"
    }

    fn run(&self, model: &mut Model, _opts: &PassOptions) -> Result<usize> {
        let opset = model.onnx_opset()?;
        let g = &mut model.graph;
        let mut changed = 0;
        for id in g.topo_order()? {
            let Some(node) = g.node(id) else { continue };
            if is_no_op(g, node, opset)? && g.splice_out(id, 0) {
                changed += 1;
            }
        }
        Ok(changed)
    }
}

fn used(g: &Graph, v: ValueId) -> bool {
    !g.value(v).consumers().is_empty() || g.is_graph_output(v)
}

impl Pass for RemoveDeadNodes {
    fn name(&self) -> &'static str {
        "remove-dead"
    }

    fn run(&self, model: &mut Model, _opts: &PassOptions) -> Result<usize> {
        let g = &mut model.graph;
        let mut changed = 0;
        let order: Vec<NodeId> = g.topo_order()?;
        for id in order.into_iter().rev() {
            let Some(node) = g.node(id) else { continue };
            if !node.outputs.iter().flatten().any(|&v| used(g, v)) {
                g.remove_node(id);
                changed += 1;
            }
        }
        let unused: Vec<ValueId> = g
            .initializers()
            .map(|(v, _)| v)
            .filter(|&v| !used(g, v) && !g.is_graph_input(v))
            .collect();
        for v in unused {
            g.remove_initializer(v);
            changed += 1;
        }
        Ok(changed)
    }
}

impl Pass for DedupInitializers {
    fn name(&self) -> &'static str {
        "dedup-initializers"
    }

    fn run(&self, model: &mut Model, _opts: &PassOptions) -> Result<usize> {
        let g = &mut model.graph;
        // Found by type, shape and a sample of the bytes, then compared
        // whole: hashing every byte of every weight (SipHash) was half of
        // ResNet-50's preparation.
        type Key = (DataType, Vec<usize>, u64);
        let mut first: HashMap<Key, Vec<(ValueId, Bytes)>> = HashMap::new();
        let mut merges = Vec::new();
        for (v, init) in g.initializers() {
            let Some(raw) = init.tensor.raw() else {
                continue;
            };
            let key = (
                init.tensor.dtype(),
                init.tensor.dims().to_vec(),
                sampled_hash(raw),
            );
            let seen = first.entry(key).or_default();
            match seen.iter().find(|(_, b)| b == raw) {
                Some(&(keep, _)) => {
                    let movable =
                        !g.is_graph_input(v) && !g.is_graph_output(v) && !g.has_implicit_uses(v);
                    if movable {
                        merges.push((v, keep));
                    }
                }
                None => {
                    if !g.is_graph_input(v) {
                        seen.push((v, raw.clone()));
                    }
                }
            }
        }
        let n = merges.len();
        for (dup, keep) in merges {
            g.replace_uses(dup, keep);
            g.remove_initializer(dup);
        }
        Ok(n)
    }
}

/// A hash of `raw`'s length and of up to 64 windows of 16 bytes spread
/// over it (every byte of a tensor up to 1 KiB).
fn sampled_hash(raw: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    const WINDOWS: usize = 64;
    const WIDTH: usize = 16;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    raw.len().hash(&mut h);
    if raw.len() <= WINDOWS * WIDTH {
        raw.hash(&mut h);
    } else {
        let step = (raw.len() - WIDTH) / (WINDOWS - 1);
        for k in 0..WINDOWS {
            raw[k * step..k * step + WIDTH].hash(&mut h);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::node::attr;
    use crate::ir::Tensor;
    use crate::passes::testutil::*;

    #[test]
    fn no_ops_are_removed_and_output_names_kept() {
        let m0 = model(
            13,
            &[("x", &[2, 3])],
            &["y"],
            vec![
                node("Relu", "relu", &["x"], &["a"], vec![]),
                node("Identity", "id", &["a"], &["b"], vec![]),
                node("Dropout", "drop", &["b"], &["c"], vec![]),
                node(
                    "Transpose",
                    "t",
                    &["c"],
                    &["d"],
                    vec![attr::ints("perm", &[0, 1])],
                ),
                node("Reshape", "r", &["d", "shape"], &["e"], vec![]),
                node("Identity", "out", &["e"], &["y"], vec![]),
            ],
            vec![("shape", Tensor::from_i64(vec![2], &[0, 3]))],
        );
        let mut m = m0.clone();
        // Reshape needs d's shape: give the input's static shape to the chain.
        let n = RemoveNoOps.run(&mut m, &PassOptions::default()).unwrap();
        assert!(n >= 4, "{n}");
        assert_eq!(m.graph.value_name(m.graph.outputs().next().unwrap()), "y");
        let xs = inputs(&m0, 1);
        assert_close(&run(&m0, &xs), &run(&m, &xs), 0.0);
    }

    #[test]
    fn training_dropout_stays() {
        let mut m = model(
            13,
            &[("x", &[2])],
            &["y"],
            vec![node(
                "Dropout",
                "drop",
                &["x", "ratio", "train"],
                &["y"],
                vec![],
            )],
            vec![
                ("ratio", Tensor::from_f32(vec![], &[0.5])),
                (
                    "train",
                    Tensor::from_raw(DataType::Bool, vec![], Bytes::from(vec![1u8])).unwrap(),
                ),
            ],
        );
        assert_eq!(RemoveNoOps.run(&mut m, &PassOptions::default()).unwrap(), 0);
        // Dropout with a used mask output stays too.
        let mut m = model(
            13,
            &[("x", &[2])],
            &["y", "mask"],
            vec![node("Dropout", "drop", &["x"], &["y", "mask"], vec![])],
            vec![],
        );
        assert_eq!(RemoveNoOps.run(&mut m, &PassOptions::default()).unwrap(), 0);
    }

    #[test]
    fn identity_between_graph_input_and_output_stays() {
        let mut m = model(
            13,
            &[("x", &[2])],
            &["y"],
            vec![node("Identity", "id", &["x"], &["y"], vec![])],
            vec![],
        );
        assert_eq!(RemoveNoOps.run(&mut m, &PassOptions::default()).unwrap(), 0);
    }

    #[test]
    fn dead_nodes_and_duplicates_go() {
        let w = Tensor::from_f32(vec![2], &[1.0, 2.0]);
        let m0 = model(
            13,
            &[("x", &[2])],
            &["y"],
            vec![
                node("Add", "a1", &["x", "w1"], &["a"], vec![]),
                node("Add", "a2", &["a", "w2"], &["y"], vec![]),
                node("Neg", "dead", &["x"], &["unused"], vec![]),
            ],
            vec![
                ("w1", w.clone()),
                ("w2", w),
                ("orphan", Tensor::from_f32(vec![1], &[0.0])),
            ],
        );
        let mut m = m0.clone();
        assert_eq!(
            RemoveDeadNodes
                .run(&mut m, &PassOptions::default())
                .unwrap(),
            2
        );
        assert_eq!(
            DedupInitializers
                .run(&mut m, &PassOptions::default())
                .unwrap(),
            1
        );
        assert_eq!(m.graph.initializers().count(), 1);
        assert_eq!(ops(&m), ["Add", "Add"]);
        let xs = inputs(&m0, 1);
        assert_close(&run(&m0, &xs), &run(&m, &xs), 0.0);
    }

    /// Large tensors are merged only when every byte matches, also when
    /// they differ only between the sampled windows.
    #[test]
    fn large_duplicates_are_compared_whole() {
        let a: Vec<f32> = (0..3000).map(|i| i as f32 * 0.5).collect();
        let mut b = a.clone();
        // Bytes 4092..4096 are not in the windows the hash reads (16
        // bytes every 190).
        b[1023] = -1.0;
        assert_eq!(sampled_hash(bytemuck::cast_slice(&a)), {
            let mut c = a.clone();
            c[1023] = -1.0;
            sampled_hash(bytemuck::cast_slice(&c))
        });
        let t = |v: &[f32]| Tensor::from_f32(vec![3000], v);
        let mut m = model(
            13,
            &[("x", &[3000])],
            &["y"],
            vec![
                node("Add", "a1", &["x", "w1"], &["a"], vec![]),
                node("Add", "a2", &["a", "w2"], &["b"], vec![]),
                node("Add", "a3", &["b", "w3"], &["y"], vec![]),
            ],
            vec![("w1", t(&a)), ("w2", t(&b)), ("w3", t(&a))],
        );
        let m0 = m.clone();
        assert_eq!(
            DedupInitializers
                .run(&mut m, &PassOptions::default())
                .unwrap(),
            1
        );
        assert_eq!(m.graph.initializers().count(), 2);
        let xs = inputs(&m0, 1);
        assert_close(&run(&m0, &xs), &run(&m, &xs), 0.0);
    }
}
