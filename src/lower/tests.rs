//! Each rewrite on hand-built QDQ graphs: what it matches (and that tract
//! computes the same values before and after), and what it must refuse.

use super::{lower, LowerOptions, Target};
use crate::ir::node::attr;
use crate::ir::{Model, Tensor};
use crate::onnx::proto::{AttributeProto, NodeProto};
use crate::passes::testutil::{inputs, model, node, ops, run};

/// A QDQ graph under construction.
#[derive(Default)]
struct B {
    nodes: Vec<NodeProto>,
    inits: Vec<(String, Tensor)>,
}

impl B {
    fn init(&mut self, name: &str, t: Tensor) -> String {
        self.inits.push((name.to_string(), t));
        name.to_string()
    }

    fn op(&mut self, op: &str, name: &str, ins: &[&str], out: &str, attrs: Vec<AttributeProto>) {
        self.nodes.push(node(op, name, ins, &[out], attrs));
    }

    /// Q(x) → DQ with uint8 scalar parameters; returns the dequantized name.
    fn act(&mut self, x: &str, s: f32, z: u8) -> String {
        let sv = self.init(&format!("{x}/s"), Tensor::from_f32(vec![], &[s]));
        let zv = self.init(&format!("{x}/z"), Tensor::from_u8(vec![], &[z]));
        self.q_dq(x, &sv, &zv)
    }

    fn q_dq(&mut self, x: &str, s: &str, z: &str) -> String {
        let (q, d) = (format!("{x}/q"), format!("{x}/d"));
        self.op("QuantizeLinear", &format!("{x}/Q"), &[x, s, z], &q, vec![]);
        self.op(
            "DequantizeLinear",
            &format!("{x}/DQ"),
            &[&q, s, z],
            &d,
            vec![],
        );
        d
    }

    /// An int8 weight, per channel on `axis` when `scales` has several.
    fn weight(&mut self, name: &str, dims: Vec<usize>, scales: &[f32], axis: i64) -> String {
        let n: usize = dims.iter().product();
        let v: Vec<i8> = (0..n).map(|i| ((i * 37 + 11) % 255) as i8).collect();
        let q = self.init(&format!("{name}/q"), Tensor::from_i8(dims, &v));
        let sd = if scales.len() == 1 {
            vec![]
        } else {
            vec![scales.len()]
        };
        let s = self.init(&format!("{name}/s"), Tensor::from_f32(sd.clone(), scales));
        let z = self.init(
            &format!("{name}/z"),
            Tensor::from_i8(sd, &vec![0; scales.len()]),
        );
        let d = format!("{name}/d");
        let attrs = if scales.len() > 1 {
            vec![attr::int("axis", axis)]
        } else {
            vec![]
        };
        self.op(
            "DequantizeLinear",
            &format!("{name}/DQ"),
            &[&q, &s, &z],
            &d,
            attrs,
        );
        d
    }

    /// An int32 bias at the given scales.
    fn bias(&mut self, name: &str, scales: &[f32]) -> String {
        let v: Vec<i32> = (0..scales.len() as i32).map(|i| 300 * i - 200).collect();
        let q = self.init(
            &format!("{name}/q"),
            Tensor::from_i32(vec![scales.len()], &v),
        );
        let s = self.init(
            &format!("{name}/s"),
            Tensor::from_f32(vec![scales.len()], scales),
        );
        let d = format!("{name}/d");
        self.op(
            "DequantizeLinear",
            &format!("{name}/DQ"),
            &[&q, &s],
            &d,
            vec![attr::int("axis", 0)],
        );
        d
    }

    fn build(self, opset: i64, ins: &[(&str, &[i64])], outs: &[&str]) -> Model {
        let inits = self
            .inits
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        model(opset, ins, outs, self.nodes, inits)
    }
}

fn lowered(m: &Model, target: Target) -> (Model, super::LowerReport) {
    let mut l = m.clone();
    let r = lower(&mut l, &LowerOptions { target }).unwrap();
    (l, r)
}

fn count(m: &Model, op: &str) -> usize {
    ops(m).iter().filter(|o| *o == op).count()
}

