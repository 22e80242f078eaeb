//! Recognizing the pieces of QDQ patterns: a value read through
//! `DequantizeLinear`, a value consumed by one `QuantizeLinear`, and their
//! (constant) parameters. Matching never changes the graph.

use crate::ir::types::dtype_of;
use crate::ir::{DataType, Graph, Node, NodeId, Tensor, ValueId};

/// Constant quantization parameters of a Q or DQ node.
#[derive(Clone, Debug, PartialEq)]
pub struct QParams {
    /// The integer type (int8, uint8, or int32 for biases).
    pub dtype: DataType,
    pub scale: Vec<f32>,
    /// Zero points (0 when the node has none), one per scale.
    pub zero_point: Vec<i64>,
    /// Whether the scale is a 0-D tensor (per tensor).
    pub scalar: bool,
    /// The quantization axis (normalized against the rank when known) when
    /// per axis.
    pub axis: i64,
    pub scale_value: ValueId,
    pub zero_point_value: Option<ValueId>,
}

impl QParams {
    /// Same scalar parameters and type: a Q after a DQ with these is the
    /// identity on every value the DQ can produce.
    pub fn same_scalar(&self, o: &QParams) -> bool {
        self.scalar
            && o.scalar
            && self.dtype == o.dtype
            && self.scale[0].to_bits() == o.scale[0].to_bits()
            && self.zero_point == o.zero_point
    }

    /// Per-tensor 8-bit parameters (what QLinear ops take for activations).
    pub fn is_scalar_8bit(&self) -> bool {
        self.scalar && matches!(self.dtype, DataType::Uint8 | DataType::Int8)
    }

    /// The integer range of the type.
    pub fn qrange(&self) -> (i64, i64) {
        match self.dtype {
            DataType::Uint8 => (0, 255),
            DataType::Int8 => (-128, 127),
            DataType::Int32 => (i32::MIN as i64, i32::MAX as i64),
            _ => (0, 0),
        }
    }

    /// ONNX QuantizeLinear of one float with scalar parameters:
    /// `saturate(round_half_even(x / scale) + zp)`.
    pub fn quantize(&self, x: f32) -> i64 {
        let (lo, hi) = self.qrange();
        let q = (x / self.scale[0]).round_ties_even() as f64 + self.zero_point[0] as f64;
        q.clamp(lo as f64, hi as f64) as i64
    }

    /// A 0-D tensor of this type holding `v` (a zero point or pad value).
    pub fn scalar_tensor(&self, v: i64) -> Option<Tensor> {
        match self.dtype {
            DataType::Uint8 => Some(Tensor::from_u8(vec![], &[v as u8])),
            DataType::Int8 => Some(Tensor::from_i8(vec![], &[v as i8])),
            _ => None,
        }
    }
}

/// Reads the constant parameters of Q/DQ node `node`. `x_dtype`: the integer
/// type (DQ input, Q output). `None` when a scale or zero point is not an
/// initializer, the scale is not float32, or the node uses `block_size`.
fn params_of(g: &Graph, node: &Node, x_dtype: DataType, rank: Option<usize>) -> Option<QParams> {
    if node.attr("block_size").is_some() {
        return None;
    }
    let scale_value = node.input(1)?;
    let st = g.initializer(scale_value)?;
    if st.dtype() != DataType::Float || st.dims().len() > 1 {
        return None;
    }
    let scale = st.to_f32_vec().ok()?;
    let zero_point_value = node.input(2);
    let zero_point = match zero_point_value {
        Some(z) => {
            let zt = g.initializer(z)?;
            if zt.dtype() != x_dtype || zt.len() != scale.len() {
                return None;
            }
            zt.to_i64_vec().ok()?
        }
        None => vec![0; scale.len()],
    };
    let mut axis = node.get_int("axis").ok()?.unwrap_or(1);
    if axis < 0 {
        axis += rank? as i64;
    }
    Some(QParams {
        dtype: x_dtype,
        scalar: st.dims().is_empty(),
        scale,
        zero_point,
        axis,
        scale_value,
        zero_point_value,
    })
}

