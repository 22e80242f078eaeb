//! Bias correction against a direct computation, and the mean-input
//! geometry of every layout against tract.

use super::*;
use crate::calibrate::run_on_samples;
use crate::calibrate::samples::InMemory;
use crate::calibrate::Sample;
use crate::ir::node::attr;
use crate::passes::testutil::{model, node, uniform};
use crate::quantize::QuantizeConfig;
use crate::tract::Level;

fn lcg(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    uniform(n, seed)
        .into_iter()
        .map(|u| lo + (hi - lo) * u as f32)
        .collect()
}

/// Direct 2-D convolution, 3×3, pad 1, stride 1, [1, C, H, W].
fn conv(x: &[f32], w: &[f32], b: &[f32], c: usize, m: usize, h: usize) -> Vec<f64> {
    let mut y = vec![0.0f64; m * h * h];
    for o in 0..m {
        for i in 0..h {
            for j in 0..h {
                let mut acc = b[o] as f64;
                for ci in 0..c {
                    for di in 0..3 {
                        for dj in 0..3 {
                            let (ii, jj) = (i as i64 + di as i64 - 1, j as i64 + dj as i64 - 1);
                            if ii < 0 || jj < 0 || ii >= h as i64 || jj >= h as i64 {
                                continue;
                            }
                            acc += x[(ci * h + ii as usize) * h + jj as usize] as f64
                                * w[((o * c + ci) * 3 + di) * 3 + dj] as f64;
                        }
                    }
                }
                y[(o * h + i) * h + j] = acc;
            }
        }
    }
    y
}

#[test]
fn the_mean_shift_of_rounded_weights_is_taken_out_of_the_bias() {
    let (c, m, h) = (6usize, 4usize, 5usize);
    let w = lcg(m * c * 9, 7, -0.5, 0.5);
    let b = vec![0.1f32, -0.2, 0.3, 0.0];
    let fp32 = model(
        13,
        &[("x", &[1, c as i64, h as i64, h as i64])],
        &["y"],
        vec![node(
            "Conv",
            "conv",
            &["x", "w", "b"],
            &["y"],
            vec![attr::ints("pads", &[1, 1, 1, 1])],
        )],
        vec![
            ("w", Tensor::from_f32(vec![m, c, 3, 3], &w)),
            ("b", Tensor::from_f32(vec![m], &b)),
        ],
    );
    // Inputs with a positive mean, so weight rounding shifts outputs.
    let xs: Vec<Vec<f32>> = (0..4).map(|i| lcg(c * h * h, 100 + i, 0.0, 2.0)).collect();
    let samples: Vec<Sample> = xs
        .iter()
        .map(|x| vec![("x".to_string(), Tensor::from_f32(vec![1, c, h, h], x))])
        .collect();
    let cfg = QuantizeConfig::default();
    let ranges: BTreeMap<String, (f32, f32)> = [
        ("x".to_string(), (0.0, 2.0)),
        ("y".to_string(), (-10.0, 10.0)),
    ]
    .into();
    // The rounding error is the int8 per-channel rounding, computed here.
    let t = targets(&fp32, &fp32, &cfg, &ranges).unwrap();
    assert_eq!(t.len(), 1);
    let dw = t[0].delta.clone();
    for o in 0..m {
        let row = &w[o * c * 9..(o + 1) * c * 9];
        let s = row.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
        for (k, &v) in row.iter().enumerate() {
            let q = (v / s).round_ties_even().clamp(-127.0, 127.0) * s;
            assert!((dw[o * c * 9 + k] - (q - v)).abs() < 1e-6);
        }
    }
    let wq: Vec<f32> = w.iter().zip(&dw).map(|(a, d)| a + d).collect();
    let source = InMemory(samples);
    let (corrected, report) =
        correct_biases(&fp32, &fp32, &cfg, &ranges, &source, &Means::default(), 2).unwrap();
    // The mean inputs as calibration takes them give the same biases as
    // the pass bias correction makes for the layers calibration lacks.
    let collect = crate::calibrate::CollectOptions {
        input_means: true,
        ..Default::default()
    };
    let opts = crate::calibrate::RangeOptions {
        method: crate::calibrate::Method::Minmax,
        percentile: 99.999,
        target: crate::calibrate::Target::Uint8,
    };
    let (_, cal) =
        crate::calibrate::RangeTable::calibrate(&fp32, None, &source, &opts, &collect, "").unwrap();
    assert!(cal.means.contains("conv"));
    let (from_calibration, _) =
        correct_biases(&fp32, &fp32, &cfg, &ranges, &source, &cal.means, 1).unwrap();
    let bias_of = |m: &Model| {
        let g = &m.graph;
        g.initializer(g.find_value("b").unwrap())
            .unwrap()
            .to_f32_vec()
            .unwrap()
    };
    assert_eq!(bias_of(&from_calibration), bias_of(&corrected));
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].node, "conv");
    let g = &corrected.graph;
    let b2 = g
        .initializer(g.find_value("b").unwrap())
        .unwrap()
        .to_f32_vec()
        .unwrap();
    // Per channel: the mean over samples and positions of
    // conv(x, Wq) + b' − (conv(x, W) + b) is zero; with the old bias it
    // is the shift (and not zero).
    for o in 0..m {
        let (mut before, mut after) = (0.0f64, 0.0f64);
        for x in &xs {
            let r = conv(x, &w, &b, c, m, h);
            let q0 = conv(x, &wq, &b, c, m, h);
            let q1 = conv(x, &wq, &b2, c, m, h);
            let n = (h * h) as f64;
            for k in o * h * h..(o + 1) * h * h {
                before += (q0[k] - r[k]) / n;
                after += (q1[k] - r[k]) / n;
            }
        }
        let (before, after) = (before / xs.len() as f64, after / xs.len() as f64);
        assert!(
            before.abs() > 1e-4,
            "channel {o}: no shift to correct ({before})"
        );
        assert!(
            after.abs() < 1e-5 + before.abs() * 1e-3,
            "channel {o}: {before} → {after}"
        );
    }
    // A layer kept float gets its own bias back; others keep theirs.
    let id = report[0].original.id;
    let back = restore(&corrected, &report, &[(id, "float".to_string())].into());
    let bg = &back.graph;
    let b3 = bg
        .initializer(bg.find_value("b").unwrap())
        .unwrap()
        .to_f32_vec()
        .unwrap();
    assert_eq!(b3, b);
    let same = restore(&corrected, &report, &BTreeMap::new());
    let sg = &same.graph;
    let b4 = sg
        .initializer(sg.find_value("b").unwrap())
        .unwrap()
        .to_f32_vec()
        .unwrap();
    assert_eq!(b4, b2);
}

