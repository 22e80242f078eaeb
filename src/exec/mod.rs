//! The reference int8 executor: an interpreter over our IR.
//!
//! Integer operators (QuantizeLinear, DequantizeLinear, QLinearConv,
//! QLinearMatMul, MatMulInteger, ConvInteger, DynamicQuantizeLinear) run on
//! our own kernels ([`kernels`]), written from the ONNX specification and
//! independent of the runtimes we check. Everything else (float ops, data
//! movement) runs through tract: the graph is cut, in topological order,
//! into maximal runs of non-integer nodes ("float regions"); each region
//! becomes a small ONNX model built and optimized once per input signature
//! and cached (`regions`; `plans` shares them between executors). An elementwise region fed by one 8-bit tensor
//! runs as a byte table instead (`table`). `ops` reads each integer
//! node's operands and runs its kernel.
//!
//! Reads the model only; results are tensors by value name.

pub mod contrib;
pub mod conv;
mod depthwise;
pub mod gemm;
pub mod kernels;
mod ops;
mod plans;
mod regions;
mod table;

use crate::error::{Error, Result};
use crate::ir::{Model, Node, NodeId, Tensor, ValueId};
use crate::tract::Runner;
use kernels::{AccStats, Arith};
use ops::Prepared;
pub use plans::{RegionPlans, REGION_PLAN_BYTES};
use regions::{components, region, Baked, Region, Signature};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Operators the executor computes itself.
pub const INTEGER_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeLinear",
];

enum Step {
    Int(NodeId),
    Float(usize),
    /// A float region mapped through byte tables ([`table`]).
    Table(usize),
}

/// What one run observed.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct RunStats {
    /// Requantized accumulators beyond ±2^24 (float32 loses integer
    /// precision there, so onnxruntime's result may differ from exact).
    pub accumulators_beyond_2_24: u64,
}

/// An executor for one model.
pub struct Executor {
    model: Model,
    steps: Vec<Step>,
    regions: Vec<Region>,
    tables: Vec<table::Table>,
    /// Per step, the values it reads last (graph outputs excepted): freed
    /// once it ran, so a run holds only the live values.
    last_reads: Vec<Vec<ValueId>>,
    /// The values `keep` named, and the graph outputs.
    kept: HashSet<ValueId>,
    outputs: HashSet<ValueId>,
    arith: Arith,
    cache: Mutex<HashMap<(usize, Signature), Arc<Runner>>>,
    /// Per region and baked values, what builds its plans (the region
    /// model read once when it is planned for several shapes).
    planners: Mutex<HashMap<(usize, Baked), Arc<crate::tract::Planner>>>,
    /// Region plans shared with other executors ([`Executor::sharing`]).
    shared: Option<Arc<RegionPlans>>,
    float_ops: contrib::FloatOps,
    /// Constant weights of integer nodes, centred and packed on first use.
    prepared: Mutex<HashMap<NodeId, Arc<Prepared>>>,
}

fn is_integer(n: &Node) -> bool {
    ((n.domain.is_empty() || n.domain == "ai.onnx") && INTEGER_OPS.contains(&n.op_type.as_str()))
        || is_contrib(n)
}

fn is_contrib(n: &Node) -> bool {
    n.domain == "com.microsoft" && contrib::OPS.contains(&n.op_type.as_str())
}

