//! 16-bit activations: the automatic mode's alternative to float for the
//! QDQ format at opset 21, where QuantizeLinear/DequantizeLinear take
//! uint16/int16.
//!
//! - [`widen`]: a config whose per-tensor overrides make the activations
//!   of some nodes (inputs and output, at the tensor that owns the
//!   parameters when they are shared) 16-bit; weights stay int8.
//! - [`emulate_wide_qdq`]: the same model with every 16-bit Q/DQ written as
//!   the float arithmetic the ONNX spec defines for it, for tract, which
//!   runs only 8-bit Q/DQ. The gate itself runs the real model on the
//!   reference executor, which computes 16-bit Q/DQ natively.
//!
//! Reads a model and a config; writes copies.

use crate::error::{Error, Result};
use crate::ir::{DataType, Model, Node, NodeId, Tensor, ValueId};
use crate::quantize::materialize::info_as;
use crate::quantize::{plan_model, ActSpec, QuantizeConfig};

/// `cfg` with the activations of `ids` made 16-bit (same signedness as the
/// model-wide type). Returns the names of the tensors it widened.
pub fn widen(
    model: &Model,
    cfg: &QuantizeConfig,
    ids: &[NodeId],
) -> Result<(QuantizeConfig, Vec<String>)> {
    let plan = plan_model(model, cfg)?;
    let g = &model.graph;
    let wide = cfg.activations.wide();
    let mut out = cfg.clone();
    let mut names = Vec::new();
    for &id in ids {
        let Some(n) = g.node(id) else { continue };
        for v in n.inputs.iter().chain(&n.outputs).flatten() {
            // The tensor whose parameters this one shares (data movement
            // runs on its producer's scale), which must widen with it.
            let mut root = *v;
            let mut hops = 0;
            while let Some(ActSpec::Share(src)) = plan.activations.get(&root) {
                if *src == root || hops > g.node_count() {
                    break;
                }
                root = *src;
                hops += 1;
            }
            if !plan.activations.contains_key(&root) {
                continue;
            }
            let name = g.value_name(root).to_string();
            let o = out.tensors.entry(name.clone()).or_default();
            if o.keep_float || o.scale.is_some() {
                // The user's own decision for this tensor stands.
                continue;
            }
            if o.qtype != Some(wide) {
                o.qtype = Some(wide);
                names.push(name);
            }
        }
    }
    Ok((out, names))
}

/// Whether `model` has a QuantizeLinear or DequantizeLinear on 16 bits.
pub fn has_wide_qdq(model: &Model) -> bool {
    model
        .graph
        .nodes()
        .any(|(_, n)| wide_zero_point(model, n).is_some())
}

/// The 16-bit zero point of a Q/DQ node, as a tensor.
fn wide_zero_point<'a>(model: &'a Model, n: &Node) -> Option<&'a Tensor> {
    if !(n.is("QuantizeLinear") || n.is("DequantizeLinear")) {
        return None;
    }
    let z = model.graph.initializer(n.input(2)?)?;
    matches!(z.dtype(), DataType::Uint16 | DataType::Int16).then_some(z)
}

/// `model` with every 16-bit QuantizeLinear rewritten as
/// `Clip(Round(x / scale) + zp, lo, hi)` (float values of the integers:
/// ONNX Round rounds half to even, as QuantizeLinear does) and every 16-bit
/// DequantizeLinear as `(q − zp) · scale`: the same numbers, in ops tract
/// runs, except that tract turns the division by a constant into a multiply
/// by its reciprocal (as its own 8-bit QuantizeLinear does), so a value
/// exactly at a rounding tie may land on the neighbour; scoring tolerates
/// that, the gate runs the real model. Per tensor only (what the quantizer
/// writes).
pub fn emulate_wide_qdq(model: &Model) -> Result<Model> {
    let mut m = model.clone();
    let targets: Vec<NodeId> = model
        .graph
        .nodes()
        .filter(|(_, n)| wide_zero_point(model, n).is_some())
        .map(|(id, _)| id)
        .collect();
    for id in targets {
        let Some(n) = m.graph.node(id).cloned() else {
            continue;
        };
        let (Some(x), Some(s), Some(zv), Some(y)) =
            (n.input(0), n.input(1), n.input(2), n.output(0))
        else {
            continue;
        };
        let z = match m.graph.initializer(zv) {
            Some(z) => z.clone(),
            None => continue,
        };
        let scale = m
            .graph
            .initializer(s)
            .cloned()
            .ok_or_else(|| Error::tensor(&n.name, "a 16-bit Q/DQ needs a constant scale"))?;
        let (lo, hi) = match z.dtype() {
            DataType::Uint16 => (0.0f32, 65535.0f32),
            _ => (-32768.0, 32767.0),
        };
        let zf: Vec<f32> = z.to_i64_vec()?.into_iter().map(|v| v as f32).collect();
        // Our quantizer writes 16-bit activations per tensor only.
        if scale.len() != 1 || zf.len() != 1 {
            return Err(Error::tensor(
                &n.name,
                "per-axis 16-bit Q/DQ cannot be emulated for tract (per-tensor only)",
            ));
        }
        let shape: Vec<usize> = vec![];
        let base = format!("{}/emulated", n.name);
        let g = &mut m.graph;
        let sv = g.add_initializer(
            &format!("{base}/scale"),
            Tensor::from_f32(shape.clone(), &scale.to_f32_vec()?),
        );
        let zpv = g.add_initializer(&format!("{base}/zero_point"), Tensor::from_f32(shape, &zf));
        let add = |g: &mut crate::ir::Graph,
                   op: &str,
                   tag: &str,
                   ins: Vec<ValueId>,
                   out: Option<ValueId>| {
            let o = out.unwrap_or_else(|| g.new_value(&format!("{base}/{tag}")));
            let mut node = Node::new(format!("{base}/{tag}"), op);
            node.inputs = ins.into_iter().map(Some).collect();
            node.outputs = vec![Some(o)];
            g.insert_node(node);
            o
        };
        g.remove_node(id);
        if n.is("QuantizeLinear") {
            let lov = g.add_initializer(&format!("{base}/lo"), Tensor::from_f32(vec![], &[lo]));
            let hiv = g.add_initializer(&format!("{base}/hi"), Tensor::from_f32(vec![], &[hi]));
            let d = add(g, "Div", "div", vec![x, sv], None);
            let r = add(g, "Round", "round", vec![d], None);
            let a = add(g, "Add", "add", vec![r, zpv], None);
            add(g, "Clip", "clip", vec![a, lov, hiv], Some(y));
        } else {
            let d = add(g, "Sub", "sub", vec![x, zpv], None);
            add(g, "Mul", "mul", vec![d, sv], Some(y));
        }
        if let Some(i) = info_as(g.value(y).info.as_ref(), DataType::Float) {
            g.set_value_info(y, i);
        }
    }
    Ok(m)
}
