//! What the weight-side corrections (`bias`, `gptq`) share: the layers
//! they work on, reading a quantized weight's grid back from the QDQ model
//! the plan produces, and the record that puts an initializer they changed back as it was when
//! automatic mixed precision keeps its layer in float. Reads graphs only;
//! `put_back` returns a changed copy.

use crate::error::Result;
use crate::ir::{DataType, Graph, Model, Node, NodeId, Tensor, ValueId};
use crate::quantize::params::QType;
use crate::quantize::{plan_model, quantize, Decision, InputRole, QuantizeConfig};
use std::collections::BTreeMap;

/// A layer the corrections work on: a quantized Conv, ConvTranspose, Gemm
/// or MatMul whose input 0 is an activation and input 1 a float weight
/// initializer.
pub(crate) struct Layer<'a> {
    pub id: NodeId,
    pub node: &'a Node,
    /// Input 0, the activation.
    pub x: ValueId,
    /// Input 1, the weight, and its value.
    pub w: ValueId,
    pub weight: &'a Tensor,
    /// The weight takes the activations' type ([`InputRole::Weight`]).
    pub act_type: bool,
}

/// `fp32`'s plan under `cfg` applied to `weights` (the same graph, other
/// weight values): the QDQ model [`Grid::of`] reads, and `fp32`'s
/// [`Layer`]s in node order.
pub(crate) fn quantized_layers<'a>(
    fp32: &'a Model,
    weights: &Model,
    cfg: &QuantizeConfig,
    ranges: &BTreeMap<String, (f32, f32)>,
) -> Result<(Model, Vec<Layer<'a>>)> {
    let plan = plan_model(fp32, cfg)?;
    let mut q = weights.clone();
    quantize(&mut q, &plan, ranges, cfg)?;
    let g = &fp32.graph;
    let mut out = Vec::new();
    for (&id, d) in &plan.nodes {
        let Decision::Quantize { inputs, .. } = d else {
            continue;
        };
        let Some(node) = g.node(id) else { continue };
        if !matches!(
            node.op_type.as_str(),
            "Conv" | "ConvTranspose" | "Gemm" | "MatMul"
        ) {
            continue;
        }
        let act_type = inputs.iter().find_map(|(s, r)| match r {
            InputRole::Weight { act_type, .. } if *s == 1 => Some(*act_type),
            _ => None,
        });
        let activation = inputs
            .iter()
            .any(|(s, r)| *s == 0 && *r == InputRole::Activation);
        let (Some(act_type), true, Some(x), Some(w)) =
            (act_type, activation, node.input(0), node.input(1))
        else {
            continue;
        };
        let Some(weight) = g.initializer(w).filter(|t| t.dtype() == DataType::Float) else {
            continue;
        };
        out.push(Layer {
            id,
            node,
            x,
            w,
            weight,
            act_type,
        });
    }
    Ok((q, out))
}

/// A quantized weight's grid, as its DequantizeLinear gives it.
pub(crate) struct Grid {
    pub scales: Vec<f32>,
    pub zero_points: Vec<i64>,
    /// The stored integer type (`None`: one the corrections do not round
    /// to, such as int4 or int32).
    pub qtype: Option<QType>,
    /// Per-channel axis as written (`None`: one scale).
    pub axis: Option<i64>,
}

impl Grid {
    /// The grid of the DequantizeLinear that feeds input `slot` of node
    /// `id` in the quantized graph `q`, and its constant integer input.
    pub fn of(q: &Graph, id: NodeId, slot: usize) -> Option<(Grid, &Tensor)> {
        let dq = q
            .node(id)
            .and_then(|n| n.input(slot))
            .and_then(|v| q.producer_node(v))
            .map(|(_, n)| n)
            .filter(|n| n.is("DequantizeLinear"))?;
        let qt = q.initializer(dq.input(0)?)?;
        let qtype = match qt.dtype() {
            DataType::Int8 => Some(QType::Int8),
            DataType::Uint8 => Some(QType::Uint8),
            _ => None,
        };
        let scales = q.initializer(dq.input(1)?)?.to_f32_vec().ok()?;
        let zero_points = match dq.input(2) {
            Some(z) => q.initializer(z)?.to_i64_vec().ok()?,
            None => vec![0; scales.len()],
        };
        let axis = (scales.len() > 1).then(|| dq.get_int("axis").ok().flatten().unwrap_or(1));
        let grid = Grid {
            scales,
            zero_points,
            qtype,
            axis,
        };
        Some((grid, qt))
    }

    /// `(q − zp) · scale` of `q`, per axis (ONNX DequantizeLinear).
    /// `None` when the scales or zero points do not match `q`'s axis.
    pub fn dequantize(&self, q: &Tensor) -> Option<Vec<f32>> {
        let (s, z) = (&self.scales, &self.zero_points);
        let qv = q.to_i64_vec().ok()?;
        let Some(axis) = self.axis else {
            let (s, z) = (*s.first()?, *z.first()?);
            return Some(qv.iter().map(|&v| (v - z) as f32 * s).collect());
        };
        let dims = q.dims();
        let axis = usize::try_from(if axis < 0 {
            axis + dims.len() as i64
        } else {
            axis
        })
        .ok()?;
        let n = *dims.get(axis)?;
        if n != s.len() || z.len() != n {
            return None;
        }
        let inner: usize = dims[axis + 1..].iter().product();
        Some(
            qv.iter()
                .enumerate()
                .map(|(i, &v)| {
                    let c = (i / inner) % n;
                    (v - z[c]) as f32 * s[c]
                })
                .collect(),
        )
    }
}

/// An initializer a correction replaced, and the layer it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct Original {
    /// The layer whose weight or bias changed.
    pub id: NodeId,
    /// The value changed, and its tensor before.
    pub value: ValueId,
    pub tensor: Tensor,
}

/// `model` with every `original` whose layer is in `float` put back: a
/// layer that stays float computes with its exact weights and bias.
pub(crate) fn put_back<'a>(
    model: &Model,
    originals: impl IntoIterator<Item = &'a Original>,
    float: &BTreeMap<NodeId, String>,
) -> Model {
    let mut m = model.clone();
    for o in originals.into_iter().filter(|o| float.contains_key(&o.id)) {
        m.graph.set_initializer(o.value, o.tensor.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(scales: Vec<f32>, zero_points: Vec<i64>, axis: Option<i64>) -> Grid {
        Grid {
            scales,
            zero_points,
            qtype: Some(QType::Int8),
            axis,
        }
    }

    #[test]
    fn dequantizes_per_tensor_and_per_axis() {
        let q = Tensor::from_i8(vec![2, 3], &[1, -2, 3, 4, 5, -6]);
        let one = grid(vec![0.5], vec![1], None);
        assert_eq!(
            one.dequantize(&q),
            Some(vec![0.0, -1.5, 1.0, 1.5, 2.0, -3.5])
        );
        // Axis 1 (and -1): one scale per column.
        let cols = grid(vec![1.0, 2.0, 0.5], vec![0, 1, 0], Some(-1));
        assert_eq!(
            cols.dequantize(&q),
            Some(vec![1.0, -6.0, 1.5, 4.0, 8.0, -3.0])
        );
        // Axis 0: one per row.
        let rows = grid(vec![1.0, 0.25], vec![0, 0], Some(0));
        assert_eq!(
            rows.dequantize(&q),
            Some(vec![1.0, -2.0, 3.0, 1.0, 1.25, -1.5])
        );
        // Scales that do not match the axis.
        assert_eq!(
            grid(vec![1.0, 2.0], vec![0, 0], Some(1)).dequantize(&q),
            None
        );
    }
}
