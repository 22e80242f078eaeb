//! `onnxq calibrate`: sample sources, methods, determinism, bad samples.

use crate::common::*;
use onnxq::calibrate::samples::write_npz;
use onnxq::calibrate::{model_sha256, RangeTable};
use onnxq::ir::Tensor;
use std::path::Path;

fn calibrate(model: &Path, calib: &str, extra: &[&str], out: &Path) -> std::process::Output {
    let mut args = vec![
        "calibrate",
        model.to_str().unwrap(),
        "--calib",
        calib,
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    onnxq(&args)
}

fn table(path: &Path) -> RangeTable {
    RangeTable::load(path).unwrap()
}

#[test]
fn jobs_do_not_change_the_table() {
    let dir = tempdir();
    let cases = [
        (
            testdata("digits/cnn.onnx"),
            testdata("digits/cnn_holdout.npz"),
        ),
        (
            testdata("quirks/transformer_opset17.onnx"),
            testdata("quirks/transformer_calib"),
        ),
    ];
    for (model, calib) in &cases {
        for m in METHODS {
            let a = dir.path().join("a.json");
            let b = dir.path().join("b.json");
            let o1 = calibrate(
                model,
                calib.to_str().unwrap(),
                &["--method", m, "--jobs", "1"],
                &a,
            );
            let o2 = calibrate(
                model,
                calib.to_str().unwrap(),
                &["--method", m, "--jobs", "2"],
                &b,
            );
            assert_eq!(o1.status.code(), Some(0), "{}", stderr(&o1));
            assert_eq!(o2.status.code(), Some(0), "{}", stderr(&o2));
            assert_eq!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&b).unwrap(),
                "{} {m}: --jobs 1 and --jobs 2 differ",
                model.display()
            );
        }
    }
}

#[test]
fn variable_length_inputs_work_with_every_method() {
    let dir = tempdir();
    let model = testdata("quirks/transformer_opset17.onnx");
    for m in METHODS {
        let out = dir.path().join(format!("{m}.json"));
        let o = calibrate(
            &model,
            testdata("quirks/transformer_calib").to_str().unwrap(),
            &["--method", m],
            &out,
        );
        assert_eq!(o.status.code(), Some(0), "{m}: {}", stderr(&o));
        let t = table(&out);
        assert_eq!(t.samples, 16);
        // Attention scores, softmax output and the block output are all there.
        for name in ["scores", "attn", "y", "x"] {
            let r = &t.tensors[name];
            assert!(
                r.lo <= 0.0 && r.hi >= 0.0 && r.lo < r.hi,
                "{m} {name}: {r:?}"
            );
            let (lo0, hi0) = (r.min.min(0.0), r.max.max(0.0));
            assert!(
                r.lo >= lo0 - 1e-6 && r.hi <= hi0 + 1e-6,
                "{m} {name}: range inside the extremes (with 0)"
            );
        }
        // Softmax output lies in [0, 1].
        assert!(t.tensors["attn"].max <= 1.0 && t.tensors["attn"].min >= 0.0);
    }
}

