//! LRN written out in elementwise ops for tract, whose own LRN computes
//! each element with ndarray's indexed access and a `powf` (GoogLeNet's
//! two LRNs were 38% of its whole `quantize`, in calibration, the
//! references and the gate's float regions; session 27).
//!
//! ONNX LRN (opset 1 onward): `Y = X / (bias + alpha / size ·
//! square_sum)^beta`, `square_sum[n, c, …] = Σ X[n, i, …]²` for `i` in
//! `[c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉] ∩ [0, C)`. Written out, rank- and
//! channel-count-agnostic (only the model's own graph is read, no shapes):
//! the squares padded along the channels with `lo = ⌊(size−1)/2⌋` zero
//! planes before and `hi = ⌈(size−1)/2⌉` after (zero planes made as
//! `a − a` of the first channel `a`: no shape needed), the window sum as
//! `size` channel slices added, then the scale, the power (`β` = 0.75 as
//! `√b·√√b`, 0.5 as `√b`: tract's Pow calls `powf` per element) and the
//! division.
//! The same function up to float rounding (the window sum's order); a NaN
//! or infinity in a sample's first channel spreads to the padded windows.
//!
//! Applied to the models handed to tract only; the model onnxq writes
//! keeps its LRN. Needs opset 10 (Slice with inputs); the constants are
//! float32, cast like `X` from opset 15. Not where the declared shapes give
//! no more channels than `⌊(size−1)/2⌋` (a window of padding alone, which
//! tract's Concat fails to run; no real LRN is that wide), nor, below
//! opset 15, where the declared type is not float32.

use crate::ir::node::attr;
use crate::ir::Tensor;
use crate::onnx::proto::{ModelProto, NodeProto};
use crate::onnx::tensor::tensor_to_proto;

/// `model` with its top-level LRN nodes written out, `None` when it has
/// none (or its opset is below 10).
pub(super) fn expand(model: &ModelProto) -> Option<ModelProto> {
    let g = model.graph.as_ref()?;
    if !g.node.iter().any(is_lrn) {
        return None;
    }
    let opset = model
        .opset_import
        .iter()
        .filter(|o| {
            o.domain
                .as_deref()
                .is_none_or(|d| d.is_empty() || d == "ai.onnx")
        })
        .filter_map(|o| o.version)
        .max()?;
    if opset < 10 {
        return None;
    }
    let mut out = model.clone();
    let graph = out.graph.as_mut()?;
    let mut nodes = Vec::with_capacity(graph.node.len());
    for (k, n) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        if !is_lrn(&n) || left_as_is(graph, &n, opset) {
            nodes.push(n);
            continue;
        }
        match written_out(&n, k, opset) {
            Some((more, inits)) => {
                nodes.extend(more);
                graph.initializer.extend(inits);
            }
            None => nodes.push(n),
        }
    }
    graph.node = nodes;
    Some(out)
}

/// Whether LRN node `n` is left to tract's own: when the graph's
/// declared shapes give it no more channels than its window reaches
/// before the first (`⌊(size−1)/2⌋`: a window of padding alone, which
/// tract's Concat fails to run), or, below opset 15 (no CastLike for the
/// float32 constants), a declared type other than float32.
fn left_as_is(g: &crate::onnx::proto::GraphProto, n: &NodeProto, opset: i64) -> bool {
    use crate::onnx::proto::tensor_shape_proto::dimension::Value as Dim;
    use crate::onnx::proto::type_proto::Value;
    let (Some(x), Some(size)) = (n.input.first(), get(n, "size").and_then(|a| a.i)) else {
        return true;
    };
    let declared = g
        .input
        .iter()
        .chain(&g.value_info)
        .chain(&g.output)
        .find(|v| v.name.as_deref() == Some(x.as_str()))
        .and_then(|v| match v.r#type.as_ref()?.value.as_ref()? {
            Value::TensorType(t) => Some(t),
            _ => None,
        });
    let Some(t) = declared else {
        return false;
    };
    let channels = t
        .shape
        .as_ref()
        .and_then(|s| s.dim.get(1)?.value.clone())
        .and_then(|d| match d {
            Dim::DimValue(c) => Some(c),
            _ => None,
        });
    let not_float = t.elem_type.is_some_and(|e| e != 1);
    channels.is_some_and(|c| c <= (size - 1) / 2) || (not_float && opset < 15)
}

