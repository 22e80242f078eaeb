//! Output kinds from the graph, and their task metrics on known values.

use super::*;
use crate::calibrate::samples::InMemory;
use crate::passes::testutil::{inputs, model, node};

/// `x [1, 5, 4]` → Softmax (a sequence of 5 positions over 4 classes)
/// and → Sigmoid (a map); `axis` of the Softmax, if any.
fn heads(opset: i64, axis: Option<i64>) -> Model {
    let attrs = axis
        .map(|a| vec![crate::ir::node::attr::int("axis", a)])
        .unwrap_or_default();
    model(
        opset,
        &[("x", &[1, 5, 4])],
        &["p", "s"],
        vec![
            node("Softmax", "sm", &["x"], &["p"], attrs),
            node("Sigmoid", "sg", &["x"], &["s"], vec![]),
        ],
        vec![],
    )
}

#[test]
fn kinds_come_from_the_producers_with_the_opset_default_axis() {
    let k = output_kinds(&heads(13, None));
    let classes = |axis, flattened| Kind::Classes { axis, flattened };
    assert_eq!(k, vec![classes(-1, false), Kind::Probabilities]);
    assert_eq!(output_kinds(&heads(11, None))[0], classes(1, true));
    assert_eq!(output_kinds(&heads(11, Some(2)))[0], classes(2, true));
}

/// `m` compared with itself on two samples, default thresholds.
fn against_itself(m: &Model) -> crate::verify::Verdict {
    let samples = InMemory(vec![inputs(m, 1), inputs(m, 2)]);
    let how = crate::verify::Comparison {
        arith: crate::exec::kernels::Arith::Ort,
        thresholds: &crate::verify::Thresholds::default(),
        layer_samples: 0,
        rescaled: &Default::default(),
        references: &Default::default(),
        runtime: None,
    };
    crate::verify::compare(m, m, &samples, &how).unwrap()
}

#[test]
fn the_comparison_reports_positions_and_masks() {
    let m = heads(13, None);
    let v = against_itself(&m);
    let p = v.outputs[0].positions.as_ref().unwrap();
    assert_eq!((p.positions, p.top1_agreement), (10, 1.0));
    assert_eq!(v.outputs[0].mask_iou, None);
    assert_eq!(v.outputs[1].mask_iou, Some(1.0));
    assert!(v.outputs[1].positions.is_none());
}

#[test]
fn sequence_agreement_counts_foreground_apart_from_blanks() {
    // [1, 4, 3]: positions 0..4, class 0 the blank.
    let a = [
        0.9, 0.05, 0.05, // blank
        0.1, 0.8, 0.1, // 1
        0.9, 0.05, 0.05, // blank
        0.9, 0.05, 0.05, // blank
    ];
    let b = [
        0.9, 0.05, 0.05, // blank
        0.1, 0.1, 0.8, // 2: disagrees
        0.9, 0.05, 0.05, // blank
        0.1, 0.8, 0.1, // 1 where FP32 has a blank: disagrees
    ];
    let mut acc = TaskAccum::default();
    acc.add(
        Kind::Classes {
            axis: -1,
            flattened: false,
        },
        &a,
        &b,
        &[1, 4, 3],
    );
    let p = acc.positions().unwrap();
    assert_eq!(p.positions, 4);
    assert_eq!(p.top1_agreement, 0.5);
    assert_eq!(p.foreground_positions, 2);
    assert_eq!(p.foreground_top1_agreement, 0.0);
}

#[test]
fn class_axis_in_the_middle_is_strided() {
    // [1, 2, 3]: 2 classes (axis 1) at 3 positions.
    let a = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
    let b = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
    let mut acc = TaskAccum::default();
    acc.add(
        Kind::Classes {
            axis: 1,
            flattened: false,
        },
        &a,
        &b,
        &[1, 2, 3],
    );
    // Below opset 13 the same axis flattens: one row of 6, no positions.
    let mut flat = TaskAccum::default();
    let kind = Kind::Classes {
        axis: 1,
        flattened: true,
    };
    flat.add(kind, &a, &b, &[1, 2, 3]);
    assert!(flat.positions().is_none());
    let p = acc.positions().unwrap();
    // top-1 per position: a = [0, 1, 0], b = [0, 0, 0].
    assert_eq!((p.positions, p.top1_agreement), (3, 2.0 / 3.0));
    assert_eq!(
        (p.foreground_positions, p.foreground_top1_agreement),
        (1, 0.0)
    );
}

