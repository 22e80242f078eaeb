//! Opset upgrade of the default ONNX domain to a target version.
//!
//! Per-channel QuantizeLinear/DequantizeLinear (`axis`) needs opset 13; a
//! model exported at 11 or 12 must be upgraded before it can carry them,
//! or the output is an invalid file. Every operator whose signature changed
//! between the model's opset and the target is rewritten
//! (ONNX Operators.md, "Changelog"):
//!
//! | op | version | change |
//! |---|---|---|
//! | Slice | 10 | starts/ends/axes attributes → inputs |
//! | TopK | 10 | k attribute → input |
//! | Upsample | 10 | deprecated → Resize (asymmetric coordinates) |
//! | Resize | 11 | roi input added; coordinate_transformation_mode added (10 behaves as `asymmetric`) |
//! | Clip | 11 | min/max attributes → inputs |
//! | Pad | 11 | pads/value attributes → inputs |
//! | Scatter | 11 | deprecated → ScatterElements |
//! | Dropout | 12 | ratio attribute → input |
//! | Softmax, LogSoftmax, Hardmax | 13 | "flatten to 2-D at axis" → "along one axis" (default axis 1 → −1) |
//! | Squeeze, Unsqueeze, ReduceSum | 13 | axes attribute → input |
//! | Split | 13 | split attribute → input |
//! | ReduceMean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare | 18 | axes attribute → input |
//! | BatchNormalization | 9, 14 | `spatial` removed; at most 3 outputs |
//! | element-wise binary ops, Gemm | 7 | legacy `broadcast`/`axis` attributes removed |
//!
//! Every other change up to opset 21 only adds optional attributes, inputs or
//! types, so the node stays as it is. Experimental ops that were removed are
//! refused, naming the node.

use super::{Pass, PassOptions};
use crate::error::{Error, Result};
use crate::ir::graph::Graph;
use crate::ir::node::attr;
use crate::ir::tensor::Tensor;
use crate::ir::{Model, Node, NodeId};

pub struct UpgradeOpset;

/// Highest target opset whose changes this pass knows.
pub const MAX_TARGET: i64 = 21;
/// Lowest source opset it upgrades from.
pub const MIN_SOURCE: i64 = 6;

/// Experimental or removed ops with no standard replacement.
const REMOVED: &[&str] = &[
    "ATen",
    "Affine",
    "ConstantFill",
    "Crop",
    "DynamicSlice",
    "GRUUnit",
    "GivenTensorFill",
    "ImageScaler",
    "ParametricSoftplus",
    "Scale",
    "ScaledTanh",
];

const REDUCE_18: &[&str] = &[
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];

/// The smallest IR version that allows `opset` (onnx's version table).
pub fn min_ir_version(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        _ => 11,
    }
}

impl Pass for UpgradeOpset {
    fn name(&self) -> &'static str {
        "upgrade-opset"
    }

    fn run(&self, model: &mut Model, opts: &PassOptions) -> Result<usize> {
        let Some(target) = opts.target_opset else {
            return Ok(0);
        };
        let from = model.onnx_opset()?;
        if target < from {
            return Err(Error::Invalid(format!(
                "cannot lower the opset from {from} to {target}; only upgrades are supported"
            )));
        }
        if target > MAX_TARGET {
            return Err(Error::Invalid(format!(
                "opset {target} is newer than onnxq knows (highest: {MAX_TARGET})"
            )));
        }
        if target == from {
            return Ok(0);
        }
        if from < MIN_SOURCE {
            return Err(Error::Invalid(format!(
                "models below opset {MIN_SOURCE} cannot be upgraded (this one imports opset {from})"
            )));
        }
        // Softmax-family rewrites want input ranks.
        let needs_ranks = from < 13
            && target >= 13
            && model.graph.nodes().any(|(_, n)| {
                n.is_onnx() && matches!(n.op_type.as_str(), "Softmax" | "LogSoftmax" | "Hardmax")
            });
        if needs_ranks {
            let _ = super::shapes::infer_shapes(model);
        }
        let g = &mut model.graph;
        let mut changed = 0;
        for id in g.topo_order()? {
            if upgrade_node(g, id, from, target)? {
                changed += 1;
            }
        }
        model.set_opset("", target);
        let ir = min_ir_version(target);
        if model.ir_version() < ir {
            model.set_ir_version(ir);
        }
        Ok(changed.max(1))
    }
}

