//! The graph that measures a layer's input Gram matrix, and the layers it
//! is measured for.
//!
//! [`gram_probe`] appends, per layer, the nodes that compute `Σ x xᵀ` of
//! one sample's inputs (a Conv's receptive fields by a one-hot depthwise
//! Conv, widened in stride; a MatMul's rows), so tract computes it in the
//! pass that runs the model. [`fused_probes`] puts them into the
//! calibration pass: every layer GPTQ may round (a Conv, Gemm or MatMul
//! whose weight is a float initializer it alone reads; the plan, which
//! needs the ranges, is not known yet), up to a budget of entries, so the
//! samples are run once for both; GPTQ then measures only the layers left
//! out (`round_weights`' passes).

use super::{Layout, MAX_COLUMNS, MAX_POSITIONS};
use crate::calibrate::samples::{Sample, SampleSource};
use crate::error::Result;
use crate::ir::node::attr;
use crate::ir::types::static_shape;
use crate::ir::{Graph, Model, Node, NodeId, Tensor, ValueId};

/// Where a layer's Gram matrix comes from: its input and weight geometry.
#[derive(Clone, Debug)]
pub(super) struct GramShape {
    pub id: NodeId,
    pub input: ValueId,
    pub layout: Layout,
    pub rows: usize,
    /// Per group (Conv `group`; 1 otherwise).
    pub columns: usize,
    pub groups: usize,
    pub dims: Vec<usize>,
}

impl GramShape {
    /// Entries of its `H` (all groups).
    pub fn entries(&self) -> usize {
        self.groups * self.columns * self.columns
    }
}

/// The Gram geometry of Conv/Gemm/MatMul `n` (input `x`, weight `wv` =
/// `wt`): `None` when it has none (another op, a Conv weight of rank < 3),
/// `Err(reason)` when GPTQ leaves it to nearest rounding whatever the plan.
pub(super) fn gram_shape(
    g: &Graph,
    id: NodeId,
    n: &Node,
    x: ValueId,
    wv: ValueId,
    wt: &Tensor,
) -> Result<Option<std::result::Result<GramShape, String>>> {
    if !matches!(n.op_type.as_str(), "Conv" | "Gemm" | "MatMul") {
        return Ok(None);
    }
    if g.value(wv).consumers().len() != 1 || g.has_implicit_uses(wv) {
        return Ok(Some(Err("its weight is shared".into())));
    }
    let dims = wt.dims().to_vec();
    let trans_b = n.is("Gemm") && n.get_int("transB")?.unwrap_or(0) != 0;
    if n.is("Gemm") && n.get_int("transA")?.unwrap_or(0) != 0 {
        return Ok(Some(Err("Gemm with transA".into())));
    }
    let (layout, rows, columns, groups) = match n.op_type.as_str() {
        "Conv" => {
            let groups = n.get_int("group")?.unwrap_or(1).max(1) as usize;
            let per: usize = dims.iter().skip(1).product();
            if dims.len() < 3 || !dims[0].is_multiple_of(groups) {
                return Ok(None);
            }
            (Layout::RowsFirst, dims[0], per, groups)
        }
        _ if dims.len() != 2 => return Ok(Some(Err("its weight is not 2-D".into()))),
        _ if trans_b => (Layout::RowsFirst, dims[0], dims[1], 1),
        _ => (Layout::ColumnsFirst, dims[1], dims[0], 1),
    };
    if columns > MAX_COLUMNS {
        return Ok(Some(Err(format!(
            "{columns} inputs per output channel (more than {MAX_COLUMNS})"
        ))));
    }
    Ok(Some(Ok(GramShape {
        id,
        input: x,
        layout,
        rows,
        columns,
        groups,
        dims,
    })))
}

/// The calibration pass's model with Gram probes, and what they measure.
pub struct FusedProbes {
    /// The prepared model with the probes appended (the same tensors
    /// besides).
    pub model: Model,
    /// Each probe's output (to be summed over the samples) and the layer
    /// (node name) it measures.
    pub outputs: Vec<String>,
    pub nodes: Vec<String>,
}

