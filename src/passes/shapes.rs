//! Shape inference: element type and shape of every value, from tract's
//! analysis of the model, mapped back to our values by tensor name, and
//! written as `value_info`.
//!
//! Symbolic input dimensions stay symbolic (`batch`, `seq`); a dimension
//! tract can only express as a formula (`seq*2`) or cannot infer at all is
//! written as unknown rather than invented. Values that already carry type
//! information (graph inputs and outputs, existing `value_info`) keep it.
//! The files `optimize` and `quantize` write declare intermediate symbolic
//! dimensions as unknown ([`crate::onnx::portable_value_info`]: tract
//! cannot bind them to concrete input sizes); in memory they stay.

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::onnx::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;
use tract_onnx::prelude::{Framework, OutletId, TDim};
use tract_onnx::tract_hir::infer::{Factoid, GenericFactoid, InferenceModelExt};

/// Infers types and shapes; returns how many values got new `value_info`.
pub fn infer_shapes(model: &mut Model) -> Result<usize> {
    let mut proto = model.to_proto()?;
    if let Some(g) = proto.graph.as_mut() {
        weights_as_inputs(g);
    }
    let m = crate::tract::guarded_model("inferring shapes", &proto, |p| {
        let bytes = p.encode_to_vec();
        let mut m = crate::tract::framework()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| Error::tract("loading the model for shape inference", e))?;
        // Obstinate: carry on past ops tract cannot analyse, keeping what it
        // found.
        let _ = m.analyse(true);
        Ok(m)
    })?;
    let g = &mut model.graph;
    let mut added = 0;
    let nodes: Vec<(usize, usize)> = m.nodes().iter().map(|n| (n.id, n.outputs.len())).collect();
    for (id, n_out) in nodes {
        for slot in 0..n_out {
            let outlet = OutletId::new(id, slot);
            let Some(label) = m.outlet_label(outlet) else {
                continue;
            };
            let Some(v) = g.find_value(label) else {
                continue;
            };
            if g.value(v).info.is_some() || !g.is_defined(v) || g.initializer(v).is_some() {
                continue;
            }
            let Ok(fact) = m.outlet_fact(outlet) else {
                continue;
            };
            let Some(dt) = fact
                .datum_type
                .concretize()
                .and_then(crate::tract::data_type)
            else {
                continue;
            };
            let shape = (!fact.shape.is_open()).then(|| TensorShapeProto {
                dim: fact
                    .shape
                    .dims()
                    .map(|d| Dimension {
                        value: match d {
                            GenericFactoid::Only(TDim::Val(n)) => {
                                Some(dimension::Value::DimValue(*n))
                            }
                            GenericFactoid::Only(TDim::Sym(s)) => {
                                Some(dimension::Value::DimParam(s.to_string()))
                            }
                            _ => None,
                        },
                        denotation: None,
                    })
                    .collect(),
            });
            let info = ValueInfoProto {
                name: Some(label.to_string()),
                r#type: Some(TypeProto {
                    value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                        elem_type: Some(dt.code()),
                        shape,
                    })),
                    denotation: None,
                }),
                ..Default::default()
            };
            g.set_value_info(v, info);
            added += 1;
        }
    }
    Ok(added)
}

/// Float initializers of at least this many elements are handed to tract as
/// typed graph inputs rather than as values: no shape depends on a weight's
/// values, and the model tract reads for the analysis is then small (for
/// ResNet-50, 100 MB less to encode, decode and copy).
const WEIGHT_AS_INPUT: i64 = 1024;

/// Turns the large float initializers of `g` into graph inputs of their
/// type and shape.
fn weights_as_inputs(g: &mut crate::onnx::proto::GraphProto) {
    let float = crate::ir::DataType::Float.code();
    let (big, keep): (Vec<_>, Vec<_>) =
        std::mem::take(&mut g.initializer)
            .into_iter()
            .partition(|t| {
                t.data_type == Some(float)
                    && t.dims.iter().all(|&d| d >= 0)
                    && t.dims
                        .iter()
                        .try_fold(1i64, |n, &d| n.checked_mul(d))
                        .is_some_and(|n| n >= WEIGHT_AS_INPUT)
            });
    g.initializer = keep;
    for t in big {
        let name = t.name.clone().unwrap_or_default();
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let info = crate::onnx::value_info(&name, crate::ir::DataType::Float, &dims);
        // IR < 4 lists initializers as inputs too: that entry is retyped.
        match g
            .input
            .iter_mut()
            .find(|i| i.name.as_deref() == Some(&name))
        {
            Some(i) => *i = info,
            None => g.input.push(info),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::node::attr;
    use crate::ir::types::static_shape;
    use crate::ir::Tensor;
    use crate::passes::testutil::*;

    #[test]
    fn shapes_are_inferred() {
        let mut m = model(
            13,
            &[("x", &[2, 3, 4])],
            &["y"],
            vec![
                node(
                    "Transpose",
                    "t",
                    &["x"],
                    &["t"],
                    vec![attr::ints("perm", &[2, 0, 1])],
                ),
                node(
                    "ReduceSum",
                    "r",
                    &["t", "axes"],
                    &["y"],
                    vec![attr::int("keepdims", 0)],
                ),
            ],
            vec![("axes", Tensor::from_i64(vec![1], &[2]))],
        );
        let n = infer_shapes(&mut m).unwrap();
        assert!(n >= 1);
        let t = m.graph.find_value("t").unwrap();
        assert_eq!(static_shape(&m.graph, t), Some(vec![4, 2, 3]));
    }

    #[test]
    fn shapes_pass_through_weights_tract_sees_as_inputs() {
        // A 64x32 weight (2048 elements) is handed to tract as a typed
        // input; the shapes after it are still inferred, and the model
        // keeps its initializer.
        let w: Vec<f32> = (0..2048).map(|i| i as f32 * 1e-3).collect();
        let mut m = model(
            13,
            &[("x", &[3, 64])],
            &["y"],
            vec![
                node("MatMul", "mm", &["x", "w"], &["h"], vec![]),
                node("Relu", "r", &["h"], &["y"], vec![]),
            ],
            vec![("w", Tensor::from_f32(vec![64, 32], &w))],
        );
        infer_shapes(&mut m).unwrap();
        let h = m.graph.find_value("h").unwrap();
        assert_eq!(static_shape(&m.graph, h), Some(vec![3, 32]));
        let wv = m.graph.find_value("w").unwrap();
        assert!(m.graph.initializer(wv).is_some() && !m.graph.is_graph_input(wv));
    }
}
