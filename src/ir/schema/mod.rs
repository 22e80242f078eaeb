//! Node checks against the ONNX operator schemas, run before any graph
//! reaches tract.
//!
//! tract trusts its input: a Transpose `perm` entry past the rank, a Conv
//! stride of 0 or a `pads` list of the wrong length make it index out of
//! bounds or divide by zero, a LayerNormalization axis out of range makes it
//! loop, and a ConstantOfShape asking for 512 GiB makes it abort in the
//! allocator. [`check_model`] refuses those nodes first, with a typed error
//! naming the node, the attribute, what the schema expects and what the
//! model holds.
//!
//! The checks are a registry ([`RULES`]: op type → rule), one file per op
//! family:
//! - `conv`: Conv, ConvTranspose, ConvInteger, QLinearConv and the pools:
//!   kernel, stride, dilation and pad lists of the spatial rank and in range,
//!   `group` dividing the channels;
//! - `axes`: every `axis`/`axes`/`perm` attribute inside the rank of the
//!   tensor it indexes; normalization inputs of a usable rank;
//! - `sizes`: ops whose output size comes from a constant input
//!   (ConstantOfShape, Expand, Tile, Resize, Range, …) bounded by
//!   [`MAX_ELEMENTS`].
//!
//! A rule sees what the graph knows of each input: its declared or inferred
//! shape (else the rank `ranks` derives) and, for initializers and
//! Constant outputs, its value. Where the rank is not known yet a
//! rank-dependent check is skipped; `passes::prepare` runs the checks again
//! after shape inference, when it is. Nodes inside subgraphs (If/Loop/Scan
//! bodies) are checked with what their own graph declares.

mod axes;
mod conv;
mod ranks;
mod sizes;

use super::graph::Graph;
use super::node::Node;
use super::tensor::Tensor;
use super::types::{dims_of, Dim};
use super::Model;
use crate::error::{Error, Result};
use crate::onnx::proto::GraphProto;
use crate::onnx::tensor::tensor_from_proto;
use std::collections::HashMap;

/// The most elements a tensor that a node creates from a constant size may
/// have: 2^29, i.e. 2 GiB of float32 (protobuf's own limit for a whole
/// model). Larger requests are refused before anything allocates.
pub const MAX_ELEMENTS: u64 = 1 << 29;

/// What the graph knows of one input of a node.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// Whether the node has this input at all (optional inputs may be
    /// omitted).
    pub present: bool,
    /// Its shape, declared or inferred (dims may be symbolic or unknown).
    pub dims: Option<Vec<Dim>>,
    /// Its value, when it is an initializer.
    pub value: Option<Tensor>,
}

impl Known {
    /// The rank, when the shape is known.
    pub fn rank(&self) -> Option<usize> {
        self.dims.as_ref().map(Vec::len)
    }

    /// Dimension `i` when it is a known number.
    pub fn dim(&self, i: usize) -> Option<usize> {
        match self.dims.as_ref()?.get(i)? {
            Dim::Fixed(n) => Some(*n),
            _ => None,
        }
    }

    /// The value as integers (shape-like inputs), when constant and integral.
    pub fn ints(&self) -> Option<Vec<i64>> {
        let t = self.value.as_ref()?;
        if t.dtype().is_float() {
            return None;
        }
        t.to_i64_vec().ok()
    }

    /// The value as floats, when constant.
    pub fn floats(&self) -> Option<Vec<f32>> {
        self.value.as_ref()?.to_f32_vec().ok()
    }
}

/// One node under check, with what is known of its inputs.
pub struct Ctx<'a> {
    pub node: &'a Node,
    pub inputs: Vec<Known>,
    /// The default-domain opset of the model.
    pub opset: i64,
}

