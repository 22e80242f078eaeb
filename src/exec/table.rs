//! Byte tables for elementwise float regions.
//!
//! A region of elementwise float nodes (HardSwish as Add/Clip/Div/Mul,
//! SiLU as Sigmoid·x, GELU as Erf…) fed by one 8-bit tensor through a
//! per-tensor DequantizeLinear computes each output element from one input
//! byte. Such a region is evaluated once, on the 256 levels, by the same
//! tract region model as a full run (the same ops and kernels, element by
//! element), and each run maps bytes through the table instead of
//! dequantizing, copying into tract, running four passes and quantizing.
//! A region fed by two such tensors of the same shape (a residual
//! `Add`/`Sum` and its `Relu`) is evaluated once on the 65,536 pairs of
//! levels, and each run maps pairs of bytes.
//! An output whose only reader is a per-tensor 8-bit QuantizeLinear is
//! mapped straight to that node's bytes (the table's floats quantized by
//! the QuantizeLinear kernel), so neither float tensor exists.
//!
//! Nothing here is approximate: a table entry is what the region computes
//! for those levels, and the bytes are what the QuantizeLinear kernel makes
//! of it. What the table cannot take at run time (an input that is not
//! 8-bit, a constant of higher rank than the input, two inputs of
//! different shapes, which broadcast) runs the steps it replaced.

