//! What a model holds: the report behind `onnxq inspect`.
//!
//! Reads an [`ir::Model`](crate::ir::Model) (and what loading it involved)
//! and summarizes producer, opsets, inputs/outputs, op types, parameters by
//! dtype, where weights live (initializers vs Constant nodes, external
//! files), and which nodes a default INT8 pass would quantize. Serializes to
//! JSON with stable keys; [`Inspection::render`] gives the human table.

use crate::ir::analysis::constant_values;
use crate::ir::graph::Graph;
use crate::ir::tensor::{numel, DataType};
use crate::ir::{Model, ValueId};
use crate::onnx::external::ExternalFile;
use crate::onnx::proto::{tensor_shape_proto::dimension, type_proto, TypeProto, ValueInfoProto};
use crate::onnx::LoadedModel;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One imported operator set.
#[derive(Debug, Serialize)]
pub struct Opset {
    pub domain: String,
    pub version: i64,
}

/// A graph input or output.
#[derive(Debug, Serialize)]
pub struct Io {
    pub name: String,
    /// Element type (`float`, `int64`, …), or the kind for non-tensors.
    pub dtype: String,
    /// Dimensions: numbers, symbolic names, or `?` for unknown; `None` when
    /// the rank itself is unknown.
    pub shape: Option<Vec<String>>,
}

/// Tensors, elements and bytes of one kind.
#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct Count {
    pub tensors: usize,
    pub elements: u64,
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, elements: u64, bytes: u64) {
        self.tensors += 1;
        self.elements += elements;
        self.bytes += bytes;
    }
}

/// A node the default INT8 pass would quantize.
#[derive(Debug, Serialize)]
pub struct Quantizable {
    pub node: String,
    pub op_type: String,
    pub weight: String,
    pub weight_shape: Option<Vec<usize>>,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub path: Option<String>,
    pub file_bytes: u64,
    pub producer_name: String,
    pub producer_version: String,
    pub ir_version: i64,
    pub opsets: Vec<Opset>,
    pub graph_name: String,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
    pub nodes: usize,
    pub op_types: BTreeMap<String, usize>,
    pub nodes_with_subgraphs: usize,
    pub functions: usize,
    /// All constant tensors (initializers and Constant nodes) by dtype.
    pub parameters: BTreeMap<String, Count>,
    pub parameters_total: Count,
    pub weights_in_initializers: Count,
    pub weights_in_constant_nodes: Count,
    pub external_data: Vec<ExternalFile>,
    pub quantizable: Vec<Quantizable>,
    pub metadata: BTreeMap<String, String>,
}

/// Op types whose float weight input makes them quantizable by default, with
/// the input slots that may hold the weight.
const QUANTIZABLE: &[(&str, &[usize])] = &[
    ("Conv", &[1]),
    ("ConvTranspose", &[1]),
    ("Gemm", &[1]),
    ("MatMul", &[1, 0]),
];

