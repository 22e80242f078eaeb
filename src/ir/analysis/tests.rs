//! `flat_outside` on the activation patterns exporters write, and on
//! readers that must leave the range open. Each bound is also checked by
//! running the graph in tract with inputs clamped to it: the outputs must
//! not change.

use super::flat_outside;
use crate::ir::node::attr;
use crate::ir::{Model, Tensor};
use crate::onnx::proto::NodeProto;
use crate::passes::testutil::{model, node, run};

fn scalar(v: f32) -> Tensor {
    Tensor::from_f32(vec![1], &[v])
}

/// `x → Identity → v → nodes → outputs`: `v` is what is analysed.
fn graph(nodes: Vec<NodeProto>, outputs: &[&str], inits: Vec<(&str, Tensor)>) -> Model {
    let mut all = vec![node("Identity", "id", &["x"], &["v"], vec![])];
    all.extend(nodes);
    model(14, &[("x", &[2, 64])], outputs, all, inits)
}

fn bounds(m: &Model) -> Option<(f32, f32)> {
    let g = &m.graph;
    flat_outside(g, g.find_value("v").expect("v"))
}

/// The outputs do not change when `x` (= `v`) is clamped to `(lo, hi)`.
fn clamping_is_lossless(m: &Model, (lo, hi): (f32, f32)) {
    let x: Vec<f32> = (0..128).map(|i| (i as f32 - 64.0) / 4.0).collect();
    let clamped: Vec<f32> = x.iter().map(|&v| v.clamp(lo, hi)).collect();
    let a = run(m, &[("x".into(), Tensor::from_f32(vec![2, 64], &x))]);
    let b = run(m, &[("x".into(), Tensor::from_f32(vec![2, 64], &clamped))]);
    assert_eq!(a, b, "clamping to [{lo}, {hi}] changed the outputs");
}

#[test]
fn hard_swish_written_out_paddle_style() {
    // v · Clip(v + 3, 0, 6) / 6, as paddle2onnx writes hardswish.
    let m = graph(
        vec![
            node("Add", "a", &["v", "three"], &["s"], vec![]),
            node("Clip", "c", &["s", "zero", "six"], &["c"], vec![]),
            node("Mul", "m", &["v", "c"], &["p"], vec![]),
            node("Div", "d", &["p", "six"], &["y"], vec![]),
        ],
        &["y"],
        vec![
            ("three", scalar(3.0)),
            ("zero", Tensor::from_f32(vec![], &[0.0])),
            ("six", Tensor::from_f32(vec![], &[6.0])),
        ],
    );
    assert_eq!(bounds(&m), Some((-3.0, f32::INFINITY)));
    clamping_is_lossless(&m, (-3.0, f32::INFINITY));
}

#[test]
fn hard_swish_as_hard_sigmoid_times_input_and_as_one_op() {
    let m = graph(
        vec![
            node(
                "HardSigmoid",
                "h",
                &["v"],
                &["h"],
                vec![attr::float("alpha", 1.0 / 6.0), attr::float("beta", 0.5)],
            ),
            node("Mul", "m", &["h", "v"], &["y"], vec![]),
        ],
        &["y"],
        vec![],
    );
    let (lo, hi) = bounds(&m).expect("bounded");
    assert!((lo + 3.0).abs() < 1e-5 && hi == f32::INFINITY, "{lo} {hi}");
    clamping_is_lossless(&m, (lo, hi));

    let m = graph(
        vec![node("HardSwish", "h", &["v"], &["y"], vec![])],
        &["y"],
        vec![],
    );
    assert_eq!(bounds(&m), Some((-3.0, f32::INFINITY)));
    clamping_is_lossless(&m, (-3.0, f32::INFINITY));
}