fn is_lrn(n: &NodeProto) -> bool {
    n.op_type.as_deref() == Some("LRN") && n.domain.as_deref().is_none_or(|d| d.is_empty())
}

fn get<'a>(n: &'a NodeProto, name: &str) -> Option<&'a crate::onnx::proto::AttributeProto> {
    n.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

/// The nodes and initializers computing LRN node `n` (the `k`-th of its
/// graph); `None` when its attributes are not as the specification says.
fn written_out(
    n: &NodeProto,
    k: usize,
    opset: i64,
) -> Option<(Vec<NodeProto>, Vec<crate::onnx::proto::TensorProto>)> {
    let (x, y) = (n.input.first()?.clone(), n.output.first()?.clone());
    let size = get(n, "size")?.i?;
    if size < 1 {
        return None;
    }
    let float = |name: &str, default: f32| get(n, name).and_then(|a| a.f).unwrap_or(default);
    let (alpha, beta, bias) = (
        float("alpha", 1e-4),
        float("beta", 0.75),
        float("bias", 1.0),
    );
    let (lo, hi) = ((size - 1) / 2, size / 2);
    let p = format!("{}/onnxq_lrn{k}", n.name.as_deref().unwrap_or("LRN"));
    let v = |s: &str| format!("{p}/{s}");
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut node = |op: &str, inputs: &[&str], output: &str, attrs: Vec<_>| {
        nodes.push(NodeProto {
            name: Some(format!("{p}/{op}/{output}")),
            op_type: Some(op.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute: attrs,
            ..Default::default()
        });
    };
    let mut init = |name: &str, t: Tensor| inits.push(tensor_to_proto(name, &t));
    let ints = |v: &[i64]| Tensor::from_i64(vec![v.len()], v);
    let scalar = |v: f32| Tensor::from_f32(vec![], &[v]);
    init(&v("zero"), ints(&[0]));
    init(&v("one"), ints(&[1]));
    init(&v("axis"), ints(&[1]));
    // Zero planes, `lo` before and `hi` after the squares.
    node(
        "Slice",
        &[&x, &v("zero"), &v("one"), &v("axis")],
        &v("first"),
        vec![],
    );
    node("Mul", &[&x, &x], &v("squares"), vec![]);
    // Each plane its own value: tract's Concat fails on an input repeated.
    let mut parts: Vec<String> = Vec::new();
    for i in 0..lo + hi {
        let plane = v(&format!("plane{i}"));
        node("Sub", &[&v("first"), &v("first")], &plane, vec![]);
        parts.push(plane);
    }
    parts.insert(lo as usize, v("squares"));
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    node("Concat", &refs, &v("padded"), vec![attr::int("axis", 1)]);
    // Window j covers padded channels [j, j + C): it ends hi + lo − j
    // channels before the end.
    let mut sum = String::new();
    for j in 0..size {
        let from = v(&format!("from{j}"));
        init(&from, ints(&[j]));
        let until = v(&format!("until{j}"));
        let back = size - 1 - j;
        init(&until, ints(&[if back == 0 { i64::MAX } else { -back }]));
        let slice = v(&format!("window{j}"));
        node(
            "Slice",
            &[&v("padded"), &from, &until, &v("axis")],
            &slice,
            vec![],
        );
        sum = if j == 0 {
            slice
        } else {
            let s = v(&format!("sum{j}"));
            node("Add", &[&sum, &slice], &s, vec![]);
            s
        };
    }
    // alpha / size, bias and beta, in X's type from opset 15.
    let mut constant = |name: &str, value: f32| -> String {
        let c = v(name);
        init(&c, scalar(value));
        if opset >= 15 {
            let cast = v(&format!("{name}_like"));
            node("CastLike", &[&c, &x], &cast, vec![]);
            cast
        } else {
            c
        }
    };
    let (scale, shift) = (
        constant("scale", alpha / size as f32),
        constant("bias", bias),
    );
    // tract's Pow calls powf per element: the usual 0.75 (AlexNet,
    // GoogLeNet, CaffeNet) and 0.5 as square roots instead.
    let power = (beta != 0.75 && beta != 0.5).then(|| constant("beta", beta));
    node("Mul", &[&sum, &scale], &v("scaled"), vec![]);
    node("Add", &[&v("scaled"), &shift], &v("base"), vec![]);
    match power {
        Some(power) => node("Pow", &[&v("base"), &power], &v("denominator"), vec![]),
        None if beta == 0.5 => node("Sqrt", &[&v("base")], &v("denominator"), vec![]),
        None => {
            node("Sqrt", &[&v("base")], &v("root"), vec![]);
            node("Sqrt", &[&v("root")], &v("fourth"), vec![]);
            node(
                "Mul",
                &[&v("root"), &v("fourth")],
                &v("denominator"),
                vec![],
            );
        }
    }
    node("Div", &[&x, &v("denominator")], &y, vec![]);
    Some((nodes, inits))
}

#[cfg(test)]
mod tests {
    use super::super::Runner;
    use crate::ir::node::attr;
    use crate::ir::tensor::DataType;
    use crate::ir::Tensor;
    use crate::passes::testutil::{model, node, uniform};

    /// LRN as the ONNX specification defines it, in f64.
    fn reference(
        x: &[f32],
        dims: &[usize],
        size: i64,
        (alpha, beta, bias): (f32, f32, f32),
    ) -> Vec<f32> {
        let (c, inner) = (dims[1], dims[2..].iter().product::<usize>());
        let (lo, hi) = ((size - 1) / 2, size / 2);
        let mut y = vec![0.0; x.len()];
        for (i, out) in y.iter_mut().enumerate() {
            let (n, ch, p) = (i / (c * inner), (i / inner) % c, i % inner);
            let from = (ch as i64 - lo).max(0) as usize;
            let to = (ch as i64 + hi).min(c as i64 - 1) as usize;
            let sum: f64 = (from..=to)
                .map(|j| f64::from(x[(n * c + j) * inner + p]).powi(2))
                .sum();
            let d = (f64::from(bias) + f64::from(alpha) / size as f64 * sum).powf(f64::from(beta));
            *out = (f64::from(x[i]) / d) as f32;
        }
        y
    }

    /// The written-out LRN computes the specification's LRN, at ranks 3
    /// and 4, odd and even sizes, a window wider than the channels, and
    /// with the constants cast like X (opset 15 and on).
    #[test]
    fn written_out_lrn_computes_the_specification() {
        for (opset, dims, size) in [
            (13, vec![2usize, 7, 3, 4], 5i64),
            (17, vec![2, 7, 3, 4], 4),
            (11, vec![1, 6, 5], 3),
            (13, vec![1, 12, 2, 2], 9),
            (13, vec![1, 3, 2, 2], 5),
            // A window past twice the channels: tract's own LRN.
            (13, vec![1, 3, 2, 2], 9),
            (13, vec![1, 4, 2, 2], 1),
        ] {
            let beta = [0.6f32, 0.75, 0.5][size as usize % 3];
            let consts = (2e-3f32, beta, 1.5f32);
            let dims_i: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
            let m = model(
                opset,
                &[("x", &dims_i)],
                &["y"],
                vec![node(
                    "LRN",
                    "lrn",
                    &["x"],
                    &["y"],
                    vec![
                        attr::int("size", size),
                        attr::float("alpha", consts.0),
                        attr::float("beta", consts.1),
                        attr::float("bias", consts.2),
                    ],
                )],
                vec![],
            );
            let proto = m.to_proto().unwrap();
            let written = super::expand(&proto)
                .is_some_and(|p| p.graph.unwrap().node.iter().all(|n| n.op_type() != "LRN"));
            assert_eq!(
                written,
                size < 2 * dims[1] as i64 + 1,
                "{dims:?} size {size}"
            );
            let n: usize = dims.iter().product();
            let x: Vec<f32> = uniform(n, 7).iter().map(|&v| (v * 40.0) as f32).collect();
            let runner =
                Runner::new(&proto, &[("x".into(), DataType::Float, dims.clone())], None).unwrap();
            let got = runner
                .run(&[("x".into(), Tensor::from_f32(dims.clone(), &x))])
                .unwrap()[0]
                .to_f32_vec()
                .unwrap();
            let want = reference(&x, &dims, size, consts);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{dims:?} size {size}: {g} vs {w}"
                );
            }
        }
    }
}
