//! The one place that builds QuantizeLinear/DequantizeLinear nodes.
//!
//! Reads a finished [`Plan`] and rewrites the graph:
//! 1. every planned activation `T` gets its parameters (from the range
//!    table, a recipe override, a fixed range, or a shared source) as
//!    initializers `T/scale`, `T/zero_point` (shared tensors reuse the
//!    source's initializers);
//! 2. every planned weight `W` is stored quantized as `W/quantized` with
//!    `W/scale`, `W/zero_point`, read through `W/DequantizeLinear`; every
//!    bias `B` as int32 `B/quantized` at scale `x_scale · w_scale[c]`
//!    (per-channel DequantizeLinear with an explicit `axis`);
//! 3. every planned activation `T` is followed by `T/QuantizeLinear` →
//!    `T/DequantizeLinear`, and every reader of `T` reads the dequantized
//!    value. A graph output keeps its name: the float value before the pair
//!    is renamed `T/float`.
//!
//! Everything is visited in plan order (topological), so the same model and
//! ranges give the same graph, byte for byte.

use super::params::{
    bias_scale_floor, from_range, quantize_bias, quantize_weight, QParams, QType, WeightSpec,
};
use super::plan::{ActSpec, Decision, InputRole, Plan};
use super::{QuantizeConfig, QuantizeReport};
use crate::error::{Error, Result};
use crate::ir::node::attr;
use crate::ir::{unique_name, DataType, Graph, Model, Node, NodeNames, Tensor, ValueId};
use crate::onnx::proto::{type_proto, ValueInfoProto};
use std::collections::{BTreeMap, HashMap, HashSet};

/// An activation's parameters and their initializers.
#[derive(Clone, Debug)]
struct ActParams {
    params: QParams,
    scale: ValueId,
    zero_point: ValueId,
}

/// A weight already materialized: its DequantizeLinear output and params.
#[derive(Clone, Debug)]
struct DoneWeight {
    dq: ValueId,
    params: QParams,
}

struct Builder<'a> {
    g: &'a mut Graph,
    node_names: NodeNames,
    report: &'a mut QuantizeReport,
}

impl Builder<'_> {
    /// A node name not used yet.
    fn node_name(&mut self, base: &str) -> String {
        self.node_names.fresh(base)
    }

    fn params_initializers(&mut self, base: &str, p: &QParams) -> (ValueId, ValueId) {
        let (s, z) = p.tensors();
        let s = self.g.add_initializer(&format!("{base}/scale"), s);
        let z = self.g.add_initializer(&format!("{base}/zero_point"), z);
        (s, z)
    }

    /// `DequantizeLinear(q, scale, zp)` named `{base}/DequantizeLinear`.
    fn dequantize(
        &mut self,
        base: &str,
        q: ValueId,
        scale: ValueId,
        zp: ValueId,
        axis: Option<usize>,
    ) -> ValueId {
        let out = self.g.new_value(&format!("{base}/dequantized"));
        let mut n = Node::new(
            self.node_name(&format!("{base}/DequantizeLinear")),
            "DequantizeLinear",
        );
        n.inputs = vec![Some(q), Some(scale), Some(zp)];
        n.outputs = vec![Some(out)];
        if let Some(a) = axis {
            n.attrs.push(attr::int("axis", a as i64));
        }
        self.g.insert_node(n);
        self.report.dequantize_linear += 1;
        out
    }
}

/// Type info of `v` with its element type replaced.
pub(crate) fn info_as(info: Option<&ValueInfoProto>, dtype: DataType) -> Option<ValueInfoProto> {
    let mut info = info?.clone();
    if let Some(type_proto::Value::TensorType(tt)) =
        info.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        tt.elem_type = Some(dtype.code());
        return Some(info);
    }
    None
}

