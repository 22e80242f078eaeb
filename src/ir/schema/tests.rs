use super::*;
use crate::ir::node::attr;
use crate::passes::testutil::{model, node};

fn one(
    op: &str,
    x: &[i64],
    extra: &[&str],
    attrs: Vec<crate::onnx::proto::AttributeProto>,
    inits: Vec<(&str, Tensor)>,
) -> Result<()> {
    let mut ins = vec!["x"];
    ins.extend_from_slice(extra);
    let m = model(
        17,
        &[("x", x)],
        &["y"],
        vec![node(op, "n", &ins, &["y"], attrs)],
        inits,
    );
    check_model(&m)
}

fn err_text(r: Result<()>) -> String {
    match r {
        Ok(()) => String::from("accepted"),
        Err(e) => e.to_string(),
    }
}

fn weight(dims: &[usize]) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_f32(dims.to_vec(), &vec![0.5; n])
}

#[test]
fn valid_nodes_pass() {
    let w = || vec![("w", weight(&[4, 3, 3, 3]))];
    let x = &[1, 3, 8, 8];
    one(
        "Conv",
        x,
        &["w"],
        vec![attr::ints("pads", &[1, 1, 1, 1])],
        w(),
    )
    .unwrap();
    one(
        "Transpose",
        x,
        &[],
        vec![attr::ints("perm", &[0, 2, 3, 1])],
        vec![],
    )
    .unwrap();
    one(
        "MaxPool",
        x,
        &[],
        vec![attr::ints("kernel_shape", &[2, 2])],
        vec![],
    )
    .unwrap();
    one("Softmax", x, &[], vec![attr::int("axis", -1)], vec![]).unwrap();
    let shape = vec![("s", Tensor::from_i64(vec![4], &[1, 3, 8, 8]))];
    one("Expand", x, &["s"], vec![], shape).unwrap();
}

#[test]
fn transpose_perm_must_be_a_permutation_of_the_rank() {
    let x = &[1, 3, 8, 8];
    for perm in [
        &[0, 1, 2, 1 << 32][..],
        &[0, 1, 1, 2],
        &[0, 1, 2],
        &[-1, 0, 1, 2],
    ] {
        let e = err_text(one(
            "Transpose",
            x,
            &[],
            vec![attr::ints("perm", perm)],
            vec![],
        ));
        assert!(
            e.contains("node 'n' (Transpose): attribute 'perm': expected a permutation of 0..4"),
            "{perm:?}: {e}"
        );
    }
}

#[test]
fn conv_lists_follow_the_spatial_rank() {
    let x = &[1, 3, 8, 8];
    let w = || vec![("w", weight(&[4, 3, 3, 3]))];
    let cases: Vec<(crate::onnx::proto::AttributeProto, &str)> = vec![
        (attr::ints("pads", &[1, 1]), "'pads': expected 4 values"),
        (
            attr::ints("strides", &[0, 1]),
            "'strides': expected positive values",
        ),
        (
            attr::ints("dilations", &[1]),
            "'dilations': expected 2 values",
        ),
        (attr::int("group", 0), "'group': expected a positive number"),
        (
            attr::int("group", 3),
            "'group': expected a divisor of the weight's 4 output channels",
        ),
        (
            attr::int("group", 2),
            "'group': expected 3 input channels = 3 (weight axis 1) × group, found 2",
        ),
        (
            attr::ints("kernel_shape", &[5, 5]),
            "'kernel_shape': expected the weight's spatial dims [3, 3]",
        ),
        (attr::string("auto_pad", "SAME"), "'auto_pad'"),
    ];
    for (a, want) in cases {
        let e = err_text(one("Conv", x, &["w"], vec![a], w()));
        assert!(e.contains(want), "{want}: {e}");
    }
    // 4 channels = 3 (weight axis 1) × group? No: 3 × 1 ≠ 4.
    let e = err_text(one("Conv", &[1, 4, 8, 8], &["w"], vec![], w()));
    assert!(
        e.contains("4 input channels = 3 (weight axis 1) × group"),
        "{e}"
    );
}