fn err(node: &Node, reason: impl Into<String>) -> Error {
    Error::BadNode {
        node: node.name.clone(),
        op: node.op_type.clone(),
        reason: reason.into(),
    }
}

/// Crossed: the change at version `v` lies in (from, target].
fn crosses(from: i64, target: i64, v: i64) -> bool {
    from < v && v <= target
}

/// Moves attribute `name` to input `slot` as an initializer built by
/// `read` (`None`: the node has no such attribute, nothing changes).
fn attr_to_input(
    g: &mut Graph,
    id: NodeId,
    name: &str,
    slot: usize,
    read: impl FnOnce(&Node) -> Result<Option<Tensor>>,
) -> Result<bool> {
    let Some(node) = g.node(id) else {
        return Ok(false);
    };
    let Some(tensor) = read(node)? else {
        return Ok(false);
    };
    let label = format!("{}/{name}", node.name);
    if let Some(n) = g.node_mut(id) {
        n.take_attr(name);
    }
    let v = g.add_initializer(&label, tensor);
    g.set_input(id, slot, Some(v));
    Ok(true)
}

/// Moves int attribute list `name` to input `slot` as an int64 initializer.
fn ints_to_input(g: &mut Graph, id: NodeId, name: &str, slot: usize) -> Result<bool> {
    attr_to_input(g, id, name, slot, |n| {
        Ok(n.get_ints(name)?
            .map(|v| Tensor::from_i64(vec![v.len()], &v)))
    })
}

/// Moves float attribute `name` to input `slot` as a scalar initializer.
fn float_to_input(g: &mut Graph, id: NodeId, name: &str, slot: usize) -> Result<bool> {
    attr_to_input(g, id, name, slot, |n| {
        Ok(n.get_float(name)?.map(|v| Tensor::from_f32(vec![], &[v])))
    })
}