use super::plans::RegionPlans;
use super::regions::{planned, Region, Signature};
use crate::error::{Error, Result};
use crate::exec::kernels::{self, Ints, Params};
use crate::ir::{DataType, Graph, Model, Node, NodeId, Tensor, ValueId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Operators whose every output element is a function of the same element
/// of their inputs (constants being single values).
const ELEMENTWISE: &[&str] = &[
    "Abs",
    "Add",
    "Ceil",
    "Celu",
    "Clip",
    "Cos",
    "Div",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "Log",
    "Max",
    "Min",
    "Mish",
    "Mul",
    "Neg",
    "Pow",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Sigmoid",
    "Sign",
    "Sin",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Sub",
    "Sum",
    "Tanh",
    "ThresholdedRelu",
];

/// One input of a tabled region: a per-tensor DequantizeLinear of an 8-bit
/// value.
pub(super) struct Source {
    /// The DequantizeLinear.
    pub dq: NodeId,
    /// Its 8-bit input: what the table is indexed by.
    pub source: ValueId,
    /// Its output (an input of the region).
    pub dequantized: ValueId,
    /// The DequantizeLinear's output is read outside the region (or
    /// wanted), so its step still runs.
    pub keeps_dq: bool,
}

/// A region the executor maps through a table, and the steps it replaces.
pub(super) struct Table {
    /// The region's inputs, one or two: the table's index is the first's
    /// byte, times 256 plus the second's.
    pub sources: Vec<Source>,
    pub region: usize,
    /// Per region output: the QuantizeLinear it is mapped through, when it
    /// is the output's only reader (that node's step is replaced too).
    pub outputs: Vec<(ValueId, Option<NodeId>)>,
    /// The largest rank of a constant the region reads.
    const_rank: usize,
    /// Per input types and rank, the tables (`None`: the region's plan did
    /// not give one float per entry; the replaced steps run).
    maps: Mutex<HashMap<MapsKey, Option<Maps>>>,
}

/// The input types, in order (one or two), and their rank.
type MapsKey = ([Option<DataType>; 2], usize);

/// One table per region output, in order.
pub(super) type Maps = Arc<Vec<Map>>;

/// One output's table: 256 entries per input byte, 65,536 for two.
pub(super) enum Map {
    F32(Box<[f32]>),
    Bytes(DataType, Box<[u8]>),
}

/// Whether `n` reads only elementwise-constant operands and writes one value.
fn elementwise(n: &Node) -> bool {
    (n.domain.is_empty() || n.domain == "ai.onnx")
        && ELEMENTWISE.contains(&n.op_type.as_str())
        && n.outputs.iter().flatten().count() == 1
        && n.implicit_inputs.is_empty()
}

/// A per-tensor DequantizeLinear or QuantizeLinear's constant parameters.
fn scalar_params(g: &Graph, n: &Node) -> Option<(f32, Option<ValueId>)> {
    let scale = g.initializer(n.input(1)?)?;
    if scale.len() != 1 || n.attr("block_size").is_some() {
        return None;
    }
    let zp = n.input(2);
    if let Some(z) = zp {
        if g.initializer(z)?.len() != 1 {
            return None;
        }
    }
    Some((scale.to_f32_vec().ok()?[0], zp))
}

/// The input `dequantized` of a region of `inside` nodes, when a
/// per-tensor DequantizeLinear of a value computed at run time makes it.
fn source(
    g: &Graph,
    dequantized: ValueId,
    inside: &HashSet<NodeId>,
    wanted: &HashSet<ValueId>,
) -> Option<Source> {
    let (dq, dq_node) = g.producer_node(dequantized)?;
    if dq_node.op_type != "DequantizeLinear"
        || !(dq_node.domain.is_empty() || dq_node.domain == "ai.onnx")
    {
        return None;
    }
    scalar_params(g, dq_node)?;
    let source = dq_node.input(0)?;
    if g.initializer(source).is_some() {
        return None;
    }
    let keeps_dq = wanted.contains(&dequantized)
        || g.value(dequantized)
            .consumers()
            .iter()
            .any(|&(c, _)| !inside.contains(&c));
    Some(Source {
        dq,
        source,
        dequantized,
        keeps_dq,
    })
}

/// The table for region `r`, when it is one: one or two inputs, each the
/// output of a per-tensor DequantizeLinear; elementwise nodes whose other
/// operands are single-value initializers.
pub(super) fn plan(g: &Graph, r: usize, reg: &Region, wanted: &HashSet<ValueId>) -> Option<Table> {
    if !(1..=2).contains(&reg.inputs.len()) {
        return None;
    }
    let inside: HashSet<NodeId> = reg.nodes.iter().copied().collect();
    let sources = reg
        .inputs
        .iter()
        .map(|&v| source(g, v, &inside, wanted))
        .collect::<Option<Vec<Source>>>()?;
    let produced: HashSet<ValueId> = reg
        .nodes
        .iter()
        .filter_map(|&id| g.node(id))
        .flat_map(|n| n.outputs.iter().flatten().copied())
        .collect();
    let mut const_rank = 0;
    for &id in &reg.nodes {
        let n = g.node(id)?;
        if !elementwise(n) {
            return None;
        }
        for &v in n.inputs.iter().flatten() {
            if reg.inputs.contains(&v) || produced.contains(&v) {
                continue;
            }
            let c = g.initializer(v)?;
            if c.len() != 1 {
                return None;
            }
            const_rank = const_rank.max(c.dims().len());
        }
    }
    let outputs = reg
        .outputs
        .iter()
        .map(|&v| {
            let readers = g.value(v).consumers();
            let q = match readers {
                [(q, 0)] if !wanted.contains(&v) => Some(*q),
                _ => None,
            }
            .filter(|&q| {
                g.node(q).is_some_and(|n| {
                    n.op_type == "QuantizeLinear"
                        && (n.domain.is_empty() || n.domain == "ai.onnx")
                        && n.get_int("output_dtype").ok().flatten().unwrap_or(0) == 0
                        && scalar_params(g, n).is_some()
                        && quantized_type(g, n).is_some()
                })
            });
            (v, q)
        })
        .collect();
    Some(Table {
        sources,
        region: r,
        outputs,
        const_rank,
        maps: Mutex::new(HashMap::new()),
    })
}

/// A QuantizeLinear's 8-bit output type (its zero point's, uint8 without).
fn quantized_type(g: &Graph, n: &Node) -> Option<DataType> {
    let dt = match n.input(2) {
        Some(z) => g.initializer(z)?.dtype(),
        None => DataType::Uint8,
    };
    matches!(dt, DataType::Uint8 | DataType::Int8).then_some(dt)
}

/// A node's per-tensor parameters, read from its initializers.
fn params(g: &Graph, n: &Node, default: DataType) -> Result<(Params, DataType)> {
    let (scale, zp) = scalar_params(g, n)
        .ok_or_else(|| Error::Invalid(format!("'{}' is not per tensor", n.name)))?;
    let (zero_point, dt) = match zp.and_then(|z| g.initializer(z)) {
        Some(t) => (Ints::from_qdq_tensor(t, "zero_point")?.data, t.dtype()),
        None => (vec![0], default),
    };
    Ok((Params::new(vec![scale], zero_point, &n.name)?, dt))
}

impl Table {
    /// The tables for inputs `sources` (the run's values of
    /// [`Table::sources`], in order), computed on first use; `None` when
    /// these inputs cannot take them (the replaced steps run).
    pub(super) fn maps(
        &self,
        model: &Model,
        reg: &Region,
        sources: &[&Tensor],
        shared: Option<&RegionPlans>,
    ) -> Option<Maps> {
        let first = sources.first()?;
        let rank = first.dims().len();
        let fits = sources.iter().all(|t| {
            matches!(t.dtype(), DataType::Uint8 | DataType::Int8) && t.dims() == first.dims()
        });
        if !fits || rank == 0 || rank < self.const_rank {
            return None;
        }
        let key = (
            [Some(first.dtype()), sources.get(1).map(|t| t.dtype())],
            rank,
        );
        if let Some(m) = self.maps.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return m;
        }
        // A region tract cannot plan on the levels runs as it is (where a
        // failure names its node).
        let made = self
            .compute(model, reg, &key, shared)
            .ok()
            .flatten()
            .map(Arc::new);
        if let Ok(mut m) = self.maps.lock() {
            m.insert(key, made.clone());
        }
        made
    }

    /// The region's outputs on every combination of levels, as tables:
    /// input `k` of `n` takes level `(i / 256^(n−1−k)) mod 256` at entry
    /// `i`.
    fn compute(
        &self,
        model: &Model,
        reg: &Region,
        (dts, rank): &MapsKey,
        shared: Option<&RegionPlans>,
    ) -> Result<Option<Vec<Map>>> {
        let g = &model.graph;
        let n = self.sources.len();
        let entries = 256usize.pow(n as u32);
        let mut dims = vec![1; rank - 1];
        dims.push(entries);
        let mut inputs = Vec::with_capacity(n);
        for (k, (s, &dt)) in self.sources.iter().zip(dts.iter().flatten()).enumerate() {
            let dq = g
                .node(s.dq)
                .ok_or_else(|| Error::Invalid("a table's DequantizeLinear is gone".into()))?;
            // The levels, dequantized by the DequantizeLinear kernel.
            let every = 256usize.pow((n - 1 - k) as u32);
            let levels: Vec<u8> = (0..entries).map(|i| (i / every) as u8).collect();
            let levels = Tensor::from_bytes(dt, vec![entries], levels);
            let (p, _) = params(g, dq, dt)?;
            let Some(x) = kernels::dequantize_bytes(&levels, &p, 0)? else {
                return Ok(None);
            };
            let name = g.value_name(s.dequantized).to_string();
            inputs.push((name, Tensor::from_f32(dims.clone(), &x)));
        }
        let sig: Signature = vec![(DataType::Float, dims.clone(), None); n];
        let shapes: Vec<(String, DataType, Vec<usize>)> = inputs
            .iter()
            .map(|(name, _)| (name.clone(), DataType::Float, dims.clone()))
            .collect();
        let names: Vec<String> = reg
            .outputs
            .iter()
            .map(|&v| g.value_name(v).to_string())
            .collect();
        let runner = planned(
            (shared, &crate::tract::Planner::new()),
            (model, reg, &sig),
            &shapes,
            &names,
        )?;
        let outs =
            runner.run_with(|name| inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t))?;
        let mut maps = Vec::with_capacity(outs.len());
        for ((_, q), t) in self.outputs.iter().zip(&outs) {
            let Some(y) = crate::tract::f32_view(t).filter(|y| y.len() == entries) else {
                return Ok(None);
            };
            maps.push(match q.and_then(|q| g.node(q)) {
                Some(qn) => {
                    let (qp, qdt) = params(g, qn, DataType::Uint8)?;
                    let bytes = kernels::quantize_to_bytes(y, &[entries], &qp, 0, qdt)?
                        .and_then(|t| t.raw().map(|r| r.to_vec().into_boxed_slice()));
                    match bytes {
                        Some(bytes) if bytes.len() == entries => Map::Bytes(qdt, bytes),
                        _ => return Ok(None),
                    }
                }
                None => Map::F32(y.to_vec().into_boxed_slice()),
            });
        }
        Ok(Some(maps))
    }
}

