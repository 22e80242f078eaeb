//! The executor's float regions: the graph's runs of non-integer nodes,
//! cut into their independent parts, each run as a small ONNX model in
//! tract, planned once per input signature and cached.

use super::plans::{RegionKey, RegionPlans};
use super::{at_node, Executor};
use crate::error::{Error, Result};
use crate::ir::{DataType, Graph, Model, NodeId, Tensor, ValueId};
use crate::onnx::proto::{GraphProto, ModelProto, ValueInfoProto};
use crate::tract::{Planner, Runner};
use prost::Message;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A run of float nodes executed as one tract model.
pub(super) struct Region {
    pub nodes: Vec<NodeId>,
    /// Values read from outside the region (not initializers).
    pub inputs: Vec<ValueId>,
    /// Values the rest of the graph (or the caller) reads.
    pub outputs: Vec<ValueId>,
    /// The inputs whose values may decide a shape inside the region
    /// ([`decides_shapes`]): only these are baked.
    pub shaping: HashSet<ValueId>,
}

/// A region's inputs: type and shape, and the values of small integer
/// tensors that may decide a shape in it (a Reshape's target shape, axes,
/// sizes), which become constants of the region model: tract needs them
/// when it plans. Token ids and masks are not baked, so one plan serves
/// every sentence of a length.
pub(super) type Signature = Vec<(DataType, Vec<usize>, Option<Vec<i64>>)>;

/// A signature's baked values alone (which decide the region model).
pub(super) type Baked = Vec<Option<Vec<i64>>>;

/// Integer inputs of at most this many elements are baked into the region.
const BAKED_INT_ELEMENTS: usize = 64;

impl Executor {
    pub(super) fn float_region(&self, r: usize, env: &mut HashMap<ValueId, Tensor>) -> Result<()> {
        let g = &self.model.graph;
        let reg = &self.regions[r];
        let mut feeds = Vec::with_capacity(reg.inputs.len());
        let mut sig = Vec::with_capacity(reg.inputs.len());
        for &v in &reg.inputs {
            let t = env
                .get(&v)
                .ok_or_else(|| Error::tensor(g.value_name(v), "value not computed"))?;
            let baked = matches!(t.dtype(), DataType::Int64 | DataType::Int32)
                && t.len() <= BAKED_INT_ELEMENTS
                && reg.shaping.contains(&v);
            let values = if baked { Some(t.to_i64_vec()?) } else { None };
            if values.is_none() {
                feeds.push((g.value_name(v), t));
            }
            sig.push((t.dtype(), t.dims().to_vec(), values));
        }
        let key = (r, sig.clone());
        let cached = self.cache.lock().ok().and_then(|c| c.get(&key).cloned());
        let runner = match cached {
            Some(runner) => runner,
            None => {
                let runner = self.plan_region(r, &sig, &feeds)?;
                if let Ok(mut c) = self.cache.lock() {
                    c.insert(key, runner.clone());
                }
                runner
            }
        };
        // The feeds are read where they are (no copy of the tensors).
        let outs =
            runner.run_with(|name| feeds.iter().find(|(n, _)| *n == name).map(|(_, t)| *t))?;
        for (&v, t) in reg.outputs.iter().zip(outs) {
            env.insert(v, crate::tract::from_tract(&t)?);
        }
        Ok(())
    }

    /// Region `r`'s plan for `sig` (`feeds`: its inputs not baked),
    /// through its planner (the region model read once for several
    /// shapes) unless a shared one is kept.
    fn plan_region(
        &self,
        r: usize,
        sig: &Signature,
        feeds: &[(&str, &Tensor)],
    ) -> Result<Arc<Runner>> {
        let g = &self.model.graph;
        let reg = &self.regions[r];
        let baked: Baked = sig.iter().map(|s| s.2.clone()).collect();
        let planner = self
            .planners
            .lock()
            .map_err(|_| Error::Invalid("an executor worker panicked".into()))?
            .entry((r, baked))
            .or_default()
            .clone();
        let specs: Vec<_> = feeds
            .iter()
            .map(|(n, t)| (n.to_string(), t.dtype(), t.dims().to_vec()))
            .collect();
        let names: Vec<String> = reg
            .outputs
            .iter()
            .map(|&v| g.value_name(v).to_string())
            .collect();
        planned(
            (self.shared.as_deref(), &planner),
            (&self.model, reg, sig),
            &specs,
            &names,
        )
        .map_err(|e| {
            let first = reg.nodes.first().and_then(|&n| g.node(n));
            match first {
                Some(n) => at_node(n, e),
                None => e,
            }
        })
    }
}

