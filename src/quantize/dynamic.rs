//! Dynamic quantization (`--mode dynamic`): activation ranges are computed
//! at run time, so no calibration is needed. What transformer users reach
//! for first.
//!
//! For every MatMul/Gemm with a constant 2-D float weight (not excluded, op
//! type selected):
//! ```text
//! x ─ DynamicQuantizeLinear ─ x_q, x_scale, x_zp          (once per x)
//! MatMulInteger(x_q, w_q[K,N], x_zp[, w_zp]) ─ Cast(float)
//!   ─ Mul(x_scale · w_scale[n]) [─ Add(beta · C)] ─ y
//! ```
//! - `DynamicQuantizeLinear` (ONNX opset 11): uint8, range widened to
//!   contain 0, `scale = (max − min) / 255`, `zp = round_half_even(−min /
//!   scale)` saturated.
//! - Weights: int8 (or uint8) symmetric, per output column (`--per-tensor`:
//!   one scale), quantized as QuantizeLinear would; a `transB = 1` Gemm
//!   weight is transposed offline; Gemm's `alpha` goes into the weight
//!   scale, `beta` into the bias constant (or a Mul when C is computed).
//! - `MatMulInteger` (ONNX opset 10) accumulates exactly in int32; the
//!   float rescale is one Mul by `x_scale · w_scale[n]` (a `[N]` vector built
//!   at run time from the scalar `x_scale`).
//!
//! Touches only the matched nodes; the output value keeps its name.

use super::params::{quantize_weight, QType, WeightSpec};
use super::{excluded_nodes, FloatNode, QuantizeConfig, QuantizeReport};
use crate::error::Result;
use crate::ir::node::attr;
use crate::ir::{DataType, Graph, Model, Node, NodeId, NodeNames, Tensor, ValueId};
use std::collections::HashMap;

/// The opset dynamic quantization needs (DynamicQuantizeLinear).
pub const MIN_OPSET: i64 = 11;

/// A weight stored quantized: the int8 `[K, N]` initializer, its scales
/// (alpha folded in), and its zero point when not all zeros.
type QuantizedWeight = (ValueId, Vec<f32>, Option<ValueId>);

/// A node to rewrite.
struct Target {
    id: NodeId,
    x: ValueId,
    w: ValueId,
    /// Weight stored `[N, K]`.
    trans_b: bool,
    alpha: f32,
    beta: f32,
    c: Option<ValueId>,
    y: ValueId,
}

fn target(g: &Graph, id: NodeId, node: &Node) -> std::result::Result<Target, String> {
    let x = node.input(0).ok_or("no input")?;
    let w = node.input(1).ok_or("no weight")?;
    let y = node.output(0).ok_or("no output")?;
    if let Some(dt) = crate::ir::types::dtype_of(g, x).filter(|&d| d != DataType::Float) {
        return Err(format!(
            "input is {}; DynamicQuantizeLinear takes float32",
            dt.name()
        ));
    }
    let wt = g
        .initializer(w)
        .ok_or("the second input is not a constant weight")?;
    if wt.dtype() != DataType::Float || wt.dims().len() != 2 {
        return Err(format!(
            "weight is {} {:?}, not a 2-D float",
            wt.dtype().name(),
            wt.dims()
        ));
    }
    let mut t = Target {
        id,
        x,
        w,
        trans_b: false,
        alpha: 1.0,
        beta: 1.0,
        c: None,
        y,
    };
    if node.is("Gemm") {
        let int = |k: &str| node.get_int(k).ok().flatten().unwrap_or(0);
        if int("transA") != 0 {
            return Err("transA = 1".into());
        }
        t.trans_b = int("transB") != 0;
        t.alpha = node.get_float("alpha").ok().flatten().unwrap_or(1.0);
        t.beta = node.get_float("beta").ok().flatten().unwrap_or(1.0);
        t.c = node.input(2);
    }
    Ok(t)
}