/// One layer with weight `w` (no bias) on inputs `xs`: the mean output
/// per channel as tract computes it, against [`Target::shift`] of the mean
/// input that calibration's probe takes (with `w` as the "rounding error").
fn check_layer(
    op: &str,
    x_dims: &[usize],
    w_dims: &[usize],
    attrs: Vec<crate::onnx::proto::AttributeProto>,
    layout: Layout,
) {
    let xd: Vec<i64> = x_dims.iter().map(|&d| d as i64).collect();
    let w = lcg(w_dims.iter().product(), 11, -1.0, 1.0);
    let m = model(
        13,
        &[("x", &xd)],
        &["y"],
        vec![node(op, "layer", &["x", "w"], &["y"], attrs)],
        vec![("w", Tensor::from_f32(w_dims.to_vec(), &w))],
    );
    let n: usize = x_dims.iter().product();
    let xs: Vec<Vec<f32>> = (0..3).map(|i| lcg(n, 50 + i, -1.0, 3.0)).collect();
    let samples: Vec<Sample> = xs
        .iter()
        .map(|x| vec![("x".to_string(), Tensor::from_f32(x_dims.to_vec(), x))])
        .collect();
    let proto = m.to_proto().unwrap();
    let ys = run_on_samples(
        &proto,
        &["y".to_string()],
        Level::Optimized,
        &InMemory(samples),
        1,
    )
    .unwrap_or_else(|e| panic!("{op} {layout:?}: tract: {e}"));
    let probe = probes(&m).unwrap().remove(0);
    let mut means = Means::default();
    for x in &xs {
        means
            .add("layer", &probe.mean(x, x_dims, false).unwrap())
            .unwrap();
    }
    let channels = match layout {
        Layout::Conv { .. } => w_dims[0],
        Layout::ConvTranspose { group } => w_dims[1] * group,
        Layout::Rows { trans_b: true, .. } => w_dims[0],
        Layout::Rows { .. } => w_dims[1],
    };
    let t = Target {
        id: NodeId(0),
        node: "layer".into(),
        channels,
        layout,
        delta: w,
        dims: w_dims.to_vec(),
        bias: None,
    };
    let got = t.shift(&means.get("layer").unwrap()).unwrap();
    // tract's output: [N, M, …] (convolutions) or [rows, M].
    let conv = !matches!(layout, Layout::Rows { .. });
    let mut want = vec![0f64; channels];
    for y in ys.iter().map(|o| &o[0]) {
        let spatial = y.len() / (x_dims[0] * channels);
        let per_channel = (y.len() / channels) as f64;
        for (k, v) in y.iter().enumerate() {
            let ch = if conv {
                k / spatial % channels
            } else {
                k % channels
            };
            want[ch] += f64::from(*v) / per_channel / xs.len() as f64;
        }
    }
    for (c, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "{op} {layout:?} {x_dims:?} {w_dims:?} channel {c}: {g} from the mean input, {w} from tract"
        );
    }
}