/// Builds the report for a loaded model.
pub fn inspect(loaded: &LoadedModel, model: &Model) -> Inspection {
    let g = &model.graph;
    let mut op_types = BTreeMap::new();
    let mut parameters: BTreeMap<String, Count> = BTreeMap::new();
    let mut total = Count::default();
    let mut in_inits = Count::default();
    let mut in_consts = Count::default();

    for (_, init) in g.initializers() {
        let t = &init.tensor;
        let (e, b) = (t.len() as u64, t.byte_len() as u64);
        parameters
            .entry(t.dtype().name().to_string())
            .or_default()
            .add(e, b);
        total.add(e, b);
        if t.dtype().is_float() {
            in_inits.add(e, b);
        }
    }
    for (_, node) in g.nodes() {
        let key = if node.is_onnx() {
            node.op_type.clone()
        } else {
            format!("{}.{}", node.domain, node.op_type)
        };
        *op_types.entry(key).or_insert(0) += 1;
        if node.is("Constant") {
            if let Some((dtype, e, b)) = constant_size(node) {
                parameters
                    .entry(dtype.name().to_string())
                    .or_default()
                    .add(e, b);
                total.add(e, b);
                if dtype.is_float() {
                    in_consts.add(e, b);
                }
            }
        }
    }

    let consts = constant_values(g, model.ir_version() < 4);
    let mut quantizable = Vec::new();
    if let Ok(order) = g.topo_order() {
        for id in order {
            let Some(node) = g.node(id) else { continue };
            let Some((_, slots)) = QUANTIZABLE.iter().find(|(op, _)| node.is(op)) else {
                continue;
            };
            let weight = slots
                .iter()
                .filter_map(|&s| node.input(s))
                .find(|v| consts.contains(v) && is_float_value(g, *v));
            if let Some(w) = weight {
                quantizable.push(Quantizable {
                    node: node.name.clone(),
                    op_type: node.op_type.clone(),
                    weight: g.value_name(w).to_string(),
                    weight_shape: g.initializer(w).map(|t| t.dims().to_vec()),
                });
            }
        }
    }

    let (producer_name, producer_version) = model.producer();
    Inspection {
        path: loaded.path.as_ref().map(|p| p.display().to_string()),
        file_bytes: loaded.file_bytes,
        producer_name: producer_name.to_string(),
        producer_version: producer_version.to_string(),
        ir_version: model.ir_version(),
        opsets: model
            .opset_imports()
            .iter()
            .map(|o| Opset {
                domain: if o.domain().is_empty() {
                    "ai.onnx".into()
                } else {
                    o.domain().to_string()
                },
                version: o.version(),
            })
            .collect(),
        graph_name: g.name().to_string(),
        inputs: g
            .runtime_inputs()
            .map(|v| io(g.value_name(v), g.value(v).info.as_ref()))
            .collect(),
        outputs: (0..)
            .zip(g.outputs())
            .map(|(i, v)| io(g.value_name(v), g.output_info(i)))
            .collect(),
        nodes: g.node_count(),
        op_types,
        nodes_with_subgraphs: g.nodes().filter(|(_, n)| n.has_subgraphs()).count(),
        functions: model.function_count(),
        parameters,
        parameters_total: total,
        weights_in_initializers: in_inits,
        weights_in_constant_nodes: in_consts,
        external_data: loaded.external.clone(),
        quantizable,
        metadata: model
            .metadata()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn is_float_value(g: &Graph, v: ValueId) -> bool {
    if let Some(t) = g.initializer(v) {
        return t.dtype().is_float();
    }
    // A Constant node or a foldable chain: trust the Constant's dtype when
    // it is one, else assume float (weights are).
    match g.producer_node(v) {
        Some((_, n)) if n.is("Constant") => constant_size(n).is_some_and(|(d, _, _)| d.is_float()),
        _ => true,
    }
}

/// dtype, elements and bytes of a Constant node's value.
fn constant_size(node: &crate::ir::Node) -> Option<(DataType, u64, u64)> {
    let a = node.attrs.first()?;
    match a.name() {
        "value" => {
            let t = a.t.as_ref()?;
            let dtype = DataType::from_code(t.data_type())?;
            let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
            let n = numel(&dims)?;
            let bytes = match dtype.raw_len(n) {
                Some(b) => b as u64,
                None => t.string_data.iter().map(|s| s.len() as u64).sum(),
            };
            Some((dtype, n as u64, bytes))
        }
        "value_float" => Some((DataType::Float, 1, 4)),
        "value_floats" => Some((
            DataType::Float,
            a.floats.len() as u64,
            4 * a.floats.len() as u64,
        )),
        "value_int" => Some((DataType::Int64, 1, 8)),
        "value_ints" => Some((
            DataType::Int64,
            a.ints.len() as u64,
            8 * a.ints.len() as u64,
        )),
        "sparse_value" => {
            let v = a.sparse_tensor.as_ref()?.values.as_ref()?;
            let dtype = DataType::from_code(v.data_type())?;
            let n = v.dims.iter().map(|&d| d.max(0) as usize).product::<usize>();
            Some((dtype, n as u64, dtype.raw_len(n).unwrap_or(0) as u64))
        }
        _ => None,
    }
}

fn io(name: &str, info: Option<&ValueInfoProto>) -> Io {
    let (dtype, shape) = match info.and_then(|i| i.r#type.as_ref()) {
        Some(t) => describe_type(t),
        None => ("?".to_string(), None),
    };
    Io {
        name: name.to_string(),
        dtype,
        shape,
    }
}

fn describe_type(t: &TypeProto) -> (String, Option<Vec<String>>) {
    match &t.value {
        Some(type_proto::Value::TensorType(tt)) => (
            DataType::name_of_code(tt.elem_type()),
            tt.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(dimension::Value::DimValue(v)) => v.to_string(),
                        Some(dimension::Value::DimParam(p)) => p.clone(),
                        None => "?".to_string(),
                    })
                    .collect()
            }),
        ),
        Some(type_proto::Value::SequenceType(_)) => ("sequence".into(), None),
        Some(type_proto::Value::MapType(_)) => ("map".into(), None),
        Some(type_proto::Value::OptionalType(_)) => ("optional".into(), None),
        Some(type_proto::Value::SparseTensorType(st)) => (
            format!("sparse {}", DataType::name_of_code(st.elem_type())),
            None,
        ),
        Some(type_proto::Value::OpaqueType(_)) => ("opaque".into(), None),
        None => ("?".into(), None),
    }
}