fn upgrade_node(g: &mut Graph, id: NodeId, from: i64, target: i64) -> Result<bool> {
    let Some(node) = g.node(id) else {
        return Ok(false);
    };
    if !node.is_onnx() {
        return Ok(false);
    }
    let op = node.op_type.clone();
    if REMOVED.contains(&op.as_str()) {
        return Err(err(
            node,
            "experimental op removed from ONNX; it has no standard replacement to upgrade to",
        ));
    }
    let mut changed = false;
    // Attributes that stopped existing before opset 7 targets.
    for legacy in ["consumed_inputs"] {
        if let Some(n) = g.node_mut(id) {
            changed |= n.take_attr(legacy).is_some();
        }
    }
    match op.as_str() {
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "And" | "Or" | "Xor" | "Equal" | "Greater"
        | "Less" | "Gemm"
            if from < 7 =>
        {
            let node = g
                .node(id)
                .ok_or_else(|| Error::Invalid("node vanished".into()))?;
            if node.get_int("broadcast")?.unwrap_or(0) != 0 && node.attr("axis").is_some() {
                return Err(err(
                    node,
                    "legacy broadcast with an axis cannot be upgraded",
                ));
            }
            if let Some(n) = g.node_mut(id) {
                changed |= n.take_attr("broadcast").is_some() | n.take_attr("axis").is_some();
            }
        }
        "Slice" if crosses(from, target, 10) => {
            let node = g
                .node(id)
                .ok_or_else(|| Error::Invalid("node vanished".into()))?;
            if node.attr("starts").is_none() || node.attr("ends").is_none() {
                return Err(err(node, "Slice without starts/ends attributes"));
            }
            ints_to_input(g, id, "starts", 1)?;
            ints_to_input(g, id, "ends", 2)?;
            ints_to_input(g, id, "axes", 3)?;
            changed = true;
        }
        "TopK" if crosses(from, target, 10) => {
            let moved = attr_to_input(g, id, "k", 1, |n| {
                Ok(n.get_int("k")?.map(|k| Tensor::from_i64(vec![1], &[k])))
            })?;
            if !moved {
                let node = g
                    .node(id)
                    .ok_or_else(|| Error::Invalid("node vanished".into()))?;
                return Err(err(node, "TopK without k"));
            }
            changed = true;
        }
        "Upsample" if target >= 10 => {
            upsample_to_resize(g, id, target)?;
            changed = true;
        }
        "Resize" if crosses(from, target, 11) => {
            resize_10_to_11(g, id)?;
            changed = true;
        }
        "Clip" if crosses(from, target, 11) => {
            let node = g
                .node(id)
                .ok_or_else(|| Error::Invalid("node vanished".into()))?;
            let (min, max) = (node.get_float("min")?, node.get_float("max")?);
            let name = node.name.clone();
            if let Some(n) = g.node_mut(id) {
                n.take_attr("min");
                n.take_attr("max");
            }
            if let Some(v) = min {
                let m = g.add_initializer(&format!("{name}/min"), Tensor::from_f32(vec![], &[v]));
                g.set_input(id, 1, Some(m));
            }
            if let Some(v) = max {
                let m = g.add_initializer(&format!("{name}/max"), Tensor::from_f32(vec![], &[v]));
                g.set_input(id, 2, Some(m));
            }
            changed = true;
        }
        "Pad" if crosses(from, target, 11) => {
            ints_to_input(g, id, "pads", 1)?;
            float_to_input(g, id, "value", 2)?;
            changed = true;
        }
        "Scatter" if crosses(from, target, 11) => {
            if let Some(n) = g.node_mut(id) {
                n.op_type = "ScatterElements".into();
            }
            changed = true;
        }
        "Dropout" if crosses(from, target, 12) => {
            if let Some(n) = g.node_mut(id) {
                n.take_attr("is_test");
            }
            float_to_input(g, id, "ratio", 1)?;
            changed = true;
        }
        "Dropout" if from < 7 => {
            if let Some(n) = g.node_mut(id) {
                changed |= n.take_attr("is_test").is_some();
            }
        }
        "Softmax" | "LogSoftmax" | "Hardmax" if crosses(from, target, 13) => {
            changed |= softmax_to_13(g, id)?;
        }
        "Squeeze" | "Unsqueeze" | "ReduceSum" if crosses(from, target, 13) => {
            changed |= ints_to_input(g, id, "axes", 1)?;
        }
        "Split" if crosses(from, target, 13) => {
            changed |= ints_to_input(g, id, "split", 1)?;
        }
        r if REDUCE_18.contains(&r) && crosses(from, target, 18) => {
            changed |= ints_to_input(g, id, "axes", 1)?;
        }
        "BatchNormalization" => {
            let node = g
                .node(id)
                .ok_or_else(|| Error::Invalid("node vanished".into()))?;
            if from < 9 && node.get_int("spatial")?.unwrap_or(1) != 1 {
                return Err(err(
                    node,
                    "spatial=0 BatchNormalization has no opset-9+ equivalent",
                ));
            }
            let extra_used = node
                .outputs
                .iter()
                .skip(1)
                .flatten()
                .any(|&o| !g.value(o).consumers().is_empty() || g.is_graph_output(o));
            if extra_used && crosses(from, target, 14) {
                return Err(err(
                    node,
                    "training outputs of BatchNormalization are used; opset 14 has no equivalent",
                ));
            }
            if let Some(n) = g.node_mut(id) {
                changed |= n.take_attr("spatial").is_some() | n.take_attr("is_test").is_some();
            }
            if crosses(from, target, 14) {
                let outs = g.node(id).map(|n| n.outputs.len()).unwrap_or(0);
                for slot in 1..outs {
                    g.set_output(id, slot, None);
                }
                if let Some(n) = g.node_mut(id) {
                    n.outputs.truncate(1);
                }
            }
        }
        "Concat" if from < 4 => {
            if let Some(n) = g.node_mut(id) {
                if n.attr("axis").is_none() {
                    n.set_attr(attr::int("axis", 1));
                    changed = true;
                }
            }
        }
        _ => {}
    }
    Ok(changed)
}

