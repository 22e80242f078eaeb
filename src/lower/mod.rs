//! QDQ → QOperator: fuses `DequantizeLinear → op → QuantizeLinear` patterns
//! into the integer operators runtimes execute directly, so data stays int8
//! from one quantized op to the next.
//!
//! Reads and rewrites the [`Graph`] of a model that `crate::quantize` turned
//! into QDQ form. Rewrites are a plain registry, [`REWRITES`], keyed by op
//! type, one file per pattern:
//! - [`conv`]: `Conv` (+ absorbed `Relu`/`Clip`) ⇒ `QLinearConv`;
//! - [`matmul`]: `MatMul` ⇒ `QLinearMatMul`;
//! - [`gemm`]: `Gemm` ⇒ `QLinearMatMul`, `MatMulInteger` with an int32 bias,
//!   or (`--target ort`) `com.microsoft.QGemm`;
//! - [`movement`]: data-movement ops run on the int8 tensor, `Concat`
//!   requantizes inputs whose parameters differ;
//! - [`chain`]: `DequantizeLinear → QuantizeLinear` pairs with equal
//!   parameters collapse, clamps the output saturation already does vanish,
//!   a model output computed in float keeps its float value;
//! - [`ort`]: com.microsoft `QLinearAdd`, `QLinearMul`, `QLinearConcat`,
//!   `QLinearAveragePool`, `QLinearGlobalAveragePool`, `QLinearSigmoid`,
//!   `QLinearLeakyRelu` (only with `--target ort`).
//!
//! A node no rewrite matches keeps its QDQ form, which is valid and runnable
//! everywhere. Rewrites run in topological order until none applies; then
//! dead `DequantizeLinear` nodes and initializers are dropped.

pub mod chain;
pub mod conv;
pub mod gemm;
pub mod matmul;
pub mod movement;
pub mod ort;
pub mod pattern;

use crate::error::{Error, Result};
use crate::ir::{Graph, Model, Node, NodeId, NodeNames, Tensor, ValueId};
use crate::passes::{cleanup::RemoveDeadNodes, Pass, PassOptions};
use std::collections::BTreeMap;

/// The runtime family the QOperator model is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Standard ONNX operators only.
    Onnx,
    /// Standard operators plus onnxruntime's com.microsoft QLinear ops.
    Ort,
    /// Standard operators in the forms tract accepts.
    Tract,
    /// OpenVINO: the QDQ format only (its ONNX frontend dequantizes
    /// QLinearConv / QLinearMatMul weights along axis 1, so per-channel
    /// QOperator models fail to load, or compute wrong results where a
    /// layer has as many input as output channels).
    Openvino,
    /// TensorRT's explicit quantization: the QDQ format with symmetric
    /// int8 activations and weights (zero points 0), 8-bit weights (its
    /// int8 kernels accumulate in int32), residual Add inputs quantized
    /// so that it fuses the Add into the Conv before it, no 16-bit
    /// activations.
    Tensorrt,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Onnx => "onnx",
            Target::Ort => "ort",
            Target::Tract => "tract",
            Target::Openvino => "openvino",
            Target::Tensorrt => "tensorrt",
        }
    }

    /// Whether the target takes the QDQ format only.
    pub fn qdq_only(self) -> bool {
        matches!(self, Target::Openvino | Target::Tensorrt)
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "onnx" => Some(Target::Onnx),
            "ort" => Some(Target::Ort),
            "tract" => Some(Target::Tract),
            "openvino" => Some(Target::Openvino),
            "tensorrt" => Some(Target::Tensorrt),
            _ => None,
        }
    }
}

/// The domain of onnxruntime's contrib operators.
pub const MS_DOMAIN: &str = "com.microsoft";

/// What lowering did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct LowerReport {
    /// Rewrites applied, by pattern (`"Conv → QLinearConv"`).
    pub rewrites: BTreeMap<String, usize>,
    /// Ops computing in float between DequantizeLinear and QuantizeLinear
    /// (float ops, or quantized ones no rewrite for this target takes), by
    /// op type.
    pub kept_qdq: BTreeMap<String, usize>,
    /// Integer operators in the result, by op type.
    pub integer_ops: BTreeMap<String, usize>,
    /// QuantizeLinear / DequantizeLinear left (at float boundaries).
    pub quantize_linear: usize,
    pub dequantize_linear: usize,
}

/// One rewrite: tries to replace node `n`; returns the pattern's label when
/// it did, `None` when the node does not match (the graph is untouched).
pub type Rewrite = fn(&mut Cx, NodeId) -> Result<Option<&'static str>>;

/// A registry entry.
pub struct Entry {
    pub op: &'static str,
    /// Only for `--target ort`.
    pub ort_only: bool,
    pub rewrite: Rewrite,
}

const fn any(op: &'static str, rewrite: Rewrite) -> Entry {
    Entry {
        op,
        ort_only: false,
        rewrite,
    }
}

const fn ort(op: &'static str, rewrite: Rewrite) -> Entry {
    Entry {
        op,
        ort_only: true,
        rewrite,
    }
}

