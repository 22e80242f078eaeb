//! Accuracy search: `onnxq sensitivity`, automatic mixed precision inside
//! `onnxq quantize`, and the range-gap guard on a detector head.

use crate::common::{broken_conv1_recipe, json, onnxq, stderr, stdout, tempdir, testdata};
use crate::quantize::{load, quantize};
use onnxq::calibrate::samples::read_npz;
use std::path::Path;

#[test]
fn sensitivity_ranks_a_broken_layer_first() {
    let dir = tempdir();
    let recipe = broken_conv1_recipe(dir.path());
    let rep = dir.path().join("s.json");
    let svg = dir.path().join("s.svg");
    let o = onnxq(&[
        "sensitivity",
        testdata("digits/cnn.onnx").to_str().unwrap(),
        "--calib",
        testdata("digits/cnn_calib").to_str().unwrap(),
        "--validate",
        testdata("digits/cnn_holdout.npz").to_str().unwrap(),
        "--config",
        recipe.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let first = out
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap();
    assert!(first.contains("conv1"), "{out}");
    let r = json(&rep);
    let nodes = r["sensitivity"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "conv1, conv2, fc");
    assert_eq!(nodes[0]["node"], "conv1");
    // Alone, the broken layer ruins the output; every other node alone
    // keeps it above the gate; keeping conv1 float recovers the model.
    let only = |n: &serde_json::Value| n["only"]["worst_sqnr_db"].as_f64().unwrap();
    let all_but = |n: &serde_json::Value| n["all_but"]["worst_sqnr_db"].as_f64().unwrap();
    assert!(only(&nodes[0]) < 5.0, "{}", only(&nodes[0]));
    assert!(nodes[1..].iter().all(|n| only(n) > 30.0));
    assert!(all_but(&nodes[0]) > 30.0);
    assert!(nodes[1..].iter().all(|n| all_but(n) < 5.0));
    assert_eq!(r["sensitivity"]["all"]["passes"], false);
    // Class scores: top-1 agreement is reported with the SQNR.
    assert!(
        nodes[0]["only"]["outputs"][0]["top1_agreement"]
            .as_f64()
            .unwrap()
            < 0.5
    );
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    assert!(chart.contains("conv1 (Conv)") && chart.contains("gate 20 dB"));
    // Ranked first in the chart too (rows are drawn in order).
    assert!(chart.find("conv1 (Conv)") < chart.find("conv2 (Conv)"));
}

#[test]
fn auto_mode_keeps_exactly_the_broken_layer_float_and_passes() {
    let dir = tempdir();
    let recipe = broken_conv1_recipe(dir.path());
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    let (calib, holdout) = (
        testdata("digits/cnn_calib"),
        testdata("digits/cnn_holdout.npz"),
    );
    let args = [
        "--calib",
        calib.to_str().unwrap(),
        "--validate",
        holdout.to_str().unwrap(),
        "--config",
        recipe.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--format",
        "qoperator",
    ];
    let o = quantize(&testdata("digits/cnn.onnx"), &out, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.exists());
    let err = stderr(&o);
    assert!(
        err.contains("automatic mixed precision") && err.contains("float conv1"),
        "{err}"
    );
    let r = json(&rep);
    let m = &r["mixed_precision"];
    assert_eq!(m["kept_float"], serde_json::json!(["conv1"]));
    assert_eq!(m["passed"], true);
    assert_eq!(m["steps"].as_array().unwrap().len(), 1);
    assert!(m["steps"][0]["gain_db"].as_f64().unwrap() > 20.0);
    // SQNR below 5 dB against a 20 dB minimum: at least 15 dB short.
    assert!(m["start_margin_db"].as_f64().unwrap() < -15.0);
    let floats = r["quantization"]["float_nodes"].as_array().unwrap();
    let conv1 = floats.iter().find(|f| f["node"] == "conv1").unwrap();
    assert!(conv1["reason"]
        .as_str()
        .unwrap()
        .contains("automatic mixed precision"));
    assert_eq!(
        floats.iter().filter(|f| f["op"] == "Conv").count(),
        1,
        "only conv1 stays float"
    );
    assert_eq!(r["parity"]["passed"], true);
    // The kept step's verdict is the report's: it passed, so it compared
    // the outputs only.
    assert!(r["parity"]["layers"].as_array().unwrap().is_empty());
    assert_eq!(r["parity"]["layer_samples"], 0);
    // The model records what was kept float.
    let m = onnxq::onnx::load_model(&out).unwrap();
    let kept = m
        .proto
        .metadata_props
        .iter()
        .find(|p| p.key.as_deref() == Some("onnxq.kept_float"));
    assert_eq!(kept.and_then(|p| p.value.as_deref()), Some("conv1"));

    // --no-auto: the gate fails, exit 3, nothing written.
    let out2 = dir.path().join("q2.onnx");
    let mut no_auto = args.to_vec();
    no_auto.push("--no-auto");
    let o = quantize(&testdata("digits/cnn.onnx"), &out2, &no_auto);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!out2.exists());
    assert!(json(&rep)["mixed_precision"].is_null());

    // A budget of no node: one line says so, exit 3.
    let mut none = args.to_vec();
    none.extend(["--max-float", "0"]);
    let o = quantize(&testdata("digits/cnn.onnx"), &out2, &none);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("budget allows no node"),
        "{}",
        stderr(&o)
    );
    assert!(!out2.exists());
}

