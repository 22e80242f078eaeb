//! Tests of error-compensating rounding: the factorization, the rounding
//! against nearest, the in-graph receptive fields.

use super::*;
use crate::calibrate::run_on_samples;
use crate::calibrate::samples::{InMemory, Sample};
use crate::ir::node::attr;
use crate::ir::Graph;
use crate::passes::testutil::{model, node, uniform};

fn lcg(n: usize, seed: u64) -> Vec<f64> {
    uniform(n, seed).into_iter().map(|u| u - 0.5).collect()
}

#[test]
fn inverse_upper_factor_reproduces_the_inverse() {
    let k = 7;
    let a = lcg(k * k, 3);
    // H = A Aᵀ + I: positive definite.
    let mut h = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..k {
            h[i * k + j] = (0..k).map(|m| a[i * k + m] * a[j * k + m]).sum::<f64>()
                + if i == j { 1.0 } else { 0.0 };
        }
    }
    let h32: Vec<f32> = h.iter().map(|&v| v as f32).collect();
    let u = inverse_upper_factor(MatRef::from_row_major_slice(&h32, k, k)).unwrap();
    let u: Vec<f64> = (0..k * k).map(|i| f64::from(u[(i / k, i % k)])).collect();
    // (Uᵀ U) H = I
    for i in 0..k {
        for j in 0..k {
            let v: f64 = (0..k)
                .map(|m| {
                    let inv_im: f64 = (0..k).map(|r| u[r * k + i] * u[r * k + m]).sum();
                    inv_im * h[m * k + j]
                })
                .sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-5, "({i},{j}): {v}");
        }
        for j in 0..i {
            assert_eq!(u[i * k + j], 0.0);
        }
    }
    assert!(inverse_upper_factor(Mat::<f32>::zeros(k, k).as_ref()).is_none());
}

/// Correlated inputs: compensation lowers the output error well below
/// nearest rounding's, and every level stays on the grid.
#[test]
fn compensation_beats_nearest_on_correlated_inputs() {
    let (rows, k, n) = (6, 16, 400);
    let base = lcg(n * 4, 9);
    let mix = lcg(4 * k, 11);
    // x = B·M + small noise: rank-4 signal in 16 inputs.
    let noise = lcg(n * k, 13);
    let mut h = vec![0.0; k * k];
    for s in 0..n {
        let x: Vec<f64> = (0..k)
            .map(|c| {
                (0..4)
                    .map(|m| base[s * 4 + m] * mix[m * k + c])
                    .sum::<f64>()
                    + 0.05 * noise[s * k + c]
            })
            .collect();
        for i in 0..k {
            for j in 0..k {
                h[i * k + j] += x[i] * x[j];
            }
        }
    }
    let w: Vec<f32> = lcg(rows * k, 17).iter().map(|&v| v as f32).collect();
    let scales: Vec<f32> = (0..rows)
        .map(|r| {
            w[r * k..(r + 1) * k]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()))
                / 63.0
        })
        .collect();
    let t = Target {
        shape: GramShape {
            id: NodeId(0),
            input: ValueId(1),
            layout: Layout::RowsFirst,
            rows,
            columns: k,
            groups: 1,
            dims: vec![rows, k],
        },
        node: "fc".into(),
        op: "Gemm".into(),
        weight: ValueId(0),
        w: w.clone(),
        scales: scales.clone(),
        zero_point: 0,
        qmin: -63,
        qmax: 63,
    };
    let (new, report, failed) = round_layer(&t, &h);
    assert!(failed.is_none());
    assert!(report.taken);
    assert!(
        report.compensated_db > report.nearest_db + 3.0,
        "{report:?}"
    );
    let new = new.unwrap();
    for r in 0..rows {
        for c in 0..k {
            let q = new[r * k + c] / scales[r];
            assert!((q - q.round()).abs() < 1e-4 && q.abs() <= 63.0 + 1e-4);
        }
    }
}

/// `y = Conv(x, w)` with `attrs`, `x` of shape `input`.
fn one_conv(input: &[i64], attrs: Vec<crate::onnx::proto::AttributeProto>, w: Tensor) -> Model {
    model(
        13,
        &[("x", input)],
        &["y"],
        vec![node("Conv", "conv", &["x", "w"], &["y"], attrs)],
        vec![("w", w)],
    )
}

