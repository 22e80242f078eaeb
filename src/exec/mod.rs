//! The reference int8 executor: an interpreter over our IR.
//!
//! Integer operators (QuantizeLinear, DequantizeLinear, QLinearConv,
//! QLinearMatMul, MatMulInteger, ConvInteger, DynamicQuantizeLinear) run on
//! our own kernels ([`kernels`]), written from the ONNX specification and
//! independent of the runtimes we check. Everything else (float ops, data
//! movement) runs through tract: the graph is cut, in topological order,
//! into maximal runs of non-integer nodes ("float regions"); each region
//! becomes a small ONNX model built and optimized once per input signature
//! and cached.
//!
//! Reads the model only; results are tensors by value name.

pub mod contrib;
pub mod gemm;
pub mod kernels;
mod table;

use crate::error::{Error, Result};
use crate::ir::{DataType, Graph, Model, Node, NodeId, Tensor, ValueId};
use crate::onnx::proto::{GraphProto, ModelProto, ValueInfoProto};
use crate::tract::Runner;
use kernels::{AccStats, Arith, Ints, Params};
use std::borrow::Cow;
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

/// A run of float nodes executed as one tract model.
struct Region {
    nodes: Vec<NodeId>,
    /// Values read from outside the region (not initializers).
    inputs: Vec<ValueId>,
    /// Values the rest of the graph (or the caller) reads.
    outputs: Vec<ValueId>,
}

/// A region's inputs: type and shape, and the values of small integer
/// tensors (shapes, axes, indices), which become constants of the region
/// model: tract needs e.g. a Reshape's target shape when it plans.
type Signature = Vec<(DataType, Vec<usize>, Option<Vec<i64>>)>;

/// A signature's baked values alone (which decide the region model).
type Baked = Vec<Option<Vec<i64>>>;

/// Integer inputs of at most this many elements are baked into the region.
const BAKED_INT_ELEMENTS: usize = 64;

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
    float_ops: contrib::FloatOps,
    /// Constant weights of integer nodes, centred and packed on first use.
    prepared: Mutex<HashMap<NodeId, Arc<Prepared>>>,
}