#[test]
fn pools_need_a_kernel() {
    let e = err_text(one("MaxPool", &[1, 3, 8, 8], &[], vec![], vec![]));
    assert!(e.contains("'kernel_shape'") && e.contains("absent"), "{e}");
    let e = err_text(one(
        "AveragePool",
        &[1, 3, 8, 8],
        &[],
        vec![attr::ints("kernel_shape", &[2])],
        vec![],
    ));
    assert!(e.contains("expected rank 3"), "{e}");
}

#[test]
fn axes_stay_inside_the_rank() {
    let x = &[1, 4, 8];
    let s = || vec![("s", weight(&[8]))];
    let e = err_text(one(
        "LayerNormalization",
        x,
        &["s"],
        vec![attr::int("axis", -9)],
        s(),
    ));
    assert!(
        e.contains("'axis': expected an axis in -3..=2 (input rank 3), found -9"),
        "{e}"
    );
    let e = err_text(one("Softmax", x, &[], vec![attr::int("axis", 3)], vec![]));
    assert!(e.contains("found 3"), "{e}");
    let e = err_text(one("Flatten", x, &[], vec![attr::int("axis", 4)], vec![]));
    assert!(e.contains("-3..=3"), "{e}");
    one("Flatten", x, &[], vec![attr::int("axis", 3)], vec![]).unwrap();
    let axes = vec![("a", Tensor::from_i64(vec![2], &[1, 1]))];
    let e = err_text(one("ReduceSum", x, &["a"], vec![], axes));
    assert!(e.contains("distinct axes"), "{e}");
}

#[test]
fn batchnorm_needs_channels() {
    let p = |n: &'static str| (n, weight(&[3]));
    let m = model(
        15,
        &[],
        &["y"],
        vec![node(
            "BatchNormalization",
            "bn",
            &["c", "s", "b", "m", "v"],
            &["y"],
            vec![],
        )],
        vec![p("c"), p("s"), p("b"), p("m"), p("v")],
    );
    let e = err_text(check_model(&m));
    assert!(
        e.contains("node 'bn' (BatchNormalization): input 0: expected an input of rank 2"),
        "{e}"
    );
}

#[test]
fn sizes_from_constants_are_bounded() {
    let m = model(
        17,
        &[],
        &["y"],
        vec![node("ConstantOfShape", "cos", &["s"], &["y"], vec![])],
        vec![("s", Tensor::from_i64(vec![1], &[1 << 37]))],
    );
    let e = err_text(check_model(&m));
    assert!(
        e.contains("node 'cos' (ConstantOfShape): input 0: expected an output of at most 536870912 elements, found shape [137438953472]"),
        "{e}"
    );
    let shape = vec![("s", Tensor::from_i64(vec![2], &[1 << 20, 1 << 20]))];
    let e = err_text(one("Expand", &[1, 1], &["s"], vec![], shape));
    assert!(e.contains("at most 536870912 elements"), "{e}");
    let reps = vec![("r", Tensor::from_i64(vec![2], &[1 << 16, 1 << 16]))];
    let e = err_text(one("Tile", &[4, 4], &["r"], vec![], reps));
    assert!(e.contains("repeats [65536, 65536]"), "{e}");
    let neg = vec![("s", Tensor::from_i64(vec![2], &[-2, 4]))];
    let e = err_text(one("Reshape", &[2, 4], &["s"], vec![], neg));
    assert!(e.contains("at most one -1"), "{e}");
}

#[test]
fn subgraph_nodes_are_checked() {
    use crate::onnx::proto::GraphProto;
    let body = GraphProto {
        name: Some("then".into()),
        node: vec![node(
            "Transpose",
            "inner",
            &["x"],
            &["t"],
            vec![attr::ints("perm", &[0, 0])],
        )],
        output: vec![crate::passes::testutil::vi("t", &[2, 2])],
        ..Default::default()
    };
    let mut g = attr::int("unused", 0);
    g.name = Some("then_branch".into());
    g.i = None;
    g.r#type = Some(crate::onnx::proto::attribute_proto::AttributeType::Graph as i32);
    g.g = Some(body);
    let m = model(
        17,
        &[("x", &[2, 2]), ("c", &[])],
        &["y"],
        vec![node("If", "if", &["c"], &["y"], vec![g])],
        vec![],
    );
    let e = err_text(check_model(&m));
    assert!(
        e.contains("node 'if' (If), subgraph 'then_branch': node 'inner' (Transpose)"),
        "{e}"
    );
}