/// A Conv whose input has symbolic spatial dims (as the PaddleOCR
/// exports declare) still gets its stride widened to at most
/// MAX_POSITIONS positions, from the shapes at the first sample's dims.
#[test]
fn symbolic_dims_still_widen_the_probe_stride() {
    use crate::onnx::proto::tensor_shape_proto::dimension;
    let w: Vec<f32> = lcg(8 * 4 * 9, 5).iter().map(|&v| v as f32).collect();
    let fixed = one_conv(
        &[1, 4, 64, 64],
        vec![attr::ints("pads", &[1, 1, 1, 1])],
        Tensor::from_f32(vec![8, 4, 3, 3], &w),
    );
    let mut proto = fixed.to_proto().unwrap();
    let g = proto.graph.as_mut().unwrap();
    g.value_info.clear();
    if let Some(crate::onnx::proto::type_proto::Value::TensorType(tt)) =
        g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        let dims = &mut tt.shape.as_mut().unwrap().dim;
        dims[2].value = Some(dimension::Value::DimParam("h".into()));
        dims[3].value = Some(dimension::Value::DimParam("w".into()));
    }
    let fp32 = Model::from_proto(&proto).unwrap();
    let y = fp32.graph.find_value("y").unwrap();
    assert!(static_shape(&fp32.graph, y).is_none());
    let ranges: BTreeMap<String, (f32, f32)> = [
        ("x".to_string(), (-0.5, 0.5)),
        ("y".to_string(), (-2.0, 2.0)),
    ]
    .into();
    let (t, _) = targets(&fp32, &QuantizeConfig::default(), &ranges).unwrap();
    let strides = |shaped: Option<&Graph>| {
        let mut aug = fp32.clone();
        gram_probe(&mut aug.graph, 0, &t[0].shape, shaped)
            .unwrap()
            .unwrap();
        let (_, probe) = aug
            .graph
            .nodes()
            .find(|(_, n)| n.name == "__onnxq_gptq/0/1/Conv")
            .unwrap();
        probe.get_ints("strides").unwrap().unwrap()
    };
    assert_eq!(strides(None), vec![1, 1]);
    let x = vec![0.5f32; 4 * 64 * 64];
    let sample = vec![("x".to_string(), Tensor::from_f32(vec![1, 4, 64, 64], &x))];
    let shaped = shapes_at_sample(&fp32, &sample).unwrap();
    // 64x64 outputs: stride 2 leaves 32x32 = MAX_POSITIONS.
    assert_eq!(strides(Some(&shaped.graph)), vec![2, 2]);
}

/// The in-graph receptive fields of a grouped, strided, dilated Conv
/// give exactly `Σ x xᵀ` per group, columns in the weight's order.
#[test]
fn conv_gram_probe_matches_direct_patches() {
    let (n, c, hw, m, groups) = (2usize, 4usize, 9usize, 6usize, 2usize);
    let cg = c / groups;
    let w: Vec<f32> = lcg(m * cg * 9, 5).iter().map(|&v| v as f32).collect();
    let fp32 = one_conv(
        &[n as i64, c as i64, hw as i64, hw as i64],
        vec![
            attr::int("group", groups as i64),
            attr::ints("pads", &[1, 2, 1, 0]),
            attr::ints("strides", &[2, 1]),
            attr::ints("dilations", &[1, 2]),
        ],
        Tensor::from_f32(vec![m, cg, 3, 3], &w),
    );
    let x: Vec<f32> = lcg(n * c * hw * hw, 21).iter().map(|&v| v as f32).collect();
    let cfg = QuantizeConfig::default();
    let ranges: BTreeMap<String, (f32, f32)> = [
        ("x".to_string(), (-0.5, 0.5)),
        ("y".to_string(), (-2.0, 2.0)),
    ]
    .into();
    let (t, skipped) = targets(&fp32, &cfg, &ranges).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(
        (t.len(), t[0].shape.groups, t[0].shape.columns),
        (1, groups, cg * 9)
    );
    let mut aug = fp32.clone();
    let name = gram_probe(&mut aug.graph, 0, &t[0].shape, None)
        .unwrap()
        .unwrap();
    let sample = vec![("x".to_string(), Tensor::from_f32(vec![n, c, hw, hw], &x))];
    let got = run_on_samples(
        &aug.to_proto().unwrap(),
        &[name],
        Level::Typed,
        &InMemory(vec![sample]),
        1,
    )
    .unwrap()
    .remove(0)
    .remove(0);
    // Direct: output positions of the Conv, each receptive field.
    let (ph0, pw0, ph1, pw1) = (1i64, 2i64, 1i64, 0i64);
    let (sh, sw, dh, dw) = (2i64, 1i64, 1i64, 2i64);
    let ho = (hw as i64 + ph0 + ph1 - dh * 2 - 1) / sh + 1;
    let wo = (hw as i64 + pw0 + pw1 - dw * 2 - 1) / sw + 1;
    let k = cg * 9;
    let mut want = vec![0f64; groups * k * k];
    for b in 0..n {
        for gi in 0..groups {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut f = vec![0f64; k];
                    for cl in 0..cg {
                        for ky in 0..3i64 {
                            for kx in 0..3i64 {
                                let (iy, ix) = (oy * sh + ky * dh - ph0, ox * sw + kx * dw - pw0);
                                if iy < 0 || ix < 0 || iy >= hw as i64 || ix >= hw as i64 {
                                    continue;
                                }
                                let ch = gi * cg + cl;
                                f[cl * 9 + (ky * 3 + kx) as usize] = f64::from(
                                    x[((b * c + ch) * hw + iy as usize) * hw + ix as usize],
                                );
                            }
                        }
                    }
                    for i in 0..k {
                        for j in 0..k {
                            want[(gi * k + i) * k + j] += f[i] * f[j];
                        }
                    }
                }
            }
        }
    }
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((f64::from(*g) - w).abs() < 1e-4, "entry {i}: {g} vs {w}");
    }
}

