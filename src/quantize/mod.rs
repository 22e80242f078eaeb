//! Static INT8 quantization to the QDQ format.
//!
//! Input: a prepared FP32 model (`crate::passes`) at opset ≥ 13 when weights
//! are per channel (≥ 10 otherwise). Output: the same graph with
//! QuantizeLinear/DequantizeLinear pairs around what runs in int8, weights
//! and biases stored quantized.
//!
//! The stages, one file each:
//! 1. [`QuantizeConfig::from_recipe`]: options (recipe + flags) resolved and
//!    checked.
//! 2. [`plan_model`]: every node, in topological order, goes to the
//!    handler of its op type ([`handlers::HANDLERS`]), which decides what
//!    is quantized and where parameters come from ([`plan`]). The plan says
//!    which tensors need a calibrated range ([`Plan::needed_ranges`]), so
//!    calibration observes only those.
//! 3. [`materialize`]: the one place that builds Q/DQ nodes and quantized
//!    initializers ([`params`] holds the arithmetic).
//!
//! [`quantize`] runs 2 and 3 for callers that already have ranges.

pub mod dynamic;
pub mod handlers;
pub mod materialize;
pub mod params;
pub mod plan;
pub mod recipe;

pub use params::{QParams, QType};
pub use plan::{ActSpec, Decision, InputRole, Plan};
pub use recipe::{Format, Mode, NodeOverride, Recipe, TensorOverride};

use crate::error::{Error, Result};
use crate::ir::{Model, NodeId, ValueId};
use handlers::Cx;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Resolved quantization options.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizeConfig {
    pub activations: QType,
    /// Activations symmetric (int8 default) or asymmetric (uint8 default).
    pub activation_symmetric: bool,
    pub weights: QType,
    pub weight_symmetric: bool,
    pub per_channel: bool,
    /// 7-bit weights (exact on u8×s8 kernels without VNNI). From a recipe:
    /// on by default for int8 weights with uint8 activations, or with int8
    /// activations in the QDQ format, unless the target is tract or
    /// tensorrt.
    pub reduce_range: bool,
    /// Biases stay float instead of int32 at `x_scale · w_scale` (QDQ for
    /// TensorRT, whose DequantizeLinear takes no int32).
    pub float_bias: bool,
    /// Op types whose handlers run.
    pub op_types: BTreeSet<String>,
    /// Concat named explicitly: join inputs of different ranges too.
    pub concat_requantize: bool,
    /// Node names or globs to leave float.
    pub exclude: Vec<String>,
    pub nodes: BTreeMap<String, NodeOverride>,
    pub tensors: BTreeMap<String, TensorOverride>,
    /// Nodes the library keeps in float (automatic mixed precision, the
    /// range-gap guard, sensitivity variants), each with the reason the
    /// report gives.
    pub float_ids: BTreeMap<NodeId, String>,
    /// Weights already rounded onto their quantization grid (error-
    /// compensating rounding, `tune::gptq`): the scale per channel (or one)
    /// they keep.
    pub weight_grids: BTreeMap<ValueId, Vec<f32>>,
}

impl Default for QuantizeConfig {
    fn default() -> Self {
        QuantizeConfig {
            activations: QType::Uint8,
            activation_symmetric: false,
            weights: QType::Int8,
            weight_symmetric: true,
            per_channel: true,
            reduce_range: false,
            float_bias: false,
            op_types: handlers::default_op_types().map(String::from).collect(),
            concat_requantize: false,
            exclude: Vec::new(),
            nodes: BTreeMap::new(),
            tensors: BTreeMap::new(),
            float_ids: BTreeMap::new(),
            weight_grids: BTreeMap::new(),
        }
    }
}

