//! Constant weights of QDQ models dequantized before tract reads them.
//!
//! A QDQ model (the `--format qdq` output, the automatic mode's and
//! `onnxq sensitivity`'s fake-quantized variants) carries each weight as
//! `DequantizeLinear(int8 initializer, scale, zero point)`. tract reads
//! DequantizeLinear as an expansion (Cast, Sub, Mul) and evaluates it on
//! the whole weight at analysis time, through its generic (scalar)
//! element-wise loops: on ResNet-50's 25M weights, about a second of every
//! plan of such a model, on one thread (session 28).
//!
//! Here each top-level DequantizeLinear whose inputs are all initializers
//! (8- or 16-bit integers, or int32 without a zero point, as biases are;
//! float32 scales; per tensor or per axis, no `block_size`) becomes a
//! float32 initializer, computed by the executor's DequantizeLinear
//! ([`crate::exec::kernels::dequantize_tensor`]: `(x − zero_point) · scale`
//! in float32, the exact integer difference times the scale, one rounding):
//! the values tract's own expansion computes, bit for bit. The inputs no
//! node reads any more are dropped. Applied to the models handed to tract
//! only.

use crate::exec::kernels::{dequantize_tensor, Params};
use crate::ir::DataType;
use crate::onnx::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::onnx::tensor::{tensor_from_proto, tensor_to_proto};
use std::collections::{HashMap, HashSet};

/// `model` with its constant weight DequantizeLinear nodes folded, `None`
/// when it has none.
pub(super) fn dequantized_weights(model: &ModelProto) -> Option<ModelProto> {
    let g = model.graph.as_ref()?;
    // An initializer also listed as a graph input is only a default the
    // caller may override: such weights stay as they are.
    let fed: HashSet<&str> = g.input.iter().filter_map(|i| i.name.as_deref()).collect();
    let inits: HashMap<&str, &TensorProto> = g
        .initializer
        .iter()
        .filter_map(|t| Some((t.name.as_deref()?, t)))
        .filter(|(name, _)| !fed.contains(name))
        .collect();
    // A graph output stays the output of a node.
    let outputs: HashSet<&str> = g.output.iter().filter_map(|o| o.name.as_deref()).collect();
    let folded: Vec<(usize, TensorProto)> = g
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.output.iter().any(|o| outputs.contains(o.as_str())))
        .filter_map(|(k, n)| Some((k, fold(n, &inits)?)))
        .collect();
    if folded.is_empty() {
        return None;
    }
    let mut out = model.clone();
    let graph = out.graph.as_mut()?;
    let gone: HashSet<usize> = folded.iter().map(|(k, _)| *k).collect();
    graph.node = std::mem::take(&mut graph.node)
        .into_iter()
        .enumerate()
        .filter(|(k, _)| !gone.contains(k))
        .map(|(_, n)| n)
        .collect();
    graph.initializer.extend(folded.into_iter().map(|(_, t)| t));
    let mut read: HashSet<String> = graph.input.iter().filter_map(|i| i.name.clone()).collect();
    names_read(graph, &mut read);
    graph
        .initializer
        .retain(|t| t.name.as_deref().is_some_and(|n| read.contains(n)));
    Some(out)
}

