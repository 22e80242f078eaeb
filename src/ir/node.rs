//! A node of the graph, and typed access to its attributes.
//!
//! Attributes stay `AttributeProto`s (so that everything round-trips), read
//! through typed getters that check the attribute's type and report the node,
//! the attribute, and what was expected.

use super::graph::ValueId;
use super::tensor::Tensor;
use crate::error::{Error, Result};
use crate::onnx::proto::attribute_proto::AttributeType;
use crate::onnx::proto::{AttributeProto, GraphProto, NodeProto};
use crate::onnx::tensor::tensor_from_proto;

/// One operator invocation.
#[derive(Clone, Debug)]
pub struct Node {
    /// The node's name, or `#index` for an unnamed node (written back empty).
    pub name: String,
    pub op_type: String,
    /// Operator domain; empty for the default ONNX domain.
    pub domain: String,
    /// Inputs by slot; `None` for an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    /// Outputs by slot; `None` for an omitted optional output.
    pub outputs: Vec<Option<ValueId>>,
    pub attrs: Vec<AttributeProto>,
    /// Outer-scope values read by name inside this node's subgraphs.
    pub implicit_inputs: Vec<ValueId>,
    /// Whether the name was synthesized (the node had none).
    pub unnamed: bool,
    /// Other `NodeProto` fields (doc_string, overload, metadata_props,
    /// device_configurations, whether an empty domain was written), kept
    /// for the round trip.
    pub rest: NodeProto,
}

impl Node {
    /// A new node in the default domain.
    pub fn new(name: impl Into<String>, op_type: impl Into<String>) -> Self {
        Node {
            name: name.into(),
            op_type: op_type.into(),
            domain: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            attrs: Vec::new(),
            implicit_inputs: Vec::new(),
            unnamed: false,
            rest: NodeProto::default(),
        }
    }

    pub(crate) fn from_proto(
        p: &NodeProto,
        label: String,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<Option<ValueId>>,
        implicit_inputs: Vec<ValueId>,
    ) -> Self {
        Node {
            unnamed: p.name().is_empty(),
            name: label,
            op_type: p.op_type().to_string(),
            domain: p.domain().to_string(),
            inputs,
            outputs,
            attrs: p.attribute.clone(),
            implicit_inputs,
            rest: NodeProto {
                // Remembers whether the domain was written (even empty).
                domain: p.domain.clone(),
                doc_string: p.doc_string.clone(),
                overload: p.overload.clone(),
                metadata_props: p.metadata_props.clone(),
                device_configurations: p.device_configurations.clone(),
                ..Default::default()
            },
        }
    }

    pub(crate) fn to_proto(&self, input: Vec<String>, output: Vec<String>) -> NodeProto {
        NodeProto {
            input,
            output,
            name: (!self.unnamed).then(|| self.name.clone()),
            op_type: Some(self.op_type.clone()),
            // An empty domain is written only if the loaded node wrote it.
            domain: match (self.domain.is_empty(), &self.rest.domain) {
                (false, _) => Some(self.domain.clone()),
                (true, Some(d)) if d.is_empty() => Some(String::new()),
                (true, _) => None,
            },
            attribute: self.attrs.clone(),
            ..self.rest.clone()
        }
    }

    /// Whether the op is in the default ONNX domain (`""` or `ai.onnx`).
    pub fn is_onnx(&self) -> bool {
        self.domain.is_empty() || self.domain == "ai.onnx"
    }

    /// Whether the node is `op` in the default domain.
    pub fn is(&self, op: &str) -> bool {
        self.op_type == op && self.is_onnx()
    }

    /// Input `slot`, if present.
    pub fn input(&self, slot: usize) -> Option<ValueId> {
        self.inputs.get(slot).copied().flatten()
    }

    /// Output `slot`, if present.
    pub fn output(&self, slot: usize) -> Option<ValueId> {
        self.outputs.get(slot).copied().flatten()
    }