/// `fp32` with the Gram probes of every layer GPTQ may round, in node
/// order while their entries fit in `budget` (each summed once per block of
/// samples in calibration), or `None` when none does.
pub fn fused_probes(
    fp32: &Model,
    source: &dyn SampleSource,
    budget: usize,
) -> Result<Option<FusedProbes>> {
    let g = &fp32.graph;
    let mut shapes = Vec::new();
    let mut used = 0;
    for (id, n) in g.nodes() {
        let (Some(x), Some(wv)) = (n.input(0), n.input(1)) else {
            continue;
        };
        let Some(wt) = g.initializer(wv) else {
            continue;
        };
        if !n.domain.is_empty()
            || g.initializer(x).is_some()
            || wt.dtype() != crate::ir::DataType::Float
        {
            continue;
        }
        if let Some(Ok(shape)) = gram_shape(g, id, n, x, wv, wt)? {
            if used + shape.entries() <= budget {
                used += shape.entries();
                shapes.push((n.name.clone(), shape));
            }
        }
    }
    if shapes.is_empty() || source.is_empty() {
        return Ok(None);
    }
    let undeclared = shapes.iter().any(|(_, s)| {
        g.node(s.id).is_some_and(|n| {
            n.is("Conv") && n.output(0).is_none_or(|y| static_shape(g, y).is_none())
        })
    });
    let shaped = if undeclared {
        shapes_at_sample(fp32, &source.load(0)?)
    } else {
        None
    };
    let mut model = fp32.clone();
    let (mut outputs, mut nodes) = (Vec::new(), Vec::new());
    for (k, (name, shape)) in shapes.iter().enumerate() {
        let probe = gram_probe(
            &mut model.graph,
            k,
            shape,
            shaped.as_ref().map(|m| &m.graph),
        )?;
        if let Some(out) = probe {
            outputs.push(out);
            nodes.push(name.clone());
        }
    }
    Ok(Some(FusedProbes {
        model,
        outputs,
        nodes,
    }))
}