/// tract gives (almost) the same values before and after: within one output
/// step, and mostly equal.
fn assert_same_values(a: &Model, b: &Model, step: f32) {
    let x = inputs(a, 3);
    let (ya, yb) = (run(a, &x), run(b, &x));
    for (p, q) in ya.iter().zip(&yb) {
        let equal = p.iter().zip(q).filter(|(u, v)| u == v).count();
        assert!(equal * 100 >= p.len() * 95, "{equal}/{} equal", p.len());
        for (u, v) in p.iter().zip(q) {
            assert!((u - v).abs() <= step * 1.001, "{u} vs {v}");
        }
    }
}

/// x [1,2,6,6] → Conv(3 out, 3×3, per-channel) [→ Relu] → Q(y, zp) → DQ.
fn conv_graph(relu: bool, y_zp: u8, group: i64, bias_ok: bool) -> Model {
    let mut b = B::default();
    let (xs, ys) = (0.02f32, 0.05f32);
    let x = b.act("x", xs, 100);
    let cin = if group == 1 { 2 } else { 1 };
    let cout = if group == 1 { 3 } else { 2 };
    let ws: Vec<f32> = (0..cout).map(|c| 0.003 + 0.001 * c as f32).collect();
    let w = b.weight("w", vec![cout, cin, 3, 3], &ws, 0);
    let bs: Vec<f32> = ws
        .iter()
        .map(|s| if bias_ok { xs * s } else { 2.0 * xs * s })
        .collect();
    let bias = b.bias("b", &bs);
    let attrs = vec![
        attr::ints("pads", &[1, 0, 1, 0]),
        attr::ints("strides", &[2, 1]),
        attr::int("group", group),
    ];
    b.op("Conv", "conv", &[&x, &w, &bias], "c", attrs);
    let pre = if relu {
        b.op("Relu", "relu", &["c"], "r", vec![]);
        "r"
    } else {
        "c"
    };
    let s = b.init("y/s", Tensor::from_f32(vec![], &[ys]));
    let z = b.init("y/z", Tensor::from_u8(vec![], &[y_zp]));
    let d = b.q_dq(pre, &s, &z);
    b.op("Identity", "out", &[&d], "y", vec![]);
    b.build(13, &[("x", &[1, 2, 6, 6])], &["y"])
}

#[test]
fn conv_with_bias_and_absorbed_relu_becomes_qlinearconv() {
    let m = conv_graph(true, 0, 1, true);
    let (l, r) = lowered(&m, Target::Onnx);
    assert_eq!(count(&l, "QLinearConv"), 1, "{:?}", ops(&l));
    assert_eq!(count(&l, "Conv") + count(&l, "Relu"), 0);
    assert_eq!(r.rewrites["Conv → QLinearConv"], 1);
    assert_same_values(&m, &l, 0.05);
}

#[test]
fn depthwise_conv_becomes_qlinearconv() {
    let m = conv_graph(false, 128, 2, true);
    let (l, _) = lowered(&m, Target::Onnx);
    assert_eq!(count(&l, "QLinearConv"), 1, "{:?}", ops(&l));
    assert_same_values(&m, &l, 0.05);
}

#[test]
fn conv_refusals_keep_the_qdq_form() {
    // Bias scale not x_scale · w_scale.
    let (l, _) = lowered(&conv_graph(false, 128, 1, false), Target::Onnx);
    assert_eq!((count(&l, "Conv"), count(&l, "QLinearConv")), (1, 0));
    // Relu before a Q whose zero point is not the minimum: saturation does
    // not do the Relu, so it cannot be absorbed.
    let m = conv_graph(true, 10, 1, true);
    let (l, _) = lowered(&m, Target::Onnx);
    assert_eq!(
        (count(&l, "Conv"), count(&l, "Relu")),
        (1, 1),
        "{:?}",
        ops(&l)
    );
    assert_same_values(&m, &l, 0.0);
    // Per-channel weight zero points that differ (onnxruntime rejects them).
    let mut m = conv_graph(false, 128, 1, true);
    let z = m.graph.find_value("w/z").unwrap();
    m.graph
        .set_initializer(z, Tensor::from_i8(vec![3], &[0, 1, 0]));
    let (l, _) = lowered(&m, Target::Onnx);
    assert_eq!(count(&l, "QLinearConv"), 0);
}