/// A `DequantizeLinear` node and what it reads.
#[derive(Clone, Debug)]
pub struct Dq {
    pub node: NodeId,
    /// The integer value it dequantizes.
    pub input: ValueId,
    pub output: ValueId,
    pub p: QParams,
}

/// The `DequantizeLinear` producing `v`, with constant parameters.
pub fn dq_producing(g: &Graph, v: ValueId) -> Option<Dq> {
    let (id, node) = g.producer_node(v)?;
    if !node.is_onnx() || !node.is("DequantizeLinear") {
        return None;
    }
    let input = node.input(0)?;
    let dtype = match node.input(2).and_then(|z| g.initializer(z)) {
        Some(z) => z.dtype(),
        None => dtype_of(g, input)?,
    };
    let rank = crate::ir::types::dims_of(g, input)
        .map(|d| d.len())
        .or_else(|| g.initializer(input).map(|t| t.dims().len()));
    Some(Dq {
        node: id,
        input,
        output: node.output(0)?,
        p: params_of(g, node, dtype, rank)?,
    })
}

/// A `QuantizeLinear` node.
#[derive(Clone, Debug)]
pub struct Qn {
    pub node: NodeId,
    pub input: ValueId,
    pub output: ValueId,
    pub p: QParams,
}

/// `QuantizeLinear` node `id` with constant parameters (without a zero
/// point its output is uint8, as the spec says).
pub fn q_node(g: &Graph, id: NodeId) -> Option<Qn> {
    let node = g.node(id)?;
    if !node.is_onnx() || !node.is("QuantizeLinear") || node.attr("output_dtype").is_some() {
        return None;
    }
    let dtype = match node.input(2) {
        Some(z) => g.initializer(z)?.dtype(),
        None => DataType::Uint8,
    };
    let input = node.input(0)?;
    let rank = crate::ir::types::dims_of(g, input).map(|d| d.len());
    Some(Qn {
        node: id,
        input,
        output: node.output(0)?,
        p: params_of(g, node, dtype, rank)?,
    })
}

/// Whether `v` can lose its uses to a replacement: not a graph output, not
/// read by a subgraph.
pub fn replaceable(g: &Graph, v: ValueId) -> bool {
    !g.is_graph_output(v) && !g.has_implicit_uses(v)
}

/// The single `QuantizeLinear` consuming `v` (which nothing else reads).
pub fn sole_q(g: &Graph, v: ValueId) -> Option<Qn> {
    if !replaceable(g, v) {
        return None;
    }
    match g.value(v).consumers() {
        [(c, 0)] => q_node(g, *c),
        _ => None,
    }
}

/// The single node consuming `v` (which is not a graph output).
pub fn sole_consumer(g: &Graph, v: ValueId) -> Option<(NodeId, &Node)> {
    if !replaceable(g, v) {
        return None;
    }
    match g.value(v).consumers() {
        [(c, _)] => Some((*c, g.node(*c)?)),
        _ => None,
    }
}

/// Whether a clamp to `[lo, hi]` before QuantizeLinear with scalar `p`
/// changes nothing: saturation already clamps at least as tightly, i.e.
/// `Q(lo)` is the type's minimum and `Q(hi)` its maximum.
pub fn clamp_absorbed(p: &QParams, lo: f32, hi: f32) -> bool {
    let (qmin, qmax) = p.qrange();
    p.scalar && p.quantize(lo) <= qmin && p.quantize(hi) >= qmax
}

pub use crate::ir::analysis::clamp_bounds;

/// Whether `node` still computes in float between DequantizeLinear and
/// QuantizeLinear (a pattern no rewrite took).
pub fn between_qdq(g: &Graph, node: &Node) -> bool {
    if node.is("QuantizeLinear") || node.is("DequantizeLinear") {
        return false;
    }
    let reads_dq = node
        .inputs
        .iter()
        .flatten()
        .any(|&v| dq_producing(g, v).is_some_and(|d| g.initializer(d.input).is_none()));
    let feeds_q = node.outputs.iter().flatten().any(|&v| {
        g.value(v)
            .consumers()
            .iter()
            .any(|&(c, _)| g.node(c).is_some_and(|n| n.is("QuantizeLinear")))
    });
    reads_dq && feeds_q
}