#[test]
fn auto_mode_in_qdq_at_opset_21_keeps_the_coarse_layer_in_16_bits() {
    // A range 2000 wide on conv1's output: 8 bits round it to nothing
    // (steps of 7.8), 16 bits keep it (steps of 0.03).
    let dir = tempdir();
    let recipe = dir.path().join("wide.yaml");
    std::fs::write(&recipe, "tensors:\n  bn1:\n    range: [0, 2000]\n").unwrap();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    let calib = testdata("digits/cnn_calib");
    let mut args = vec![
        "--calib",
        calib.to_str().unwrap(),
        "--config",
        recipe.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--format",
        "qdq",
        "--opset",
        "21",
    ];
    let o = quantize(&testdata("digits/cnn.onnx"), &out, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("uint16 activations conv1"), "{err}");
    let r = json(&rep);
    let m = &r["mixed_precision"];
    assert_eq!(m["kept_float"], serde_json::json!(["conv1"]));
    assert_eq!(m["kept_as"], "uint16 activations");
    assert!(m["start_margin_db"].as_f64().unwrap() < -15.0);
    assert!(m["steps"][0]["worst_margin_db"].as_f64().unwrap() > 0.0);
    assert!(r["parity"]["outputs"][0]["sqnr_db"].as_f64().unwrap() > 30.0);
    // Nothing float; conv1's input and output are uint16, its weights int8.
    assert_eq!(r["quantization"]["float_nodes"], serde_json::json!([]));
    assert_eq!(r["parity"]["passed"], true);
    assert_eq!(r["opset_after"], 21);
    let model = onnxq::onnx::load_model(&out).unwrap();
    let g = &model.proto.graph.as_ref().unwrap();
    let zp = |name: &str| {
        g.initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .and_then(|t| t.data_type)
    };
    assert_eq!(zp("bn1/zero_point"), Some(4), "uint16");
    assert_eq!(zp("image/zero_point"), Some(4), "uint16");
    assert_eq!(zp("bn2/zero_point"), Some(2), "uint8");
    let wide = model
        .proto
        .metadata_props
        .iter()
        .find(|p| p.key.as_deref() == Some("onnxq.kept_wide"));
    assert_eq!(wide.and_then(|p| p.value.as_deref()), Some("conv1"));

    // At opset 13 the same search keeps conv1 float instead.
    let out13 = dir.path().join("q13.onnx");
    args.truncate(args.len() - 2);
    let o = quantize(&testdata("digits/cnn.onnx"), &out13, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("float conv1"), "{}", stderr(&o));
    // 16-bit activations are refused where integer operators would take
    // them.
    std::fs::write(
        dir.path().join("u16.yaml"),
        "tensors:\n  bn1:\n    type: uint16\n",
    )
    .unwrap();
    let o = quantize(
        &testdata("digits/cnn.onnx"),
        &dir.path().join("bad.onnx"),
        &[
            "--calib",
            calib.to_str().unwrap(),
            "--config",
            dir.path().join("u16.yaml").to_str().unwrap(),
            "--format",
            "qoperator",
        ],
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("need --format qdq"), "{}", stderr(&o));
    assert!(!dir.path().join("bad.onnx").exists());
}

