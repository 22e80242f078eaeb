//! The parity gate inside `onnxq quantize`, `onnxq check` and `onnxq run`.

use crate::common::{broken_conv1_recipe, json, onnxq, stderr, stdout, tempdir, testdata};
use crate::quantize::quantize;

#[test]
fn a_broken_quantization_fails_the_gate_and_writes_nothing() {
    let dir = tempdir();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    let calib = testdata("digits/cnn_calib");
    let recipe = broken_conv1_recipe(dir.path());
    let args = [
        "--calib",
        calib.to_str().unwrap(),
        "--config",
        recipe.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--format",
        "qoperator",
        // Automatic mixed precision would keep the broken conv float and
        // pass (tests/it/tune.rs); here the gate itself is under test.
        "--no-auto",
    ];
    let o = quantize(&testdata("digits/cnn.onnx"), &out, &args);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!out.exists(), "a model that failed the gate was written");
    let err = stderr(&o);
    assert!(err.contains("parity") && err.contains("FAILED"), "{err}");
    assert!(
        err.contains("output logits") && err.contains("gate: sqnr ") && err.contains(") FAIL"),
        "{err}"
    );
    assert!(err.contains("worst layers: "), "{err}");
    let r = json(&rep);
    assert_eq!(r["parity"]["passed"], false);
    assert_eq!(r["written"], false);
    assert!(r["parity"]["outputs"][0]["sqnr_db"].as_f64().unwrap() < 20.0);
    // --force writes it and still exits 3.
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = quantize(&testdata("digits/cnn.onnx"), &out, &forced);
    assert_eq!(o.status.code(), Some(3));
    assert!(out.exists());
    assert_eq!(json(&rep)["written"], true);
}

