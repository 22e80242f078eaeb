//! Small hand-built graphs for pass tests, and running them through tract.

use crate::ir::{DataType, Model, Tensor};
use crate::onnx::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::onnx::tensor::tensor_to_proto;

pub fn vi(name: &str, shape: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float.code()),
                shape: Some(TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d)),
                            denotation: None,
                        })
                        .collect(),
                }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

pub fn node(
    op: &str,
    name: &str,
    ins: &[&str],
    outs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

/// A model with float inputs of static shape, the given nodes and initializers.
pub fn model(
    opset: i64,
    inputs: &[(&str, &[i64])],
    outputs: &[&str],
    nodes: Vec<NodeProto>,
    inits: Vec<(&str, Tensor)>,
) -> Model {
    let proto = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            name: Some("test".into()),
            input: inputs.iter().map(|(n, s)| vi(n, s)).collect(),
            output: outputs
                .iter()
                .map(|n| ValueInfoProto {
                    name: Some(n.to_string()),
                    ..Default::default()
                })
                .collect(),
            node: nodes,
            initializer: inits.iter().map(|(n, t)| tensor_to_proto(n, t)).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    Model::from_proto(&proto).expect("test model is valid")
}

/// Deterministic inputs in [-2, 2).
pub fn inputs(m: &Model, seed: u32) -> Vec<(String, Tensor)> {
    let g = &m.graph;
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    g.runtime_inputs()
        .map(|v| {
            let dims: Vec<usize> = crate::ir::types::dims_of(g, v)
                .unwrap()
                .iter()
                .map(|d| match d {
                    crate::ir::types::Dim::Fixed(n) => *n,
                    _ => 2,
                })
                .collect();
            let n = dims.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    (s % 4000) as f32 / 1000.0 - 2.0
                })
                .collect();
            (g.value_name(v).to_string(), Tensor::from_f32(dims, &data))
        })
        .collect()
}

/// Runs `m` in tract on `inputs`.
pub fn run(m: &Model, inputs: &[(String, Tensor)]) -> Vec<Vec<f32>> {
    let specs: Vec<_> = inputs
        .iter()
        .map(|(n, t)| (n.clone(), t.dtype(), t.dims().to_vec()))
        .collect();
    let r = crate::tract::Runner::new(&m.to_proto().unwrap(), &specs, None).expect("tract builds");
    r.run(inputs)
        .expect("tract runs")
        .iter()
        .map(|t| {
            t.to_f32_vec().unwrap_or_else(|_| {
                t.to_i64_vec()
                    .unwrap()
                    .into_iter()
                    .map(|v| v as f32)
                    .collect()
            })
        })
        .collect()
}

/// Asserts that two output lists agree within `tol` relative to their range.
pub fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        let range = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() <= tol * range, "{p} vs {q} (range {range})");
        }
    }
}

/// Op types of the graph in order.
pub fn ops(m: &Model) -> Vec<String> {
    let g = &m.graph;
    g.topo_order()
        .unwrap()
        .into_iter()
        .map(|id| g.node(id).unwrap().op_type.clone())
        .collect()
}

/// `n` deterministic values uniform in [0, 1) (a 64-bit LCG, top 24 bits:
/// exact in f32 and f64).
pub fn uniform(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f64 / (1u64 << 24) as f64
        })
        .collect()
}