/// Bytes as B / KiB / MiB / GiB with one decimal.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

impl Inspection {
    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let shape = |io: &Io| match &io.shape {
            Some(d) => format!("[{}]", d.join(", ")),
            None => "(rank unknown)".into(),
        };
        let _ = writeln!(
            s,
            "model       {} ({})",
            self.path.as_deref().unwrap_or("<bytes>"),
            human_bytes(self.file_bytes)
        );
        let producer = match (self.producer_name.as_str(), self.producer_version.as_str()) {
            ("", _) => "(not recorded)".to_string(),
            (n, "") => n.to_string(),
            (n, v) => format!("{n} {v}"),
        };
        let _ = writeln!(s, "producer    {producer}");
        let _ = writeln!(s, "ir version  {}", self.ir_version);
        let opsets: Vec<String> = self
            .opsets
            .iter()
            .map(|o| format!("{} {}", o.domain, o.version))
            .collect();
        let _ = writeln!(s, "opsets      {}", opsets.join(", "));
        let _ = writeln!(
            s,
            "graph       '{}': {} nodes, {} with subgraphs, {} model functions",
            self.graph_name, self.nodes, self.nodes_with_subgraphs, self.functions
        );
        for (title, list) in [("inputs", &self.inputs), ("outputs", &self.outputs)] {
            let _ = writeln!(s, "\n{title}");
            let w = list.iter().map(|i| i.name.len()).max().unwrap_or(0);
            for io in list.iter() {
                let _ = writeln!(s, "  {:w$}  {:8} {}", io.name, io.dtype, shape(io));
            }
        }
        let _ = writeln!(s, "\nop types");
        let w = self.op_types.keys().map(String::len).max().unwrap_or(0);
        for (op, n) in &self.op_types {
            let _ = writeln!(s, "  {op:w$}  {n}");
        }
        let _ = writeln!(
            s,
            "\nparameters  {} elements in {} tensors, {}",
            self.parameters_total.elements,
            self.parameters_total.tensors,
            human_bytes(self.parameters_total.bytes)
        );
        for (dtype, c) in &self.parameters {
            let _ = writeln!(
                s,
                "  {dtype:8}  {:>5} tensors  {:>12} elements  {:>10}",
                c.tensors,
                c.elements,
                human_bytes(c.bytes)
            );
        }
        let _ = writeln!(
            s,
            "float weights: {} in initializers ({}), {} in Constant nodes ({})",
            self.weights_in_initializers.tensors,
            human_bytes(self.weights_in_initializers.bytes),
            self.weights_in_constant_nodes.tensors,
            human_bytes(self.weights_in_constant_nodes.bytes),
        );
        if self.external_data.is_empty() {
            let _ = writeln!(s, "external data: none");
        } else {
            let _ = writeln!(s, "external data:");
            for f in &self.external_data {
                let _ = writeln!(
                    s,
                    "  {}  {} tensors, {}",
                    f.location,
                    f.tensors,
                    human_bytes(f.bytes)
                );
            }
        }
        let _ = writeln!(
            s,
            "\nquantizable (default INT8): {} of {} nodes",
            self.quantizable.len(),
            self.nodes
        );
        let w = self
            .quantizable
            .iter()
            .map(|q| q.node.len())
            .max()
            .unwrap_or(0);
        for q in &self.quantizable {
            let shape = q
                .weight_shape
                .as_ref()
                .map(|d| format!(" {d:?}"))
                .unwrap_or_default();
            let _ = writeln!(s, "  {:w$}  {:13} {}{shape}", q.node, q.op_type, q.weight);
        }
        if !self.metadata.is_empty() {
            let _ = writeln!(s, "\nmetadata");
            for (k, v) in &self.metadata {
                let _ = writeln!(s, "  {k}: {v}");
            }
        }
        s
    }
}
