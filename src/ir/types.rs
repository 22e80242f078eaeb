//! Element types and shapes of values, as far as the graph knows them
//! (initializers, declared `value_info`, graph inputs/outputs).

use super::graph::Graph;
use super::tensor::DataType;
use super::ValueId;
use crate::onnx::proto::{tensor_shape_proto::dimension, type_proto, ValueInfoProto};

/// One dimension of a declared shape.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
    Unknown,
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => write!(f, "{s}"),
            Dim::Unknown => write!(f, "?"),
        }
    }
}

fn tensor_type(info: &ValueInfoProto) -> Option<&type_proto::Tensor> {
    match &info.r#type.as_ref()?.value {
        Some(type_proto::Value::TensorType(tt)) => Some(tt),
        _ => None,
    }
}

/// Element type and (if known) shape declared by a `ValueInfoProto`.
pub fn declared(info: &ValueInfoProto) -> (Option<DataType>, Option<Vec<Dim>>) {
    let Some(tt) = tensor_type(info) else {
        return (None, None);
    };
    let dims = tt.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(dimension::Value::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
                Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
                _ => Dim::Unknown,
            })
            .collect()
    });
    (DataType::from_code(tt.elem_type()), dims)
}

/// The element type of `v`, if known.
pub fn dtype_of(g: &Graph, v: ValueId) -> Option<DataType> {
    if let Some(t) = g.initializer(v) {
        return Some(t.dtype());
    }
    declared(g.value(v).info.as_ref()?).0
}

/// The declared shape of `v`, if known.
pub fn dims_of(g: &Graph, v: ValueId) -> Option<Vec<Dim>> {
    if let Some(t) = g.initializer(v) {
        return Some(t.dims().iter().map(|&d| Dim::Fixed(d)).collect());
    }
    declared(g.value(v).info.as_ref()?).1
}

/// The shape of `v` if every dimension is a known number.
pub fn static_shape(g: &Graph, v: ValueId) -> Option<Vec<usize>> {
    dims_of(g, v)?
        .into_iter()
        .map(|d| match d {
            Dim::Fixed(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// What a caller must feed for one graph input.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct InputSpec {
    pub name: String,
    pub dtype: Option<DataType>,
    pub dims: Option<Vec<Dim>>,
}

/// The graph's runtime inputs (initializers excluded), in order.
pub fn input_specs(g: &Graph) -> Vec<InputSpec> {
    g.runtime_inputs()
        .map(|v| {
            let (dtype, dims) = g
                .value(v)
                .info
                .as_ref()
                .map(declared)
                .unwrap_or((None, None));
            InputSpec {
                name: g.value_name(v).to_string(),
                dtype,
                dims,
            }
        })
        .collect()
}