/// Rewrites every eligible MatMul/Gemm of `model` (at opset ≥ 11).
pub fn quantize_dynamic(model: &mut Model, cfg: &QuantizeConfig) -> Result<QuantizeReport> {
    let mut report = QuantizeReport {
        weight_bits: if cfg.reduce_range { 7 } else { 8 },
        ..Default::default()
    };
    let excluded = excluded_nodes(model, &cfg.exclude)?;
    let g = &mut model.graph;
    let mut targets = Vec::new();
    for id in g.topo_order()? {
        let Some(node) = g.node(id) else { continue };
        if !node.is_onnx() || !(node.is("MatMul") || node.is("Gemm")) {
            continue;
        }
        let keep = |reason: &str, r: &mut QuantizeReport| {
            *r.float.entry(node.op_type.clone()).or_default() += 1;
            r.float_nodes.push(FloatNode {
                node: node.name.clone(),
                op: node.op_type.clone(),
                reason: reason.to_string(),
            });
        };
        let keep_float = cfg.nodes.get(&node.name).is_some_and(|o| o.keep_float);
        if excluded.contains(&id) || keep_float {
            keep("excluded", &mut report);
        } else if !cfg.op_types.contains(&node.op_type) {
            keep("op type not selected", &mut report);
        } else {
            match target(g, id, node) {
                Ok(t) => {
                    *report.quantized.entry(node.op_type.clone()).or_default() += 1;
                    targets.push(t);
                }
                Err(reason) => keep(&reason, &mut report),
            }
        }
    }
    let mut names = NodeNames::of(g);
    let mut name = |base: &str| names.fresh(base);
    // One DynamicQuantizeLinear per activation; one quantized copy per
    // (weight, layout, alpha).
    let mut dql: HashMap<ValueId, (ValueId, ValueId, ValueId)> = HashMap::new();
    let mut weights: HashMap<(ValueId, bool, u32), QuantizedWeight> = HashMap::new();
    for t in targets {
        let Some(node) = g.remove_node(t.id) else {
            continue;
        };
        let base = node.name.clone();
        let (xq, xs, xz) = match dql.get(&t.x) {
            Some(&v) => v,
            None => {
                let xn = g.value_name(t.x).to_string();
                let outs = (
                    g.new_value(&format!("{xn}/quantized")),
                    g.new_value(&format!("{xn}/scale")),
                    g.new_value(&format!("{xn}/zero_point")),
                );
                let mut n = Node::new(
                    name(&format!("{xn}/DynamicQuantizeLinear")),
                    "DynamicQuantizeLinear",
                );
                n.inputs = vec![Some(t.x)];
                n.outputs = vec![Some(outs.0), Some(outs.1), Some(outs.2)];
                g.insert_node(n);
                dql.insert(t.x, outs);
                outs
            }
        };
        let key = (t.w, t.trans_b, t.alpha.to_bits());
        let (wq, wscale, wzp) = match weights.get(&key) {
            Some(v) => v.clone(),
            None => {
                let Some(wt) = g.initializer(t.w) else {
                    continue;
                };
                let wt = if t.trans_b {
                    transposed(wt)?
                } else {
                    wt.clone()
                };
                let wname = g.value_name(t.w).to_string();
                let spec = WeightSpec {
                    qtype: cfg.weights,
                    symmetric: true,
                    axis: cfg.per_channel.then_some(1),
                    reduce_range: cfg.reduce_range,
                };
                let (q, p, _) = quantize_weight(&wname, &wt, spec, None, None)?;
                report.weights += 1;
                if cfg.per_channel {
                    report.per_channel_weights += 1;
                }
                let qv = g.add_initializer(&format!("{wname}/quantized"), q);
                let scale: Vec<f32> = p.scale.iter().map(|s| s * t.alpha).collect();
                let zp = (cfg.weights == QType::Uint8).then(|| {
                    let (_, z) = p.tensors();
                    g.add_initializer(&format!("{wname}/zero_point"), z)
                });
                let v = (qv, scale, zp);
                weights.insert(key, v.clone());
                v
            }
        };
        let acc = g.new_value(&format!("{base}/accumulator"));
        let mut mm = Node::new(name(&base), "MatMulInteger");
        mm.inputs = vec![Some(xq), Some(wq), Some(xz)];
        if let Some(z) = wzp {
            mm.inputs.push(Some(z));
        }
        mm.outputs = vec![Some(acc)];
        g.insert_node(mm);
        let accf = g.new_value(&format!("{base}/accumulator_float"));
        let mut cast = Node::new(name(&format!("{base}/Cast")), "Cast");
        cast.inputs = vec![Some(acc)];
        cast.outputs = vec![Some(accf)];
        cast.attrs = vec![attr::int("to", DataType::Float.code() as i64)];
        g.insert_node(cast);
        let dims = if wscale.len() == 1 {
            vec![]
        } else {
            vec![wscale.len()]
        };
        let ws = g.add_initializer(&format!("{base}/w_scale"), Tensor::from_f32(dims, &wscale));
        let m = g.new_value(&format!("{base}/multiplier"));
        let mut mul1 = Node::new(name(&format!("{base}/Multiplier")), "Mul");
        mul1.inputs = vec![Some(xs), Some(ws)];
        mul1.outputs = vec![Some(m)];
        g.insert_node(mul1);
        let scaled = if t.c.is_some() {
            g.new_value(&format!("{base}/scaled"))
        } else {
            t.y
        };
        let mut mul2 = Node::new(name(&format!("{base}/Rescale")), "Mul");
        mul2.inputs = vec![Some(accf), Some(m)];
        mul2.outputs = vec![Some(scaled)];
        g.insert_node(mul2);
        if let Some(c) = t.c {
            let c = beta_times(g, c, t.beta, &base, &mut name)?;
            let mut add = Node::new(name(&format!("{base}/AddBias")), "Add");
            add.inputs = vec![Some(scaled), Some(c)];
            add.outputs = vec![Some(t.y)];
            g.insert_node(add);
        }
    }
    crate::passes::Pass::run(
        &crate::passes::cleanup::RemoveDeadNodes,
        model,
        &crate::passes::PassOptions::default(),
    )?;
    model.graph.validate()?;
    Ok(report)
}

/// `beta · c`: folded into a constant, or a Mul node.
fn beta_times(
    g: &mut Graph,
    c: ValueId,
    beta: f32,
    base: &str,
    name: &mut impl FnMut(&str) -> String,
) -> Result<ValueId> {
    if beta == 1.0 {
        return Ok(c);
    }
    if let Some(t) = g.initializer(c) {
        let v: Vec<f32> = t.to_f32_vec()?.iter().map(|x| x * beta).collect();
        let dims = t.dims().to_vec();
        return Ok(g.add_initializer(&format!("{base}/bias"), Tensor::from_f32(dims, &v)));
    }
    let b = g.add_initializer(&format!("{base}/beta"), Tensor::from_f32(vec![], &[beta]));
    let out = g.new_value(&format!("{base}/bias"));
    let mut n = Node::new(name(&format!("{base}/Beta")), "Mul");
    n.inputs = vec![Some(c), Some(b)];
    n.outputs = vec![Some(out)];
    g.insert_node(n);
    Ok(out)
}

/// A 2-D float tensor transposed.
fn transposed(t: &Tensor) -> Result<Tensor> {
    let (r, c) = (t.dims()[0], t.dims()[1]);
    let v = t.to_f32_vec()?;
    let mut out = vec![0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    Ok(Tensor::from_f32(vec![c, r], &out))
}