/// Upsample(X, scales) → Resize(X, roi, scales), asymmetric coordinates,
/// nearest rounding `floor` (Upsample's index = floor(out / scale)).
fn upsample_to_resize(g: &mut Graph, id: NodeId, target: i64) -> Result<()> {
    let node = g
        .node(id)
        .ok_or_else(|| Error::Invalid("node vanished".into()))?;
    let name = node.name.clone();
    let mode = node.get_string("mode")?.unwrap_or_else(|| "nearest".into());
    let scales_attr = node.get_floats("scales")?;
    if let Some(n) = g.node_mut(id) {
        n.op_type = "Resize".into();
        n.take_attr("scales");
        n.take_attr("height_scale");
        n.take_attr("width_scale");
        n.set_attr(attr::string(
            "mode",
            if mode == "bilinear" { "linear" } else { &mode },
        ));
    }
    if let Some(s) = scales_attr {
        let v = g.add_initializer(
            &format!("{name}/scales"),
            Tensor::from_f32(vec![s.len()], &s),
        );
        g.set_input(id, 1, Some(v));
    }
    if target >= 11 {
        resize_10_to_11(g, id)?;
    }
    Ok(())
}

/// Resize-10 (X, scales) → Resize-11 (X, roi, scales) with the coordinate
/// mode Resize-10 implied.
fn resize_10_to_11(g: &mut Graph, id: NodeId) -> Result<()> {
    let node = g
        .node(id)
        .ok_or_else(|| Error::Invalid("node vanished".into()))?;
    let name = node.name.clone();
    let scales = node.input(1);
    let mode = node.get_string("mode")?.unwrap_or_else(|| "nearest".into());
    // Resize-10 / Upsample pick the nearest input index as floor(out / scale)
    // when enlarging, which is `floor` rounding of asymmetric coordinates.
    // Shrinking picked differently across runtimes: refuse rather than guess.
    if mode == "nearest" {
        let shrink = scales
            .and_then(|s| g.initializer(s))
            .and_then(|t| t.to_f32_vec().ok())
            .map(|v| v.iter().any(|&x| x < 1.0));
        match shrink {
            Some(false) => {}
            Some(true) => {
                return Err(err(
                    node,
                    "nearest Resize-10 that shrinks cannot be upgraded exactly",
                ))
            }
            None => return Err(err(node, "Resize-10 scales must be constant to upgrade")),
        }
    }
    let roi = g.add_initializer(&format!("{name}/roi"), Tensor::from_f32(vec![0], &[]));
    g.set_input(id, 1, Some(roi));
    g.set_input(id, 2, scales);
    if let Some(n) = g.node_mut(id) {
        n.set_attr(attr::string("coordinate_transformation_mode", "asymmetric"));
        if mode == "nearest" {
            n.set_attr(attr::string("nearest_mode", "floor"));
        }
    }
    Ok(())
}