#[test]
fn minmax_of_the_input_is_the_data_extremes() {
    let dir = tempdir();
    let out = dir.path().join("t.json");
    let o = calibrate(
        &testdata("digits/cnn.onnx"),
        testdata("digits/cnn_holdout.npz").to_str().unwrap(),
        &[],
        &out,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t = table(&out);
    assert_eq!(t.samples, 300);
    let img = &t.tensors["image"];
    assert_eq!((img.min, img.max), (0.0, 1.0));
    // Tied to this model, refused for another.
    let loaded = onnxq::onnx::load_model(testdata("digits/cnn.onnx")).unwrap();
    t.check_model(&out, &model_sha256(&loaded.proto)).unwrap();
    let other = onnxq::onnx::load_model(testdata("digits/mlp.onnx")).unwrap();
    let e = t
        .check_model(&out, &model_sha256(&other.proto))
        .unwrap_err()
        .to_string();
    assert!(e.contains("another model"), "{e}");
}

#[test]
fn every_source_kind_gives_the_same_table() {
    let dir = tempdir();
    // The same 4 samples as a stacked npz, a directory of npz, and pb folders.
    let x: Vec<Tensor> = (0..4)
        .map(|i| {
            Tensor::from_f32(
                vec![1, 20],
                &(0..20)
                    .map(|k| ((i * 20 + k) as f32 * 0.37).sin())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let stacked = dir.path().join("stack.npz");
    let all: Vec<f32> = x.iter().flat_map(|t| t.to_f32_vec().unwrap()).collect();
    write_npz(
        &stacked,
        &[("x".into(), Tensor::from_f32(vec![4, 1, 20], &all))],
    )
    .unwrap();
    let npz_dir = dir.path().join("npz");
    std::fs::create_dir(&npz_dir).unwrap();
    let pb_dir = dir.path().join("pb");
    for (i, t) in x.iter().enumerate() {
        write_npz(
            &npz_dir.join(format!("{i:04}.npz")),
            &[("x".into(), t.clone())],
        )
        .unwrap();
        let set = pb_dir.join(format!("test_data_set_{i}"));
        std::fs::create_dir_all(&set).unwrap();
        let p = onnxq::onnx::tensor::tensor_to_proto("x", t);
        std::fs::write(set.join("input_0.pb"), prost::Message::encode_to_vec(&p)).unwrap();
    }
    let model = testdata("quirks/gemm_transb_dynbatch_opset13.onnx");
    let mut tables = Vec::new();
    for src in [&stacked, &npz_dir, &pb_dir] {
        let out = dir.path().join("t.json");
        let o = calibrate(
            &model,
            src.to_str().unwrap(),
            &["--method", "percentile"],
            &out,
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}: {}",
            src.display(),
            stderr(&o)
        );
        tables.push(table(&out).tensors);
    }
    assert_eq!(tables[0], tables[1]);
    assert_eq!(tables[0], tables[2]);
}

#[test]
fn bad_samples_name_the_sample_and_input() {
    let dir = tempdir();
    let model = testdata("quirks/gemm_transb_dynbatch_opset13.onnx");
    let good = Tensor::from_f32(vec![1, 20], &[0.5; 20]);
    type Case<'a> = (&'a str, Vec<(String, Tensor)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            "missing",
            vec![("y".into(), good.clone())],
            &["0000.npz", "no input 'x'"],
        ),
        (
            "extra",
            vec![("x".into(), good.clone()), ("z".into(), good.clone())],
            &["0000.npz", "extra array 'z'"],
        ),
        (
            "dtype",
            vec![("x".into(), Tensor::from_i64(vec![1, 20], &[1; 20]))],
            &["0000.npz", "'x' is int64", "float"],
        ),
        (
            "shape",
            vec![("x".into(), Tensor::from_f32(vec![1, 21], &[0.5; 21]))],
            &["0000.npz", "'x' has shape [1, 21]", "[batch, 20]"],
        ),
    ];
    for (what, arrays, words) in cases {
        let calib = dir.path().join(what);
        std::fs::create_dir(&calib).unwrap();
        write_npz(&calib.join("0000.npz"), &arrays).unwrap();
        let out = dir.path().join(format!("{what}.json"));
        let o = calibrate(&model, calib.to_str().unwrap(), &[], &out);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        for w in words {
            assert!(err.contains(w), "{what}: expected '{w}' in {err}");
        }
        assert!(!out.exists(), "{what}: wrote a table");
    }
    let o = calibrate(&model, "random:4", &[], &dir.path().join("r.json"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--dim batch=VALUE"), "{}", stderr(&o));
    let o = calibrate(
        &model,
        "random:4:7",
        &["--dim", "batch=2"],
        &dir.path().join("r.json"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: random samples"));
}