/// The plan of region `reg` of `model` for inputs of `sig` (`inputs`: the
/// unbaked ones' names, types and shapes), exposing `outputs`: the one kept
/// in `shared` for the same region model and shapes, else built by the
/// planner `shared` keeps for the region model (or by `local` when nothing
/// is shared), and kept there.
pub(super) fn planned(
    (shared, local): (Option<&RegionPlans>, &Planner),
    (model, reg, sig): (&Model, &Region, &Signature),
    inputs: &[(String, DataType, Vec<usize>)],
    outputs: &[String],
) -> Result<Arc<Runner>> {
    let (skeleton, weights) = region_parts(model, reg, sig)?;
    let Some(shared) = shared else {
        let proto = || Ok(Cow::Owned(with_weights(skeleton.clone(), &weights)));
        return Ok(Arc::new(local.plan(proto, inputs, Some(outputs))?));
    };
    let key = RegionKey {
        skeleton: skeleton.encode_to_vec(),
        weights,
    };
    if let Some(runner) = shared.get(&key) {
        return Ok(runner);
    }
    // The region model whatever its unbaked inputs' shapes (the graph
    // inputs; baked ones are initializers).
    let mut free = skeleton.clone();
    if let Some(g) = free.graph.as_mut() {
        g.input.iter_mut().for_each(|i| i.r#type = None);
    }
    let planner = shared.planner(RegionKey {
        skeleton: free.encode_to_vec(),
        weights: key.weights.clone(),
    });
    let proto = || Ok(Cow::Owned(with_weights(skeleton.clone(), &key.weights)));
    let runner = Arc::new(planner.plan(proto, inputs, Some(outputs))?);
    shared.put(key, runner.clone());
    Ok(runner)
}

/// A run of float nodes cut into its independent parts, each in run
/// order. No path joins two parts: not within the run, and not through
/// nodes outside it, since the run is contiguous in topological order.
pub(super) fn components(g: &Graph, nodes: Vec<NodeId>) -> Vec<Vec<NodeId>> {
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let index: HashMap<NodeId, usize> = nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut parent: Vec<usize> = (0..nodes.len()).collect();
    for (i, &id) in nodes.iter().enumerate() {
        let Some(n) = g.node(id) else { continue };
        for &v in n.inputs.iter().flatten().chain(n.implicit_inputs.iter()) {
            if let Some(&j) = g.value(v).producer().and_then(|(p, _)| index.get(&p)) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a] = b;
            }
        }
    }
    let mut parts: Vec<Vec<NodeId>> = Vec::new();
    let mut slot: HashMap<usize, usize> = HashMap::new();
    for (i, &id) in nodes.iter().enumerate() {
        let r = root(&mut parent, i);
        let k = *slot.entry(r).or_insert_with(|| {
            parts.push(Vec::new());
            parts.len() - 1
        });
        parts[k].push(id);
    }
    parts
}

/// The inputs and outputs of a run of nodes.
pub(super) fn region(g: &Graph, nodes: Vec<NodeId>, wanted: &HashSet<ValueId>) -> Region {
    let set: HashSet<NodeId> = nodes.iter().copied().collect();
    let produced: HashSet<ValueId> = nodes
        .iter()
        .filter_map(|&id| g.node(id))
        .flat_map(|n| n.outputs.iter().flatten().copied())
        .collect();
    let mut inputs = Vec::new();
    let mut seen = HashSet::new();
    for &id in &nodes {
        let Some(n) = g.node(id) else { continue };
        for &v in n.inputs.iter().flatten().chain(n.implicit_inputs.iter()) {
            if !produced.contains(&v) && g.initializer(v).is_none() && seen.insert(v) {
                inputs.push(v);
            }
        }
    }
    let mut outputs = Vec::new();
    for &id in &nodes {
        let Some(n) = g.node(id) else { continue };
        for &v in n.outputs.iter().flatten() {
            let outside = g
                .value(v)
                .consumers()
                .iter()
                .any(|&(c, _)| !set.contains(&c));
            if outside || wanted.contains(&v) {
                outputs.push(v);
            }
        }
    }
    let shaping = decides_shapes(g, &set, &inputs);
    Region {
        nodes,
        inputs,
        outputs,
        shaping,
    }
}

