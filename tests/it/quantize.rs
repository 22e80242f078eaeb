//! `onnxq quantize --format qdq`: what the output holds (Q/DQ per op type,
//! per-channel scales, int32 biases), that it runs in tract close to FP32
//! (held-out accuracy of the trained digits models), determinism, and
//! errors that write nothing.

use crate::common::{self, onnxq, onnxq_in_repo, stderr, tempdir, testdata};
use onnxq::ir::{DataType, Model, Tensor};
use onnxq::passes::{prepare, PassOptions};
use onnxq::tract::Runner;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `onnxq quantize MODEL -o OUT EXTRA…` in the QDQ format (what these
/// tests are about) unless `extra` names a format.
pub fn quantize(model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--format") {
        args.extend_from_slice(&["--format", "qdq"]);
    }
    onnxq(&args)
}

pub fn load(path: &Path) -> Model {
    let loaded = onnxq::onnx::load_model(path).unwrap();
    Model::from_proto(&loaded.proto).unwrap()
}

pub fn op_counts(m: &Model) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for (_, n) in m.graph.nodes() {
        *c.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    c
}

pub fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_f32_vec().unwrap()
}

fn i32s(t: &Tensor) -> Vec<i32> {
    t.raw()
        .unwrap()
        .chunks(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn init<'a>(m: &'a Model, name: &str) -> &'a Tensor {
    let v = m
        .graph
        .find_value(name)
        .unwrap_or_else(|| panic!("no value {name}"));
    m.graph
        .initializer(v)
        .unwrap_or_else(|| panic!("{name} is not an initializer"))
}

/// The producer op of input `slot` of the node named `node`.
fn input_producer(m: &Model, node: &str, slot: usize) -> Option<String> {
    let (_, n) = m.graph.nodes().find(|(_, n)| n.name == node).unwrap();
    let v = n.input(slot)?;
    m.graph.producer_node(v).map(|(_, p)| p.op_type.clone())
}