/// The float32 initializer DequantizeLinear node `n` computes from
/// `inits`, when it reads only initializers of the kinds folded here.
fn fold(n: &NodeProto, inits: &HashMap<&str, &TensorProto>) -> Option<TensorProto> {
    if n.op_type.as_deref() != Some("DequantizeLinear")
        || n.domain.as_deref().is_some_and(|d| !d.is_empty())
        || n.output.len() != 1
    {
        return None;
    }
    let mut axis = 1;
    for a in &n.attribute {
        match a.name.as_deref() {
            Some("axis") => axis = a.i?,
            Some("block_size") if a.i.unwrap_or(0) == 0 => {}
            _ => return None,
        }
    }
    let get = |k: usize| -> Option<crate::ir::Tensor> {
        let name = n.input.get(k).filter(|s| !s.is_empty())?;
        tensor_from_proto(inits.get(name.as_str())?).ok()
    };
    let x = get(0)?;
    let scale = get(1)?;
    let integer = matches!(
        x.dtype(),
        DataType::Int8 | DataType::Uint8 | DataType::Int16 | DataType::Uint16 | DataType::Int32
    );
    if !integer || scale.dtype() != DataType::Float {
        return None;
    }
    let zero_point: Vec<i32> = match n.input.get(2).filter(|s| !s.is_empty()) {
        Some(_) => {
            let z = get(2)?;
            (z.dtype() == x.dtype()).then_some(())?;
            z.to_i64_vec().ok()?.iter().map(|&v| v as i32).collect()
        }
        None => vec![0; scale.len()],
    };
    // int32 (biases): only without a zero point, so the difference cannot
    // overflow.
    if x.dtype() == DataType::Int32 && zero_point.iter().any(|&z| z != 0) {
        return None;
    }
    let params = Params::new(scale.to_f32_vec().ok()?, zero_point, "x_scale").ok()?;
    let rank = x.dims().len() as i64;
    let axis = if params.scale.len() > 1 {
        let a = if axis < 0 { axis + rank } else { axis };
        usize::try_from(a).ok().filter(|&a| a < x.dims().len())?
    } else if scale.dims().is_empty() || scale.len() == 1 {
        0
    } else {
        return None;
    };
    let y = dequantize_tensor(&x, &params, axis).ok()?;
    let t = crate::ir::Tensor::from_f32(x.dims().to_vec(), &y);
    Some(tensor_to_proto(n.output.first()?, &t))
}

/// Every name a node of `g` (or of its subgraphs) reads, and `g`'s
/// outputs.
fn names_read(g: &GraphProto, read: &mut HashSet<String>) {
    for n in &g.node {
        read.extend(n.input.iter().cloned());
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                names_read(sub, read);
            }
        }
    }
    read.extend(g.output.iter().filter_map(|o| o.name.clone()));
}

#[cfg(test)]
mod tests {
    use super::super::Runner;
    use super::dequantized_weights;
    use crate::ir::node::attr;
    use crate::ir::tensor::DataType;
    use crate::ir::Tensor;
    use crate::onnx::tensor::tensor_from_proto;
    use crate::passes::testutil::{model, node};