impl QuantizeConfig {
    /// Resolves a (merged) recipe. Unknown op types are an error listing
    /// the supported ones.
    pub fn from_recipe(r: &Recipe) -> Result<Self> {
        let mut cfg = QuantizeConfig::default();
        if let Some(a) = r.activations.filter(|a| a.is_wide()) {
            return Err(Error::Invalid(format!(
                "activations: {} is for single tensors (recipe `tensors: NAME: type: {}`, QDQ format at opset 21) or the automatic mode's alternative to float; the model-wide type is uint8 or int8",
                a.name(),
                a.name()
            )));
        }
        if let Some(w) = r.weights.filter(|w| w.is_wide()) {
            return Err(Error::Invalid(format!(
                "weights: {} is not supported (weights are int8 or uint8)",
                w.name()
            )));
        }
        for (name, o) in &r.nodes {
            if let Some(w) = o.weights.filter(|w| w.is_wide()) {
                return Err(Error::Invalid(format!(
                    "recipe: node {name}: weights {} is not supported (int8 or uint8)",
                    w.name()
                )));
            }
        }
        let tensorrt = r.target == Some(crate::lower::Target::Tensorrt);
        if tensorrt {
            tensorrt_rules(r)?;
            cfg.activations = QType::Int8;
            cfg.activation_symmetric = true;
            cfg.float_bias = true;
        }
        if let Some(a) = r.activations {
            cfg.activations = a;
            cfg.activation_symmetric = a == QType::Int8;
        }
        if let Some(w) = r.weights {
            cfg.weights = w;
        }
        if let Some(p) = r.per_channel {
            cfg.per_channel = p;
        }
        // 7-bit weights by default exactly where a mainstream runtime
        // computes wrong results with 8 bits on x86 CPUs without VNNI,
        // which sum u8 × s8 products pairwise in saturating int16: u8
        // activations × s8 weights in onnxruntime and OpenVINO, and s8
        // activations in the QDQ format too (onnxruntime turns QDQ s8
        // activations into u8 on x86; OpenVINO's CPU plugin computes them
        // the same way). onnxruntime's QLinearConv / QLinearMatMul s8×s8
        // and tract compute exactly. Measured: docs/defaults.md.
        let qdq = r.format == Some(Format::Qdq) || r.target.is_some_and(|t| t.qdq_only());
        // TensorRT's int8 kernels (GPU) accumulate in int32: 8 bits.
        let saturating_pair = cfg.weights == QType::Int8
            && (cfg.activations == QType::Uint8 || qdq)
            && r.target != Some(crate::lower::Target::Tract)
            && !tensorrt;
        cfg.reduce_range = r.reduce_range.unwrap_or(saturating_pair);
        if let Some(list) = &r.op_types {
            let mut set = BTreeSet::new();
            for op in list.iter().flat_map(|s| s.split(',')).map(str::trim) {
                if op.is_empty() {
                    continue;
                }
                if op == "default" {
                    set.extend(handlers::default_op_types().map(String::from));
                } else if handlers::entry(op).is_some() {
                    set.insert(op.to_string());
                    if op == "Concat" {
                        cfg.concat_requantize = true;
                    }
                } else {
                    let known: Vec<&str> = handlers::HANDLERS.iter().map(|e| e.op).collect();
                    return Err(Error::Invalid(format!(
                        "op type '{op}' has no quantization handler (supported: default, {})",
                        known.join(", ")
                    )));
                }
            }
            cfg.op_types = set;
        } else if tensorrt {
            // Residual Add inputs quantized: TensorRT fuses the Add into
            // the Conv before it when both inputs come through Q/DQ.
            cfg.op_types.insert("Add".to_string());
        }
        cfg.exclude = r.exclude.clone();
        cfg.nodes = r.nodes.clone();
        cfg.tensors = r.tensors.clone();
        for (name, t) in &cfg.tensors {
            t.check(name)?;
        }
        Ok(cfg)
    }

    /// Whether any weight may be stored per channel (needs opset 13).
    pub fn needs_per_axis(&self) -> bool {
        self.per_channel || self.nodes.values().any(|o| o.per_channel == Some(true))
    }

    /// Whether any activation is 16-bit (a per-tensor override).
    pub fn has_wide(&self) -> bool {
        self.tensors
            .values()
            .any(|t| t.qtype.is_some_and(QType::is_wide))
    }

    /// The opset the output needs at least: 21 for 16-bit activations, 13
    /// for per-channel weights.
    pub fn min_opset(&self) -> i64 {
        if self.has_wide() {
            21
        } else if self.needs_per_axis() {
            13
        } else {
            10
        }
    }
}

