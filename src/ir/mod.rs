//! The graph IR every stage works on.
//!
//! [`Model`] wraps a [`Graph`] with the model-level fields (opset imports,
//! producer, metadata, functions, training info) kept exactly as loaded.
//! `Model::from_proto` validates; `Model::to_proto` writes back everything,
//! including what the IR does not model. Passes (`crate::passes`) and the
//! quantizer edit the graph through [`Graph`]'s methods only, which keep the
//! producer/consumer maps right.

pub mod analysis;
pub mod graph;
pub mod node;
pub mod schema;
pub mod tensor;
pub mod types;

pub use graph::{Graph, Initializer, NodeId, Use, Value, ValueId};
pub use node::Node;
pub use tensor::{DataType, Tensor};

use crate::error::{Error, Result};
use crate::onnx::proto::{ModelProto, OperatorSetIdProto};
use std::collections::HashSet;

/// `base`, or `base_1`, `base_2`, … : the first that `taken` refuses.
pub fn unique_name(base: &str, taken: impl Fn(&str) -> bool) -> String {
    let mut name = base.to_string();
    let mut k = 1;
    while taken(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    name
}

/// Node names in use, for stages that add nodes with readable names.
#[derive(Clone, Debug, Default)]
pub struct NodeNames(HashSet<String>);

impl NodeNames {
    /// The names of `g`'s nodes.
    pub fn of(g: &Graph) -> Self {
        NodeNames(g.nodes().map(|(_, n)| n.name.clone()).collect())
    }

    /// A name not in use (`base` when free), now taken.
    pub fn fresh(&mut self, base: &str) -> String {
        let name = unique_name(base, |n| self.0.contains(n));
        self.0.insert(name.clone());
        name
    }

    /// Frees `name` (its node was removed).
    pub fn release(&mut self, name: &str) {
        self.0.remove(name);
    }
}

/// A model: its main graph plus model-level fields.
#[derive(Clone, Debug)]
pub struct Model {
    pub graph: Graph,
    /// Every `ModelProto` field but `graph`, as loaded.
    rest: ModelProto,
}

impl Model {
    /// Builds the IR, validating the graph.
    pub fn from_proto(proto: &ModelProto) -> Result<Self> {
        let g = proto.graph.as_ref().ok_or(Error::NoGraph)?;
        let graph = Graph::from_proto(g)?;
        Ok(Model {
            graph,
            rest: ModelProto {
                graph: None,
                ..proto.clone()
            },
        })
    }

    /// The `ModelProto`, graph in topological order.
    pub fn to_proto(&self) -> Result<ModelProto> {
        Ok(ModelProto {
            graph: Some(self.graph.to_proto()?),
            ..self.rest.clone()
        })
    }

    pub fn ir_version(&self) -> i64 {
        self.rest.ir_version()
    }

    pub fn producer(&self) -> (&str, &str) {
        (self.rest.producer_name(), self.rest.producer_version())
    }

    pub fn opset_imports(&self) -> &[OperatorSetIdProto] {
        &self.rest.opset_import
    }

    /// Version of `domain` imported (`""` and `ai.onnx` are the same domain).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        self.rest
            .opset_import
            .iter()
            .find(|o| same_domain(o.domain(), domain))
            .map(|o| o.version())
    }

    /// The default-domain opset, required by every model.
    pub fn onnx_opset(&self) -> Result<i64> {
        self.opset("").ok_or(Error::NoDefaultOpset)
    }

    /// Sets the imported version of `domain`.
    pub fn set_opset(&mut self, domain: &str, version: i64) {
        match self
            .rest
            .opset_import
            .iter_mut()
            .find(|o| same_domain(o.domain(), domain))
        {
            Some(o) => o.version = Some(version),
            None => self.rest.opset_import.push(OperatorSetIdProto {
                domain: Some(domain.to_string()),
                version: Some(version),
            }),
        }
    }

    pub fn set_ir_version(&mut self, v: i64) {
        self.rest.ir_version = Some(v);
    }

    /// Model-level metadata (`metadata_props`).
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rest
            .metadata_props
            .iter()
            .map(|e| (e.key(), e.value()))
    }

    /// Sets a `metadata_props` entry.
    pub fn set_metadata(&mut self, key: &str, value: &str) {
        use crate::onnx::proto::StringStringEntryProto;
        match self.rest.metadata_props.iter_mut().find(|e| e.key() == key) {
            Some(e) => e.value = Some(value.to_string()),
            None => self.rest.metadata_props.push(StringStringEntryProto {
                key: Some(key.to_string()),
                value: Some(value.to_string()),
            }),
        }
    }

    /// Number of model-local functions (`FunctionProto`).
    pub fn function_count(&self) -> usize {
        self.rest.functions.len()
    }

    /// Model-local functions (`FunctionProto`), by (domain, name).
    pub fn has_function(&self, domain: &str, name: &str) -> bool {
        self.rest
            .functions
            .iter()
            .any(|f| f.domain() == domain && f.name() == name)
    }
}

