//! `prepare` / `onnxq optimize` keep what every model computes.

use crate::common::*;
use onnxq::ir::Model;
use onnxq::onnx::load_model;
use onnxq::passes::{prepare, PassOptions};
use onnxq::tract::Runner;

fn load(path: &std::path::Path) -> Model {
    Model::from_proto(&load_model(path).unwrap().proto).unwrap()
}

fn outputs(m: &Model, seed: u64) -> Vec<Vec<f32>> {
    let specs = input_specs(m, 3);
    let runner = Runner::new(&m.to_proto().unwrap(), &specs, None).expect("tract builds");
    runner
        .run(&inputs_for(m, 3, seed))
        .expect("tract runs")
        .iter()
        .map(|t| {
            t.to_f32_vec().unwrap_or_else(|_| {
                // Integer outputs (the golden QLinear models).
                t.to_i64_vec().unwrap().iter().map(|&v| v as f32).collect()
            })
        })
        .collect()
}

/// max |a - b| ≤ 1e-4 × the output's range, per output.
fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        let lo = x.iter().cloned().fold(f32::INFINITY, f32::min);
        let hi = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let range = (hi - lo).max(1e-6);
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4 * range,
            "{what}: output {k} differs by {worst} (range {range})"
        );
    }
}

#[test]
fn every_model_computes_the_same_after_prepare() {
    for path in good_models() {
        let orig = load(&path);
        let opset = orig.onnx_opset().unwrap();
        let want = outputs(&orig, 11);
        let mut targets = vec![None];
        if opset < 13 {
            targets.push(Some(13));
        }
        for target in targets {
            let mut m = orig.clone();
            let opts = PassOptions {
                target_opset: target,
                ..Default::default()
            };
            let report =
                prepare(&mut m, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                report.shape_inference_skipped.is_none(),
                "{}: {report:?}",
                path.display()
            );
            // Written, re-read, and run.
            let back = Model::from_proto(&m.to_proto().unwrap()).unwrap();
            assert_eq!(back.onnx_opset().unwrap(), target.unwrap_or(opset));
            assert_close(
                &want,
                &outputs(&back, 11),
                &format!("{} (opset {target:?})", path.display()),
            );
            // A second run finds nothing left to do.
            let mut again = back.clone();
            let r2 = prepare(&mut again, &PassOptions::default()).unwrap();
            let rewrites: usize = r2.rewrites.values().sum();
            assert_eq!(rewrites, 0, "{}: not a fixed point: {r2:?}", path.display());
        }
    }
}

#[test]
fn paddle_style_weights_become_initializers_and_batchnorm_folds() {
    let dir = tempdir();
    let out = dir.path().join("opt.onnx");
    let src = testdata("digits/cnn_paddle_opset12.onnx");
    let o = onnxq(&[
        "optimize",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--opset",
        "13",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let inspect = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&onnxq(&["inspect", "--json", p.to_str().unwrap()]).stdout).unwrap()
    };
    let (before, after) = (inspect(&src), inspect(&out));
    assert_eq!(before["weights_in_constant_nodes"]["tensors"], 12);
    assert_eq!(after["weights_in_constant_nodes"]["tensors"], 0);
    assert_eq!(
        after["weights_in_initializers"]["tensors"], 6,
        "2 convs + fc, weights and biases"
    );
    assert_eq!(before["nodes"], 21);
    assert_eq!(after["nodes"], 6);
    assert!(after["op_types"].get("BatchNormalization").is_none());
    assert!(after["op_types"].get("Constant").is_none());
    assert_eq!(after["opsets"][0]["version"], 13);
    assert_eq!(after["quantizable"].as_array().unwrap().len(), 3);
    // Every value is typed.
    let m = load(&out);
    let g = &m.graph;
    for (_, n) in g.nodes() {
        for v in n.outputs.iter().flatten() {
            assert!(
                g.value(*v).info.is_some() || g.is_graph_output(*v),
                "{} untyped",
                g.value_name(*v)
            );
        }
    }
}

#[test]
fn optimize_refuses_a_downgrade_and_writes_nothing() {
    let dir = tempdir();
    let out = dir.path().join("o.onnx");
    let src = testdata("quirks/transformer_opset17.onnx");
    let o = onnxq(&[
        "optimize",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--opset",
        "13",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("upgrade-opset") && stderr(&o).contains("17"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}