#[test]
fn batch_rows_alone_are_not_positions_and_masks_compare_at_one_half() {
    let mut acc = TaskAccum::default();
    acc.add(
        Kind::Classes {
            axis: -1,
            flattened: false,
        },
        &[0.2, 0.8],
        &[0.8, 0.2],
        &[1, 2],
    );
    assert!(acc.positions().is_none());
    acc.add(
        Kind::Probabilities,
        &[0.9, 0.6, 0.1, 0.7],
        &[0.9, 0.4, 0.1, 0.8],
        &[1, 1, 2, 2],
    );
    assert_eq!(acc.mask_iou(), Some(2.0 / 3.0));
}

#[test]
fn kinds_look_through_layout_ops_and_the_opset_upgrade() {
    use crate::ir::node::attr;
    // Softmax over axis 1 of [1, 4, 5], transposed to [1, 5, 4]: the
    // classes are axis 2 of the output; a Sigmoid reshaped stays one.
    let m = model(
        13,
        &[("x", &[1, 4, 5])],
        &["p", "s"],
        vec![
            node("Softmax", "sm", &["x"], &["sm"], vec![attr::int("axis", 1)]),
            node(
                "Transpose",
                "t",
                &["sm"],
                &["p"],
                vec![attr::ints("perm", &[0, 2, 1])],
            ),
            node("Sigmoid", "sg", &["x"], &["sg"], vec![]),
            node("Flatten", "f", &["sg"], &["s"], vec![]),
        ],
        vec![],
    );
    let classes = |axis, flattened| Kind::Classes { axis, flattened };
    assert_eq!(
        output_kinds(&m),
        vec![classes(2, false), Kind::Probabilities]
    );
    // A Softmax reshaped is no longer classes along an axis.
    let m = model(
        13,
        &[("x", &[1, 4, 5])],
        &["p"],
        vec![
            node("Softmax", "sm", &["x"], &["sm"], vec![]),
            node("Flatten", "f", &["sm"], &["p"], vec![]),
        ],
        vec![],
    );
    assert_eq!(output_kinds(&m), vec![Kind::Other]);
    // Opset 11, axis 1 of a rank-3 input: the upgrade to 13 rebuilds it
    // as Flatten → Softmax → Reshape, still classes from axis 1 on.
    let mut m = heads(11, Some(1));
    use crate::passes::Pass;
    let opts = crate::passes::PassOptions {
        target_opset: Some(13),
        ..Default::default()
    };
    crate::passes::opset::UpgradeOpset
        .run(&mut m, &opts)
        .unwrap();
    assert_eq!(m.onnx_opset().unwrap(), 13);
    assert_eq!(output_kinds(&m)[0], classes(1, true));
}

