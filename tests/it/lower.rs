//! `onnxq quantize` default format (QOperator) and `--mode dynamic`.

use crate::common::{self, onnxq, stderr, tempdir, testdata};
use crate::quantize::{calib_for, f32s, inputs_like_calibration, load, op_counts, quantize, sqnr};
use onnxq::ir::{DataType, Model, Tensor};
use onnxq::tract::Runner;
use std::path::Path;

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn count(v: &serde_json::Value, op: &str) -> usize {
    v.get(op).and_then(|x| x.as_u64()).unwrap_or(0) as usize
}

/// The scale of the DequantizeLinear producing graph output `name`, if any.
fn output_step(m: &Model, name: &str) -> Option<f32> {
    let g = &m.graph;
    let v = g.find_value(name)?;
    let (_, n) = g.producer_node(v)?;
    if !n.is("DequantizeLinear") {
        return None;
    }
    g.initializer(n.input(1)?)?
        .to_f32_vec()
        .ok()?
        .first()
        .copied()
}

fn run(
    m: &Model,
    specs: &[(String, DataType, Vec<usize>)],
    inputs: &[(String, Tensor)],
) -> Vec<Tensor> {
    Runner::new(&m.to_proto().unwrap(), specs, None)
        .unwrap_or_else(|e| panic!("tract cannot load the model: {e}"))
        .run(inputs)
        .unwrap()
}

#[test]
fn every_testdata_model_lowers_with_one_integer_op_per_quantized_conv_and_matmul() {
    let dir = tempdir();
    for model in common::float_models() {
        let name = model.display().to_string();
        let (qdq, qop) = (dir.path().join("qdq.onnx"), dir.path().join("qop.onnx"));
        let (rq, ro) = (dir.path().join("qdq.json"), dir.path().join("qop.json"));
        let extra = calib_for(&model);
        let mut a: Vec<&str> = extra.iter().map(String::as_str).collect();
        a.extend(["--report", rq.to_str().unwrap()]);
        let o = quantize(&model, &qdq, &a);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let mut b: Vec<&str> = extra.iter().map(String::as_str).collect();
        b.extend(["--report", ro.to_str().unwrap(), "--format", "qoperator"]);
        let o = quantize(&model, &qop, &b);
        assert!(o.status.success(), "{name}: {}", stderr(&o));

        let quantized = &report(&rq)["quantization"]["quantized"];
        let m = load(&qop);
        let ops = op_counts(&m);
        let n = |op: &str| ops.get(op).copied().unwrap_or(0);
        assert_eq!(
            n("QLinearConv"),
            count(quantized, "Conv"),
            "{name}: {ops:?}"
        );
        assert_eq!(
            n("QLinearMatMul") + n("MatMulInteger"),
            count(quantized, "MatMul") + count(quantized, "Gemm"),
            "{name}: {ops:?}"
        );
        assert!(
            m.graph
                .nodes()
                .all(|(_, n)| n.domain.is_empty() || n.domain == "ai.onnx"),
            "{name}: the onnx target emitted a non-standard domain"
        );
        assert!(m.opset("com.microsoft").is_none(), "{name}");
        let lowering = &report(&ro)["lowering"];
        eprintln!("{name}: {}", lowering["integer_ops"]);

        // tract runs both; QOperator values equal the QDQ values (tract
        // computes QDQ in float, QLinear ops in integers) up to one step.
        let fp = load(&model);
        let (inputs, specs) = inputs_like_calibration(&model, &fp);
        let x = run(&load(&qdq), &specs, &inputs);
        let y = run(&m, &specs, &inputs);
        for (i, (x, y)) in x.iter().zip(&y).enumerate() {
            if !x.dtype().is_float() {
                continue;
            }
            let out_name = m.graph.output_info(i).and_then(|v| v.name.clone()).unwrap();
            let (x, y) = (f32s(x), f32s(y));
            match output_step(&m, &out_name) {
                Some(step) => {
                    let equal = x.iter().zip(&y).filter(|(a, b)| a == b).count();
                    let within = x.iter().zip(&y).all(|(a, b)| (a - b).abs() <= step * 1.001);
                    let frac = equal as f64 / x.len() as f64;
                    eprintln!("{name} output {i}: {:.2}% equal to QDQ", 100.0 * frac);
                    assert!(
                        frac >= 0.99 && within,
                        "{name} output {i}: {:.2}% equal",
                        100.0 * frac
                    );
                }
                None => {
                    let db = sqnr(&x, &y);
                    eprintln!("{name} output {i}: SQNR vs QDQ {db:.1} dB");
                    assert!(db > 40.0, "{name} output {i}: SQNR vs QDQ {db:.1} dB");
                }
            }
        }
    }
}