/// The Gram matrices summed within the calibration pass (fused_probes)
/// are the ones GPTQ's own pass sums, and rounding from them gives the
/// same layers and gains; a budget too small for a layer leaves it to
/// GPTQ's pass.
#[test]
fn grams_summed_in_calibration_round_as_grams_of_their_own_pass() {
    use crate::calibrate::{CollectOptions, Method, RangeOptions, RangeTable, Summed, Target};
    let w: Vec<f32> = lcg(6 * 4 * 9, 5).iter().map(|&v| v as f32).collect();
    let fp32 = one_conv(
        &[1, 4, 12, 12],
        vec![attr::ints("pads", &[1, 1, 1, 1])],
        Tensor::from_f32(vec![6, 4, 3, 3], &w),
    );
    let samples: Vec<Sample> = (0..5)
        .map(|i| {
            let x: Vec<f32> = lcg(4 * 144, 40 + i).iter().map(|&v| v as f32).collect();
            vec![("x".to_string(), Tensor::from_f32(vec![1, 4, 12, 12], &x))]
        })
        .collect();
    let source = InMemory(samples);
    let cfg = QuantizeConfig::default();
    let ranges: BTreeMap<String, (f32, f32)> = [
        ("x".to_string(), (-0.5, 0.5)),
        ("y".to_string(), (-2.0, 2.0)),
    ]
    .into();
    assert!(fused_probes(&fp32, &source, 100).unwrap().is_none());
    let fused = fused_probes(&fp32, &source, FUSED_ENTRIES)
        .unwrap()
        .unwrap();
    assert_eq!(fused.nodes, vec!["conv".to_string()]);
    let collect = CollectOptions {
        histograms: false,
        summed: Some(Summed {
            model: std::sync::Arc::new(fused.model),
            outputs: fused.outputs,
        }),
        ..Default::default()
    };
    let opts = RangeOptions {
        method: Method::Minmax,
        percentile: 99.999,
        target: Target::Uint8,
    };
    let wanted = ["x".to_string(), "y".to_string()].into();
    let (table, c) =
        RangeTable::calibrate(&fp32, Some(&wanted), &source, &opts, &collect, "").unwrap();
    assert!(table.tensors.contains_key("y"));
    let measured: BTreeMap<String, Vec<f64>> = fused.nodes.into_iter().zip(c.sums).collect();
    let apart = round_weights(&fp32, &cfg, &ranges, &source, &BTreeMap::new(), 1).unwrap();
    let within = round_weights(&fp32, &cfg, &ranges, &source, &measured, 2).unwrap();
    assert_eq!(apart.rounded.len(), 1);
    assert_eq!(within.rounded.len(), 1);
    let (a, b) = (&apart.rounded[0], &within.rounded[0]);
    assert_eq!((a.node.as_str(), a.taken), (b.node.as_str(), b.taken));
    assert!(
        (a.compensated_db - b.compensated_db).abs() < 1e-4,
        "{a:?} vs {b:?}"
    );
    assert!((a.nearest_db - b.nearest_db).abs() < 1e-4);
}
