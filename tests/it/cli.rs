//! The command line as a user sees it.

use crate::common::*;

fn rel(args: &[&str]) -> std::process::Output {
    // Run from the repository root so paths in the output are relative.
    std::process::Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("onnxq runs")
}

#[test]
fn inspect_paddle_style_model() {
    let o = rel(&["inspect", "testdata/digits/cnn_paddle_opset12.onnx"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    insta::assert_snapshot!(stdout(&o));
}

#[test]
fn inspect_transformer_with_symbolic_dims() {
    let o = rel(&["inspect", "testdata/quirks/transformer_opset17.onnx"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    insta::assert_snapshot!(stdout(&o));
}

#[test]
fn inspect_external_data_json() {
    let o = rel(&["inspect", "--json", "testdata/external/model.onnx"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    insta::assert_snapshot!(stdout(&o));
}

#[test]
fn inspect_runs_on_every_model() {
    for m in good_models() {
        let o = onnxq(&["inspect", "--json", m.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}: {}", m.display(), stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["nodes"].as_u64().unwrap() > 0);
    }
}

#[test]
fn constant_weights_are_counted() {
    let o = onnxq(&[
        "inspect",
        "--json",
        testdata("digits/cnn_paddle_opset12.onnx").to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["weights_in_constant_nodes"]["tensors"], 12);
    assert_eq!(v["weights_in_initializers"]["tensors"], 0);
    let q: Vec<&str> = v["quantizable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["node"].as_str().unwrap())
        .collect();
    assert_eq!(q, ["conv1", "conv2", "fc"]);
}

#[test]
fn help_text() {
    let o = onnxq(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    insta::assert_snapshot!(stdout(&o));
}

#[test]
fn quantize_help_text() {
    let o = onnxq(&["quantize", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    insta::assert_snapshot!(stdout(&o));
}

#[test]
fn usage_errors_exit_2() {
    let o = onnxq(&["inspect"]);
    assert_eq!(o.status.code(), Some(2));
    let o = onnxq(&["no-such-command"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn convert_refuses_to_overwrite_input() {
    let dir = tempdir();
    let m = dir.path().join("m.onnx");
    std::fs::copy(testdata("digits/mlp.onnx"), &m).unwrap();
    let o = onnxq(&["convert", m.to_str().unwrap(), "-o", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = onnxq(&[
        "convert",
        m.to_str().unwrap(),
        "-o",
        m.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn convert_to_and_from_external_data() {
    let dir = tempdir();
    let ext = dir.path().join("ext.onnx");
    let o = onnxq(&[
        "convert",
        testdata("digits/cnn.onnx").to_str().unwrap(),
        "-o",
        ext.to_str().unwrap(),
        "--external-data",
        "weights.bin",
        "--external-threshold",
        "256",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(dir.path().join("weights.bin").exists());
    let back = dir.path().join("inline.onnx");
    let o = onnxq(&[
        "convert",
        ext.to_str().unwrap(),
        "-o",
        back.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = onnxq(&["inspect", "--json", ext.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["external_data"][0]["location"], "weights.bin");

    // A data-file name with a path in it is refused.
    let o = onnxq(&[
        "convert",
        testdata("digits/cnn.onnx").to_str().unwrap(),
        "-o",
        dir.path().join("x.onnx").to_str().unwrap(),
        "--external-data",
        "../escape.bin",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("plain file name"), "{}", stderr(&o));
}