#[test]
fn ort_target_emits_contrib_ops_only_when_asked() {
    let dir = tempdir();
    let model = testdata("quirks/transformer_opset17.onnx");
    let calib = testdata("quirks/transformer_calib");
    let out = dir.path().join("ort.onnx");
    let o = quantize(
        &model,
        &out,
        &[
            "--calib",
            calib.to_str().unwrap(),
            "--format",
            "qoperator",
            "--target",
            "ort",
            "--op-types",
            "default,Add,Mul",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = load(&out);
    let ms: Vec<&str> = m
        .graph
        .nodes()
        .filter(|(_, n)| n.domain == "com.microsoft")
        .map(|(_, n)| n.op_type.as_str())
        .collect();
    assert!(ms.contains(&"QLinearAdd"), "{ms:?}");
    assert_eq!(m.opset("com.microsoft"), Some(1));
    // The same options for the onnx target: standard ops only.
    let std_out = dir.path().join("onnx.onnx");
    let o = quantize(
        &model,
        &std_out,
        &[
            "--calib",
            calib.to_str().unwrap(),
            "--format",
            "qoperator",
            "--op-types",
            "default,Add,Mul",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = load(&std_out);
    assert!(m.graph.nodes().all(|(_, n)| n.domain.is_empty()));
    assert!(
        stderr(&o).contains("float between DequantizeLinear and QuantizeLinear: Add"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn dynamic_mode_on_a_variable_length_transformer() {
    let dir = tempdir();
    let model = testdata("quirks/transformer_opset17.onnx");
    let out = dir.path().join("dyn.onnx");
    let o = onnxq(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--mode",
        "dynamic",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fp = load(&model);
    let m = load(&out);
    let ops = op_counts(&m);
    let weight_matmuls = fp
        .graph
        .nodes()
        .filter(|(_, n)| {
            (n.is("MatMul") || n.is("Gemm"))
                && n.input(1).and_then(|v| fp.graph.initializer(v)).is_some()
        })
        .count();
    assert!(weight_matmuls >= 4);
    assert_eq!(ops.get("MatMulInteger"), Some(&weight_matmuls), "{ops:?}");
    assert!(ops.get("DynamicQuantizeLinear").copied().unwrap_or(0) >= 1);
    // Q, K, V read the same normalized input: one DynamicQuantizeLinear.
    assert!(ops["DynamicQuantizeLinear"] < weight_matmuls, "{ops:?}");
    assert!(!ops.contains_key("QuantizeLinear"));
    // Variable sequence length: tract runs seq 3 and 10; close to FP32.
    for seq in [3usize, 10] {
        let n = seq * 16;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let inputs = vec![("x".to_string(), Tensor::from_f32(vec![1, seq, 16], &x))];
        let specs = vec![("x".to_string(), DataType::Float, vec![1, seq, 16])];
        let a = run(&fp, &specs, &inputs);
        let b = run(&m, &specs, &inputs);
        let db = sqnr(&f32s(&a[0]), &f32s(&b[0]));
        eprintln!("dynamic transformer seq {seq}: SQNR {db:.1} dB");
        assert!(db > 25.0, "seq {seq}: SQNR {db:.1} dB");
    }
    assert!(stderr(&o).contains("activations quantized at run time"));
}

#[test]
fn dynamic_mode_refuses_the_qdq_format() {
    let dir = tempdir();
    let out = dir.path().join("x.onnx");
    let o = onnxq(&[
        "quantize",
        testdata("digits/mlp.onnx").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--mode",
        "dynamic",
        "--format",
        "qdq",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--format qdq is for static quantization"));
    assert!(!out.exists());
}