/// Parameters of a tensor with a recipe override, or `None` without one.
fn override_params(
    cfg: &QuantizeConfig,
    name: &str,
    default_type: QType,
    default_sym: bool,
    range: Option<(f32, f32)>,
) -> Option<Result<QParams>> {
    let o = cfg.tensors.get(name).filter(|o| o.sets_params())?;
    let qtype = o.qtype.unwrap_or(default_type);
    let sym = o.symmetric.unwrap_or(if o.qtype.is_some() {
        qtype.is_signed()
    } else {
        default_sym
    });
    if let (Some(s), Some(z)) = (o.scale, o.zero_point) {
        return Some(Ok(QParams::scalar(qtype, s, z)));
    }
    let (lo, hi) = match (o.range, range) {
        (Some([lo, hi]), _) => (lo, hi),
        (None, Some(r)) => r,
        (None, None) => {
            return Some(Err(Error::tensor(
                name,
                "no calibrated range for this tensor and the recipe gives none",
            )))
        }
    };
    let (s, z) = from_range(lo, hi, qtype, sym);
    Some(Ok(QParams::scalar(qtype, s, z)))
}

/// Rewrites `model` as the plan says. `ranges`: calibrated `(lo, hi)` per
/// tensor name.
pub fn materialize(
    model: &mut Model,
    plan: &Plan,
    ranges: &BTreeMap<String, (f32, f32)>,
    cfg: &QuantizeConfig,
    report: &mut QuantizeReport,
) -> Result<()> {
    let opset = model.onnx_opset()?;
    let g = &mut model.graph;
    let node_names = NodeNames::of(g);
    let mut b = Builder {
        g,
        node_names,
        report,
    };
    let act_type = cfg.activations;
    let act_sym = cfg.activation_symmetric;

    // 1. Activation parameters, in plan order (sources before sharers).
    let mut acts: HashMap<ValueId, ActParams> = HashMap::new();
    for &v in &plan.order {
        let name = b.g.value_name(v).to_string();
        let spec = plan.activations[&v];
        let range_of = |t: ValueId, g: &Graph| -> Option<(f32, f32)> {
            let producer = g.producer_node(t).map(|(_, n)| n.op_type.clone());
            match producer.as_deref() {
                Some("Softmax") | Some("Sigmoid") => Some((0.0, 1.0)),
                _ => ranges.get(g.value_name(t)).copied(),
            }
        };
        let own_range = match spec {
            ActSpec::Calibrated => range_of(v, b.g),
            ActSpec::Within(..) => range_of(v, b.g).map(|r| {
                let c = spec.clamp(r);
                b.report.clamped_ranges += usize::from(c != r);
                c
            }),
            ActSpec::RangeOf(t) => range_of(t, b.g),
            ActSpec::Fixed(lo, hi) => Some((lo, hi)),
            ActSpec::Share(_) => range_of(v, b.g),
        };
        let params = match override_params(cfg, &name, act_type, act_sym, own_range) {
            Some(p) => Some(p?),
            None => None,
        };
        let ap = match (params, spec) {
            (Some(p), _) => {
                let (s, z) = b.params_initializers(&name, &p);
                ActParams {
                    params: p,
                    scale: s,
                    zero_point: z,
                }
            }
            (None, ActSpec::Share(src)) => acts.get(&src).cloned().ok_or_else(|| {
                Error::tensor(&name, "shares the parameters of a tensor planned after it")
            })?,
            (None, _) => {
                let source = match spec {
                    ActSpec::RangeOf(t) => b.g.value_name(t).to_string(),
                    _ => name.clone(),
                };
                let (lo, hi) = own_range.ok_or_else(|| {
                    Error::tensor(
                        &source,
                        "no calibrated range for this tensor (was the calibration table made from the same prepared model?)",
                    )
                })?;
                if !(lo.is_finite() && hi.is_finite()) {
                    return Err(Error::tensor(
                        &source,
                        format!("calibrated range [{lo}, {hi}] is not finite"),
                    ));
                }
                let (s, z) = from_range(lo, hi, act_type, act_sym);
                let p = QParams::scalar(act_type, s, z);
                let (s, z) = b.params_initializers(&name, &p);
                ActParams {
                    params: p,
                    scale: s,
                    zero_point: z,
                }
            }
        };
        acts.insert(v, ap);
    }

    // 2. Weights and biases, node by node.
    let mut done: HashMap<(ValueId, String), DoneWeight> = HashMap::new();
    let mut replaced: HashSet<ValueId> = HashSet::new();
    for (&id, decision) in &plan.nodes {
        let Decision::Quantize { inputs, .. } = decision else {
            continue;
        };
        let Some(node) = b.g.node(id) else { continue };
        let node_name = node.name.clone();
        let node_inputs = node.inputs.clone();
        let ov = cfg.nodes.get(&node_name);
        let w_type = ov.and_then(|o| o.weights).unwrap_or(cfg.weights);
        let w_sym = ov
            .and_then(|o| o.weight_symmetric)
            .unwrap_or(cfg.weight_symmetric);
        let slot_value = |slot: usize| node_inputs.get(slot).copied().flatten();
        // Bias first: it may raise the weight's scale.
        let bias = inputs.iter().find_map(|(slot, r)| match r {
            InputRole::Bias { x, w, axis } if !cfg.float_bias => Some((*slot, *x, *w, *axis)),
            _ => None,
        });
        let x_scale = bias.and_then(|(_, x, _, _)| {
            let p = &acts.get(&slot_value(x)?)?.params;
            (p.axis.is_none()).then(|| p.scale[0])
        });
        let mut weights_of_slot: HashMap<usize, QParams> = HashMap::new();
        for &(slot, role) in inputs {
            let InputRole::Weight {
                axis,
                act_type: like_act,
            } = role
            else {
                continue;
            };
            let Some(w) = slot_value(slot) else { continue };
            let spec = if like_act {
                WeightSpec {
                    qtype: act_type,
                    symmetric: act_sym,
                    axis: None,
                    reduce_range: false,
                }
            } else {
                WeightSpec {
                    qtype: w_type,
                    symmetric: w_sym,
                    axis,
                    reduce_range: cfg.reduce_range,
                }
            };
            if spec.axis.is_some() && opset < 13 {
                return Err(Error::BadNode {
                    node: node_name.clone(),
                    op: b.g.node(id).map(|n| n.op_type.clone()).unwrap_or_default(),
                    reason: format!(
                        "per-channel weights need opset 13 (DequantizeLinear axis); the model is at opset {opset}"
                    ),
                });
            }
            let floor = match (bias, x_scale) {
                (Some((bslot, _, wslot, _)), Some(xs)) if wslot == slot => slot_value(bslot)
                    .and_then(|bv| b.g.initializer(bv))
                    .and_then(|t| t.to_f32_vec().ok())
                    .map(|bv| bias_scale_floor(&bv, xs)),
                _ => None,
            };
            let key = (w, format!("{spec:?}{floor:?}"));
            let dw = match done.get(&key) {
                Some(d) => d.clone(),
                None => {
                    let wname = b.g.value_name(w).to_string();
                    let tensor =
                        b.g.initializer(w)
                            .cloned()
                            .ok_or_else(|| Error::tensor(&wname, "weight is not a constant"))?;
                    let grid = cfg.weight_grids.get(&w).map(|g| g.as_slice());
                    let (q, params, raised) =
                        quantize_weight(&wname, &tensor, spec, floor.as_deref(), grid)?;
                    if raised > 0 {
                        b.report.weight_scales_raised += 1;
                    }
                    let qv = b.g.add_initializer(&format!("{wname}/quantized"), q);
                    let (s, z) = b.params_initializers(&wname, &params);
                    let dq = b.dequantize(&wname, qv, s, z, params.axis);
                    if let Some(info) = info_as(b.g.value(w).info.as_ref(), DataType::Float) {
                        b.g.set_value_info(dq, info);
                    }
                    b.report.weights += 1;
                    if params.axis.is_some() {
                        b.report.per_channel_weights += 1;
                    }
                    let d = DoneWeight { dq, params };
                    done.insert(key, d.clone());
                    d
                }
            };
            b.g.set_input(id, slot, Some(dw.dq));
            replaced.insert(w);
            weights_of_slot.insert(slot, dw.params);
        }
        if let (Some((bslot, _, wslot, axis)), Some(xs)) = (bias, x_scale) {
            let (Some(bv), Some(wp)) = (slot_value(bslot), weights_of_slot.get(&wslot)) else {
                continue;
            };
            let bname = b.g.value_name(bv).to_string();
            let Some(bt) = b.g.initializer(bv).cloned() else {
                continue;
            };
            let (q, scales) = quantize_bias(&bname, &bt, xs, &wp.scale)?;
            let per_channel = scales.len() > 1;
            let dims = if per_channel {
                vec![scales.len()]
            } else {
                vec![]
            };
            let zeros = vec![0i32; scales.len()];
            let qv = b.g.add_initializer(&format!("{bname}/quantized"), q);
            let s = b.g.add_initializer(
                &format!("{bname}/scale"),
                Tensor::from_f32(dims.clone(), &scales),
            );
            let z = b.g.add_initializer(
                &format!("{bname}/zero_point"),
                Tensor::from_i32(dims, &zeros),
            );
            let dq = b.dequantize(&bname, qv, s, z, per_channel.then_some(axis));
            b.g.set_input(id, bslot, Some(dq));
            replaced.insert(bv);
            b.report.biases += 1;
        }
    }
    // Float originals nothing reads any more.
    let mut gone: Vec<ValueId> = replaced.into_iter().collect();
    gone.sort();
    for v in gone {
        let val = b.g.value(v);
        if val.consumers().is_empty() && !b.g.is_graph_output(v) && !b.g.is_graph_input(v) {
            b.g.remove_initializer(v);
        }
    }

    // 3. QuantizeLinear → DequantizeLinear after every planned activation.
    for &v in &plan.order {
        let ap = acts[&v].clone();
        let name = b.g.value_name(v).to_string();
        let info = b.g.value(v).info.clone();
        let is_output = b.g.is_graph_output(v);
        let q = b.g.new_value(&format!("{name}/quantized"));
        let dq = b.g.new_value(&format!("{name}/dequantized"));
        b.g.replace_uses(v, dq);
        let mut qn = Node::new(
            b.node_name(&format!("{name}/QuantizeLinear")),
            "QuantizeLinear",
        );
        qn.inputs = vec![Some(v), Some(ap.scale), Some(ap.zero_point)];
        qn.outputs = vec![Some(q)];
        b.g.insert_node(qn);
        b.report.quantize_linear += 1;
        let mut dn = Node::new(
            b.node_name(&format!("{name}/DequantizeLinear")),
            "DequantizeLinear",
        );
        dn.inputs = vec![Some(q), Some(ap.scale), Some(ap.zero_point)];
        dn.outputs = vec![Some(dq)];
        b.g.insert_node(dn);
        b.report.dequantize_linear += 1;
        if let Some(i) = info_as(info.as_ref(), ap.params.qtype.dtype()) {
            b.g.set_value_info(q, i);
        }
        if let Some(i) = info.clone() {
            b.g.set_value_info(dq, i);
        }
        if is_output {
            // The graph output keeps its name; the value before the pair
            // is renamed.
            let float_name = unique_name(&format!("{name}/float"), |n| b.g.find_value(n).is_some());
            b.g.rename_value(v, &float_name)?;
            b.g.rename_value(dq, &name)?;
        }
        b.report.activations += 1;
    }
    Ok(())
}