impl Executor {
    /// Plans `model`; `keep` names intermediate values the caller wants
    /// back from [`Executor::run`] (besides the graph outputs).
    pub fn new(model: &Model, arith: Arith, keep: &[String]) -> Result<Self> {
        let g = &model.graph;
        for (_, n) in g.nodes() {
            if !n.domain.is_empty()
                && n.domain != "ai.onnx"
                && n.domain != "ai.onnx.ml"
                && !is_contrib(n)
            {
                return Err(Error::BadNode {
                    node: n.name.clone(),
                    op: format!("{}.{}", n.domain, n.op_type),
                    reason: "the int8 executor does not run this domain's operators".into(),
                });
            }
        }
        let outputs: HashSet<ValueId> = g.outputs().collect();
        let mut kept = HashSet::new();
        for k in keep {
            let v = g
                .find_value(k)
                .ok_or_else(|| Error::tensor(k, "no value of this name in the model"))?;
            kept.insert(v);
        }
        let wanted: HashSet<ValueId> = outputs.union(&kept).copied().collect();
        let order = g.topo_order()?;
        let mut steps = Vec::new();
        let mut regions: Vec<Region> = Vec::new();
        let mut tables: Vec<table::Table> = Vec::new();
        let mut run: Vec<NodeId> = Vec::new();
        let position: HashMap<NodeId, usize> =
            order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut flush = |run: &mut Vec<NodeId>, steps: &mut Vec<Step>| {
            if run.is_empty() {
                return;
            }
            // The run's independent parts that a table computes become
            // steps of their own; the rest stays one region.
            let mut rest = Vec::new();
            for part in components(g, std::mem::take(run)) {
                let reg = region(g, part, &wanted);
                match table::plan(g, regions.len(), &reg, &wanted) {
                    Some(t) => {
                        regions.push(reg);
                        tables.push(t);
                        steps.push(Step::Table(tables.len() - 1));
                    }
                    None => rest.extend(reg.nodes),
                }
            }
            if !rest.is_empty() {
                rest.sort_by_key(|id| position[id]);
                regions.push(region(g, rest, &wanted));
                steps.push(Step::Float(regions.len() - 1));
            }
        };
        for &id in &order {
            let Some(n) = g.node(id) else { continue };
            if is_integer(n) {
                flush(&mut run, &mut steps);
                steps.push(Step::Int(id));
            } else {
                run.push(id);
            }
        }
        flush(&mut run, &mut steps);
        // The DequantizeLinear and QuantizeLinear steps tables replace.
        let replaced: HashSet<NodeId> = tables
            .iter()
            .flat_map(|t| {
                let dqs = t.sources.iter().filter(|s| !s.keeps_dq).map(|s| s.dq);
                dqs.chain(t.outputs.iter().filter_map(|o| o.1))
            })
            .collect();
        steps.retain(|s| !matches!(s, Step::Int(id) if replaced.contains(id)));
        let mut last: HashMap<ValueId, usize> = HashMap::new();
        for (k, step) in steps.iter().enumerate() {
            let reads: Vec<ValueId> = match step {
                Step::Int(id) => g
                    .node(*id)
                    .map(|n| n.inputs.iter().flatten().copied().collect())
                    .unwrap_or_default(),
                Step::Float(r) => regions[*r].inputs.clone(),
                Step::Table(t) => tables[*t]
                    .sources
                    .iter()
                    .flat_map(|s| {
                        let kept = s.keeps_dq.then_some(s.dequantized);
                        std::iter::once(s.source).chain(kept)
                    })
                    .collect(),
            };
            for v in reads {
                last.insert(v, k);
            }
        }
        let mut last_reads = vec![Vec::new(); steps.len()];
        for (v, k) in last {
            if !outputs.contains(&v) {
                last_reads[k].push(v);
            }
        }
        Ok(Executor {
            model: model.clone(),
            steps,
            regions,
            tables,
            last_reads,
            kept,
            outputs,
            arith,
            cache: Mutex::new(HashMap::new()),
            planners: Mutex::new(HashMap::new()),
            shared: None,
            float_ops: contrib::FloatOps::default(),
            prepared: Mutex::new(HashMap::new()),
        })
    }

    /// This executor, taking its float regions' plans from `plans` and
    /// keeping there the ones it builds: executors of models that share
    /// regions (a quantization run's gates) plan each only once.
    pub fn sharing(mut self, plans: Arc<RegionPlans>) -> Self {
        self.shared = Some(plans);
        self
    }