#[test]
fn conv_with_a_float_bias_is_refused() {
    let mut b = B::default();
    let x = b.act("x", 0.02, 100);
    let w = b.weight("w", vec![2, 2, 1, 1], &[0.01, 0.02], 0);
    b.init("bf", Tensor::from_f32(vec![2], &[0.1, -0.2]));
    b.op("Conv", "conv", &[&x, &w, "bf"], "c", vec![]);
    let s = b.init("y/s", Tensor::from_f32(vec![], &[0.05]));
    let z = b.init("y/z", Tensor::from_u8(vec![], &[128]));
    let d = b.q_dq("c", &s, &z);
    b.op("Identity", "out", &[&d], "y", vec![]);
    let m = b.build(13, &[("x", &[1, 2, 3, 3])], &["y"]);
    let (l, _) = lowered(&m, Target::Onnx);
    assert_eq!((count(&l, "Conv"), count(&l, "QLinearConv")), (1, 0));
}

/// a [2,3,4] · w [4,5] (per column, or per tensor) → Q → DQ.
fn matmul_graph(per_column: bool, w_rank3: bool) -> Model {
    let mut b = B::default();
    let a = b.act("a", 0.02, 120);
    let w = if w_rank3 {
        b.weight("w", vec![2, 4, 5], &[0.01, 0.02, 0.03, 0.04, 0.05], 2)
    } else if per_column {
        b.weight("w", vec![4, 5], &[0.01, 0.02, 0.03, 0.04, 0.05], 1)
    } else {
        b.weight("w", vec![4, 5], &[0.02], 1)
    };
    b.op("MatMul", "mm", &[&a, &w], "m", vec![]);
    let s = b.init("y/s", Tensor::from_f32(vec![], &[0.03]));
    let z = b.init("y/z", Tensor::from_u8(vec![], &[128]));
    let d = b.q_dq("m", &s, &z);
    b.op("Identity", "out", &[&d], "y", vec![]);
    b.build(13, &[("a", &[2, 3, 4])], &["y"])
}

#[test]
fn batched_matmul_with_per_column_weights_becomes_qlinearmatmul() {
    for per_column in [true, false] {
        let m = matmul_graph(per_column, false);
        let (l, _) = lowered(&m, Target::Onnx);
        assert_eq!(count(&l, "QLinearMatMul"), 1, "{:?}", ops(&l));
        assert_eq!(count(&l, "MatMul"), 0);
        assert_same_values(&m, &l, 0.03);
    }
}

#[test]
fn per_column_scales_of_a_3d_weight_are_refused() {
    let (l, _) = lowered(&matmul_graph(true, true), Target::Onnx);
    assert_eq!((count(&l, "MatMul"), count(&l, "QLinearMatMul")), (1, 0));
}

#[test]
fn attention_matmul_of_two_activations_becomes_qlinearmatmul() {
    let mut b = B::default();
    let q = b.act("q", 0.02, 128);
    let k = b.act("k", 0.03, 128);
    b.op("MatMul", "scores", &[&q, &k], "m", vec![]);
    let s = b.init("y/s", Tensor::from_f32(vec![], &[0.05]));
    let z = b.init("y/z", Tensor::from_u8(vec![], &[128]));
    let d = b.q_dq("m", &s, &z);
    b.op("Identity", "out", &[&d], "y", vec![]);
    let m = b.build(13, &[("q", &[2, 3, 4]), ("k", &[2, 4, 3])], &["y"]);
    let (l, _) = lowered(&m, Target::Onnx);
    assert_eq!(count(&l, "QLinearMatMul"), 1, "{:?}", ops(&l));
    assert_same_values(&m, &l, 0.05);
}

/// a [3,4] · Gemm(w [5,4] transB=1, per row) [+ bias] → Q → DQ → Identity.
fn gemm_graph(bias: bool, trans_a: i64) -> Model {
    gemm_graph_to(bias, trans_a, false)
}