/// Appends to `g` the graph that computes `Σ x xᵀ` of `t`'s inputs for one
/// sample: `[groups, columns, columns]`. Returns its name.
pub(super) fn gram_probe(
    g: &mut Graph,
    k: usize,
    t: &GramShape,
    shaped: Option<&Graph>,
) -> Result<Option<String>> {
    let Some(n) = g.node(t.id).cloned() else {
        return Ok(None);
    };
    let base = format!("__onnxq_gptq/{k}");
    let mut step = 0;
    let mut add = |g: &mut Graph, op: &str, inputs: Vec<ValueId>, attrs: Vec<_>| -> ValueId {
        step += 1;
        let y = g.new_value(&format!("{base}/{step}/{op}"));
        let mut node = Node::new(format!("{base}/{step}/{op}"), op);
        node.inputs = inputs.into_iter().map(Some).collect();
        node.outputs = vec![Some(y)];
        node.attrs = attrs;
        g.insert_node(node);
        y
    };
    let shape = |g: &mut Graph, name: &str, s: &[i64]| {
        g.add_initializer(
            &format!("{base}/{name}"),
            Tensor::from_i64(vec![s.len()], s),
        )
    };
    let rows = if n.is("Conv") {
        // Receptive fields: a depthwise Conv with one output channel per
        // (input channel, kernel position), one-hot, so channel c·P + p of
        // its output is input channel c seen at kernel offset p. Group gi's
        // columns are then channels gi·K … (gi+1)·K, in the weight's order.
        let kernel: Vec<usize> = t.dims[2..].to_vec();
        let p: usize = kernel.iter().product();
        let channels = t.columns * t.groups / p;
        let mut onehot = vec![0f32; channels * p * p];
        for c in 0..channels {
            for q in 0..p {
                onehot[(c * p + q) * p + q] = 1.0;
            }
        }
        let mut wdims = vec![channels * p, 1];
        wdims.extend(&kernel);
        let e = g.add_initializer(&format!("{base}/onehot"), Tensor::from_f32(wdims, &onehot));
        let rank = kernel.len();
        let strides = n.get_ints("strides")?.unwrap_or_else(|| vec![1; rank]);
        let same = n
            .get_string("auto_pad")?
            .is_some_and(|a| a.starts_with("SAME"));
        // A wider stride keeps a subset of the same receptive fields
        // (explicit pads do not depend on the stride; SAME pads do).
        // The output's shape as declared, or at the first sample's input
        // dimensions (symbolic dims: the PaddleOCR exports).
        let declared = n.output(0).and_then(|y| static_shape(g, y));
        let at_sample = || {
            let sg = shaped?;
            let y = sg.find_value(g.value_name(n.output(0)?))?;
            static_shape(sg, y)
        };
        let widen = match (same, declared.or_else(at_sample)) {
            (false, Some(y)) if y.len() == rank + 2 => {
                let spatial = &y[2..];
                let mut m = 1usize;
                while spatial.iter().map(|d| d.div_ceil(m)).product::<usize>() > MAX_POSITIONS {
                    m += 1;
                }
                m
            }
            _ => 1,
        };
        let mut attrs = vec![
            attr::int("group", channels as i64),
            attr::ints(
                "kernel_shape",
                &kernel.iter().map(|&k| k as i64).collect::<Vec<_>>(),
            ),
            attr::ints(
                "strides",
                &strides
                    .iter()
                    .map(|&s| s * widen as i64)
                    .collect::<Vec<_>>(),
            ),
        ];
        for a in ["pads", "dilations", "auto_pad"] {
            if let Some(v) = n.attr(a) {
                attrs.push(v.clone());
            }
        }
        let patches = add(g, "Conv", vec![t.input, e], attrs);
        // [N, g·K, L…] → [g, K, N·L]
        let s1 = shape(g, "s1", &[0, t.groups as i64, t.columns as i64, -1]);
        let r1 = add(g, "Reshape", vec![patches, s1], vec![]);
        let tr = add(
            g,
            "Transpose",
            vec![r1],
            vec![attr::ints("perm", &[1, 2, 0, 3])],
        );
        let s2 = shape(g, "s2", &[t.groups as i64, t.columns as i64, -1]);
        add(g, "Reshape", vec![tr, s2], vec![])
    } else {
        // [… , K] → [1, K, L]
        let s1 = shape(g, "s1", &[-1, t.columns as i64]);
        let r1 = add(g, "Reshape", vec![t.input, s1], vec![]);
        let tr = add(g, "Transpose", vec![r1], vec![attr::ints("perm", &[1, 0])]);
        let s2 = shape(g, "s2", &[1, t.columns as i64, -1]);
        add(g, "Reshape", vec![tr, s2], vec![])
    };
    let rows_t = add(
        g,
        "Transpose",
        vec![rows],
        vec![attr::ints("perm", &[0, 2, 1])],
    );
    let gram = add(g, "MatMul", vec![rows, rows_t], vec![]);
    Ok(Some(g.value_name(gram).to_string()))
}

/// `fp32` with its inputs fixed to `sample`'s dimensions and the shapes of
/// its values inferred again (tract), or `None` when that fails (the
/// strides are then not widened: slower, the same result).
pub(super) fn shapes_at_sample(fp32: &Model, sample: &Sample) -> Option<Model> {
    use crate::onnx::proto::tensor_shape_proto::{dimension, Dimension};
    use crate::onnx::proto::{type_proto, TensorShapeProto};
    let mut proto = fp32.to_proto().ok()?;
    let g = proto.graph.as_mut()?;
    g.value_info.clear();
    for input in &mut g.input {
        let Some((_, t)) = sample.iter().find(|(n, _)| n == input.name()) else {
            continue;
        };
        if let Some(type_proto::Value::TensorType(tt)) =
            input.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            tt.shape = Some(TensorShapeProto {
                dim: t
                    .dims()
                    .iter()
                    .map(|&d| Dimension {
                        value: Some(dimension::Value::DimValue(d as i64)),
                        ..Default::default()
                    })
                    .collect(),
            });
        }
    }
    let mut m = Model::from_proto(&proto).ok()?;
    crate::passes::shapes::infer_shapes(&mut m).ok()?;
    Some(m)
}