#[test]
fn embeddings_are_normalized_or_pooled_vectors() {
    use crate::ir::node::attr;
    use crate::ir::Tensor;
    // A sentence encoder's tail: hidden states from a LayerNorm, a
    // masked mean (ReduceSum / Clip(ReduceSum)) through a one-input
    // Concat, an L2-normalized vector; beside them a plain MatMul.
    let m = model(
        17,
        &[("x", &[1, 3, 4]), ("mask", &[1, 3, 1])],
        &["hidden", "pooled", "unit", "logits", "probs"],
        vec![
            node(
                "LayerNormalization",
                "ln",
                &["x", "g", "b"],
                &["hidden"],
                vec![attr::int("axis", -1)],
            ),
            node("Mul", "mul", &["hidden", "mask"], &["masked"], vec![]),
            node(
                "ReduceSum",
                "sum",
                &["masked", "ax1"],
                &["total"],
                vec![attr::int("keepdims", 0)],
            ),
            node(
                "ReduceSum",
                "count",
                &["mask", "ax1"],
                &["n"],
                vec![attr::int("keepdims", 0)],
            ),
            node("Clip", "clip", &["n", "eps"], &["n1"], vec![]),
            node("Div", "mean", &["total", "n1"], &["avg"], vec![]),
            node(
                "Concat",
                "cat",
                &["avg"],
                &["pooled"],
                vec![attr::int("axis", 1)],
            ),
            node(
                "ReduceL2",
                "norm",
                &["avg"],
                &["len"],
                vec![attr::ints("axes", &[1])],
            ),
            node("Div", "unit", &["avg", "len"], &["unit"], vec![]),
            node("MatMul", "head", &["avg", "w"], &["logits"], vec![]),
            // A Softmax written out: class probabilities, not a vector.
            node("Exp", "exp", &["logits"], &["e"], vec![]),
            node("ReduceSum", "z", &["e", "ax1"], &["z"], vec![]),
            node("Div", "probs", &["e", "z"], &["probs"], vec![]),
        ],
        vec![
            ("g", Tensor::from_f32(vec![4], &[1.0; 4])),
            ("b", Tensor::from_f32(vec![4], &[0.0; 4])),
            ("ax1", Tensor::from_i64(vec![1], &[1])),
            ("eps", Tensor::from_f32(vec![], &[1e-9])),
            ("w", Tensor::from_f32(vec![4, 2], &[0.5; 8])),
        ],
    );
    assert_eq!(
        output_kinds(&m),
        vec![
            Kind::Embedding,
            Kind::Embedding,
            Kind::Embedding,
            Kind::Other,
            Kind::Other
        ]
    );
}

#[test]
fn vector_cosine_is_the_mean_over_vectors_along_the_last_axis() {
    let mut acc = TaskAccum::default();
    // Two vectors of 2: the same direction (cos 1, whatever the
    // scale), and orthogonal (cos 0).
    acc.add(
        Kind::Embedding,
        &[1.0, 1.0, 1.0, 0.0],
        &[3.0, 3.0, 0.0, 1.0],
        &[1, 2, 2],
    );
    assert_eq!(acc.vector_cosine(), Some(0.5));
    // A zero vector against a zero vector agrees; against another, not.
    acc.add(
        Kind::Embedding,
        &[0.0, 0.0, 1.0, 1.0],
        &[0.0, 0.0, 2.0, 2.0],
        &[2, 2],
    );
    assert_eq!(acc.vector_cosine(), Some(3.0 / 4.0));
    acc.add(Kind::Embedding, &[0.0, 0.0], &[1.0, 0.0], &[1, 2]);
    assert_eq!(acc.vector_cosine(), Some(3.0 / 5.0));
    assert_eq!(TaskAccum::default().vector_cosine(), None);
}

#[test]
fn the_comparison_holds_an_embedding_to_its_vector_cosine() {
    use crate::ir::Tensor;
    let m = model(
        17,
        &[("x", &[2, 3, 4])],
        &["h"],
        vec![node(
            "LayerNormalization",
            "ln",
            &["x", "g", "b"],
            &["h"],
            vec![],
        )],
        vec![
            ("g", Tensor::from_f32(vec![4], &[1.0, 2.0, 0.5, 1.0])),
            ("b", Tensor::from_f32(vec![4], &[0.1; 4])),
        ],
    );
    let v = against_itself(&m);
    let o = &v.outputs[0];
    // 2 samples × [2, 3] vectors of 4.
    assert_eq!(o.vector_cosine, Some(1.0));
    assert!(o.judged_by.starts_with("embeddings"), "{}", o.judged_by);
    assert_eq!(o.gate.len(), 1);
    assert_eq!(o.gate[0].metric, crate::verify::gate::Metric::VectorCosine);
    assert!(v.passed);
}

/// `[1, T, 3]` probabilities whose top-1 per position is `top`.
fn one_hot_sequence(top: &[usize]) -> Vec<f32> {
    top.iter()
        .flat_map(|&k| (0..3).map(move |c| if c == k { 0.8 } else { 0.1 }))
        .collect()
}