/// [`gemm_graph`]; with `dq_is_output` the DQ writes the model output.
fn gemm_graph_to(bias: bool, trans_a: i64, dq_is_output: bool) -> Model {
    let mut b = B::default();
    let xs = 0.02f32;
    let a = b.act("a", xs, 120);
    let ws = [0.01f32, 0.02, 0.03, 0.04, 0.05];
    let w = b.weight("w", vec![5, 4], &ws, 0);
    let mut ins = vec![a.clone(), w];
    if bias {
        let bs: Vec<f32> = ws.iter().map(|s| s * xs).collect();
        ins.push(b.bias("c", &bs));
    }
    let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
    let attrs = vec![attr::int("transB", 1), attr::int("transA", trans_a)];
    b.op("Gemm", "fc", &ins, "g", attrs);
    let s = b.init("y/s", Tensor::from_f32(vec![], &[0.04]));
    let z = b.init("y/z", Tensor::from_u8(vec![], &[128]));
    let d = b.q_dq("g", &s, &z);
    let shape: &[i64] = if trans_a == 1 { &[4, 3] } else { &[3, 4] };
    if dq_is_output {
        return b.build(13, &[("a", shape)], &[&d]);
    }
    b.op("Identity", "out", &[&d], "y", vec![]);
    b.build(13, &[("a", shape)], &["y"])
}

#[test]
fn a_model_output_computed_in_float_is_not_rounded_to_8_bits() {
    // MatMulInteger + int32 bias → Cast → Mul is float already: the Q/DQ
    // pair that closed the output goes, the Mul writes the output itself.
    let m = gemm_graph_to(true, 0, true);
    let (l, r) = lowered(&m, Target::Onnx);
    assert_eq!(
        (count(&l, "QuantizeLinear"), count(&l, "DequantizeLinear")),
        (1, 0),
        "{:?}",
        ops(&l)
    );
    assert_eq!(
        r.rewrites["model output left in float (Q/DQ pair dropped)"],
        1
    );
    let out = l.graph.find_value("g/d").unwrap();
    assert!(l.graph.is_graph_output(out));
    let (_, producer) = l.graph.producer_node(out).unwrap();
    assert_eq!(producer.op_type, "Mul");
    // Within half an output step (0.04) of the QDQ model, which rounds its
    // output to that step (and saturates it at [-5.12, 5.08], where the
    // float output goes on); and not always on it.
    let x = inputs(&m, 3);
    let (ya, yb) = (run(&m, &x), run(&l, &x));
    let diffs: Vec<f32> = ya[0]
        .iter()
        .zip(&yb[0])
        .filter(|(u, _)| **u > -5.1 && **u < 5.07)
        .map(|(u, v)| (u - v).abs())
        .collect();
    assert!(diffs.len() >= 5, "{:?}", ya[0]);
    assert!(diffs.iter().all(|&d| d <= 0.0201), "{diffs:?}");
    assert!(diffs.iter().any(|&d| d > 1e-4), "{diffs:?}");
    // An integer kernel's output (QLinearMatMul, no bias) keeps its pair.
    let (l, _) = lowered(&gemm_graph_to(false, 0, true), Target::Onnx);
    assert_eq!(count(&l, "DequantizeLinear"), 1, "{:?}", ops(&l));
    // onnxruntime's QGemm writes uint8: its pair stays too.
    let (l, _) = lowered(&m, Target::Ort);
    assert_eq!(count(&l, "DequantizeLinear"), 1, "{:?}", ops(&l));
}

#[test]
fn gemm_without_bias_becomes_qlinearmatmul_with_the_weight_transposed() {
    let m = gemm_graph(false, 0);
    let (l, r) = lowered(&m, Target::Onnx);
    assert_eq!(count(&l, "QLinearMatMul"), 1, "{:?}", ops(&l));
    assert_eq!(r.rewrites["Gemm → QLinearMatMul"], 1);
    let w = l.graph.find_value("w/q_kn").unwrap();
    assert_eq!(l.graph.initializer(w).unwrap().dims(), &[4, 5]);
    assert_same_values(&m, &l, 0.04);
}

#[test]
fn gemm_with_bias_accumulates_the_bias_in_int32() {
    let m = gemm_graph(true, 0);
    let (l, _) = lowered(&m, Target::Onnx);
    let o = ops(&l);
    for op in ["MatMulInteger", "Add", "Cast", "Mul", "QuantizeLinear"] {
        assert!(o.contains(&op.to_string()), "{o:?}");
    }
    assert_eq!(count(&l, "Gemm"), 0);
    assert_same_values(&m, &l, 0.04);
    // onnxruntime's fused kernel for the ort target.
    let (l, _) = lowered(&m, Target::Ort);
    assert_eq!(count(&l, "QGemm"), 1, "{:?}", ops(&l));
    assert_eq!(l.opset("com.microsoft"), Some(1));
}

