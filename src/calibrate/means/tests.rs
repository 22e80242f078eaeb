//! Mean inputs: rows, a Relu read through its input, and sums merged in
//! sample order. (Every Conv/ConvTranspose geometry is checked against
//! tract's outputs in `tune::bias`'s tests.)

use super::*;
use crate::ir::node::attr;
use crate::ir::Tensor;
use crate::passes::testutil::{model, node};

fn probe_of(op: &str, w_dims: &[usize], attrs: Vec<crate::onnx::proto::AttributeProto>) -> Probe {
    let n: usize = w_dims.iter().product();
    let m = model(
        13,
        &[("x", &[1, 2, 4, 4])],
        &["y"],
        vec![node(op, "layer", &["x", "w"], &["y"], attrs)],
        vec![("w", Tensor::from_f32(w_dims.to_vec(), &vec![0.5; n]))],
    );
    let mut p = probes(&m).unwrap();
    assert_eq!(p.len(), 1);
    p.remove(0)
}

#[test]
fn rows_average_over_every_leading_dimension() {
    let p = probe_of("MatMul", &[3, 2], vec![]);
    let x = [1.0, 2.0, 3.0, -1.0, -2.0, 9.0];
    assert_eq!(p.mean(&x, &[1, 2, 3], false).unwrap(), vec![0.0, 0.0, 6.0]);
    assert_eq!(p.mean(&x, &[2, 3], true).unwrap(), vec![0.5, 1.0, 6.0]);
    let err = p.mean(&x, &[3, 2], false).unwrap_err().to_string();
    assert!(
        err.contains("'layer'") && err.contains("rows of 3"),
        "{err}"
    );
}

#[test]
fn a_window_counts_padding_as_zero() {
    // 1×1 input, 3×3 kernel, pad 1: one output position, which reads the
    // input only at the kernel's centre.
    let p = probe_of(
        "Conv",
        &[1, 1, 3, 3],
        vec![attr::ints("pads", &[1, 1, 1, 1])],
    );
    let got = p.mean(&[4.0], &[1, 1, 1, 1], false).unwrap();
    assert_eq!(got, vec![0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
    // A Relu output read through its input.
    let got = p.mean(&[-4.0], &[1, 1, 1, 1], true).unwrap();
    assert!(got.iter().all(|&v| v == 0.0));
    // The wrong channel count is an error naming the layer.
    let err = p.mean(&[1.0, 2.0], &[1, 2, 1, 1], false).unwrap_err();
    assert!(err.to_string().contains("'layer'"), "{err}");
}

#[test]
fn means_merge_in_order_and_refuse_other_lengths() {
    let mut a = Means::default();
    a.add("l", &[1.0, 2.0]).unwrap();
    let mut b = Means::default();
    b.add("l", &[3.0, 6.0]).unwrap();
    b.add("l", &[5.0, 4.0]).unwrap();
    b.add("k", &[1.0]).unwrap();
    a.merge(b).unwrap();
    assert_eq!(a.get("l").unwrap(), vec![3.0, 4.0]);
    assert_eq!(a.get("k").unwrap(), vec![1.0]);
    assert!(a.get("m").is_none());
    let mut c = Means::default();
    c.add("l", &[1.0]).unwrap();
    assert!(a.merge(c).is_err());
    assert!(a.add("k", &[1.0, 2.0]).is_err());
}

#[test]
fn a_conv_transpose_with_output_shape_gets_no_probe() {
    let m = model(
        13,
        &[("x", &[1, 2, 4, 4])],
        &["y"],
        vec![node(
            "ConvTranspose",
            "up",
            &["x", "w"],
            &["y"],
            vec![
                attr::ints("strides", &[2, 2]),
                attr::ints("output_shape", &[9, 9]),
            ],
        )],
        vec![("w", Tensor::from_f32(vec![2, 1, 3, 3], &[0.5; 18]))],
    );
    assert!(probes(&m).unwrap().is_empty());
}