/// Every rewrite, by op type (default ONNX domain). For an op with several
/// entries the first that matches wins.
pub static REWRITES: &[Entry] = &[
    any("Conv", conv::qlinear_conv),
    any("MatMul", matmul::qlinear_matmul),
    ort("Gemm", gemm::qgemm),
    any("Gemm", gemm::gemm),
    ort("Concat", ort::qlinear_concat),
    any("Concat", movement::concat),
    any("Reshape", movement::move_int8),
    any("Transpose", movement::move_int8),
    any("Flatten", movement::move_int8),
    any("Squeeze", movement::move_int8),
    any("Unsqueeze", movement::move_int8),
    any("MaxPool", movement::move_int8),
    any("Slice", movement::move_int8),
    any("Gather", movement::move_int8),
    any("Split", movement::move_int8),
    any("Pad", movement::move_int8),
    any("Resize", movement::move_int8),
    any("Identity", movement::move_int8),
    any("DepthToSpace", movement::move_int8),
    any("SpaceToDepth", movement::move_int8),
    any("Tile", movement::move_int8),
    any("Expand", movement::move_int8),
    any("Relu", chain::absorb_clamp),
    any("Clip", chain::absorb_clamp),
    any("QuantizeLinear", chain::collapse),
    any("DequantizeLinear", chain::float_output),
    ort("Add", ort::qlinear_binary),
    ort("Mul", ort::qlinear_binary),
    ort("AveragePool", ort::qlinear_unary),
    ort("GlobalAveragePool", ort::qlinear_unary),
    ort("Sigmoid", ort::qlinear_unary),
    ort("LeakyRelu", ort::qlinear_unary),
];

/// Options of the rewrite.
#[derive(Clone, Copy, Debug)]
pub struct LowerOptions {
    pub target: Target,
}

/// The state rewrites share: the graph, the opset, the target, and the node
/// names in use (new nodes get readable, unique names).
pub struct Cx<'a> {
    pub g: &'a mut Graph,
    pub opset: i64,
    pub target: Target,
    names: NodeNames,
}

impl Cx<'_> {
    /// A node name not in use, `base` when free.
    pub fn node_name(&mut self, base: &str) -> String {
        self.names.fresh(base)
    }

    /// Removes node `n`, freeing its name for the node that replaces it.
    pub fn remove(&mut self, n: NodeId) -> Option<Node> {
        let node = self.g.remove_node(n)?;
        self.names.release(&node.name);
        Some(node)
    }

    /// Inserts `op` (domain `domain`) named after `base`.
    pub fn add(
        &mut self,
        base: &str,
        op: &str,
        domain: &str,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<ValueId>,
        attrs: Vec<crate::onnx::proto::AttributeProto>,
    ) -> NodeId {
        let mut n = Node::new(self.node_name(base), op);
        n.domain = domain.to_string();
        n.inputs = inputs;
        n.outputs = outputs.into_iter().map(Some).collect();
        n.attrs = attrs;
        self.g.insert_node(n)
    }

    /// A new initializer.
    pub fn constant(&mut self, base: &str, t: Tensor) -> ValueId {
        self.g.add_initializer(base, t)
    }
}

/// Rewrites the QDQ graph of `model` into QOperator form for `opts.target`.
pub fn lower(model: &mut Model, opts: &LowerOptions) -> Result<LowerReport> {
    let opset = model.onnx_opset()?;
    if opset < 10 {
        return Err(Error::Invalid(format!(
            "QOperator output needs opset 10 or later (QLinearConv, QLinearMatMul); the model has {opset}"
        )));
    }
    let mut report = LowerReport::default();
    let names = NodeNames::of(&model.graph);
    let mut cx = Cx {
        g: &mut model.graph,
        opset,
        target: opts.target,
        names,
    };
    loop {
        let mut changed = false;
        for id in cx.g.topo_order()? {
            let Some(node) = cx.g.node(id) else { continue };
            if !node.is_onnx() {
                continue;
            }
            let op = node.op_type.clone();
            for e in REWRITES.iter().filter(|e| e.op == op) {
                if e.ort_only && opts.target != Target::Ort {
                    continue;
                }
                if let Some(label) = (e.rewrite)(&mut cx, id)? {
                    *report.rewrites.entry(label.to_string()).or_default() += 1;
                    changed = true;
                    break;
                }
            }
        }
        if !changed {
            break;
        }
    }
    RemoveDeadNodes.run(model, &PassOptions::default())?;
    let g = &model.graph;
    let mut uses_ms = false;
    for (_, n) in g.nodes() {
        if n.domain == MS_DOMAIN {
            uses_ms = true;
        }
        if n.is("QuantizeLinear") {
            report.quantize_linear += 1;
        } else if n.is("DequantizeLinear") {
            report.dequantize_linear += 1;
        }
        if INTEGER_OPS.contains(&n.op_type.as_str()) {
            *report.integer_ops.entry(n.op_type.clone()).or_default() += 1;
        } else if pattern::between_qdq(g, n) {
            *report.kept_qdq.entry(n.op_type.clone()).or_default() += 1;
        }
    }
    if uses_ms {
        model.set_opset(MS_DOMAIN, 1);
    }
    model.graph.validate()?;
    Ok(report)
}

/// Operators that compute on integers (reported in the summary).
const INTEGER_OPS: &[&str] = &[
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeLinear",
    "QGemm",
    "QLinearAdd",
    "QLinearMul",
    "QLinearConcat",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
];

#[cfg(test)]
mod tests;