#[test]
fn a_good_quantization_passes_and_records_its_parity() {
    let dir = tempdir();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    let o = quantize(
        &testdata("digits/cnn.onnx"),
        &out,
        &[
            "--calib",
            testdata("digits/cnn_calib").to_str().unwrap(),
            "--validate",
            testdata("digits/cnn_holdout.npz").to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
            "--format",
            "qoperator",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = json(&rep);
    let p = &r["parity"];
    assert_eq!(p["passed"], true);
    assert_eq!(p["samples"], 300);
    let out0 = &p["outputs"][0];
    assert!(out0["sqnr_db"].as_f64().unwrap() > 30.0, "{out0}");
    assert!(out0["top1_agreement"].as_f64().unwrap() > 0.97, "{out0}");
    // A passing gate compares the outputs only.
    assert_eq!(p["layer_samples"], 0);
    assert!(p["layers"].as_array().unwrap().is_empty());
    let m = onnxq::onnx::load_model(&out).unwrap();
    assert!(m
        .proto
        .metadata_props
        .iter()
        .any(|p| p.key() == "onnxq.parity" && p.value().contains("sqnr_db")));
    // A stricter threshold fails the same model.
    let strict = dir.path().join("strict.json");
    let o = quantize(
        &testdata("digits/cnn.onnx"),
        &dir.path().join("strict.onnx"),
        &[
            "--calib",
            testdata("digits/cnn_calib").to_str().unwrap(),
            "--min-sqnr",
            "80",
            "--no-auto",
            "--report",
            strict.to_str().unwrap(),
            "--format",
            "qoperator",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!dir.path().join("strict.onnx").exists());
    // A failing one also compares every quantized tensor on the first 8
    // samples (the input and both convolutions' outputs; the Gemm's output
    // is the model output, left in float), worst first.
    let p = &json(&strict)["parity"];
    assert_eq!(p["layer_samples"], 8);
    let layers = p["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{layers:?}");
    let s: Vec<f64> = layers
        .iter()
        .map(|l| l["sqnr_db"].as_f64().unwrap())
        .collect();
    assert!(s.windows(2).all(|w| w[0] <= w[1]), "{s:?}");
}

#[test]
fn check_compares_any_quantized_model_and_run_writes_outputs() {
    let dir = tempdir();
    let q = dir.path().join("q.onnx");
    let o = quantize(
        &testdata("digits/mlp.onnx"),
        &q,
        &[
            "--calib",
            testdata("digits/mlp_calib.npz").to_str().unwrap(),
            "--format",
            "qoperator",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rep = dir.path().join("check.json");
    let o = onnxq(&[
        "check",
        q.to_str().unwrap(),
        "--reference",
        testdata("digits/mlp.onnx").to_str().unwrap(),
        "--data",
        testdata("digits/mlp_holdout.npz").to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("passed"), "{}", stdout(&o));
    assert_eq!(json(&rep)["passed"], true);
    // Against the wrong reference data shape: a clear error, exit 1.
    let o = onnxq(&[
        "check",
        q.to_str().unwrap(),
        "--reference",
        testdata("digits/mlp.onnx").to_str().unwrap(),
        "--data",
        testdata("digits/cnn_calib").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("input"), "{}", stderr(&o));
    // A stricter threshold: exit 3.
    let o = onnxq(&[
        "check",
        q.to_str().unwrap(),
        "--reference",
        testdata("digits/mlp.onnx").to_str().unwrap(),
        "--data",
        testdata("digits/mlp_holdout.npz").to_str().unwrap(),
        "--min-sqnr",
        "90",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stdout(&o).contains("FAIL"));

    // run: one .npz per sample, keyed by output name, int8 engine vs tract.
    let calib = testdata("digits/cnn_calib");
    let cq = dir.path().join("cnn.onnx");
    let o = quantize(
        &testdata("digits/cnn.onnx"),
        &cq,
        &["--calib", calib.to_str().unwrap(), "--format", "qoperator"],
    );
    assert!(o.status.success());
    let (a, b) = (dir.path().join("int8"), dir.path().join("tract"));
    for (engine, dst) in [("int8", &a), ("tract", &b)] {
        let o = onnxq(&[
            "run",
            cq.to_str().unwrap(),
            "--data",
            calib.to_str().unwrap(),
            "-o",
            dst.to_str().unwrap(),
            "--engine",
            engine,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let fa = onnxq::calibrate::samples::read_npz(&a.join("0003.npz")).unwrap();
    let fb = onnxq::calibrate::samples::read_npz(&b.join("0003.npz")).unwrap();
    // tract computes QLinearConv like onnxruntime: the executor agrees.
    assert_eq!(
        fa["logits"].to_f32_vec().unwrap(),
        fb["logits"].to_f32_vec().unwrap()
    );
    assert_eq!(std::fs::read_dir(&a).unwrap().count(), 32);
}

#[test]
fn golden_outputs_of_the_onnx_reference_are_reproduced() {
    // testdata/golden: QLinearConv / QLinearMatMul with outputs computed by
    // onnx.reference (float64 requantization): --arith exact reproduces
    // them exactly; sets in .pb and in .npz form.
    for case in ["qlinearconv", "qlinearmatmul"] {
        let dir = testdata(&format!("golden/{case}"));
        let model = dir.join("model.onnx");
        let o = onnxq(&[
            "check",
            model.to_str().unwrap(),
            "--golden",
            dir.to_str().unwrap(),
            "--arith",
            "exact",
            "--atol",
            "0",
            "--rtol",
            "0",
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{case}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let out = stdout(&o);
        assert!(
            out.contains("test_data_set_0 y: ok") && out.contains("test_data_set_1 y: ok"),
            "{out}"
        );
        assert!(out.contains("int8 executor"), "{out}");
    }
    // A wrong golden output is a mismatch: exit 3.
    let dir = tempdir();
    let src = testdata("golden/qlinearmatmul");
    let set = dir.path().join("test_data_set_0");
    std::fs::create_dir_all(&set).unwrap();
    // The .npz set's input, with its output one element off.
    let npz = onnxq::calibrate::samples::read_npz(&src.join("test_data_set_1/inputs.npz")).unwrap();
    onnxq::calibrate::samples::write_npz(
        &set.join("inputs.npz"),
        &[("x".to_string(), npz["x"].clone())],
    )
    .unwrap();
    let want =
        onnxq::calibrate::samples::read_npz(&src.join("test_data_set_1/outputs.npz")).unwrap();
    let mut wrong = want["y"].to_i64_vec().unwrap();
    wrong[0] = (wrong[0] + 7) % 256;
    let wrong: Vec<u8> = wrong.iter().map(|&v| v as u8).collect();
    onnxq::calibrate::samples::write_npz(
        &set.join("outputs.npz"),
        &[(
            "y".to_string(),
            onnxq::ir::Tensor::from_u8(want["y"].dims().to_vec(), &wrong),
        )],
    )
    .unwrap();
    let o = onnxq(&[
        "check",
        src.join("model.onnx").to_str().unwrap(),
        "--golden",
        dir.path().to_str().unwrap(),
        "--arith",
        "exact",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("MISMATCH (1 of"), "{}", stdout(&o));
}

#[test]
fn outputs_can_be_held_to_chosen_metrics_by_flag_or_recipe() {
    let dir = tempdir();
    let out = dir.path().join("q.onnx");
    let rep = dir.path().join("r.json");
    let calib = testdata("digits/cnn_calib");
    let recipe = broken_conv1_recipe(dir.path());
    let base = [
        "--calib",
        calib.to_str().unwrap(),
        "--config",
        recipe.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--no-auto",
    ];
    // The broken conv1 fails SQNR 20 (0.2 dB, cosine 0.63); held to a
    // cosine of 0.5 only, it passes, and the report names the metric, its
    // value and the minimum.
    let mut args = base.to_vec();
    args.extend(["--gate-output", "logits=cosine:0.5"]);
    let o = quantize(&testdata("digits/cnn.onnx"), &out, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = json(&rep);
    let g = &r["parity"]["outputs"][0]["gate"];
    assert_eq!(g.as_array().unwrap().len(), 1, "{g}");
    assert_eq!(g[0]["metric"], "cosine");
    assert_eq!(g[0]["min"], 0.5);
    assert!(r["parity"]["outputs"][0]["judged_by"]
        .as_str()
        .unwrap()
        .contains("chosen"));
    std::fs::remove_file(&out).unwrap();
    // The same from the recipe; `{}` leaves it ungated (and passes).
    let text = std::fs::read_to_string(&recipe).unwrap();
    let ungated = dir.path().join("ungated.yaml");
    std::fs::write(&ungated, format!("{text}\ngate-outputs:\n  logits: {{}}\n")).unwrap();
    let mut args = base.to_vec();
    args[3] = ungated.to_str().unwrap();
    let o = quantize(&testdata("digits/cnn.onnx"), &out, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        json(&rep)["parity"]["outputs"][0]["gate"],
        serde_json::json!([])
    );
    std::fs::remove_file(&out).unwrap();
    // A name the model does not have, a metric that does not exist: errors
    // that name them, nothing written.
    for (flag, says) in [
        ("nope=sqnr:1", "'nope'"),
        ("logits=psnr:1", "'psnr': unknown metric"),
    ] {
        let mut args = base.to_vec();
        args.extend(["--gate-output", flag]);
        let o = quantize(&testdata("digits/cnn.onnx"), &out, &args);
        assert_ne!(o.status.code(), Some(0));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
        assert!(!out.exists());
    }
}