/// A node's constant weight operand, ready for the GEMM.
enum Prepared {
    Conv(kernels::ConvWeights),
    Mat(kernels::MatB),
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
                let dq = (!t.keeps_dq).then_some(t.dq);
                dq.into_iter().chain(t.outputs.iter().filter_map(|o| o.1))
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
                Step::Table(t) => {
                    let t = &tables[*t];
                    let mut reads = vec![t.source];
                    if t.keeps_dq {
                        reads.push(t.dequantized);
                    }
                    reads
                }
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
            float_ops: contrib::FloatOps::default(),
            prepared: Mutex::new(HashMap::new()),
        })
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
        let src = env
            .get(&tab.source)
            .ok_or_else(|| Error::tensor(g.value_name(tab.source), "value not computed"))?;
        if let Some(maps) = tab.maps(&self.model, reg, src.dtype(), src.dims().len()) {
            let mut made = Vec::with_capacity(maps.len());
            for (&(v, q), map) in tab.outputs.iter().zip(maps.iter()) {
                let out = q.and_then(|q| g.node(q)).and_then(|n| n.output(0));
                made.push((out.unwrap_or(v), table::apply(map, src)?));
            }
            env.extend(made);
            return Ok(());
        }
        if !tab.keeps_dq {
            self.int_step(tab.dq, env, stats)?;
        }
        self.float_region(tab.region, env)?;
        if !tab.keeps_dq {
            env.remove(&tab.dequantized);
        }
        for &(v, q) in &tab.outputs {
            if let Some(q) = q {
                self.int_step(q, env, stats)?;
                env.remove(&v);
            }
        }
        Ok(())
    }

    fn float_region(&self, r: usize, env: &mut HashMap<ValueId, Tensor>) -> Result<()> {
        let g = &self.model.graph;
        let reg = &self.regions[r];
        let mut feeds = Vec::with_capacity(reg.inputs.len());
        let mut sig = Vec::with_capacity(reg.inputs.len());
        for &v in &reg.inputs {
            let t = env
                .get(&v)
                .ok_or_else(|| Error::tensor(g.value_name(v), "value not computed"))?;
            let baked = matches!(t.dtype(), DataType::Int64 | DataType::Int32)
                && t.len() <= BAKED_INT_ELEMENTS;
            let values = if baked { Some(t.to_i64_vec()?) } else { None };
            if values.is_none() {
                feeds.push((g.value_name(v), t));
            }
            sig.push((t.dtype(), t.dims().to_vec(), values));
        }
        let runner = {
            let key = (r, sig.clone());
            let cached = self.cache.lock().ok().and_then(|c| c.get(&key).cloned());
            match cached {
                Some(runner) => runner,
                None => {
                    let baked: Baked = sig.iter().map(|s| s.2.clone()).collect();
                    let planner = self
                        .planners
                        .lock()
                        .map_err(|_| Error::Invalid("an executor worker panicked".into()))?
                        .entry((r, baked))
                        .or_default()
                        .clone();
                    let proto = || region_model(&self.model, reg, &sig).map(Cow::Owned);
                    let specs: Vec<_> = feeds
                        .iter()
                        .map(|(n, t)| (n.to_string(), t.dtype(), t.dims().to_vec()))
                        .collect();
                    let names: Vec<String> = reg
                        .outputs
                        .iter()
                        .map(|&v| g.value_name(v).to_string())
                        .collect();
                    let runner =
                        Arc::new(planner.plan(proto, &specs, Some(&names)).map_err(|e| {
                            let first = reg.nodes.first().and_then(|&n| g.node(n));
                            match first {
                                Some(n) => at_node(n, e),
                                None => e,
                            }
                        })?);
                    if let Ok(mut c) = self.cache.lock() {
                        c.insert(key, runner.clone());
                    }
                    runner
                }
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

    /// The prepared weights of node `id`: built by `build` on first use and
    /// kept when `constant` (the operands are initializers), rebuilt every
    /// run otherwise.
    fn prepared(
        &self,
        id: NodeId,
        constant: bool,
        build: impl FnOnce() -> Result<Prepared>,
    ) -> Result<Arc<Prepared>> {
        if !constant {
            return Ok(Arc::new(build()?));
        }
        if let Some(p) = self.prepared.lock().ok().and_then(|c| c.get(&id).cloned()) {
            return Ok(p);
        }
        let p = Arc::new(build()?);
        if let Ok(mut c) = self.prepared.lock() {
            c.insert(id, p.clone());
        }
        Ok(p)
    }

    fn integer(
        &self,
        g: &Graph,
        id: NodeId,
        n: &Node,
        env: &HashMap<ValueId, Tensor>,
        stats: &mut AccStats,
    ) -> Result<Vec<Tensor>> {
        let get = |slot: usize| -> Result<Option<&Tensor>> {
            let Some(v) = n.input(slot) else {
                return Ok(None);
            };
            if let Some(t) = env.get(&v) {
                return Ok(Some(t));
            }
            g.initializer(v)
                .map(Some)
                .ok_or_else(|| Error::tensor(g.value_name(v), "value not computed"))
        };
        let need = |slot: usize| -> Result<&Tensor> {
            get(slot)?.ok_or_else(|| Error::Invalid(format!("input {slot} is missing")))
        };
        // An absent optional input or an initializer nobody fed at run time.
        let constant = |slot: usize| match n.input(slot) {
            None => true,
            Some(v) => !env.contains_key(&v) && g.initializer(v).is_some(),
        };

        let params = |s: usize, z: usize, dt_default: DataType| -> Result<(Params, DataType)> {
            let scale = need(s)?.to_f32_vec()?;
            let (zero_point, dt) = match get(z)? {
                Some(t) => (Ints::from_qdq_tensor(t, "zero_point")?.data, t.dtype()),
                None => (vec![0; scale.len().max(1)], dt_default),
            };
            Ok((Params::new(scale, zero_point, &n.name)?, dt))
        };
        let axis = |rank: usize| -> Result<usize> {
            let a = n.get_int("axis")?.unwrap_or(1);
            if rank == 0 {
                return Ok(0);
            }
            kernels::norm_axis(a, rank, &n.name)
        };
        let arith = self.arith;
        if is_contrib(n) {
            let ins = contrib::Inputs { get: &get };
            return contrib::run(n, &ins, &self.float_ops, arith, stats);
        }
        Ok(match n.op_type.as_str() {
            "QuantizeLinear" => {
                if n.attr("block_size").is_some() {
                    return Err(Error::Invalid(
                        "blocked quantization (block_size) is not supported".into(),
                    ));
                }
                let x = need(0)?;
                let mut out_dt = DataType::Uint8;
                let (p, dt) = params(1, 2, out_dt)?;
                out_dt = dt;
                if let Some(code) = n.get_int("output_dtype")?.filter(|&c| c != 0) {
                    out_dt = DataType::from_code(code as i32).unwrap_or(out_dt);
                }
                let a = if p.scale.len() > 1 {
                    axis(x.dims().len())?
                } else {
                    0
                };
                let owned;
                let xs = match x.as_f32_slice() {
                    Some(xs) => xs,
                    None => {
                        owned = x.to_f32_vec()?;
                        &owned
                    }
                };
                match kernels::quantize_to_bytes(xs, x.dims(), &p, a, out_dt)? {
                    Some(y) => vec![y],
                    None => {
                        vec![kernels::quantize_linear(xs, x.dims(), &p, a, out_dt)?.to_tensor()]
                    }
                }
            }
            "DequantizeLinear" => {
                let t = need(0)?;
                let (p, _) = params(1, 2, t.dtype())?;
                let a = if p.scale.len() > 1 {
                    axis(t.dims().len())?
                } else {
                    0
                };
                let y = match kernels::dequantize_bytes(t, &p, a)? {
                    Some(y) => y,
                    None => kernels::dequantize_linear(&Ints::from_qdq_tensor(t, "x")?, &p, a)?,
                };
                vec![Tensor::from_f32(t.dims().to_vec(), &y)]
            }
            "QLinearMatMul" => {
                let a = need(0)?;
                Ints::check_dtype(a, "a")?;
                let (ap, _) = params(1, 2, a.dtype())?;
                let b = need(3)?;
                let (bp, _) = params(4, 5, b.dtype())?;
                let mb = self.prepared(id, constant(3) && constant(5), || {
                    let b = Ints::from_tensor(b, "b")?;
                    Ok(Prepared::Mat(kernels::MatB::new(&b, &bp.zero_point)?))
                })?;
                let Prepared::Mat(mb) = &*mb else {
                    return Err(Error::Invalid("prepared weights of another kind".into()));
                };
                let (yp, ydt) = params(6, 7, DataType::Uint8)?;
                vec![kernels::qlinear_matmul(
                    a, &ap, mb, &bp, &yp, ydt, arith, stats,
                )?]
            }
            "MatMulInteger" => {
                let a = need(0)?;
                Ints::check_dtype(a, "A")?;
                let az = match get(2)? {
                    Some(t) => Ints::from_tensor(t, "a_zero_point")?.data,
                    None => vec![0],
                };
                if az.len() != 1 {
                    return Err(Error::Invalid(
                        "per-row a_zero_point is not supported".into(),
                    ));
                }
                let mb = self.prepared(id, constant(1) && constant(3), || {
                    let b = Ints::from_tensor(need(1)?, "B")?;
                    let bz = match get(3)? {
                        Some(t) => Ints::from_tensor(t, "b_zero_point")?.data,
                        None => vec![0],
                    };
                    Ok(Prepared::Mat(kernels::MatB::new(&b, &bz)?))
                })?;
                let Prepared::Mat(mb) = &*mb else {
                    return Err(Error::Invalid("prepared weights of another kind".into()));
                };
                // int32 accumulators (wrapping beyond i32, as a 32-bit
                // accumulator would).
                let (v, dims) = kernels::matmul_map(
                    a.dims(),
                    &kernels::centred_tensor(a, az[0], "A")?,
                    mb,
                    |_, acc, out| acc.write_i32(0, out),
                )?;
                vec![Tensor::from_i32(dims, &v)]
            }
            "QLinearConv" | "ConvInteger" => {
                let qlinear = n.op_type == "QLinearConv";
                let (xi, wi, wzi) = if qlinear { (0, 3, 5) } else { (0, 1, 3) };
                let xt = need(xi)?;
                Ints::check_dtype(xt, "x")?;
                let (x_dtype, x_dims) = (xt.dtype(), xt.dims().to_vec());
                let wt = need(wi)?;
                let m = wt.dims().first().copied().unwrap_or(0);
                let zero_points = |s: usize| -> Result<Vec<i32>> {
                    Ok(match get(s)? {
                        Some(t) => Ints::from_tensor(t, "zero_point")?.data,
                        None => vec![0],
                    })
                };
                let (xp, wp) = if qlinear {
                    (
                        params(1, 2, x_dtype)?.0.scalar("x_scale")?,
                        params(4, 5, wt.dtype())?.0.for_channels(m, "w_scale")?,
                    )
                } else {
                    (
                        Params {
                            scale: vec![1.0],
                            zero_point: zero_points(2)?,
                        },
                        Params {
                            scale: vec![1.0],
                            zero_point: zero_points(3)?,
                        },
                    )
                };
                if x_dims.len() < 3 || wt.dims().len() != x_dims.len() {
                    return Err(Error::Invalid(format!(
                        "input {:?} and weight {:?} do not make a convolution",
                        x_dims,
                        wt.dims()
                    )));
                }
                let kernel: Vec<usize> = match n.get_ints("kernel_shape")? {
                    Some(k) => k.iter().map(|&v| v.max(1) as usize).collect(),
                    None => wt.dims()[2..].to_vec(),
                };
                let group = n.get_int("group")?.unwrap_or(1).max(1) as usize;
                let auto_pad = n.get_string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
                let geom = kernels::conv_geom(
                    &x_dims[2..],
                    &kernel,
                    n.get_ints("strides")?,
                    n.get_ints("dilations")?,
                    n.get_ints("pads")?,
                    &auto_pad,
                    group,
                )?;
                let bias = if qlinear {
                    get(8)?.map(|t| Ints::from_tensor(t, "B")).transpose()?
                } else {
                    None
                };
                let cw = self.prepared(id, constant(wi) && constant(wzi), || {
                    let w = Ints::from_tensor(wt, "w")?;
                    Ok(Prepared::Conv(kernels::ConvWeights::new(
                        &w,
                        &wp.zero_point,
                        group,
                    )?))
                })?;
                let Prepared::Conv(cw) = &*cw else {
                    return Err(Error::Invalid("prepared weights of another kind".into()));
                };
                let xc = kernels::centred_tensor(xt, xp.zero_point[0], "x")?;
                let bias = bias.as_ref().map(|b| b.data.as_slice());
                let mut dims = vec![x_dims[0], m];
                dims.extend(&geom.out);
                if qlinear {
                    let (yp, ydt) = params(6, 7, DataType::Uint8)?;
                    let yp = yp.scalar("y_scale")?;
                    let rq = kernels::Requantizer::new(xp.scale[0], &wp, &yp, ydt, arith);
                    let y = if matches!(ydt, DataType::Uint8 | DataType::Int8) {
                        // 8-bit outputs written straight as the tensor's bytes.
                        let data: Vec<u8> =
                            kernels::conv_map(&xc, &x_dims, cw, bias, &geom, |c, b, acc, out| {
                                rq.channel_run(c, b, acc, out)
                            })?;
                        Tensor::from_raw(ydt, dims, data.into())?
                    } else {
                        let data: Vec<i32> =
                            kernels::conv_map(&xc, &x_dims, cw, bias, &geom, |c, b, acc, out| {
                                rq.channel_run(c, b, acc, out)
                            })?;
                        Ints {
                            dtype: ydt,
                            dims,
                            data,
                        }
                        .to_tensor()
                    };
                    stats.beyond_f32 += rq.beyond();
                    vec![y]
                } else {
                    // ConvInteger: int32 accumulators (wrapping beyond i32,
                    // as a 32-bit accumulator would).
                    let data =
                        kernels::conv_map(&xc, &x_dims, cw, bias, &geom, |_, b, acc, out| {
                            acc.write_i32(b, out)
                        })?;
                    vec![Tensor::from_i32(dims, &data)]
                }
            }
            "DynamicQuantizeLinear" => {
                let x = need(0)?;
                let (q, s, z) = kernels::dynamic_quantize_linear(&x.to_f32_vec()?, x.dims());
                vec![
                    q.to_tensor(),
                    Tensor::from_f32(vec![], &[s]),
                    Tensor::from_u8(vec![], &[z as u8]),
                ]
            }
            other => {
                return Err(Error::Invalid(format!(
                    "{other} is not an integer operator"
                )))
            }
        })
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

/// A run of float nodes cut into its independent parts, each in run
/// order. No path joins two parts: not within the run, and not through
/// nodes outside it, since the run is contiguous in topological order.
fn components(g: &Graph, nodes: Vec<NodeId>) -> Vec<Vec<NodeId>> {
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
fn region(g: &Graph, nodes: Vec<NodeId>, wanted: &HashSet<ValueId>) -> Region {
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
    Region {
        nodes,
        inputs,
        outputs,
    }
}

/// A region as a standalone model (initializers it reads included).
fn region_model(model: &Model, reg: &Region, sig: &Signature) -> Result<ModelProto> {
    let g = &model.graph;
    let name_of = |v: &Option<ValueId>| v.map(|v| g.value_name(v).to_string()).unwrap_or_default();
    let mut node = Vec::new();
    let mut inits = Vec::new();
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
                    inits.push(crate::onnx::tensor::tensor_to_proto(g.value_name(v), t));
                }
            }
        }
    }
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
    Ok(ModelProto {
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
    })
}

#[cfg(test)]
mod tests;