#[test]
fn relu_and_clip_readers_through_scalar_affine_ops() {
    // Relu(2·v − 1) and Clip(v, −2, 5): flat below 0.5 and −2 → −2; above 5.
    let m = graph(
        vec![
            node("Mul", "m", &["v", "two"], &["t"], vec![]),
            node("Sub", "s", &["t", "one"], &["u"], vec![]),
            node("Relu", "r", &["u"], &["y1"], vec![]),
            node("Clip", "c", &["v", "lo", "hi"], &["y2"], vec![]),
        ],
        &["y1", "y2"],
        vec![
            ("two", scalar(2.0)),
            ("one", scalar(1.0)),
            ("lo", Tensor::from_f32(vec![], &[-2.0])),
            ("hi", Tensor::from_f32(vec![], &[5.0])),
        ],
    );
    assert_eq!(bounds(&m), Some((-2.0, f32::INFINITY)));
    clamping_is_lossless(&m, (-2.0, f32::INFINITY));

    // A negative scale turns the interval around: Relu(−v) is flat above 0.
    let m = graph(
        vec![
            node("Mul", "m", &["v", "neg"], &["t"], vec![]),
            node("Relu", "r", &["t"], &["y"], vec![]),
        ],
        &["y"],
        vec![("neg", scalar(-1.0))],
    );
    assert_eq!(bounds(&m), Some((f32::NEG_INFINITY, 0.0)));
    clamping_is_lossless(&m, (f32::NEG_INFINITY, 0.0));
}

#[test]
fn readers_that_keep_the_range_open() {
    // Swish (v · Sigmoid(v)) is never constant.
    let m = graph(
        vec![
            node("Sigmoid", "s", &["v"], &["s"], vec![]),
            node("Mul", "m", &["v", "s"], &["y"], vec![]),
        ],
        &["y"],
        vec![],
    );
    assert_eq!(bounds(&m), None);
    // A Relu beside a reader that sees every value.
    let m = graph(
        vec![
            node("Relu", "r", &["v"], &["y1"], vec![]),
            node("Neg", "n", &["v"], &["y2"], vec![]),
        ],
        &["y1", "y2"],
        vec![],
    );
    assert_eq!(bounds(&m), None);
    // A Relu reader, but `v` itself is a model output.
    let m = graph(
        vec![node("Relu", "r", &["v"], &["y"], vec![])],
        &["y", "v"],
        vec![],
    );
    assert_eq!(bounds(&m), None);
    // Adding a per-channel (not one-element) constant: open.
    let m = graph(
        vec![
            node("Add", "a", &["v", "b"], &["t"], vec![]),
            node("Relu", "r", &["t"], &["y"], vec![]),
        ],
        &["y"],
        vec![("b", Tensor::from_f32(vec![64], &[1.0; 64]))],
    );
    assert_eq!(bounds(&m), None);
    // A Clip whose lower bound is not 0 does not zero the product.
    let m = graph(
        vec![
            node("Add", "a", &["v", "three"], &["s"], vec![]),
            node("Clip", "c", &["s", "one", "six"], &["c"], vec![]),
            node("Mul", "m", &["v", "c"], &["y"], vec![]),
        ],
        &["y"],
        vec![
            ("three", scalar(3.0)),
            ("one", Tensor::from_f32(vec![], &[1.0])),
            ("six", Tensor::from_f32(vec![], &[6.0])),
        ],
    );
    assert_eq!(bounds(&m), None);
}

#[test]
fn a_clip_with_nan_bounds_leaves_the_range_open() {
    let m = graph(
        vec![
            node("Clip", "c", &["v", "nan", "nan"], &["y1"], vec![]),
            node("Relu", "r", &["v"], &["y2"], vec![]),
        ],
        &["y1", "y2"],
        vec![("nan", Tensor::from_f32(vec![], &[f32::NAN]))],
    );
    assert_eq!(bounds(&m), None);
    // And a Within interval that is inverted or NaN never panics.
    use crate::quantize::ActSpec;
    assert_eq!(ActSpec::Within(5.0, 2.0).clamp((-1.0, 9.0)), (5.0, 5.0));
    let (lo, hi) = ActSpec::Within(f32::NAN, f32::NAN).clamp((-1.0, 9.0));
    assert!(lo.is_finite() && hi.is_finite());
}