#[test]
fn the_mean_input_gives_each_layouts_mean_output() {
    let conv = |group| Layout::Conv { group };
    let convt = |group| Layout::ConvTranspose { group };
    // Strides, asymmetric pads, dilations.
    check_layer(
        "Conv",
        &[2, 3, 9, 8],
        &[4, 3, 3, 2],
        vec![
            attr::ints("strides", &[2, 1]),
            attr::ints("pads", &[1, 0, 2, 1]),
            attr::ints("dilations", &[1, 2]),
        ],
        conv(1),
    );
    // Groups, SAME_UPPER with a stride.
    check_layer(
        "Conv",
        &[1, 4, 7, 10],
        &[6, 2, 3, 2],
        vec![
            attr::int("group", 2),
            attr::ints("strides", &[2, 3]),
            attr::string("auto_pad", "SAME_UPPER"),
        ],
        conv(2),
    );
    check_layer(
        "Conv",
        &[1, 2, 8, 7],
        &[3, 2, 4, 3],
        vec![
            attr::ints("strides", &[3, 2]),
            attr::string("auto_pad", "SAME_LOWER"),
        ],
        conv(1),
    );
    // Depthwise.
    check_layer(
        "Conv",
        &[2, 5, 6, 6],
        &[5, 1, 3, 3],
        vec![attr::int("group", 5), attr::ints("pads", &[1, 1, 1, 1])],
        conv(5),
    );
    // 1-D, VALID, dilated; 3-D.
    check_layer(
        "Conv",
        &[2, 3, 17],
        &[4, 3, 3],
        vec![
            attr::string("auto_pad", "VALID"),
            attr::ints("strides", &[2]),
            attr::ints("dilations", &[2]),
        ],
        conv(1),
    );
    check_layer(
        "Conv",
        &[1, 2, 5, 6, 4],
        &[3, 2, 2, 3, 2],
        vec![attr::ints("pads", &[0, 1, 1, 1, 0, 0])],
        conv(1),
    );
    // ConvTranspose: pads, output_padding, groups, dilations.
    check_layer(
        "ConvTranspose",
        &[2, 4, 5, 6],
        &[4, 3, 3, 3],
        vec![
            attr::int("group", 2),
            attr::ints("strides", &[2, 2]),
            attr::ints("pads", &[1, 1, 0, 1]),
            attr::ints("output_padding", &[1, 0]),
        ],
        convt(2),
    );
    check_layer(
        "ConvTranspose",
        &[1, 3, 4, 5],
        &[3, 2, 2, 3],
        vec![
            attr::ints("strides", &[3, 2]),
            attr::ints("dilations", &[2, 1]),
        ],
        convt(1),
    );
    check_layer(
        "ConvTranspose",
        &[1, 2, 5, 4],
        &[2, 3, 3, 3],
        vec![
            attr::ints("strides", &[2, 2]),
            attr::string("auto_pad", "SAME_UPPER"),
        ],
        convt(1),
    );
    // MatMul over a batch of rows; Gemm with transB and alpha.
    check_layer(
        "MatMul",
        &[2, 5, 6],
        &[6, 4],
        vec![],
        Layout::Rows {
            trans_b: false,
            alpha: 1.0,
        },
    );
    check_layer(
        "Gemm",
        &[5, 6],
        &[4, 6],
        vec![attr::int("transB", 1), attr::float("alpha", 0.5)],
        Layout::Rows {
            trans_b: true,
            alpha: 0.5,
        },
    );
}