/// What TensorRT's explicit quantization takes: symmetric int8 only (zero
/// points 0, no uint8, no 16-bit activations). A recipe that asks for
/// anything else with target tensorrt is refused, naming the key.
fn tensorrt_rules(r: &Recipe) -> Result<()> {
    let refuse = |what: String| {
        Err(Error::Invalid(format!(
            "{what}: TensorRT's explicit quantization takes symmetric int8 only (zero point 0); drop it or choose another --target"
        )))
    };
    if r.activations == Some(QType::Uint8) {
        return refuse("activations uint8".into());
    }
    if r.weights == Some(QType::Uint8) {
        return refuse("weights uint8".into());
    }
    for (name, o) in &r.nodes {
        if o.weights == Some(QType::Uint8) || o.weight_symmetric == Some(false) {
            return refuse(format!("recipe: node {name}: asymmetric or uint8 weights"));
        }
    }
    for (name, t) in &r.tensors {
        if let Some(q) = t.qtype.filter(|&q| q != QType::Int8) {
            return refuse(format!("recipe: tensor {name}: type {}", q.name()));
        }
        if t.symmetric == Some(false) || t.zero_point.is_some_and(|z| z != 0) {
            return refuse(format!(
                "recipe: tensor {name}: asymmetric (a zero point other than 0)"
            ));
        }
    }
    Ok(())
}

/// What quantization did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct QuantizeReport {
    /// Quantized nodes by op type.
    pub quantized: BTreeMap<String, usize>,
    /// Float nodes by op type.
    pub float: BTreeMap<String, usize>,
    /// Every float node with the reason.
    pub float_nodes: Vec<FloatNode>,
    /// Activations given a Q/DQ pair.
    pub activations: usize,
    /// Activation ranges narrowed to where every reader of the tensor is
    /// not constant (`ActSpec::Within`: a hard-swish's input above −3).
    pub clamped_ranges: usize,
    pub weights: usize,
    /// Bits the int8 weights use: 8, or 7 with reduce-range.
    pub weight_bits: u32,
    pub per_channel_weights: usize,
    pub biases: usize,
    /// Weights whose scale was raised so their bias fits int32.
    pub weight_scales_raised: usize,
    pub quantize_linear: usize,
    pub dequantize_linear: usize,
}

/// A node left in float, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FloatNode {
    pub node: String,
    pub op: String,
    pub reason: String,
}

/// Ops that mean the model is quantized already: the integer operators.
const QUANTIZED_OPS: &[&str] = crate::exec::INTEGER_OPS;

/// Node ids matched by `--exclude` patterns; a pattern matching nothing is
/// an error naming it.
pub(crate) fn excluded_nodes(model: &Model, patterns: &[String]) -> Result<HashSet<NodeId>> {
    let g = &model.graph;
    let mut out = HashSet::new();
    for p in patterns {
        let glob = globset::Glob::new(p)
            .map_err(|e| Error::Invalid(format!("--exclude '{p}': {e}")))?
            .compile_matcher();
        let mut matched = false;
        for (id, n) in g.nodes() {
            if n.name == *p || glob.is_match(&n.name) {
                out.insert(id);
                matched = true;
            }
        }
        if !matched {
            return Err(Error::Invalid(format!(
                "--exclude '{p}' matches no node of the prepared model \
                 (`onnxq optimize` then `onnxq inspect` lists node names after preparation)"
            )));
        }
    }
    Ok(out)
}