    /// How many regions run as byte tables.
    #[cfg(test)]
    pub(crate) fn table_steps(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Table(_)))
            .count()
    }

    /// Runs on named inputs; returns the graph outputs and kept values by
    /// name, and what the kernels observed.
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<(BTreeMap<String, Tensor>, RunStats)> {
        self.run_keeping(inputs, true)
    }

    /// Like [`Executor::run`], but returns the graph outputs only (the
    /// values `keep` named are freed like the others once read).
    pub fn run_outputs(
        &self,
        inputs: &[(String, Tensor)],
    ) -> Result<(BTreeMap<String, Tensor>, RunStats)> {
        self.run_keeping(inputs, false)
    }

    fn run_keeping(
        &self,
        inputs: &[(String, Tensor)],
        keep: bool,
    ) -> Result<(BTreeMap<String, Tensor>, RunStats)> {
        let g = &self.model.graph;
        let mut env: HashMap<ValueId, Tensor> = HashMap::new();
        for v in g.runtime_inputs() {
            let name = g.value_name(v);
            let t = inputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| Error::tensor(name, "missing model input"))?;
            env.insert(v, t);
        }
        let mut stats = AccStats::default();
        for (step, frees) in self.steps.iter().zip(&self.last_reads) {
            match step {
                Step::Int(id) => self.int_step(*id, &mut env, &mut stats)?,
                Step::Float(r) => self.float_region(*r, &mut env)?,
                Step::Table(t) => self.table_step(*t, &mut env, &mut stats)?,
            }
            for v in frees {
                if !(keep && self.kept.contains(v)) {
                    env.remove(v);
                }
            }
        }
        if !keep {
            env.retain(|v, _| self.outputs.contains(v));
        }
        let mut out = BTreeMap::new();
        for (v, t) in env {
            out.insert(g.value_name(v).to_string(), t);
        }
        Ok((
            out,
            RunStats {
                accumulators_beyond_2_24: stats.beyond_f32,
            },
        ))
    }

    fn int_step(
        &self,
        id: NodeId,
        env: &mut HashMap<ValueId, Tensor>,
        stats: &mut AccStats,
    ) -> Result<()> {
        let g = &self.model.graph;
        let Some(n) = g.node(id) else { return Ok(()) };
        let outs = self
            .integer(g, id, n, env, stats)
            .map_err(|e| at_node(n, e))?;
        for (v, t) in n.outputs.iter().zip(outs) {
            if let Some(v) = v {
                env.insert(*v, t);
            }
        }
        Ok(())
    }

    /// A region mapped through its tables; where they cannot take the
    /// input, the DequantizeLinear, the region and the QuantizeLinear
    /// steps it replaced.
    fn table_step(
        &self,
        t: usize,
        env: &mut HashMap<ValueId, Tensor>,
        stats: &mut AccStats,
    ) -> Result<()> {
        let g = &self.model.graph;
        let tab = &self.tables[t];
        let reg = &self.regions[tab.region];
        let srcs = tab
            .sources
            .iter()
            .map(|s| {
                env.get(&s.source)
                    .ok_or_else(|| Error::tensor(g.value_name(s.source), "value not computed"))
            })
            .collect::<Result<Vec<&Tensor>>>()?;
        if let Some(maps) = tab.maps(&self.model, reg, &srcs, self.shared.as_deref()) {
            let mut made = Vec::with_capacity(maps.len());
            for (&(v, q), map) in tab.outputs.iter().zip(maps.iter()) {
                let out = q.and_then(|q| g.node(q)).and_then(|n| n.output(0));
                made.push((out.unwrap_or(v), table::apply(map, &srcs)?));
            }
            env.extend(made);
            return Ok(());
        }
        for s in tab.sources.iter().filter(|s| !s.keeps_dq) {
            self.int_step(s.dq, env, stats)?;
        }
        self.float_region(tab.region, env)?;
        for s in tab.sources.iter().filter(|s| !s.keeps_dq) {
            env.remove(&s.dequantized);
        }
        for &(v, q) in &tab.outputs {
            if let Some(q) = q {
                self.int_step(q, env, stats)?;
                env.remove(&v);
            }
        }
        Ok(())
    }
}

/// Puts node context on an error from its kernel.
fn at_node(n: &Node, e: Error) -> Error {
    match e {
        Error::BadNode { .. } => e,
        other => Error::BadNode {
            node: n.name.clone(),
            op: n.op_type.clone(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