/// Whether reading a value at input `slot` of `op` leaves every output
/// shape independent of the value's elements (elementwise arithmetic,
/// casts, gathers, the data input of a reshaping op).
fn reads_data(op: &str, slot: usize) -> bool {
    match op {
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Mod" | "Min" | "Max" | "Equal" | "Less"
        | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "And" | "Or" | "Xor" | "Not" | "Neg"
        | "Abs" | "Sign" | "Floor" | "Ceil" | "Round" | "Reciprocal" | "Sqrt" | "Exp" | "Log"
        | "Erf" | "Tanh" | "Sigmoid" | "Relu" | "IsNaN" | "IsInf" | "BitwiseAnd" | "BitwiseOr"
        | "BitwiseXor" | "BitwiseNot" | "Cast" | "CastLike" | "Identity" | "Where" | "Concat"
        | "Gather" | "GatherElements" | "GatherND" | "MatMul" | "Gemm" | "LayerNormalization"
        | "Softmax" | "LogSoftmax" => true,
        "Reshape" | "Expand" | "Unsqueeze" | "Squeeze" | "Transpose" | "Flatten" | "Slice"
        | "Tile" | "Pad" | "Split" | "CumSum" | "Clip" | "OneHot" | "ReduceSum" | "ReduceMean"
        | "ReduceMax" | "ReduceMin" | "ReduceProd" => slot == 0,
        _ => false,
    }
}

/// The `inputs` of the region of `nodes` whose elements may decide a
/// shape inside it: those that reach, through the region's nodes, an input
/// not in [`reads_data`] (a target shape, axes, sizes, pads, a count; any
/// slot of an op not listed), or a node with subgraphs. A path ends at
/// Shape and Size (their outputs depend on the shape alone).
fn decides_shapes(g: &Graph, nodes: &HashSet<NodeId>, inputs: &[ValueId]) -> HashSet<ValueId> {
    let deep = nodes
        .iter()
        .filter_map(|&id| g.node(id))
        .any(|n| n.has_subgraphs() || !n.implicit_inputs.is_empty());
    inputs
        .iter()
        .copied()
        .filter(|&v| {
            if deep {
                return true;
            }
            let mut todo = vec![v];
            let mut seen = HashSet::from([v]);
            while let Some(x) = todo.pop() {
                for &(c, slot) in g.value(x).consumers() {
                    let Some(n) = g.node(c).filter(|_| nodes.contains(&c)) else {
                        continue;
                    };
                    if matches!(n.op_type.as_str(), "Shape" | "Size") {
                        continue;
                    }
                    let known = n.domain.is_empty() || n.domain == "ai.onnx";
                    if !known || !reads_data(&n.op_type, slot) {
                        return true;
                    }
                    todo.extend(n.outputs.iter().flatten().filter(|&&o| seen.insert(o)));
                }
            }
            false
        })
        .collect()
}

/// `skeleton` with `weights` as initializers.
fn with_weights(mut skeleton: ModelProto, weights: &[(String, Tensor)]) -> ModelProto {
    if let Some(g) = skeleton.graph.as_mut() {
        g.initializer.extend(
            weights
                .iter()
                .map(|(n, t)| crate::onnx::tensor::tensor_to_proto(n, t)),
        );
    }
    skeleton
}

/// A region's model without the initializers it reads (its baked integer
/// inputs are in it), and those initializers by name (sharing the model's
/// bytes).
fn region_parts(
    model: &Model,
    reg: &Region,
    sig: &Signature,
) -> Result<(ModelProto, Vec<(String, Tensor)>)> {
    let g = &model.graph;
    let name_of = |v: &Option<ValueId>| v.map(|v| g.value_name(v).to_string()).unwrap_or_default();
    let mut node = Vec::new();
    let mut weights = Vec::new();
    let mut seen = HashSet::new();
    for &id in &reg.nodes {
        let Some(n) = g.node(id) else { continue };
        node.push(n.to_proto(
            n.inputs.iter().map(name_of).collect(),
            n.outputs.iter().map(name_of).collect(),
        ));
        for &v in n.inputs.iter().flatten().chain(n.implicit_inputs.iter()) {
            if let Some(t) = g.initializer(v) {
                if seen.insert(v) {
                    weights.push((g.value_name(v).to_string(), t.clone()));
                }
            }
        }
    }
    let mut inits = Vec::new();
    let mut input = Vec::new();
    for (&v, (dt, dims, values)) in reg.inputs.iter().zip(sig) {
        let name = g.value_name(v);
        match values {
            None => input.push(crate::onnx::value_info(name, *dt, dims)),
            Some(vals) => {
                let t = if *dt == DataType::Int64 {
                    Tensor::from_i64(dims.clone(), vals)
                } else {
                    let v32: Vec<i32> = vals.iter().map(|&x| x as i32).collect();
                    Tensor::from_i32(dims.clone(), &v32)
                };
                inits.push(crate::onnx::tensor::tensor_to_proto(name, &t));
            }
        }
    }
    let output = reg
        .outputs
        .iter()
        .map(|&v| ValueInfoProto {
            name: Some(g.value_name(v).to_string()),
            ..Default::default()
        })
        .collect();
    let skeleton = ModelProto {
        ir_version: Some(model.ir_version()),
        opset_import: model.opset_imports().to_vec(),
        graph: Some(GraphProto {
            name: Some("region".into()),
            node,
            initializer: inits,
            input,
            output,
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok((skeleton, weights))
}