    /// Weight and bias DequantizeLinear nodes become the float32
    /// initializers `(q − zp) · scale` (their integer inputs dropped), the
    /// activation's, an int32 one with a zero point, one reading a graph
    /// input's default and one making a graph output stay; tract runs the
    /// folded model to the same outputs.
    #[test]
    fn constant_dequantize_nodes_become_float_initializers() {
        let w: Vec<i32> = vec![-128, -3, 0, 5, 127, 64, -64, 1, 2, 3, 4, -5];
        let (ws, wz) = (vec![0.5f32, 0.01, 0.25], vec![-1, 0, 3]);
        let b = vec![1000i32, -7, 123_456];
        let (x_scale, bs) = (0.05f32, vec![0.02f32, 0.003, 1e-4]);
        let m = model(
            13,
            &[("x", &[2, 4]), ("d", &[3])],
            &["y", "e", "f", "g"],
            vec![
                node("QuantizeLinear", "q", &["x", "xs", "xz"], &["xq"], vec![]),
                node(
                    "DequantizeLinear",
                    "dqx",
                    &["xq", "xs", "xz"],
                    &["xd"],
                    vec![],
                ),
                node(
                    "DequantizeLinear",
                    "dqw",
                    &["w", "ws", "wz"],
                    &["wd"],
                    vec![attr::int("axis", 0)],
                ),
                node(
                    "DequantizeLinear",
                    "dqb",
                    &["b", "bs"],
                    &["bd"],
                    vec![attr::int("axis", 0)],
                ),
                node(
                    "Gemm",
                    "gemm",
                    &["xd", "wd", "bd"],
                    &["y"],
                    vec![attr::int("transB", 1)],
                ),
                node(
                    "DequantizeLinear",
                    "dqe",
                    &["e32", "es", "ez"],
                    &["e"],
                    vec![],
                ),
                node("DequantizeLinear", "dqd", &["d", "ds"], &["f"], vec![]),
                node("DequantizeLinear", "dqo", &["o8", "ds"], &["g"], vec![]),
            ],
            vec![
                ("xs", Tensor::from_f32(vec![], &[x_scale])),
                (
                    "xz",
                    Tensor::from_ints(DataType::Uint8, vec![], &[128]).unwrap(),
                ),
                (
                    "w",
                    Tensor::from_ints(DataType::Int8, vec![3, 4], &w).unwrap(),
                ),
                ("ws", Tensor::from_f32(vec![3], &ws)),
                (
                    "wz",
                    Tensor::from_ints(DataType::Int8, vec![3], &wz).unwrap(),
                ),
                ("b", Tensor::from_i32(vec![3], &b)),
                ("bs", Tensor::from_f32(vec![3], &bs)),
                ("e32", Tensor::from_i32(vec![2], &[5, -5])),
                ("es", Tensor::from_f32(vec![], &[0.5])),
                ("ez", Tensor::from_i32(vec![], &[1])),
                (
                    "d",
                    Tensor::from_ints(DataType::Int8, vec![3], &[1, 2, 3]).unwrap(),
                ),
                ("ds", Tensor::from_f32(vec![], &[0.5])),
                (
                    "o8",
                    Tensor::from_ints(DataType::Int8, vec![2], &[-4, 6]).unwrap(),
                ),
            ],
        );
        let proto = m.to_proto().unwrap();
        let folded = dequantized_weights(&proto).unwrap();
        let g = folded.graph.as_ref().unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.name()).collect();
        assert_eq!(ops, ["q", "dqx", "gemm", "dqe", "dqd", "dqo"]);
        let init = |name: &str| {
            g.initializer
                .iter()
                .find(|t| t.name() == name)
                .map(|t| tensor_from_proto(t).unwrap())
        };
        assert!(init("w").is_none() && init("b").is_none() && init("ws").is_none());
        let want_w: Vec<f32> = (0..12)
            .map(|i| (w[i] - wz[i / 4]) as f32 * ws[i / 4])
            .collect();
        assert_eq!(init("wd").unwrap().to_f32_vec().unwrap(), want_w);
        let want_b: Vec<f32> = (0..3).map(|i| b[i] as f32 * bs[i]).collect();
        assert_eq!(init("bd").unwrap().to_f32_vec().unwrap(), want_b);
        assert!(init("e32").is_some() && init("d").is_some());

        let x = [0.3f32, -1.2, 2.0, 0.7, -0.05, 1.0, 6.0, -6.5];
        let runner = Runner::new(
            &proto,
            &[
                ("x".into(), DataType::Float, vec![2, 4]),
                ("d".into(), DataType::Int8, vec![3]),
            ],
            None,
        )
        .unwrap();
        let d = Tensor::from_ints(DataType::Int8, vec![3], &[4, 5, 6]).unwrap();
        let got = runner
            .run(&[
                ("x".into(), Tensor::from_f32(vec![2, 4], &x)),
                ("d".into(), d),
            ])
            .unwrap();
        let xd: Vec<f64> = x
            .iter()
            .map(|&v| {
                let q = ((v / x_scale).round_ties_even() + 128.0).clamp(0.0, 255.0);
                f64::from((q - 128.0) * x_scale)
            })
            .collect();
        let y = got[0].to_f32_vec().unwrap();
        for r in 0..2 {
            for c in 0..3 {
                let want: f64 = (0..4)
                    .map(|k| xd[r * 4 + k] * f64::from(want_w[c * 4 + k]))
                    .sum::<f64>()
                    + f64::from(want_b[c]);
                let g = f64::from(y[r * 3 + c]);
                assert!(
                    (g - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "{g} vs {want}"
                );
            }
        }
        assert_eq!(got[1].to_f32_vec().unwrap(), [2.0, -3.0]);
        assert_eq!(got[3].to_f32_vec().unwrap(), [-2.0, 3.0]);
    }
}