#[test]
fn cnn_gets_qdq_around_every_conv_and_gemm() {
    let dir = tempdir();
    let out = dir.path().join("q.onnx");
    let o = quantize(
        &testdata("digits/cnn.onnx"),
        &out,
        &["--calib", testdata("digits/cnn_calib").to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = load(&out);
    let c = op_counts(&m);
    // Activations: image, conv1 out (narrowed to relu1's range), relu1,
    // conv2 out, relu2, flatten, logits → 7 pairs; plus 3 weights and 3
    // biases dequantized.
    assert_eq!(c["QuantizeLinear"], 7, "{c:?}");
    assert_eq!(c["DequantizeLinear"], 13, "{c:?}");
    assert_eq!(c["Conv"], 2);
    assert_eq!(c["Gemm"], 1);
    assert!(
        !c.contains_key("BatchNormalization"),
        "BatchNorm folded: {c:?}"
    );
    for node in ["conv1", "conv2", "fc"] {
        for slot in 0..3 {
            assert_eq!(
                input_producer(&m, node, slot).as_deref(),
                Some("DequantizeLinear"),
                "{node} input {slot}"
            );
        }
    }
    assert_eq!(m.onnx_opset().unwrap(), 13);
    let meta: BTreeMap<&str, &str> = m.metadata().collect();
    assert_eq!(meta["onnxq.version"], onnxq::VERSION);
    assert!(meta["onnxq.recipe"].contains("cnn_calib"), "{meta:?}");
    assert!(meta["onnxq.calibration"].contains("minmax"), "{meta:?}");
    // Readable names: the weight after BatchNorm folding and cross-layer
    // equalization, named after its layer.
    assert!(m
        .graph
        .nodes()
        .any(|(_, n)| n.name == "conv1.weight_equalized/DequantizeLinear"));
    assert!(m
        .graph
        .find_value("conv1.weight_equalized/quantized")
        .is_some());
    assert!(m
        .graph
        .nodes()
        .any(|(_, n)| n.name == "image/QuantizeLinear"));
    // The graph output keeps its name and is the dequantized value.
    let out_v = m.graph.outputs().next().unwrap();
    assert_eq!(m.graph.value_name(out_v), "logits");
    assert_eq!(
        m.graph.producer_node(out_v).unwrap().1.op_type,
        "DequantizeLinear"
    );
}

#[test]
fn per_channel_weight_and_bias_parameters_match_a_direct_computation() {
    let dir = tempdir();
    let out = dir.path().join("q.onnx");
    // 8-bit weights, the weights and biases as given: the arithmetic
    // under test.
    let o = quantize(
        &testdata("digits/cnn.onnx"),
        &out,
        &[
            "--calib",
            testdata("digits/cnn_calib").to_str().unwrap(),
            "--reduce-range",
            "false",
            "--bias-correction",
            "false",
            "--gptq",
            "false",
            "--equalize",
            "false",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let q = load(&out);
    let mut fp = load(&testdata("digits/cnn.onnx"));
    prepare(&mut fp, &PassOptions::default()).unwrap();
    let w = init(&fp, "conv2.weight_folded");
    let b = f32s(init(&fp, "conv2.bias_folded"));
    let (m, per) = (w.dims()[0], w.len() / w.dims()[0]);
    let wv = f32s(w);
    let scales = f32s(init(&q, "conv2.weight_folded/scale"));
    assert_eq!(scales.len(), m);
    let wq: Vec<i8> = init(&q, "conv2.weight_folded/quantized")
        .raw()
        .unwrap()
        .iter()
        .map(|&x| x as i8)
        .collect();
    for c in 0..m {
        let chan = &wv[c * per..(c + 1) * per];
        let amax = chan.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert_eq!(scales[c], amax / 127.0, "channel {c}");
        for (k, &v) in chan.iter().enumerate() {
            let expect = (v / scales[c]).round_ties_even().clamp(-127.0, 127.0) as i8;
            assert_eq!(wq[c * per + k], expect, "channel {c} element {k}");
        }
    }
    let zp = init(&q, "conv2.weight_folded/zero_point");
    assert_eq!(zp.dtype(), DataType::Int8);
    assert!(zp.raw().unwrap().iter().all(|&z| z == 0));
    // Bias: int32 at x_scale · w_scale[c], zero point 0, axis 0.
    let x_scale = f32s(init(&q, "bn1/scale"))[0];
    let bias_scale = f32s(init(&q, "conv2.bias_folded/scale"));
    let bias_q = init(&q, "conv2.bias_folded/quantized");
    assert_eq!(bias_q.dtype(), DataType::Int32);
    let bias_q = i32s(bias_q);
    for c in 0..m {
        assert_eq!(bias_scale[c], x_scale * scales[c]);
        assert_eq!(
            bias_q[c],
            (b[c] as f64 / bias_scale[c] as f64).round_ties_even() as i32
        );
    }
    assert!(i32s(init(&q, "conv2.bias_folded/zero_point"))
        .iter()
        .all(|&z| z == 0));
    let (_, dq) = q
        .graph
        .nodes()
        .find(|(_, n)| n.name == "conv2.bias_folded/DequantizeLinear")
        .unwrap();
    assert_eq!(
        dq.get_int("axis").unwrap(),
        Some(0),
        "explicit axis on the bias (tract needs it)"
    );
    // The input of conv2 is relu1, quantized with relu1's own range; conv1's
    // output shares it (narrowed: the same initializers).
    let (_, q1) = q
        .graph
        .nodes()
        .find(|(_, n)| n.name == "bn1/QuantizeLinear")
        .unwrap();
    assert_eq!(q.graph.value_name(q1.input(1).unwrap()), "bn1/scale");
    let (_, qr) = q
        .graph
        .nodes()
        .find(|(_, n)| n.name == "relu1/QuantizeLinear")
        .unwrap();
    assert_eq!(
        q.graph.value_name(qr.input(1).unwrap()),
        "bn1/scale",
        "relu1 shares conv1's parameters"
    );
}

/// Accuracy (%) of a digits model on the held-out set, run in tract.
pub fn accuracy(model: &Path, data: &str, input: &str) -> f64 {
    let m = load(model);
    let proto = m.to_proto().unwrap();
    let x = onnxq::calibrate::samples::read_npz(&testdata(data)).unwrap();
    let x = &x[input];
    let labels =
        onnxq::calibrate::samples::read_npz(&testdata("digits/holdout_labels.npz")).unwrap();
    let labels = labels["label"].to_i64_vec().unwrap();
    let per: usize = x.dims()[1..].iter().product();
    let all = f32s(x);
    let shape = x.dims()[1..].to_vec();
    let runner = Runner::new(
        &proto,
        &[(input.to_string(), DataType::Float, shape.clone())],
        None,
    )
    .unwrap();
    let mut right = 0;
    for (i, &label) in labels.iter().enumerate() {
        let t = Tensor::from_f32(shape.clone(), &all[i * per..(i + 1) * per]);
        let y = f32s(&runner.run(&[(input.to_string(), t)]).unwrap()[0]);
        let arg = (0..y.len()).fold(0, |b, k| if y[k] > y[b] { k } else { b });
        right += usize::from(arg as i64 == label);
    }
    100.0 * right as f64 / labels.len() as f64
}

/// The default (7-bit weights, bias correction: the same result in every
/// runtime) within one point (3 of 300 images); 8-bit weights, for runtimes
/// that compute u8×s8 exactly, within half a point.
#[test]
fn trained_digits_models_keep_their_accuracy() {
    let dir = tempdir();
    let cases = [
        (
            "digits/cnn.onnx",
            "digits/cnn_holdout.npz",
            "image",
            "digits/cnn_calib",
        ),
        (
            "digits/cnn_paddle_opset12.onnx",
            "digits/cnn_holdout.npz",
            "image",
            "digits/cnn_calib",
        ),
        (
            "digits/mlp.onnx",
            "digits/mlp_holdout.npz",
            "input",
            "digits/mlp_calib.npz",
        ),
        (
            "digits/mlp_wide.onnx",
            "digits/mlp_holdout.npz",
            "input",
            "digits/mlp_calib.npz",
        ),
    ];
    for (model, data, input, calib) in cases {
        for (extra, points) in [(&[][..], 1.0), (&["--reduce-range", "false"][..], 0.5)] {
            let out = dir.path().join("q.onnx");
            let c = testdata(calib);
            let mut args = vec!["--calib", c.to_str().unwrap()];
            args.extend_from_slice(extra);
            let o = quantize(&testdata(model), &out, &args);
            assert!(o.status.success(), "{model}: {}", stderr(&o));
            let before = accuracy(&testdata(model), data, input);
            let after = accuracy(&out, data, input);
            eprintln!("{model} {extra:?}: held-out accuracy {before:.2}% → {after:.2}%");
            assert!(
                after >= before - points,
                "{model} {extra:?}: {before:.2}% → {after:.2}%"
            );
        }
    }
}

#[test]
fn a_weight_heavy_model_shrinks_below_30_percent() {
    // 50k MatMul weights: int8 storage plus the Q/DQ scaffolding must stay
    // under 30% of the FP32 file.
    let dir = tempdir();
    let out = dir.path().join("q.onnx");
    let model = testdata("digits/mlp_wide.onnx");
    let o = quantize(
        &model,
        &out,
        &[
            "--calib",
            testdata("digits/mlp_calib.npz").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::metadata(&model).unwrap().len() as f64;
    let after = std::fs::metadata(&out).unwrap().len() as f64;
    let ratio = after / before;
    eprintln!("mlp_wide: {before} → {after} bytes ({:.1}%)", 100.0 * ratio);
    assert!(ratio <= 0.30, "{:.1}% of the FP32 file", 100.0 * ratio);
    assert_eq!(op_counts(&load(&out)).get("MatMul"), Some(&3));
}

/// SQNR (dB) of `b` against reference `a`.
pub fn sqnr(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum();
    let n: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    10.0 * (s / n.max(1e-30)).log10()
}

/// How to calibrate each testdata model.
pub fn calib_for(model: &Path) -> Vec<String> {
    let name = model.file_name().unwrap().to_str().unwrap();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
    match name {
        "cnn.onnx" | "cnn_paddle_opset12.onnx" => {
            s(&["--calib", testdata("digits/cnn_calib").to_str().unwrap()])
        }
        "mlp.onnx" | "mlp_wide.onnx" => s(&[
            "--calib",
            testdata("digits/mlp_calib.npz").to_str().unwrap(),
        ]),
        "transformer_opset17.onnx" => s(&[
            "--calib",
            testdata("quirks/transformer_calib").to_str().unwrap(),
        ]),
        "encoder.onnx" | "encoder_seq16.onnx" => s(&[
            "--calib",
            testdata("text/sentences.txt").to_str().unwrap(),
            "--tokenizer",
            testdata("text/tokenizer.json").to_str().unwrap(),
        ]),
        _ => s(&[
            "--calib",
            "random:16:7",
            "--dim",
            "batch=2",
            "--dim",
            "N=2",
            "--dim",
            "seq=5",
        ]),
    }
}

/// Held-out data (file, input name) of a trained digits model.
pub fn holdout_of(path: &Path) -> Option<(&'static str, &'static str)> {
    match path.file_name()?.to_str()? {
        "cnn.onnx" | "cnn_paddle_opset12.onnx" => Some(("digits/cnn_holdout.npz", "image")),
        "mlp.onnx" | "mlp_wide.onnx" => Some(("digits/mlp_holdout.npz", "input")),
        _ => None,
    }
}

/// Inputs from the data the model was calibrated on (held-out digits for
/// the trained models, the generator's distribution for the others).
#[allow(clippy::type_complexity)]
pub fn inputs_like_calibration(
    path: &Path,
    fp: &Model,
) -> (Vec<(String, Tensor)>, Vec<(String, DataType, Vec<usize>)>) {
    if path.parent().and_then(|p| p.file_name()) == Some("text".as_ref()) {
        // Token models: a tokenized sentence (random ids are not text).
        use onnxq::calibrate::samples::SampleSource;
        let src = onnxq::calibrate::text::TextSource::open(
            &testdata("text/sentences.txt"),
            &testdata("text/tokenizer.json"),
            None,
            &onnxq::ir::types::input_specs(&fp.graph),
        )
        .unwrap();
        let sample = src.load(7).unwrap();
        let specs = sample
            .iter()
            .map(|(n, t)| (n.clone(), t.dtype(), t.dims().to_vec()))
            .collect();
        return (sample, specs);
    }
    let Some((data, input)) = holdout_of(path) else {
        return (common::inputs_for(fp, 2, 11), common::input_specs(fp, 2));
    };
    let x = onnxq::calibrate::samples::read_npz(&testdata(data)).unwrap();
    let x = &x[input];
    // 16 held-out samples as one batch.
    let per: usize = x.dims()[1..].iter().product();
    let mut shape = x.dims()[1..].to_vec();
    shape[0] = 16;
    let t = Tensor::from_f32(shape.clone(), &f32s(x)[..16 * per]);
    (
        vec![(input.to_string(), t)],
        vec![(input.to_string(), DataType::Float, shape)],
    )
}

#[test]
fn every_testdata_model_quantizes_runs_in_tract_and_stays_close() {
    let dir = tempdir();
    for model in common::float_models() {
        let out = dir.path().join("q.onnx");
        let extra = calib_for(&model);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let o = quantize(&model, &out, &extra);
        assert!(o.status.success(), "{}: {}", model.display(), stderr(&o));
        let fp = load(&model);
        let q = load(&out);
        let (inputs, specs) = inputs_like_calibration(&model, &fp);
        let a = Runner::new(&fp.to_proto().unwrap(), &specs, None)
            .unwrap()
            .run(&inputs)
            .unwrap();
        let b = Runner::new(&q.to_proto().unwrap(), &specs, None)
            .unwrap_or_else(|e| panic!("{}: tract cannot load the QDQ model: {e}", model.display()))
            .run(&inputs)
            .unwrap();
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x.dims(), y.dims());
            if !x.dtype().is_float() {
                continue;
            }
            let db = sqnr(&f32s(x), &f32s(y));
            eprintln!("{} output {i}: SQNR {db:.1} dB", model.display());
            // Trained models on held-out data: 8-bit quality; random-weight
            // models on random data: clearly better than noise.
            let floor = if holdout_of(&model).is_some() {
                30.0
            } else {
                20.0
            };
            assert!(
                db > floor,
                "{} output {i}: SQNR {db:.1} dB",
                model.display()
            );
        }
    }
}

#[test]
fn output_is_deterministic_for_any_jobs() {
    let dir = tempdir();
    let model = testdata("quirks/transformer_opset17.onnx");
    let calib = testdata("quirks/transformer_calib");
    let mut outs = Vec::new();
    for jobs in ["1", "2"] {
        let out = dir.path().join(format!("q{jobs}.onnx"));
        let o = quantize(
            &model,
            &out,
            &[
                "--calib",
                calib.to_str().unwrap(),
                "--method",
                "percentile",
                "--jobs",
                jobs,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        outs.push(std::fs::read(&out).unwrap());
    }
    assert!(outs[0] == outs[1], "same inputs, different bytes");
}

#[test]
fn excluded_nodes_stay_float() {
    let dir = tempdir();
    let out = dir.path().join("q.onnx");
    let calib = testdata("digits/cnn_calib");
    let o = quantize(
        &testdata("digits/cnn.onnx"),
        &out,
        &[
            "--calib",
            calib.to_str().unwrap(),
            "--exclude",
            "conv2",
            "--exclude",
            "f*",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = load(&out);
    for node in ["conv2", "fc"] {
        // Weights stay float initializers (no DequantizeLinear).
        let (_, n) = m.graph.nodes().find(|(_, n)| n.name == node).unwrap();
        let w = m
            .graph
            .initializer(n.input(1).unwrap())
            .expect("float weight");
        assert_eq!(w.dtype(), DataType::Float, "{node}");
    }
    assert_eq!(
        input_producer(&m, "conv1", 1).as_deref(),
        Some("DequantizeLinear")
    );
    assert!(
        stderr(&o).contains("float nodes:     4 (Conv 1, Flatten 1, Gemm 1, Relu 1)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn variable_length_samples_work_with_every_method() {
    let dir = tempdir();
    let model = testdata("quirks/transformer_opset17.onnx");
    let calib = testdata("quirks/transformer_calib");
    for &method in crate::common::METHODS {
        let out = dir.path().join("q.onnx");
        let o = quantize(
            &model,
            &out,
            &[
                "--calib",
                calib.to_str().unwrap(),
                "--method",
                method,
                "--op-types",
                "default,Softmax",
            ],
        );
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        let m = load(&out);
        assert_eq!(op_counts(&m)["MatMul"], 8);
        // Softmax output quantized with the exact range [0, 1].
        let (_, softmax) = m
            .graph
            .nodes()
            .find(|(_, n)| n.op_type == "Softmax")
            .unwrap();
        let name = m
            .graph
            .value_name(softmax.output(0).unwrap())
            .trim_end_matches("/float");
        let scale = m.graph.find_value(&format!("{name}/scale"));
        let scale = f32s(
            m.graph
                .initializer(scale.expect("softmax output quantized"))
                .unwrap(),
        )[0];
        assert_eq!(scale, 1.0 / 255.0, "{method}");
    }
}

#[test]
fn opset_12_per_tensor_stays_12_and_per_channel_upgrades_to_13() {
    let dir = tempdir();
    let calib = testdata("digits/cnn_calib");
    let model = testdata("digits/cnn_paddle_opset12.onnx");
    let out = dir.path().join("q.onnx");
    let o = quantize(
        &model,
        &out,
        &["--calib", calib.to_str().unwrap(), "--per-tensor"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = load(&out);
    assert_eq!(m.onnx_opset().unwrap(), 12);
    // Opset 12 QuantizeLinear/DequantizeLinear have no axis attribute.
    for (_, n) in m.graph.nodes() {
        assert!(
            n.attr("axis").is_none(),
            "{} has an axis at opset 12",
            n.name
        );
    }
    // Weights were Constant nodes: quantized all the same.
    assert_eq!(op_counts(&m)["DequantizeLinear"], 13);
    let o = quantize(&model, &out, &["--calib", calib.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(load(&out).onnx_opset().unwrap(), 13);
}

#[test]
fn a_calibration_table_is_reused_and_checked() {
    let dir = tempdir();
    let model = testdata("digits/cnn.onnx");
    let table = dir.path().join("ranges.json");
    let calib = testdata("digits/cnn_calib");
    let o = onnxq(&[
        "calibrate",
        model.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "-o",
        table.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = dir.path().join("a.onnx");
    let b = dir.path().join("b.onnx");
    // Bias correction and error-compensating rounding measure on samples,
    // which a table does not carry;
    // equalization changes the activations the table was made for.
    assert!(quantize(
        &model,
        &a,
        &[
            "--calib",
            calib.to_str().unwrap(),
            "--bias-correction",
            "false",
            "--gptq",
            "false",
            "--equalize",
            "false"
        ]
    )
    .status
    .success());
    // The table has no samples: the parity gate validates on --validate.
    let o = quantize(
        &model,
        &b,
        &[
            "--ranges",
            table.to_str().unwrap(),
            "--validate",
            calib.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (ga, gb) = (
        load(&a).graph.to_proto().unwrap(),
        load(&b).graph.to_proto().unwrap(),
    );
    assert_eq!(ga, gb, "a table gives the same graph as calibrating");
    // A table for another model is refused, and nothing is written.
    let other = dir.path().join("c.onnx");
    let o = quantize(
        &testdata("digits/mlp.onnx"),
        &other,
        &["--ranges", table.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("made for another model"),
        "{}",
        stderr(&o)
    );
    assert!(!other.exists());
}

#[test]
fn bad_selections_and_recipes_are_named_and_write_nothing() {
    let dir = tempdir();
    let model = testdata("digits/cnn.onnx");
    let calib = testdata("digits/cnn_calib");
    let out = dir.path().join("q.onnx");
    let count = std::cell::Cell::new(0);
    let recipe = |text: &str| -> PathBuf {
        count.set(count.get() + 1);
        let p = dir.path().join(format!("recipe{}.yaml", count.get()));
        std::fs::write(&p, text).unwrap();
        p
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--exclude".into(), "conv9".into()],
            "--exclude 'conv9' matches no node",
        ),
        (
            vec!["--op-types".into(), "Conv,Frobnicate".into()],
            "op type 'Frobnicate'",
        ),
        (
            vec![
                "--config".into(),
                recipe("per_channel: true\n").display().to_string(),
            ],
            "unknown field `per_channel`",
        ),
        (
            vec![
                "--config".into(),
                recipe("nodes:\n  conv7: {keep-float: true}\n")
                    .display()
                    .to_string(),
            ],
            "node 'conv7'",
        ),
        (
            vec![
                "--config".into(),
                recipe("tensors:\n  bn1: {scale: -1, zero-point: 0}\n")
                    .display()
                    .to_string(),
            ],
            "tensor 'bn1'",
        ),
        (
            vec![
                "--config".into(),
                recipe("method: [1, 2]\n").display().to_string(),
            ],
            "method",
        ),
    ];
    for (extra, expect) in cases {
        let mut args: Vec<&str> = vec!["--calib", calib.to_str().unwrap()];
        args.extend(extra.iter().map(String::as_str));
        let o = quantize(&model, &out, &args);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(expect), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!out.exists(), "{extra:?} wrote a file");
    }
    // Missing calibration.
    let o = quantize(&model, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--calib"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn the_recipe_sets_options_and_overrides() {
    let dir = tempdir();
    let model = testdata("digits/cnn.onnx");
    let calib = testdata("digits/cnn_calib");
    let recipe = dir.path().join("recipe.yaml");
    std::fs::write(
        &recipe,
        format!(
            "calib: {}\nactivations: int8\nnodes:\n  conv1: {{per-channel: false}}\ntensors:\n  logits: {{range: [-40, 40]}}\n",
            calib.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("q.onnx");
    let o = quantize(&model, &out, &["--config", recipe.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = load(&out);
    assert_eq!(
        init(&m, "conv1.weight_equalized/scale").len(),
        1,
        "conv1 per tensor"
    );
    assert_eq!(init(&m, "conv2.weight_equalized/scale").len(), 16);
    assert_eq!(init(&m, "image/zero_point").dtype(), DataType::Int8);
    // int8 activations are symmetric: range [-40, 40] → 40/127.
    assert_eq!(f32s(init(&m, "logits/scale"))[0], 40.0 / 127.0);
    // A flag overrides the recipe.
    let o = quantize(
        &model,
        &out,
        &[
            "--config",
            recipe.to_str().unwrap(),
            "--activations",
            "uint8",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        init(&load(&out), "image/zero_point").dtype(),
        DataType::Uint8
    );
}

#[test]
fn summary_snapshot() {
    // Relative model and sample paths: the recipe recorded in the output's
    // metadata names them as given, so the file size must not depend on
    // where the repository was cloned.
    let dir = tempdir();
    let out = dir.path().join("cnn.int8.onnx");
    let o = onnxq_in_repo(&[
        "quantize",
        "testdata/digits/cnn_paddle_opset12.onnx",
        "-o",
        out.to_str().unwrap(),
        "--calib",
        "testdata/digits/cnn_calib",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stderr(&o).replace(out.to_str().unwrap(), "OUT");
    let text = regex_free_secs(&text);
    insta::assert_snapshot!(text);
}

/// Replaces timings ("in 0.12 s", ", 0.03 s)") with "T s".
fn regex_free_secs(s: &str) -> String {
    s.lines()
        .map(|l| match (l.find(" in "), l.rfind(" s")) {
            (Some(a), Some(b)) if l.contains("calibration:") && b > a => {
                format!("{} in T s{}", &l[..a], &l[b + 2..])
            }
            // "time: 0.17 s (gptq 0.07, gate 0.06, …)"
            _ if l.starts_with("  time: ") => "  time: T s (stages)".to_string(),
            // "parity (… of SRC, 0.03 s): passed"
            _ if l.contains("parity (") => match (l.rfind(", "), l.rfind(" s)")) {
                (Some(a), Some(b)) if b > a => format!("{}, T s{}", &l[..a], &l[b + 2..]),
                _ => l.to_string(),
            },
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