/// Softmax before 13 flattens the input to 2-D at `axis` (default 1) and
/// normalizes each row; from 13 it normalizes along `axis` (default −1).
/// When `axis` is the last axis the two agree; otherwise the old semantics
/// are rebuilt as Flatten → Softmax(axis=−1) → Reshape(to the input shape).
fn softmax_to_13(g: &mut Graph, id: NodeId) -> Result<bool> {
    let node = g
        .node(id)
        .ok_or_else(|| Error::Invalid("node vanished".into()))?;
    let axis = node.get_int("axis")?.unwrap_or(1);
    let x = node.input(0).ok_or_else(|| err(node, "no input"))?;
    let rank = crate::ir::types::static_shape(g, x)
        .map(|s| s.len() as i64)
        .or_else(|| crate::ir::types::dims_of(g, x).map(|d| d.len() as i64));
    if axis == -1 || rank.is_some_and(|r| (axis + r) % r.max(1) == r - 1) {
        if let Some(n) = g.node_mut(id) {
            n.set_attr(attr::int("axis", -1));
        }
        return Ok(true);
    }
    let name = node.name.clone();
    let y = node.output(0).ok_or_else(|| err(node, "no output"))?;
    let shape = g.new_value(&format!("{name}/input_shape"));
    let flat = g.new_value(&format!("{name}/flat"));
    let soft = g.new_value(&format!("{name}/normalized"));
    let mut shape_node = Node::new(format!("{name}/Shape"), "Shape");
    shape_node.inputs = vec![Some(x)];
    shape_node.outputs = vec![Some(shape)];
    let mut flatten = Node::new(format!("{name}/Flatten"), "Flatten");
    flatten.inputs = vec![Some(x)];
    flatten.outputs = vec![Some(flat)];
    flatten.attrs = vec![attr::int("axis", axis)];
    let mut reshape = Node::new(format!("{name}/Reshape"), "Reshape");
    reshape.inputs = vec![Some(soft), Some(shape)];
    g.set_output(id, 0, Some(soft));
    reshape.outputs = vec![Some(y)];
    g.set_input(id, 0, Some(flat));
    if let Some(n) = g.node_mut(id) {
        n.set_attr(attr::int("axis", -1));
    }
    g.insert_node(shape_node);
    g.insert_node(flatten);
    g.insert_node(reshape);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testutil::*;

    fn upgrade(m: &mut Model, target: i64) -> Result<usize> {
        let opts = PassOptions {
            target_opset: Some(target),
            ..Default::default()
        };
        UpgradeOpset.run(m, &opts)
    }

    #[test]
    fn opset11_attributes_become_inputs_at_13_and_18() {
        let m0 = model(
            11,
            &[("x", &[2, 1, 6])],
            &["y", "m"],
            vec![
                node(
                    "Squeeze",
                    "sq",
                    &["x"],
                    &["s"],
                    vec![attr::ints("axes", &[1])],
                ),
                node(
                    "Split",
                    "split",
                    &["s"],
                    &["a", "b"],
                    vec![attr::int("axis", 1), attr::ints("split", &[2, 4])],
                ),
                node(
                    "ReduceSum",
                    "rs",
                    &["b"],
                    &["r"],
                    vec![attr::ints("axes", &[1])],
                ),
                node(
                    "Unsqueeze",
                    "us",
                    &["r"],
                    &["y"],
                    vec![attr::ints("axes", &[0])],
                ),
                node(
                    "ReduceMean",
                    "rm",
                    &["a"],
                    &["m"],
                    vec![attr::ints("axes", &[1]), attr::int("keepdims", 0)],
                ),
            ],
            vec![],
        );
        for target in [13, 18] {
            let mut m = m0.clone();
            upgrade(&mut m, target).unwrap();
            assert_eq!(m.onnx_opset().unwrap(), target);
            assert!(m.ir_version() >= min_ir_version(target));
            for (_, n) in m.graph.nodes() {
                let moved = n.op_type != "ReduceMean" || target >= 18;
                assert_eq!(n.attr("axes").is_none(), moved, "{} at {target}", n.op_type);
                assert!(n.attr("split").is_none());
            }
            let xs = inputs(&m0, 1);
            assert_close(&run(&m0, &xs), &run(&m, &xs), 0.0);
        }
    }

    #[test]
    fn clip_and_pad_and_dropout_attributes_move() {
        let m0 = model(
            10,
            &[("x", &[1, 4])],
            &["y"],
            vec![
                node(
                    "Clip",
                    "clip",
                    &["x"],
                    &["c"],
                    vec![attr::float("min", -0.5), attr::float("max", 1.0)],
                ),
                node(
                    "Pad",
                    "pad",
                    &["c"],
                    &["p"],
                    vec![attr::ints("pads", &[0, 1, 0, 2]), attr::float("value", 3.0)],
                ),
                node(
                    "Dropout",
                    "drop",
                    &["p"],
                    &["y"],
                    vec![attr::float("ratio", 0.3)],
                ),
            ],
            vec![],
        );
        let mut m = m0.clone();
        upgrade(&mut m, 13).unwrap();
        for (_, n) in m.graph.nodes() {
            assert!(n.attrs.is_empty(), "{} keeps {:?}", n.op_type, n.attrs);
        }
        let xs = inputs(&m0, 2);
        assert_close(&run(&m0, &xs), &run(&m, &xs), 0.0);
    }

    #[test]
    fn softmax_semantics_are_kept() {
        // axis 1 of a rank-3 input: not the last axis, so old != new semantics.
        let m0 = model(
            12,
            &[("x", &[2, 3, 4])],
            &["y", "z"],
            vec![
                node("Softmax", "sm", &["x"], &["y"], vec![]),
                node(
                    "LogSoftmax",
                    "lsm",
                    &["x"],
                    &["z"],
                    vec![attr::int("axis", 2)],
                ),
            ],
            vec![],
        );
        let mut m = m0.clone();
        upgrade(&mut m, 13).unwrap();
        let xs = inputs(&m0, 3);
        assert_close(&run(&m0, &xs), &run(&m, &xs), 1e-6);
        assert!(ops(&m).contains(&"Flatten".to_string()));
    }

    #[test]
    fn upsample_and_resize_10_become_resize_11() {
        let scales = || ("scales", Tensor::from_f32(vec![4], &[1.0, 1.0, 2.0, 3.0]));
        for (opset, op) in [(9, "Upsample"), (10, "Resize")] {
            let m0 = model(
                opset,
                &[("x", &[1, 2, 3, 2])],
                &["y"],
                vec![node(
                    op,
                    "up",
                    &["x", "scales"],
                    &["y"],
                    vec![attr::string("mode", "nearest")],
                )],
                vec![scales()],
            );
            let mut m = m0.clone();
            upgrade(&mut m, 13).unwrap();
            assert_eq!(ops(&m), ["Resize"]);
            let xs = inputs(&m0, 6);
            // Upsample / Resize-10 nearest: y[n, c, h, w] = x[n, c, floor(h / 2), floor(w / 3)].
            let x = xs[0].1.to_f32_vec().unwrap();
            let mut want = Vec::new();
            for c in 0..2 {
                for h in 0..6 {
                    for w in 0..6 {
                        want.push(x[c * 6 + (h / 2) * 2 + w / 3]);
                    }
                }
            }
            assert_close(&[want], &run(&m, &xs), 0.0);
        }
    }

    #[test]
    fn refuses_what_it_cannot_upgrade() {
        let mut m = model(
            12,
            &[("x", &[1, 3, 2, 2])],
            &["y"],
            vec![node("ImageScaler", "scaler", &["x"], &["y"], vec![])],
            vec![],
        );
        let e = upgrade(&mut m, 13).unwrap_err().to_string();
        assert!(e.contains("scaler") && e.contains("ImageScaler"), "{e}");
        let mut m = model(
            13,
            &[("x", &[2])],
            &["y"],
            vec![node("Relu", "r", &["x"], &["y"], vec![])],
            vec![],
        );
        assert!(upgrade(&mut m, 12)
            .unwrap_err()
            .to_string()
            .contains("lower"));
        assert!(upgrade(&mut m, 99).is_err());
    }
}