/// The bytes of `sources` (one or two tensors of one shape) mapped through
/// `map`, shaped like them.
pub(super) fn apply(map: &Map, sources: &[&Tensor]) -> Result<Tensor> {
    fn bytes(t: &Tensor) -> Result<&[u8]> {
        t.raw()
            .map(|r| &r[..])
            .filter(|r| r.len() == t.len())
            .ok_or_else(|| Error::Invalid("a table's input is not 8-bit".into()))
    }
    let (first, second) = match sources {
        [a] => (bytes(a)?, None),
        [a, b] if a.dims() == b.dims() => (bytes(a)?, Some(bytes(b)?)),
        _ => {
            return Err(Error::Invalid(
                "a table takes one input, or two of one shape".into(),
            ))
        }
    };
    let dims = sources[0].dims().to_vec();
    // The index of element `i`: its byte, or its bytes as one 16-bit number.
    let index = |i: usize| match second {
        None => first[i] as usize,
        Some(s) => (first[i] as usize) << 8 | s[i] as usize,
    };
    let n = first.len();
    Ok(match map {
        Map::Bytes(dt, table) => {
            Tensor::from_bytes(*dt, dims, (0..n).map(|i| table[index(i)]).collect())
        }
        Map::F32(table) => {
            let mut y = Vec::with_capacity(n * 4);
            for i in 0..n {
                y.extend_from_slice(&table[index(i)].to_le_bytes());
            }
            Tensor::from_bytes(DataType::Float, dims, y)
        }
    })
}
