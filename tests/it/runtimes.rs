//! Deployment runtimes: `--target openvino` writes what OpenVINO reads
//! correctly (QDQ), `--target tensorrt` what TensorRT's explicit
//! quantization takes (symmetric int8 QDQ), and `check --runtime` without a loadable runtime
//! library is a clear error. Running models in onnxruntime and OpenVINO
//! themselves needs their libraries: `tools/crosscheck_runtimes.py` does
//! that in `.ci/run`, with the pinned wheels.

use crate::common::{onnxq, stderr, tempdir, testdata};
use crate::quantize::quantize;
use onnxq::ir::Model;

fn op_types(path: &std::path::Path) -> Vec<String> {
    let loaded = onnxq::onnx::load_model(path).unwrap();
    let m = Model::from_proto(&loaded.proto).unwrap();
    m.graph.nodes().map(|(_, n)| n.op_type.clone()).collect()
}

#[test]
fn target_openvino_writes_qdq_and_refuses_qoperator() {
    let dir = tempdir();
    let calib = testdata("digits/cnn_calib");
    let calib = calib.to_str().unwrap();
    let out = dir.path().join("ov.onnx");
    let o = quantize(
        &testdata("digits/cnn.onnx"),
        &out,
        &["--calib", calib, "--target", "openvino"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ops = op_types(&out);
    assert!(ops.iter().any(|o| o == "DequantizeLinear"), "{ops:?}");
    assert!(ops.iter().any(|o| o == "Conv"), "{ops:?}");
    assert!(!ops.iter().any(|o| o.starts_with("QLinear")), "{ops:?}");
    // The same QDQ model `--format qdq` writes.
    let qdq = dir.path().join("qdq.onnx");
    let o = quantize(
        &testdata("digits/cnn.onnx"),
        &qdq,
        &["--calib", calib, "--format", "qdq"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ops, op_types(&qdq));

    // QOperator for OpenVINO: refused, nothing written.
    let bad = dir.path().join("bad.onnx");
    let o = quantize(
        &testdata("digits/cnn.onnx"),
        &bad,
        &[
            "--calib",
            calib,
            "--target",
            "openvino",
            "--format",
            "qoperator",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("axis 1"), "{}", stderr(&o));
    assert!(!bad.exists());
}

/// TensorRT's explicit quantization: every Q/DQ int8 with zero point 0,
/// no int32 DequantizeLinear (float biases), residual Add inputs through
/// Q/DQ, the target in the metadata; what it cannot take is refused with
/// nothing written.
#[test]
fn target_tensorrt_writes_symmetric_int8_qdq() {
    use onnxq::ir::DataType;
    let dir = tempdir();
    let calib = testdata("quirks/transformer_calib");
    let calib = calib.to_str().unwrap();
    let out = dir.path().join("trt.onnx");
    let model = testdata("quirks/transformer_opset17.onnx");
    let o = quantize(&model, &out, &["--calib", calib, "--target", "tensorrt"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let loaded = onnxq::onnx::load_model(&out).unwrap();
    let m = Model::from_proto(&loaded.proto).unwrap();
    let g = &m.graph;
    let (mut qdq, mut adds) = (0, 0);
    for (_, n) in g.nodes() {
        let input = |k: usize| n.inputs.get(k).copied().flatten();
        match n.op_type.as_str() {
            "QuantizeLinear" | "DequantizeLinear" => {
                qdq += 1;
                let zp = input(2).and_then(|v| g.initializer(v));
                let zp = zp.unwrap_or_else(|| panic!("{}: no zero point", n.name));
                assert_eq!(zp.dtype(), DataType::Int8, "{}", n.name);
                assert!(
                    zp.to_i64_vec().unwrap().iter().all(|&z| z == 0),
                    "{}",
                    n.name
                );
                if let Some(t) = input(0).and_then(|v| g.initializer(v)) {
                    assert_eq!(
                        t.dtype(),
                        DataType::Int8,
                        "{}: stored {:?}",
                        n.name,
                        t.dtype()
                    );
                }
            }
            "Add"
                if n.inputs
                    .iter()
                    .flatten()
                    .all(|&v| g.initializer(v).is_none()) =>
            {
                adds += 1;
                for v in n.inputs.iter().flatten() {
                    let from = g.producer_node(*v).map(|(_, p)| p.op_type.as_str());
                    assert_eq!(from, Some("DequantizeLinear"), "{}", n.name);
                }
            }
            _ => {}
        }
    }
    assert!(qdq > 0 && adds > 0, "{qdq} Q/DQ, {adds} residual Adds");
    assert!(m
        .metadata()
        .any(|(k, v)| k == "onnxq.target" && v == "tensorrt"));

    for (extra, says) in [
        (&["--activations", "uint8"][..], "activations uint8"),
        (&["--format", "qoperator"][..], "Q/DQ pairs"),
        (&["--mode", "dynamic"][..], "static quantization"),
    ] {
        let bad = dir.path().join("bad.onnx");
        let mut args = vec!["--calib", calib, "--target", "tensorrt"];
        args.extend_from_slice(extra);
        let o = quantize(&model, &bad, &args);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{extra:?}: {}", stderr(&o));
        assert!(!bad.exists(), "{extra:?}");
    }
}

#[test]
fn check_in_a_runtime_without_its_library_is_a_clear_error() {
    let dir = tempdir();
    let q = dir.path().join("q.onnx");
    let o = quantize(
        &testdata("digits/mlp.onnx"),
        &q,
        &[
            "--calib",
            testdata("digits/mlp_calib.npz").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let missing = dir.path().join("no-such-lib");
    // A file that is not a shared library.
    let not_a_lib = dir.path().join("libonnxruntime.so");
    std::fs::write(&not_a_lib, b"not an ELF file").unwrap();
    let (reference, data) = (
        testdata("digits/mlp.onnx"),
        testdata("digits/mlp_holdout.npz"),
    );
    let check = |extra: &[&str]| {
        let mut args = vec![
            "check",
            q.to_str().unwrap(),
            "--reference",
            reference.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        onnxq(&args)
    };
    for (runtime, name) in [("ort", "onnxruntime"), ("openvino", "OpenVINO")] {
        for lib in [&missing, &not_a_lib] {
            let o = check(&["--runtime", runtime, "--runtime-lib", lib.to_str().unwrap()]);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{runtime} {lib:?}: {err}");
            assert!(err.contains(name), "{err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    // --runtime-lib needs --runtime.
    let o = check(&["--runtime-lib", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// The written model loads in tract the way tract's documentation loads a
/// model: concrete input facts, then analysis. Before intermediate
/// `value_info` declared its symbolic batch (`N`) as unknown, this failed
/// ("Unifying shapes 1,1,8,8 and N,1,8,8") for both formats.
#[test]
fn written_models_load_in_tract_with_concrete_input_facts() {
    use tract_onnx::prelude::*;
    let dir = tempdir();
    let calib = testdata("digits/cnn_calib");
    for format in ["qoperator", "qdq"] {
        let out = dir.path().join(format!("{format}.onnx"));
        let o = quantize(
            &testdata("digits/cnn.onnx"),
            &out,
            &["--calib", calib.to_str().unwrap(), "--format", format],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let plan = tract_onnx::onnx()
            .model_for_path(&out)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 1, 8, 8]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable());
        let plan = plan.unwrap_or_else(|e| panic!("{format}: {e:?}"));
        let x = tract_ndarray::Array4::<f32>::zeros((1, 1, 8, 8));
        let y = plan.run(tvec!(x.into_tensor().into())).unwrap();
        assert_eq!(y[0].shape(), &[1, 10], "{format}");
    }
}