#[test]
fn gemm_with_trans_a_is_refused() {
    let (l, _) = lowered(&gemm_graph(true, 1), Target::Onnx);
    assert_eq!((count(&l, "Gemm"), count(&l, "MatMulInteger")), (1, 0));
}

/// x → Q → DQ → op → Q(same or other params) → DQ → y.
fn movement_graph(
    opset: i64,
    op: &str,
    attrs: Vec<AttributeProto>,
    extra: &[&str],
    same: bool,
) -> Model {
    let mut b = B::default();
    let x = b.act("x", 0.02, 100);
    let mut ins = vec![x.as_str()];
    ins.extend_from_slice(extra);
    b.op(op, "op", &ins, "m", attrs);
    let (s, z) = if same {
        ("x/s".to_string(), "x/z".to_string())
    } else {
        (
            b.init("y/s", Tensor::from_f32(vec![], &[0.03])),
            b.init("y/z", Tensor::from_u8(vec![], &[90])),
        )
    };
    let d = b.q_dq("m", &s, &z);
    b.op("Identity", "out", &[&d], "y", vec![]);
    b.inits
        .push(("shape".into(), Tensor::from_i64(vec![2], &[1, -1])));
    b.inits.push((
        "pads".into(),
        Tensor::from_i64(vec![8], &[0, 0, 1, 1, 0, 0, 1, 1]),
    ));
    for (n, t) in [
        ("scales", Tensor::from_f32(vec![4], &[1.0, 1.0, 2.0, 2.0])),
        ("starts", Tensor::from_i64(vec![1], &[1])),
        ("ends", Tensor::from_i64(vec![1], &[3])),
        ("axes", Tensor::from_i64(vec![1], &[2])),
        ("indices", Tensor::from_i64(vec![1], &[1])),
    ] {
        b.init(n, t);
    }
    b.build(opset, &[("x", &[1, 2, 4, 4])], &["y"])
}

#[test]
fn data_movement_runs_on_int8() {
    let pool = vec![attr::ints("kernel_shape", &[2, 2])];
    let cases: Vec<(&str, Vec<AttributeProto>, Vec<&str>)> = vec![
        ("Reshape", vec![], vec!["shape"]),
        ("Transpose", vec![attr::ints("perm", &[0, 2, 3, 1])], vec![]),
        ("MaxPool", pool, vec![]),
        ("Pad", vec![], vec!["pads"]),
        (
            "Resize",
            vec![attr::string("mode", "nearest")],
            vec!["", "scales"],
        ),
        ("Slice", vec![], vec!["starts", "ends", "axes"]),
        ("Gather", vec![attr::int("axis", 1)], vec!["indices"]),
        ("Flatten", vec![], vec![]),
        ("SpaceToDepth", vec![attr::int("blocksize", 2)], vec![]),
    ];
    for (op, attrs, extra) in cases {
        let m = movement_graph(13, op, attrs, &extra, true);
        let (l, _) = lowered(&m, Target::Onnx);
        assert_eq!(
            ops(&l),
            ["QuantizeLinear", op, "DequantizeLinear", "Identity"],
            "{op}"
        );
        assert_same_values(&m, &l, 0.0);
    }
    // Pad's implicit 0.0 becomes the zero point.
    let m = movement_graph(13, "Pad", vec![], &["pads"], true);
    let (l, _) = lowered(&m, Target::Onnx);
    let pv = l.graph.find_value("op/pad_value").unwrap();
    assert_eq!(
        l.graph.initializer(pv).unwrap().to_i64_vec().unwrap(),
        [100]
    );
}

#[test]
fn data_movement_refusals() {
    // MaxPool takes int8 only from opset 12.
    let pool = vec![attr::ints("kernel_shape", &[2, 2])];
    let (l, _) = lowered(
        &movement_graph(11, "MaxPool", pool, &[], true),
        Target::Onnx,
    );
    assert_eq!(
        ops(&l)[..3],
        ["QuantizeLinear", "DequantizeLinear", "MaxPool"]
    );
    // Different output parameters: nothing to share.
    let (l, _) = lowered(
        &movement_graph(13, "Reshape", vec![], &["shape"], false),
        Target::Onnx,
    );
    assert_eq!(
        ops(&l)[..3],
        ["QuantizeLinear", "DequantizeLinear", "Reshape"]
    );
}