/// SQNR (dB) of the class-score logits (columns 4.. of `detections`, as
/// logit(p)) of `test` against `reference`, over every sample file.
fn score_logits_sqnr(reference: &Path, test: &Path) -> f64 {
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    let mut files: Vec<_> = std::fs::read_dir(reference)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let r = read_npz(&reference.join(&f)).unwrap()["detections"]
            .to_f32_vec()
            .unwrap();
        let t = read_npz(&test.join(&f)).unwrap()["detections"]
            .to_f32_vec()
            .unwrap();
        for (row_r, row_t) in r.chunks(8).zip(t.chunks(8)) {
            for (&p, &q) in row_r[4..].iter().zip(&row_t[4..]) {
                let logit = |p: f32| (p as f64 / (1.0 - p as f64)).ln();
                let (a, b) = (logit(p), logit(q));
                sig += a * a;
                err += if b.is_finite() {
                    (a - b) * (a - b)
                } else {
                    a * a * 1e6
                };
            }
        }
    }
    10.0 * (sig / err.max(1e-300)).log10()
}

#[test]
fn detector_class_scores_survive_next_to_boxes() {
    let dir = tempdir();
    let model = testdata("detector/detector_opset13.onnx");
    let holdout = testdata("detector/holdout.npz");
    let fp = dir.path().join("fp32");
    let o = onnxq(&[
        "run",
        model.to_str().unwrap(),
        "--data",
        holdout.to_str().unwrap(),
        "-o",
        fp.to_str().unwrap(),
        "--engine",
        "tract",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let logits_db = |extra: &[&str], name: &str| -> (f64, serde_json::Value) {
        let q = dir.path().join(format!("{name}.onnx"));
        let rep = dir.path().join(format!("{name}.json"));
        let calib = testdata("detector/calib");
        let mut args = vec![
            "--calib",
            calib.to_str().unwrap(),
            "--validate",
            holdout.to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
            "--format",
            "qoperator",
            "--force",
        ];
        args.extend_from_slice(extra);
        let o = quantize(&model, &q, &args);
        assert!(
            matches!(o.status.code(), Some(0) | Some(3)),
            "{}",
            stderr(&o)
        );
        let run = dir.path().join(name);
        let o = onnxq(&[
            "run",
            q.to_str().unwrap(),
            "--data",
            holdout.to_str().unwrap(),
            "-o",
            run.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        (score_logits_sqnr(&fp, &run), json(&rep))
    };
    // The default command.
    let (db, r) = logits_db(&[], "default");
    assert!(db >= 30.0, "default: class-score logits {db:.1} dB");
    assert_eq!(r["parity"]["passed"], true);
    // Asked to quantize Concat: the guard keeps the boxes+scores concat float.
    let (db, r) = logits_db(&["--op-types", "default,Concat"], "concat");
    assert!(db >= 30.0, "with Concat: class-score logits {db:.1} dB");
    let g = r["range_guard"].as_array().unwrap();
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0]["node"], "head.concat");
    assert!(g[0]["reason"]
        .as_str()
        .unwrap()
        .contains("orders of magnitude"));
    // Without the guard one scale covers boxes (~130) and scores (~1e-4):
    // every score rounds to 0, and the gate cannot tell (the boxes carry
    // the output's energy). This is what the guard prevents.
    let (db, r) = logits_db(
        &["--op-types", "default,Concat", "--max-range-ratio", "inf"],
        "unguarded",
    );
    assert!(db < 10.0, "unguarded: class-score logits {db:.1} dB");
    assert!(r["range_guard"].as_array().unwrap().is_empty());
    assert_eq!(r["parity"]["passed"], true);
}

/// Trained digits models: (model, calibration samples, held-out samples).
const DIGITS_CNN: (&str, &str, &str) = (
    "digits/cnn.onnx",
    "digits/cnn_calib",
    "digits/cnn_holdout.npz",
);
const DIGITS_MLP_WIDE: (&str, &str, &str) = (
    "digits/mlp_wide.onnx",
    "digits/mlp_calib.npz",
    "digits/mlp_holdout.npz",
);

/// Quantizes `model` calibrated on `calib` with the gate on `holdout`
/// (and `extra` flags): the first output's gate SQNR, the report, and the
/// written model's bytes.
fn held_out(
    dir: &tempfile::TempDir,
    (model, calib, holdout): (&str, &str, &str),
    extra: &[&str],
) -> (f64, serde_json::Value, Vec<u8>) {
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    let (c, h) = (testdata(calib), testdata(holdout));
    let mut args = vec![
        "--calib",
        c.to_str().unwrap(),
        "--validate",
        h.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = quantize(&testdata(model), &out, &args);
    assert_eq!(o.status.code(), Some(0), "{model}: {}", stderr(&o));
    let r = json(&rep);
    let db = r["parity"]["outputs"][0]["sqnr_db"].as_f64().unwrap();
    (db, r, std::fs::read(&out).unwrap())
}

#[test]
fn bias_correction_moves_biases_and_gains_parity() {
    let dir = tempdir();
    let cases = [
        (DIGITS_CNN, vec!["Conv", "Conv", "Gemm"]),
        // MatMul + Add, as tf2onnx writes Dense: the Add's constant moves.
        (DIGITS_MLP_WIDE, vec!["MatMul", "MatMul", "MatMul"]),
    ];
    for ((model, calib, holdout), ops) in cases {
        let sqnr = |extra: &[&str]| {
            let mut args = vec!["--format", "qoperator"];
            args.extend_from_slice(extra);
            let (db, r, _) = held_out(&dir, (model, calib, holdout), &args);
            (db, r)
        };
        // Error-compensating rounding off: it leaves little mean shift.
        let (plain, r) = sqnr(&["--bias-correction", "false", "--gptq", "false"]);
        assert!(r["bias_correction"].as_array().unwrap().is_empty());
        // On by default with calibration samples.
        let (corrected, r) = sqnr(&["--gptq", "false"]);
        let layers = r["bias_correction"].as_array().unwrap();
        let got: Vec<&str> = layers.iter().map(|l| l["op"].as_str().unwrap()).collect();
        assert_eq!(got, ops, "{model}");
        assert!(layers
            .iter()
            .all(|l| l["max_shift"].as_f64().unwrap() > 0.0));
        assert!(
            corrected > plain,
            "{model}: {plain:.2} dB → {corrected:.2} dB"
        );
    }
}

#[test]
fn gptq_rounding_lowers_held_out_error() {
    let dir = tempdir();
    let cases = [
        // Conv (3×3, one strided) and Gemm; Gemm layers; MatMul layers.
        (DIGITS_CNN, vec!["Conv", "Conv", "Gemm"]),
        (
            (
                "digits/cnn_paddle_opset12.onnx",
                "digits/cnn_calib",
                "digits/cnn_holdout.npz",
            ),
            vec!["Conv", "Conv", "Gemm"],
        ),
        (
            (
                "digits/mlp.onnx",
                "digits/mlp_calib.npz",
                "digits/mlp_holdout.npz",
            ),
            vec!["Gemm", "Gemm", "Gemm"],
        ),
        // MatMul + Add, as tf2onnx writes Dense.
        (DIGITS_MLP_WIDE, vec!["MatMul", "MatMul", "MatMul"]),
    ];
    for ((model, calib, holdout), ops) in cases {
        let run = |extra: &[&str]| {
            let mut args = vec!["--bias-correction", "false"];
            args.extend_from_slice(extra);
            held_out(&dir, (model, calib, holdout), &args)
        };
        let (nearest, r, _) = run(&["--gptq", "false"]);
        assert!(r["gptq"].is_null());
        // On by default with calibration samples.
        let (compensated, r, bytes) = run(&[]);
        let layers = r["gptq"]["layers"].as_array().unwrap();
        let got: Vec<&str> = layers.iter().map(|l| l["op"].as_str().unwrap()).collect();
        assert_eq!(got, ops, "{model}");
        for l in layers {
            assert_eq!(l["taken"], true, "{model}: {l}");
            let (n, c) = (
                l["nearest_db"].as_f64().unwrap(),
                l["compensated_db"].as_f64().unwrap(),
            );
            assert!(c > n, "{model}: {l}");
        }
        assert!(r["gptq"]["skipped"].as_array().unwrap().is_empty());
        // The model passed the gate with it, so it is kept without
        // building the nearest-rounding one, and that is the model written.
        let check = &r["gptq"]["model_check"];
        assert_eq!(r["parity"]["passed"], true, "{model}");
        assert_eq!(check["kept"], true, "{model}: {check}");
        assert_eq!(check["compensated_db"].as_f64(), Some(compensated));
        assert!(check["nearest_db"].is_null(), "{model}: {check}");
        // On held-out samples (the gate's), not just the calibration ones.
        eprintln!("{model}: {nearest:.2} dB → {compensated:.2} dB");
        assert!(
            compensated > nearest + 1.0,
            "{model}: {nearest:.2} dB → {compensated:.2} dB"
        );
        // Deterministic: the same bytes again.
        assert_eq!(run(&[]).2, bytes, "{model}");
    }
}

#[test]
fn equalization_balances_the_conv_pair_and_the_gate_checks_the_original() {
    let dir = tempdir();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    let (c, h) = (
        testdata("digits/cnn_calib"),
        testdata("digits/cnn_holdout.npz"),
    );
    let args = [
        "--calib",
        c.to_str().unwrap(),
        "--validate",
        h.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--format",
        "qdq",
        "--equalize",
    ];
    let o = quantize(&testdata("digits/cnn.onnx"), &out, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cross-layer equalization: 1 layer pair(s)"),
        "{}",
        stderr(&o)
    );
    let r = json(&rep);
    assert_eq!(r["equalization"]["pairs"], 1);
    let (before, after) = (
        r["equalization"]["worst_spread_before"].as_f64().unwrap(),
        r["equalization"]["worst_spread_after"].as_f64().unwrap(),
    );
    assert!(after < before, "{before} -> {after}");
    assert!(r["parity"]["passed"].as_bool().unwrap());
    // The gate compared with the model as given; `onnxq check` against
    // the original file agrees.
    let gate = r["parity"]["outputs"][0]["sqnr_db"].as_f64().unwrap();
    assert!(gate > 30.0, "{gate}");
    let rep2 = dir.path().join("check.json");
    let o = onnxq(&[
        "check",
        out.to_str().unwrap(),
        "--reference",
        testdata("digits/cnn.onnx").to_str().unwrap(),
        "--data",
        h.to_str().unwrap(),
        "--report",
        rep2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let checked = json(&rep2)["outputs"][0]["sqnr_db"].as_f64().unwrap();
    assert!((checked - gate).abs() < 0.01, "{checked} vs {gate}");
    // Per layer, the rescaled conv1 output is scaled back before it is
    // compared with the original model's (without that: 9.6 dB, a layer
    // that looks broken), in the gate's report (which compares layers when
    // it fails: here at a minimum of 80 dB) and in `onnxq check`'s.
    let strict = dir.path().join("strict.json");
    let mut strict_args = args.to_vec();
    strict_args.extend(["--min-sqnr", "80", "--no-auto", "--force"]);
    let pos = strict_args.iter().position(|a| *a == "--report").unwrap();
    strict_args[pos + 1] = strict.to_str().unwrap();
    let o = quantize(&testdata("digits/cnn.onnx"), &out, &strict_args);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let layer = |r: &serde_json::Value, t: &str| -> f64 {
        let layers = r["layers"].as_array().unwrap();
        let l = layers.iter().find(|l| l["tensor"] == t);
        l.unwrap_or_else(|| panic!("no layer {t}: {layers:?}"))["sqnr_db"]
            .as_f64()
            .unwrap()
    };
    for (what, r) in [("gate", &json(&strict)["parity"]), ("check", &json(&rep2))] {
        for t in ["relu1", "relu2"] {
            let db = layer(r, t);
            assert!(db > 30.0, "{what}: {t} at {db:.1} dB");
        }
    }

    // A table calibrated without equalization does not fit the rescaled
    // activations: refused, nothing written.
    let ranges = dir.path().join("ranges.json");
    let o = onnxq(&[
        "calibrate",
        testdata("digits/cnn.onnx").to_str().unwrap(),
        "--calib",
        c.to_str().unwrap(),
        "-o",
        ranges.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out2 = dir.path().join("q2.onnx");
    let o = quantize(
        &testdata("digits/cnn.onnx"),
        &out2,
        &["--ranges", ranges.to_str().unwrap(), "--equalize"],
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("--equalize"), "{}", stderr(&o));
    assert!(!out2.exists());
}

#[test]
fn gptq_is_dropped_when_the_whole_model_is_worse_with_it() {
    // Calibrated on noise, validated on real digits: every layer gains on
    // its own (noise) inputs, yet the model's output on the digits is worse
    // than with nearest rounding. A gate minimum neither meets (60 dB)
    // makes the nearest-rounding model be built (a model that passes is
    // kept as it is); it is written (`--force`): the graph `--gptq false`
    // writes (only the recorded recipe differs).
    let dir = tempdir();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    let h = testdata("digits/cnn_holdout.npz");
    let args = |gptq: &'static str| {
        vec![
            "--calib",
            "random:8:1",
            "--dim",
            "N=1",
            "--validate",
            h.to_str().unwrap(),
            "--gptq",
            gptq,
            "--format",
            "qoperator",
            "--report",
            rep.to_str().unwrap(),
            "--min-sqnr",
            "60",
            "--no-auto",
            "--force",
        ]
    };
    let o = quantize(&testdata("digits/cnn.onnx"), &out, &args("true"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let r = json(&rep);
    let g = &r["gptq"];
    assert!(g["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["taken"] == true));
    let check = &g["model_check"];
    assert_eq!(check["kept"], false, "{check}");
    let (with, without) = (
        check["compensated_db"].as_f64().unwrap(),
        check["nearest_db"].as_f64().unwrap(),
    );
    assert!(with < without, "{check}");
    assert_eq!(r["parity"]["outputs"][0]["sqnr_db"].as_f64(), Some(without));
    assert!(
        stderr(&o).contains("with nearest rounding: dropped, nearest rounding written"),
        "{}",
        stderr(&o)
    );
    let graph = |m: &Path| load(m).to_proto().unwrap().graph;
    let dropped = graph(&out);
    let o = quantize(&testdata("digits/cnn.onnx"), &out, &args("false"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(json(&rep)["gptq"].is_null());
    assert!(graph(&out) == dropped);
}