impl Ctx<'_> {
    /// What is known of input `slot` (nothing, for an absent input).
    pub fn input(&self, slot: usize) -> &Known {
        static NONE: Known = Known {
            present: false,
            dims: None,
            value: None,
        };
        self.inputs.get(slot).unwrap_or(&NONE)
    }

    /// An attribute whose value breaks the schema.
    pub fn bad(&self, attr: &str, expected: impl Into<String>, actual: impl Into<String>) -> Error {
        Error::AttributeValue {
            node: self.node.name.clone(),
            op: self.node.op_type.clone(),
            attr: attr.to_string(),
            expected: expected.into(),
            actual: actual.into(),
        }
    }

    /// An input whose shape or value breaks the schema.
    pub fn bad_input(
        &self,
        slot: usize,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) -> Error {
        Error::InputValue {
            node: self.node.name.clone(),
            op: self.node.op_type.clone(),
            slot,
            expected: expected.into(),
            actual: actual.into(),
        }
    }

    /// An integer attribute, or its default.
    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.node.get_int(name)?.unwrap_or(default))
    }

    /// Checks that integer attribute `name` (if present) lies in `lo..=hi`.
    pub fn int_in(&self, name: &str, lo: i64, hi: i64) -> Result<()> {
        if let Some(v) = self.node.get_int(name)? {
            if v < lo || v > hi {
                return Err(self.bad(name, format!("a value in {lo}..={hi}"), v.to_string()));
            }
        }
        Ok(())
    }
}

/// A rule: checks one node; `Ok` when nothing is wrong.
pub type Rule = fn(&Ctx) -> Result<()>;

/// Op type (default domain) → its rule. Grep-able: every checked op is here.
pub static RULES: &[(&str, Rule)] = &[
    // conv.rs
    ("Conv", conv::conv),
    ("ConvInteger", conv::conv),
    ("QLinearConv", conv::conv),
    ("ConvTranspose", conv::conv),
    ("MaxPool", conv::pool),
    ("AveragePool", conv::pool),
    ("LpPool", conv::pool),
    ("MaxRoiPool", conv::roi_pool),
    ("DepthToSpace", conv::blocksize),
    ("SpaceToDepth", conv::blocksize),
    ("LRN", conv::lrn),
    // axes.rs
    ("Transpose", axes::transpose),
    ("Softmax", axes::axis_of_input0),
    ("LogSoftmax", axes::axis_of_input0),
    ("Hardmax", axes::axis_of_input0),
    ("LayerNormalization", axes::layer_norm),
    ("BatchNormalization", axes::batch_norm),
    ("InstanceNormalization", axes::instance_norm),
    ("Concat", axes::concat),
    ("Gather", axes::axis_of_input0),
    ("GatherElements", axes::axis_of_input0),
    ("ScatterElements", axes::axis_of_input0),
    ("Split", axes::split),
    ("Flatten", axes::flatten),
    ("ArgMax", axes::axis_of_input0),
    ("ArgMin", axes::axis_of_input0),
    ("TopK", axes::top_k),
    ("CumSum", axes::cumsum),
    ("Compress", axes::axis_of_input0),
    ("QuantizeLinear", axes::quant_axis),
    ("DequantizeLinear", axes::quant_axis),
    ("Squeeze", axes::squeeze),
    ("Unsqueeze", axes::unsqueeze),
    ("ReduceSum", axes::reduce),
    ("ReduceMean", axes::reduce),
    ("ReduceMax", axes::reduce),
    ("ReduceMin", axes::reduce),
    ("ReduceProd", axes::reduce),
    ("ReduceL1", axes::reduce),
    ("ReduceL2", axes::reduce),
    ("ReduceLogSum", axes::reduce),
    ("ReduceLogSumExp", axes::reduce),
    ("ReduceSumSquare", axes::reduce),
    ("Gemm", axes::gemm),
    ("Slice", axes::slice),
    // sizes.rs
    ("ConstantOfShape", sizes::constant_of_shape),
    ("Expand", sizes::expand),
    ("Tile", sizes::tile),
    ("Reshape", sizes::reshape),
    ("Resize", sizes::resize),
    ("Upsample", sizes::resize),
    ("Range", sizes::range),
    ("OneHot", sizes::one_hot),
    ("Pad", sizes::pad),
    ("EyeLike", sizes::eye_like),
    ("RandomNormal", sizes::shape_attr),
    ("RandomUniform", sizes::shape_attr),
    ("Cast", sizes::cast),
];

