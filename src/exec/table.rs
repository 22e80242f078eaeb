//! Byte tables for elementwise float regions.
//!
//! A region of elementwise float nodes (HardSwish as Add/Clip/Div/Mul,
//! SiLU as Sigmoid·x, GELU as Erf…) fed by one 8-bit tensor through a
//! per-tensor DequantizeLinear computes each output element from one input
//! byte. Such a region is evaluated once, on the 256 levels, by the same
//! tract region model as a full run (the same ops and kernels, element by
//! element), and each run maps bytes through the table instead of
//! dequantizing, copying into tract, running four passes and quantizing.
//! An output whose only reader is a per-tensor 8-bit QuantizeLinear is
//! mapped straight to that node's bytes (the table's floats quantized by
//! the QuantizeLinear kernel), so neither float tensor exists.
//!
//! Nothing here is approximate: a table entry is what the region computes
//! for that level, and the bytes are what the QuantizeLinear kernel makes
//! of it. What the table cannot take at run time (an input that is not
//! 8-bit, a constant of higher rank than the input) runs the steps it
//! replaced.

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
    "Tanh",
    "ThresholdedRelu",
];

/// A region the executor maps through a table, and the steps it replaces.
pub(super) struct Table {
    /// The DequantizeLinear feeding the region.
    pub dq: NodeId,
    /// Its 8-bit input: what the table is indexed by.
    pub source: ValueId,
    /// Its output (the region's only input).
    pub dequantized: ValueId,
    pub region: usize,
    /// The DequantizeLinear's output is read outside the region (or
    /// wanted), so its step still runs.
    pub keeps_dq: bool,
    /// Per region output: the QuantizeLinear it is mapped through, when it
    /// is the output's only reader (that node's step is replaced too).
    pub outputs: Vec<(ValueId, Option<NodeId>)>,
    /// The largest rank of a constant the region reads.
    const_rank: usize,
    /// Per input type and rank, the tables (`None`: the region's plan did
    /// not give 256 floats; the replaced steps run).
    maps: Mutex<HashMap<(DataType, usize), Option<Maps>>>,
}

/// One table per region output, in order.
pub(super) type Maps = Arc<Vec<Map>>;

/// One output's table.
pub(super) enum Map {
    F32(Box<[f32; 256]>),
    Bytes(DataType, Box<[u8; 256]>),
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

/// The table for region `r`, when it is one: a single input, the output of
/// a per-tensor DequantizeLinear; elementwise nodes whose other operands
/// are single-value initializers.
pub(super) fn plan(g: &Graph, r: usize, reg: &Region, wanted: &HashSet<ValueId>) -> Option<Table> {
    let [dequantized] = reg.inputs[..] else {
        return None;
    };
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
    let inside: HashSet<NodeId> = reg.nodes.iter().copied().collect();
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
            if v == dequantized || produced.contains(&v) {
                continue;
            }
            let c = g.initializer(v)?;
            if c.len() != 1 {
                return None;
            }
            const_rank = const_rank.max(c.dims().len());
        }
    }
    let keeps_dq = wanted.contains(&dequantized)
        || g.value(dequantized)
            .consumers()
            .iter()
            .any(|&(c, _)| !inside.contains(&c));
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
        dq,
        source,
        dequantized,
        region: r,
        keeps_dq,
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
    /// The tables for an input of type `dt` and rank `rank`, computed on
    /// first use; `None` when this input cannot take them (the replaced
    /// steps run).
    pub(super) fn maps(
        &self,
        model: &Model,
        reg: &Region,
        (dt, rank): (DataType, usize),
        shared: Option<&RegionPlans>,
    ) -> Option<Maps> {
        if !matches!(dt, DataType::Uint8 | DataType::Int8) || rank == 0 || rank < self.const_rank {
            return None;
        }
        if let Some(m) = self
            .maps
            .lock()
            .ok()
            .and_then(|m| m.get(&(dt, rank)).cloned())
        {
            return m;
        }
        // A region tract cannot plan on the levels runs as it is (where a
        // failure names its node).
        let made = self
            .compute(model, reg, (dt, rank), shared)
            .ok()
            .flatten()
            .map(Arc::new);
        if let Ok(mut m) = self.maps.lock() {
            m.insert((dt, rank), made.clone());
        }
        made
    }

    fn compute(
        &self,
        model: &Model,
        reg: &Region,
        (dt, rank): (DataType, usize),
        shared: Option<&RegionPlans>,
    ) -> Result<Option<Vec<Map>>> {
        let g = &model.graph;
        let dq = g
            .node(self.dq)
            .ok_or_else(|| Error::Invalid("a table's DequantizeLinear is gone".into()))?;
        // The 256 levels, dequantized by the DequantizeLinear kernel.
        let levels = Tensor::from_bytes(dt, vec![256], (0..=255u8).collect());
        let (p, _) = params(g, dq, dt)?;
        let Some(x) = kernels::dequantize_bytes(&levels, &p, 0)? else {
            return Ok(None);
        };
        let mut dims = vec![1; rank - 1];
        dims.push(256);
        let sig: Signature = vec![(DataType::Float, dims.clone(), None)];
        let name = g.value_name(self.dequantized).to_string();
        let names: Vec<String> = reg
            .outputs
            .iter()
            .map(|&v| g.value_name(v).to_string())
            .collect();
        let runner = planned(
            (shared, &crate::tract::Planner::new()),
            (model, reg, &sig),
            &[(name, DataType::Float, dims.clone())],
            &names,
        )?;
        let input = Tensor::from_f32(dims, &x);
        let outs = runner.run_with(|_| Some(&input))?;
        let mut maps = Vec::with_capacity(outs.len());
        for ((_, q), t) in self.outputs.iter().zip(&outs) {
            let Some(y) = crate::tract::f32_view(t) else {
                return Ok(None);
            };
            let Ok(floats) = <[f32; 256]>::try_from(y) else {
                return Ok(None);
            };
            maps.push(match q.and_then(|q| g.node(q)) {
                Some(qn) => {
                    let (qp, qdt) = params(g, qn, DataType::Uint8)?;
                    let bytes = kernels::quantize_to_bytes(y, &[256], &qp, 0, qdt)?
                        .and_then(|t| t.raw().and_then(|r| <[u8; 256]>::try_from(&r[..]).ok()));
                    match bytes {
                        Some(bytes) => Map::Bytes(qdt, Box::new(bytes)),
                        None => return Ok(None),
                    }
                }
                None => Map::F32(Box::new(floats)),
            });
        }
        Ok(Some(maps))
    }
}

/// `source`'s bytes mapped through `map`, shaped like it.
pub(super) fn apply(map: &Map, source: &Tensor) -> Result<Tensor> {
    let bytes = source
        .raw()
        .filter(|r| r.len() == source.len())
        .ok_or_else(|| Error::Invalid("a table's input is not 8-bit".into()))?;
    let dims = source.dims().to_vec();
    Ok(match map {
        Map::Bytes(dt, table) => Tensor::from_bytes(
            *dt,
            dims,
            bytes.iter().map(|&b| table[b as usize]).collect(),
        ),
        Map::F32(table) => {
            let mut y = Vec::with_capacity(bytes.len() * 4);
            for &b in bytes.iter() {
                y.extend_from_slice(&table[b as usize].to_le_bytes());
            }
            Tensor::from_bytes(DataType::Float, dims, y)
        }
    })
}