#[test]
fn concat_requantizes_inputs_with_other_parameters() {
    let mut b = B::default();
    let x1 = b.act("x1", 0.02, 100);
    let x2 = b.act("x2", 0.05, 30);
    b.op(
        "Concat",
        "cat",
        &[&x1, &x2],
        "c",
        vec![attr::int("axis", 1)],
    );
    let d = b.q_dq("c", "x2/s", "x2/z");
    b.op("Identity", "out", &[&d], "y", vec![]);
    let m = b.build(13, &[("x1", &[1, 2, 3]), ("x2", &[1, 2, 3])], &["y"]);
    let (l, _) = lowered(&m, Target::Onnx);
    assert_eq!(count(&l, "Concat"), 1);
    // x1 gets a requantizing DQ → Q; x2 feeds the int8 Concat directly.
    assert_eq!(count(&l, "QuantizeLinear"), 3, "{:?}", ops(&l));
    assert_same_values(&m, &l, 0.0);
    let (l, _) = lowered(&m, Target::Ort);
    assert_eq!(count(&l, "QLinearConcat"), 1, "{:?}", ops(&l));
}

#[test]
fn equal_requantization_collapses_and_int8_relu_runs_on_int8() {
    // DQ → Q with equal parameters: the identity.
    let mut b = B::default();
    let x = b.act("x", 0.02, 100);
    let d = b.q_dq(&x, "x/s", "x/z");
    b.op("Identity", "out", &[&d], "y", vec![]);
    let m = b.build(13, &[("x", &[2, 3])], &["y"]);
    let (l, r) = lowered(&m, Target::Onnx);
    assert_eq!(ops(&l), ["QuantizeLinear", "DequantizeLinear", "Identity"]);
    assert!(r
        .rewrites
        .contains_key("DequantizeLinear → QuantizeLinear collapsed"));
    assert_same_values(&m, &l, 0.0);
    // Symmetric int8 (zero point 0) around a Relu at opset 14.
    let mut b = B::default();
    let s = b.init("s", Tensor::from_f32(vec![], &[0.02]));
    let z = b.init("z", Tensor::from_i8(vec![], &[0]));
    let d = b.q_dq("x", &s, &z);
    b.op("Relu", "relu", &[&d], "r", vec![]);
    let d2 = b.q_dq("r", &s, &z);
    b.op("Identity", "out", &[&d2], "y", vec![]);
    let m = b.build(14, &[("x", &[2, 3])], &["y"]);
    let (l, _) = lowered(&m, Target::Onnx);
    assert_eq!(
        ops(&l),
        ["QuantizeLinear", "Relu", "DequantizeLinear", "Identity"]
    );
    assert_same_values(&m, &l, 0.0);
}

#[test]
fn contrib_ops_only_for_the_ort_target() {
    let mut b = B::default();
    let x1 = b.act("x1", 0.02, 100);
    let x2 = b.act("x2", 0.03, 120);
    b.op("Add", "add", &[&x1, &x2], "a", vec![]);
    let s = b.init("y/s", Tensor::from_f32(vec![], &[0.05]));
    let z = b.init("y/z", Tensor::from_u8(vec![], &[110]));
    let d = b.q_dq("a", &s, &z);
    b.op("GlobalAveragePool", "gap", &[&d], "g", vec![]);
    let d2 = b.q_dq("g", &s, &z);
    b.op("Identity", "out", &[&d2], "y", vec![]);
    let m = b.build(13, &[("x1", &[1, 2, 3, 3]), ("x2", &[1, 2, 3, 3])], &["y"]);
    let (l, r) = lowered(&m, Target::Onnx);
    assert_eq!((count(&l, "Add"), count(&l, "GlobalAveragePool")), (1, 1));
    assert_eq!(r.kept_qdq.get("Add"), Some(&1));
    assert!(l.opset("com.microsoft").is_none());
    let (l, _) = lowered(&m, Target::Ort);
    assert_eq!(
        (
            count(&l, "QLinearAdd"),
            count(&l, "QLinearGlobalAveragePool")
        ),
        (1, 1),
        "{:?}",
        ops(&l)
    );
    assert!(l
        .graph
        .nodes()
        .filter(|(_, n)| n.op_type.starts_with("QLinear"))
        .all(|(_, n)| n.domain == "com.microsoft"));
}
