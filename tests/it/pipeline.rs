//! The pipeline as a library call: the same model and report as the CLI,
//! samples from memory like samples from files, a failed gate as a report
//! (not an error), errors that name what is wrong and write nothing.

use crate::common::*;
use onnxq::calibrate::samples::InMemory;
use onnxq::calibrate::{open_source, SampleSource};
use onnxq::pipeline::{quantize, quantize_file, Options, Samples};
use prost::Message;
use std::sync::Arc;

fn digits_options() -> Options {
    Options {
        calibration: Some(Samples::from(
            testdata("digits/cnn_calib").to_str().unwrap(),
        )),
        ..Options::default()
    }
}

/// Everything in a report but the seconds.
fn without_timings(mut v: serde_json::Value) -> serde_json::Value {
    v.as_object_mut().unwrap().remove("timings");
    v
}

#[test]
fn library_call_writes_what_the_cli_writes() {
    let dir = tempdir();
    let (lib_out, cli_out) = (dir.path().join("lib.onnx"), dir.path().join("cli.onnx"));
    let cli_report = dir.path().join("cli.json");
    let model = testdata("digits/cnn.onnx");
    // The CLI's flags become the recipe, so the library call takes the
    // samples in the recipe too (the recipe is recorded in the metadata).
    let options = Options::from_recipe(onnxq::quantize::Recipe {
        calib: Some(testdata("digits/cnn_calib").to_str().unwrap().into()),
        ..Default::default()
    });
    let done = quantize_file(&model, &lib_out, &options).unwrap();
    assert!(done.report.written && done.report.passed());
    let o = onnxq(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        cli_out.to_str().unwrap(),
        "--calib",
        testdata("digits/cnn_calib").to_str().unwrap(),
        "--report",
        cli_report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&lib_out).unwrap(),
        std::fs::read(&cli_out).unwrap()
    );
    // Through text, as the CLI writes it (f32 fields print shortest).
    let text = serde_json::to_string(&done.report).unwrap();
    let mut lib: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut cli = json(&cli_report);
    // The output paths differ by design.
    lib["output"] = "".into();
    cli["output"] = "".into();
    assert_eq!(without_timings(lib), without_timings(cli));
    // The stages are timed, and add up to no more than the whole run.
    let t = done.report.timings;
    let parts = t.load
        + t.prepare
        + t.equalize
        + t.calibrate
        + t.gptq
        + t.bias_correction
        + t.build
        + t.gate
        + t.mixed_precision
        + t.write;
    assert!(t.calibrate > 0.0 && t.gate > 0.0 && t.gptq > 0.0, "{t:?}");
    assert!(parts <= t.total * 1.001 + 1e-3, "{t:?}");
}

#[test]
fn samples_in_memory_calibrate_like_samples_on_disk() {
    let model = onnxq::onnx::load_model(testdata("digits/cnn.onnx")).unwrap();
    let on_disk = quantize(&model, &digits_options()).unwrap();
    let m = onnxq::ir::Model::from_proto(&model.proto).unwrap();
    let specs = onnxq::ir::types::input_specs(&m.graph);
    let dir = open_source(
        testdata("digits/cnn_calib").to_str().unwrap(),
        &specs,
        &Default::default(),
    )
    .unwrap();
    let samples: Vec<_> = (0..dir.len()).map(|i| dir.load(i).unwrap()).collect();
    let source: Arc<dyn SampleSource> = Arc::new(InMemory(samples));
    let options = Options {
        calibration: Some(Samples::Source {
            label: "reader".into(),
            source,
        }),
        ..Options::default()
    };
    let in_memory = quantize(&model, &options).unwrap();
    // Same weights, scales and nodes; only the samples' label and
    // fingerprint in the metadata differ.
    let graph = |q: &onnxq::pipeline::Quantized| q.model.graph.as_ref().unwrap().encode_to_vec();
    assert!(graph(&on_disk) == graph(&in_memory), "graphs differ");
    assert_eq!(in_memory.report.calibration.source, "reader");
    assert_eq!(in_memory.report.validation, "reader");
}

#[test]
fn a_failed_gate_is_a_report_and_nothing_is_written() {
    let dir = tempdir();
    let out = dir.path().join("q.onnx");
    let mut options = digits_options();
    options.recipe.min_sqnr = Some(200.0);
    options.recipe.auto = Some(false);
    let done = quantize_file(&testdata("digits/cnn.onnx"), &out, &options).unwrap();
    assert!(!done.report.passed());
    assert!(!done.report.written);
    assert!(!out.exists());
    assert!(done.report.parity.outputs[0].failures[0].contains("SQNR"));
    // `force` writes it anyway.
    options.force = true;
    let done = quantize_file(&testdata("digits/cnn.onnx"), &out, &options).unwrap();
    assert!(!done.report.passed() && done.report.written && out.exists());
}

#[test]
fn bad_options_are_errors_naming_what_is_wrong() {
    let dir = tempdir();
    let out = dir.path().join("q.onnx");
    let model = testdata("digits/cnn.onnx");
    let missing = dir.path().join("no_such_dir");
    let options = Options {
        calibration: Some(Samples::from(missing.to_str().unwrap())),
        ..Options::default()
    };
    let e = quantize_file(&model, &out, &options)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no_such_dir"), "{e}");
    let e = quantize_file(&model, &out, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs calibration samples"), "{e}");
    let mut options = digits_options();
    options.recipe.max_range_ratio = Some(0.5);
    let e = quantize_file(&model, &out, &options)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max-range-ratio 0.5"), "{e}");
    assert!(!out.exists());
}

#[test]
fn dynamic_mode_reports_as_the_command_always_has() {
    let model = onnxq::onnx::load_model(testdata("quirks/transformer_opset17.onnx")).unwrap();
    let options = Options::from_recipe(onnxq::quantize::Recipe {
        mode: Some(onnxq::quantize::Mode::Dynamic),
        validate: Some(
            testdata("quirks/transformer_calib")
                .to_str()
                .unwrap()
                .into(),
        ),
        ..Default::default()
    });
    let done = quantize(&model, &options).unwrap();
    let r = serde_json::to_value(&done.report).unwrap();
    assert_eq!(r["format"], "dynamic");
    assert_eq!(r["target"], "onnx");
    assert_eq!(r["calibration"], serde_json::json!({"method": "dynamic"}));
    let meta: std::collections::BTreeMap<_, _> = done
        .model
        .metadata_props
        .iter()
        .map(|p| {
            (
                p.key.clone().unwrap_or_default(),
                p.value.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(meta["onnxq.calibration"], r#"{"method":"dynamic"}"#);
}