#[test]
fn sequences_are_decoded_greedily_and_compared_by_edit_distance() {
    let kind = Kind::Classes {
        axis: -1,
        flattened: false,
    };
    // A character that spans one position fewer decodes the same: the
    // foreground positions disagree, the sequences do not.
    let a = one_hot_sequence(&[0, 1, 1, 0, 2, 0, 0, 0]);
    let b = one_hot_sequence(&[0, 0, 1, 0, 2, 2, 0, 0]);
    let mut acc = TaskAccum::default();
    acc.add(kind, &a, &b, &[1, 8, 3]);
    let p = acc.positions().unwrap();
    assert!(p.foreground_top1_agreement < 1.0);
    let s = p.sequences.unwrap();
    assert_eq!(
        (s.sequences, s.symbols, s.agreement, s.equal),
        (1, 2, 1.0, 1.0)
    );
    // Two edits against FP32's three symbols, agreement 1/3:
    // FP32 decodes [1, 2, 1], INT8 [1, 1, 2, 2]: edit distance 2.
    let a = one_hot_sequence(&[1, 0, 2, 0, 1, 0, 0, 0]);
    let b = one_hot_sequence(&[1, 0, 1, 0, 2, 0, 2, 0]);
    let mut acc = TaskAccum::default();
    acc.add(kind, &a, &b, &[1, 8, 3]);
    let s = acc.positions().unwrap().sequences.unwrap();
    assert_eq!((s.symbols, s.equal), (3, 0.0));
    assert!((s.agreement - 1.0 / 3.0).abs() < 1e-12, "{}", s.agreement);
    // Two sequences in one sample: [N, T, C] or [T, N, C] cannot be told
    // apart, so no sequences (foreground top-1 still); nor in a map.
    let a2 = [
        one_hot_sequence(&[0, 1, 0, 0]),
        one_hot_sequence(&[0, 2, 0, 0]),
    ]
    .concat();
    let b2 = [
        one_hot_sequence(&[0, 1, 0, 0]),
        one_hot_sequence(&[0, 0, 0, 0]),
    ]
    .concat();
    let mut acc = TaskAccum::default();
    acc.add(kind, &a2, &b2, &[2, 4, 3]);
    let p = acc.positions().unwrap();
    assert!(p.sequences.is_none() && p.foreground_positions > 0);
    let mut map = TaskAccum::default();
    let kind1 = Kind::Classes {
        axis: 1,
        flattened: false,
    };
    map.add(
        kind1,
        &[0.0; 2 * 2 * 3 * 3],
        &[0.0; 2 * 2 * 3 * 3],
        &[2, 2, 3, 3],
    );
    assert!(map.positions().unwrap().sequences.is_none());
}

#[test]
fn edit_distance_and_decoding() {
    use super::{decode, edit_distance};
    assert_eq!(decode(&[0, 3, 3, 0, 3, 4, 4, 0], 0), vec![3, 3, 4]);
    assert_eq!(edit_distance(&[1, 2, 3], &[1, 3]), 1);
    assert_eq!(edit_distance(&[], &[1, 2]), 2);
    assert_eq!(edit_distance(&[1, 2, 3], &[3, 2, 1]), 2);
    assert_eq!(edit_distance(&[5, 6], &[5, 6]), 0);
}

#[test]
fn a_near_tie_fp32_could_not_call_is_not_a_sequence_error() {
    let kind = Kind::Classes {
        axis: -1,
        flattened: false,
    };
    // Position 1: FP32 0.48 for class 1 against 0.46 for class 2 (an O and
    // a 0); INT8 picks class 2. Position 3: a clear 1 that INT8 reads as 2.
    let a = [
        0.9, 0.05, 0.05, 0.06, 0.48, 0.46, 0.9, 0.05, 0.05, 0.1, 0.8, 0.1,
    ];
    let b = [
        0.9, 0.05, 0.05, 0.06, 0.46, 0.48, 0.9, 0.05, 0.05, 0.1, 0.1, 0.8,
    ];
    let mut acc = TaskAccum::default();
    acc.add(kind, &a, &b, &[1, 4, 3]);
    let s = acc.positions().unwrap().sequences.unwrap();
    // FP32 [1, 1], INT8 read as [1, 2]: one edit of two symbols.
    assert_eq!((s.symbols, s.agreement, s.equal), (2, 0.5, 0.0));
}