    /// Whether any attribute holds a subgraph.
    pub fn has_subgraphs(&self) -> bool {
        self.attrs
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }

    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attrs.iter().find(|a| a.name() == name)
    }

    /// Removes attribute `name`, returning it.
    pub fn take_attr(&mut self, name: &str) -> Option<AttributeProto> {
        let i = self.attrs.iter().position(|a| a.name() == name)?;
        Some(self.attrs.remove(i))
    }

    /// Sets (or replaces) an attribute.
    pub fn set_attr(&mut self, a: AttributeProto) {
        match self.attrs.iter_mut().find(|x| x.name() == a.name()) {
            Some(x) => *x = a,
            None => self.attrs.push(a),
        }
    }

    fn bad(&self, attr: &str, reason: impl Into<String>) -> Error {
        Error::BadAttribute {
            node: self.name.clone(),
            op: self.op_type.clone(),
            attr: attr.to_string(),
            reason: reason.into(),
        }
    }

    fn typed(&self, name: &str, want: AttributeType) -> Result<Option<&AttributeProto>> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        if !a.ref_attr_name().is_empty() {
            return Err(self.bad(
                name,
                "refers to a function attribute; only function bodies may do that",
            ));
        }
        // IR 1 models carry no type: accept the field that is set.
        let actual = match a.r#type {
            Some(_) => a.r#type(),
            None => infer_type(a),
        };
        if actual != want {
            return Err(self.bad(
                name,
                format!(
                    "expected type {}, found {}",
                    want.as_str_name(),
                    actual.as_str_name()
                ),
            ));
        }
        Ok(Some(a))
    }

    pub fn get_int(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.typed(name, AttributeType::Int)?.map(|a| a.i()))
    }

    pub fn get_float(&self, name: &str) -> Result<Option<f32>> {
        Ok(self.typed(name, AttributeType::Float)?.map(|a| a.f()))
    }

    pub fn get_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self
            .typed(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    pub fn get_floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self
            .typed(name, AttributeType::Floats)?
            .map(|a| a.floats.clone()))
    }

    pub fn get_string(&self, name: &str) -> Result<Option<String>> {
        self.typed(name, AttributeType::String)?
            .map(|a| String::from_utf8(a.s().to_vec()).map_err(|_| self.bad(name, "is not UTF-8")))
            .transpose()
    }

    pub fn get_tensor(&self, name: &str) -> Result<Option<Tensor>> {
        self.typed(name, AttributeType::Tensor)?
            .and_then(|a| a.t.as_ref())
            .map(|t| tensor_from_proto(t).map_err(|e| self.bad(name, e.to_string())))
            .transpose()
    }

    pub fn get_graph(&self, name: &str) -> Result<Option<&GraphProto>> {
        Ok(self
            .typed(name, AttributeType::Graph)?
            .and_then(|a| a.g.as_ref()))
    }
}

/// The type an untyped (IR 1) attribute carries, from which field is set.
pub fn infer_type(a: &AttributeProto) -> AttributeType {
    use AttributeType as T;
    if a.f.is_some() {
        T::Float
    } else if a.i.is_some() {
        T::Int
    } else if a.s.is_some() {
        T::String
    } else if a.t.is_some() {
        T::Tensor
    } else if a.g.is_some() {
        T::Graph
    } else if a.sparse_tensor.is_some() {
        T::SparseTensor
    } else if a.tp.is_some() {
        T::TypeProto
    } else if !a.floats.is_empty() {
        T::Floats
    } else if !a.ints.is_empty() {
        T::Ints
    } else if !a.strings.is_empty() {
        T::Strings
    } else if !a.tensors.is_empty() {
        T::Tensors
    } else if !a.graphs.is_empty() {
        T::Graphs
    } else if !a.sparse_tensors.is_empty() {
        T::SparseTensors
    } else if !a.type_protos.is_empty() {
        T::TypeProtos
    } else {
        T::Undefined
    }
}

/// Attribute constructors.
pub mod attr {
    use super::AttributeType;
    use crate::onnx::proto::{AttributeProto, TensorProto};

    fn base(name: &str, t: AttributeType) -> AttributeProto {
        AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(t as i32),
            ..Default::default()
        }
    }

    pub fn int(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            i: Some(v),
            ..base(name, AttributeType::Int)
        }
    }

    pub fn float(name: &str, v: f32) -> AttributeProto {
        AttributeProto {
            f: Some(v),
            ..base(name, AttributeType::Float)
        }
    }

    pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            ints: v.to_vec(),
            ..base(name, AttributeType::Ints)
        }
    }

    pub fn string(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            s: Some(v.as_bytes().to_vec().into()),
            ..base(name, AttributeType::String)
        }
    }

    pub fn tensor(name: &str, t: TensorProto) -> AttributeProto {
        AttributeProto {
            t: Some(t),
            ..base(name, AttributeType::Tensor)
        }
    }
}
