//! Tests of error-compensating rounding: the factorization, the rounding
//! against nearest, the Gram matrices summed in calibration.

use super::*;
use crate::calibrate::gram::KeptInputs;
use crate::calibrate::samples::{InMemory, Sample};
use crate::ir::node::attr;
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

/// The Gram matrices summed within the calibration pass (gram_probes)
/// are the ones GPTQ's own pass sums, and rounding from them gives the
/// same layers and gains; a budget too small for a layer leaves it to
/// GPTQ's pass, or to the inputs the calibration pass keeps.
#[test]
fn grams_summed_in_calibration_round_as_grams_of_their_own_pass() {
    use crate::calibrate::{CollectOptions, Method, RangeOptions, RangeTable, Target};
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
    let (none, rest) = gram_probes(&fp32, 100).unwrap();
    assert!(none.is_empty());
    assert_eq!(rest.len(), 1);
    let (probes, rest) = gram_probes(&fp32, FUSED_ENTRIES).unwrap();
    assert!(rest.is_empty());
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].node, "conv");
    let collect = CollectOptions {
        histograms: false,
        grams: probes,
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
    let measured = c.grams;
    assert_eq!(measured.keys().collect::<Vec<_>>(), ["conv"]);
    let none = KeptInputs::default();
    let apart = round_weights(&fp32, &cfg, &ranges, &source, (&BTreeMap::new(), &none), 1).unwrap();
    let within = round_weights(&fp32, &cfg, &ranges, &source, (&measured, &none), 2).unwrap();
    assert_eq!(apart.rounded.len(), 1);
    assert_eq!(within.rounded.len(), 1);
    let (a, b) = (&apart.rounded[0], &within.rounded[0]);
    assert_eq!((a.node.as_str(), a.taken), (b.node.as_str(), b.taken));
    assert!(
        (a.compensated_db - b.compensated_db).abs() < 1e-4,
        "{a:?} vs {b:?}"
    );
    assert!((a.nearest_db - b.nearest_db).abs() < 1e-4);
    // Past the fused budget, the layer's inputs are kept by the
    // calibration pass; summed from them, the Gram matrix is the one of
    // GPTQ's own pass to the bit (same blocks, same order; the input is
    // the graph's, the same in both plans), so the model is the same;
    // with no byte budget nothing is kept.
    // Calibrates with no Gram matrix summed in the pass, the layer's
    // inputs kept within `bytes`.
    let keeping = |bytes: usize| {
        let (fused, rest) = gram_probes(&fp32, 100).unwrap();
        let collect = CollectOptions {
            histograms: false,
            grams: fused,
            gram_inputs: rest,
            gram_input_bytes: bytes,
            ..Default::default()
        };
        RangeTable::calibrate(&fp32, Some(&wanted), &source, &opts, &collect, "")
            .unwrap()
            .1
    };
    for (bytes, kept_layers) in [(1 << 20, 1), (0, 0)] {
        let c = keeping(bytes);
        assert!(c.grams.is_empty());
        assert_eq!(usize::from(c.gram_inputs.has("conv")), kept_layers);
        assert!(c.gram_inputs.bytes() <= bytes);
        let from_kept =
            round_weights(&fp32, &cfg, &ranges, &source, (&c.grams, &c.gram_inputs), 2).unwrap();
        assert_eq!(from_kept.rounded, apart.rounded);
        assert_eq!(
            from_kept.model.to_proto().unwrap(),
            apart.model.to_proto().unwrap()
        );
    }
    // A budget smaller than one sample's input (2304 bytes), or than all
    // five samples' (let go on the fourth), keeps nothing.
    for bytes in [1000, 3 * 2304] {
        let c = keeping(bytes);
        assert!(!c.gram_inputs.has("conv"));
        assert_eq!(c.gram_inputs.bytes(), 0);
    }
}
