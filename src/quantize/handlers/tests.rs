//! Where a computing node's output gets its range: clamped to where its
//! readers are not constant (a hard-swish), lent by a sole Relu, or its
//! own.

use crate::ir::{Model, Tensor};
use crate::onnx::proto::NodeProto;
use crate::passes::testutil::{model, node};
use crate::quantize::{plan_model, quantize, ActSpec, QuantizeConfig};
use std::collections::BTreeMap;

/// `x → Conv → y → readers`, a 1×1 convolution of 2 channels.
fn conv_then(readers: Vec<NodeProto>, outputs: &[&str], inits: Vec<(&str, Tensor)>) -> Model {
    let mut nodes = vec![node("Conv", "conv", &["x", "w", "b"], &["y"], vec![])];
    nodes.extend(readers);
    let mut all = vec![
        (
            "w",
            Tensor::from_f32(vec![2, 2, 1, 1], &[1.0, -0.5, 0.25, 2.0]),
        ),
        ("b", Tensor::from_f32(vec![2], &[0.1, -0.2])),
    ];
    all.extend(inits);
    model(13, &[("x", &[1, 2, 4, 4])], outputs, nodes, all)
}

fn spec_of_y(m: &Model) -> ActSpec {
    let plan = plan_model(m, &QuantizeConfig::default()).expect("plan");
    let y = m.graph.find_value("y").expect("y");
    plan.activations[&y]
}

#[test]
fn a_conv_output_read_by_a_hard_swish_is_quantized_from_minus_three() {
    let mut m = conv_then(
        vec![
            node("Add", "a", &["y", "three"], &["s"], vec![]),
            node("Clip", "c", &["s", "zero", "six"], &["c"], vec![]),
            node("Mul", "m", &["y", "c"], &["p"], vec![]),
            node("Div", "d", &["p", "six"], &["out"], vec![]),
        ],
        &["out"],
        vec![
            ("three", Tensor::from_f32(vec![1], &[3.0])),
            ("zero", Tensor::from_f32(vec![], &[0.0])),
            ("six", Tensor::from_f32(vec![], &[6.0])),
        ],
    );
    assert_eq!(spec_of_y(&m), ActSpec::Within(-3.0, f32::INFINITY));
    let cfg = QuantizeConfig::default();
    let plan = plan_model(&m, &cfg).unwrap();
    let ranges: BTreeMap<String, (f32, f32)> = [
        ("x".to_string(), (-1.0, 1.0)),
        ("y".to_string(), (-10.0, 10.0)),
    ]
    .into();
    quantize(&mut m, &plan, &ranges, &cfg).unwrap();
    let g = &m.graph;
    let (_, q) = g
        .nodes()
        .find(|(_, n)| n.is("QuantizeLinear") && n.input(0) == g.find_value("y"))
        .expect("y is quantized");
    let scale = g
        .initializer(q.input(1).unwrap())
        .unwrap()
        .to_f32_vec()
        .unwrap()[0];
    let zp = g
        .initializer(q.input(2).unwrap())
        .unwrap()
        .to_i64_vec()
        .unwrap()[0];
    // uint8 over [-3, 10], not [-10, 10].
    assert!((scale - 13.0 / 255.0).abs() < 1e-6, "{scale}");
    assert_eq!(zp, (3.0f32 / scale).round() as i64);
}

#[test]
fn other_outputs_keep_their_own_range_or_a_sole_relu_s() {
    // Read by a Sigmoid times itself (swish): never constant.
    let m = conv_then(
        vec![
            node("Sigmoid", "s", &["y"], &["s"], vec![]),
            node("Mul", "m", &["y", "s"], &["out"], vec![]),
        ],
        &["out"],
        vec![],
    );
    assert_eq!(spec_of_y(&m), ActSpec::Calibrated);
    // A sole Relu lends its output range (and the Relu shares it).
    let m = conv_then(
        vec![node("Relu", "r", &["y"], &["out"], vec![])],
        &["out"],
        vec![],
    );
    let out = m.graph.find_value("out").unwrap();
    assert_eq!(spec_of_y(&m), ActSpec::RangeOf(out));
    // A model output is compared as it is: never clamped.
    let m = conv_then(
        vec![node("Relu", "r", &["y"], &["out"], vec![])],
        &["out", "y"],
        vec![],
    );
    assert_eq!(spec_of_y(&m), ActSpec::Calibrated);
}