/// Plans the quantization of a prepared model.
pub fn plan_model(model: &Model, cfg: &QuantizeConfig) -> Result<Plan> {
    let g = &model.graph;
    for (_, n) in g.nodes() {
        if n.is_onnx() && QUANTIZED_OPS.contains(&n.op_type.as_str()) {
            return Err(Error::BadNode {
                node: n.name.clone(),
                op: n.op_type.clone(),
                reason: "the model is already quantized".into(),
            });
        }
    }
    let mut excluded = excluded_nodes(model, &cfg.exclude)?;
    for (name, o) in &cfg.nodes {
        let Some((id, _)) = g.nodes().find(|(_, n)| n.name == *name) else {
            return Err(Error::Invalid(format!(
                "recipe: node '{name}' is not in the prepared model"
            )));
        };
        if o.keep_float {
            excluded.insert(id);
        }
    }
    for name in cfg.tensors.keys() {
        if g.find_value(name).is_none_or(|v| !g.is_defined(v)) {
            return Err(Error::Invalid(format!(
                "recipe: tensor '{name}' is not in the prepared model"
            )));
        }
    }
    let consts = crate::ir::analysis::constant_values(g, false);
    let selected = |n: &crate::ir::Node| {
        n.is_onnx() && !n.has_subgraphs() && cfg.op_types.contains(&n.op_type)
    };
    let float_nodes: HashSet<NodeId> = g
        .nodes()
        .filter(|(id, n)| excluded.contains(id) || cfg.float_ids.contains_key(id) || !selected(n))
        .map(|(id, _)| id)
        .collect();
    let mut plan = Plan::default();
    for id in g.topo_order()? {
        let Some(node) = g.node(id) else { continue };
        let decision = if excluded.contains(&id) {
            Decision::float("excluded")
        } else if let Some(reason) = cfg.float_ids.get(&id) {
            Decision::float(reason.clone())
        } else if !node.is_onnx() {
            Decision::float(format!("domain '{}' has no handlers", node.domain))
        } else if node.has_subgraphs() {
            Decision::float("has subgraphs")
        } else {
            match handlers::entry(&node.op_type) {
                None => Decision::float("no quantization handler for this op"),
                Some(_) if !cfg.op_types.contains(&node.op_type) => {
                    Decision::float("op type not selected (--op-types)")
                }
                Some(e) => {
                    let per_channel = cfg
                        .nodes
                        .get(&node.name)
                        .and_then(|o| o.per_channel)
                        .unwrap_or(cfg.per_channel);
                    let cx = Cx {
                        graph: g,
                        plan: &plan,
                        cfg,
                        id,
                        node,
                        per_channel,
                        float_nodes: &float_nodes,
                        consts: &consts,
                    };
                    e.handler.plan(&cx)?
                }
            }
        };
        if let Decision::Quantize { inputs, outputs } = &decision {
            for (slot, role) in inputs {
                if let (InputRole::Activation, Some(v)) = (role, node.input(*slot)) {
                    plan.mark(v, ActSpec::Calibrated);
                }
            }
            for (slot, spec) in outputs {
                if let Some(v) = node.output(*slot) {
                    let spec = match spec {
                        // A tensor the recipe gives its own parameters
                        // does not share.
                        ActSpec::Share(_)
                            if cfg
                                .tensors
                                .get(g.value_name(v))
                                .is_some_and(|o| o.sets_params()) =>
                        {
                            ActSpec::Calibrated
                        }
                        s => *s,
                    };
                    plan.mark(v, spec);
                }
            }
        }
        plan.nodes.insert(id, decision);
    }
    Ok(plan)
}

impl Plan {
    /// Names of the tensors whose calibrated range the plan needs.
    pub fn needed_ranges(&self, model: &Model) -> BTreeSet<String> {
        let g = &model.graph;
        self.activations
            .iter()
            .filter_map(|(&v, spec)| match spec {
                ActSpec::Calibrated | ActSpec::Within(..) => Some(v),
                ActSpec::RangeOf(t) => Some(*t),
                ActSpec::Fixed(..) | ActSpec::Share(_) => None,
            })
            .map(|v| g.value_name(v).to_string())
            .collect()
    }
}

/// Quantizes `model` (prepared, at a sufficient opset) with calibrated
/// ranges `(lo, hi)` per tensor name.
pub fn quantize(
    model: &mut Model,
    plan: &Plan,
    ranges: &BTreeMap<String, (f32, f32)>,
    cfg: &QuantizeConfig,
) -> Result<QuantizeReport> {
    let mut report = QuantizeReport {
        weight_bits: if cfg.reduce_range { 7 } else { 8 },
        ..Default::default()
    };
    for (&id, d) in &plan.nodes {
        let Some(n) = model.graph.node(id) else {
            continue;
        };
        match d {
            Decision::Quantize { .. } => {
                *report.quantized.entry(n.op_type.clone()).or_insert(0) += 1
            }
            Decision::Float(reason) => {
                *report.float.entry(n.op_type.clone()).or_insert(0) += 1;
                report.float_nodes.push(FloatNode {
                    node: n.name.clone(),
                    op: n.op_type.clone(),
                    reason: reason.clone(),
                });
            }
        }
    }
    materialize::materialize(model, plan, ranges, cfg, &mut report)?;
    model.graph.validate()?;
    Ok(report)
}