/// `""` and `ai.onnx` name the same (default) domain.
fn same_domain(a: &str, b: &str) -> bool {
    let norm = |d: &str| !d.is_empty() && d != "ai.onnx";
    if !norm(a) && !norm(b) {
        return true;
    }
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{
        FunctionProto, GraphProto, NodeProto, StringStringEntryProto, TrainingInfoProto,
        ValueInfoProto,
    };

    fn kv(k: &str, v: &str) -> StringStringEntryProto {
        StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v.into()),
        }
    }

    fn vi(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            doc_string: Some(format!("doc of {name}")),
            ..Default::default()
        }
    }

    #[test]
    fn untouched_fields_survive_the_round_trip() {
        let node = |name: &str, op: &str, domain: Option<&str>, i: &[&str], o: &[&str]| NodeProto {
            name: Some(name.into()),
            op_type: Some(op.into()),
            domain: domain.map(Into::into),
            input: i.iter().map(|s| s.to_string()).collect(),
            output: o.iter().map(|s| s.to_string()).collect(),
            doc_string: Some(format!("{name} doc")),
            metadata_props: vec![kv("k", name)],
            ..Default::default()
        };
        let proto = ModelProto {
            ir_version: Some(9),
            producer_name: Some("p".into()),
            producer_version: Some("1".into()),
            domain: Some("com.example".into()),
            model_version: Some(0),
            doc_string: Some("model doc".into()),
            opset_import: vec![
                OperatorSetIdProto {
                    domain: Some(String::new()),
                    version: Some(13),
                },
                OperatorSetIdProto {
                    domain: Some("com.example".into()),
                    version: Some(1),
                },
            ],
            metadata_props: vec![kv("a", "b")],
            functions: vec![FunctionProto {
                name: Some("MyFn".into()),
                domain: Some("com.example".into()),
                input: vec!["fx".into()],
                output: vec!["fy".into()],
                node: vec![node("inner", "Relu", None, &["fx"], &["fy"])],
                ..Default::default()
            }],
            training_info: vec![TrainingInfoProto {
                update_binding: vec![kv("w", "w_new")],
                ..Default::default()
            }],
            graph: Some(GraphProto {
                name: Some("g".into()),
                doc_string: Some("graph doc".into()),
                metadata_props: vec![kv("gk", "gv")],
                input: vec![vi("x")],
                output: vec![vi("y")],
                value_info: vec![vi("h")],
                node: vec![
                    node("custom", "MyFn", Some("com.example"), &["x"], &["h"]),
                    // An explicitly empty domain (skl2onnx writes one) stays written.
                    node("relu", "Relu", Some(""), &["h"], &["y"]),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = Model::from_proto(&proto).unwrap();
        assert_eq!(m.to_proto().unwrap(), proto);
    }

    #[test]
    fn unnamed_nodes_stay_unnamed_and_order_is_fixed() {
        let n = |op: &str, i: &str, o: &str| NodeProto {
            op_type: Some(op.into()),
            input: vec![i.into()],
            output: vec![o.into()],
            ..Default::default()
        };
        // Listed out of order: consumer first.
        let proto = ModelProto {
            opset_import: vec![OperatorSetIdProto {
                domain: None,
                version: Some(13),
            }],
            graph: Some(GraphProto {
                input: vec![vi("x")],
                output: vec![vi("z")],
                node: vec![n("Relu", "y", "z"), n("Neg", "x", "y")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = Model::from_proto(&proto).unwrap();
        let out = m.to_proto().unwrap();
        let g = out.graph.unwrap();
        assert_eq!(g.node[0].op_type(), "Neg");
        assert_eq!(g.node[1].op_type(), "Relu");
        assert!(g.node.iter().all(|n| n.name.is_none()));
    }
}