fn rule(op: &str) -> Option<Rule> {
    RULES.iter().find(|(o, _)| *o == op).map(|(_, r)| *r)
}

/// Checks every node of the model (and of its subgraphs).
pub fn check_model(model: &Model) -> Result<()> {
    let opset = model.onnx_opset()?;
    check_graph(&model.graph, opset)
}

/// Checks every node of `g`.
pub fn check_graph(g: &Graph, opset: i64) -> Result<()> {
    let derived = ranks::derive(g);
    for (_, node) in g.nodes() {
        let inputs = node
            .inputs
            .iter()
            .map(|v| match v {
                Some(v) => Known {
                    present: true,
                    dims: dims_of(g, *v)
                        .or_else(|| derived.ranks.get(v).map(|&r| vec![Dim::Unknown; r])),
                    value: g
                        .initializer(*v)
                        .or_else(|| derived.constants.get(v))
                        .cloned(),
                },
                None => Known::default(),
            })
            .collect();
        check_node(node, inputs, opset)?;
        check_subgraphs(node, opset)?;
    }
    Ok(())
}

fn check_node(node: &Node, inputs: Vec<Known>, opset: i64) -> Result<()> {
    if !node.is_onnx() {
        return Ok(());
    }
    let Some(rule) = rule(&node.op_type) else {
        return Ok(());
    };
    rule(&Ctx {
        node,
        inputs,
        opset,
    })
}

fn check_subgraphs(node: &Node, opset: i64) -> Result<()> {
    for a in &node.attrs {
        for g in a.g.iter().chain(&a.graphs) {
            check_subgraph(g, opset).map_err(|e| Error::InModel {
                what: format!(
                    "node '{}' ({}), subgraph '{}'",
                    node.name,
                    node.op_type,
                    a.name()
                ),
                source: Box::new(e),
            })?;
        }
    }
    Ok(())
}

/// A subgraph's nodes, with the shapes and constants that subgraph declares
/// (outer values are unknown here: their rank-dependent checks are skipped).
fn check_subgraph(g: &GraphProto, opset: i64) -> Result<()> {
    let mut known: HashMap<&str, Known> = HashMap::new();
    for vi in g.input.iter().chain(&g.value_info).chain(&g.output) {
        known.insert(
            vi.name(),
            Known {
                present: true,
                dims: super::types::declared(vi).1,
                value: None,
            },
        );
    }
    for t in &g.initializer {
        let value = tensor_from_proto(t).ok();
        known.insert(
            t.name(),
            Known {
                present: true,
                dims: value
                    .as_ref()
                    .map(|v| v.dims().iter().map(|&d| Dim::Fixed(d)).collect()),
                value,
            },
        );
    }
    for (i, p) in g.node.iter().enumerate() {
        let label = if p.name().is_empty() {
            format!("#{i}")
        } else {
            p.name().to_string()
        };
        let node = Node::from_proto(p, label, Vec::new(), Vec::new(), Vec::new());
        let inputs = p
            .input
            .iter()
            .map(|n| match known.get(n.as_str()) {
                Some(k) => k.clone(),
                None => Known {
                    present: !n.is_empty(),
                    ..Known::default()
                },
            })
            .collect();
        check_node(&node, inputs, opset)?;
        check_subgraphs(&node, opset)?;
    }
    Ok(())
}

/// `[a, b, c]` for error messages.
pub(crate) fn list<T: std::fmt::Display>(v: &[T]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests;
