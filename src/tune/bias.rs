//! Bias correction: undo the mean output shift that weight rounding causes.
//!
//! Rounding a channel's weights to int8 moves its output by
//! `Conv(x, W_q − W)`, whose mean over the calibration data is usually not
//! zero (few weights per channel — depthwise and first-layer convs — make
//! it worst). For every quantized Conv, ConvTranspose, Gemm and MatMul with
//! constant weights, this pass measures that mean per output channel on the
//! samples and subtracts it from the float bias before the bias is
//! quantized, so the int8 layer is unbiased on that data.
//!
//! How: the weights' dequantized values come from the QDQ model the plan
//! builds (the same rounding the output gets); one augmented copy of the
//! FP32 model computes, per sample, each layer once more on its own input
//! with `W_q − W` and no bias, reduced in the graph to one mean per channel
//! (`Reshape → ReduceMean`); the sample means are averaged. The FP32
//! model's bias (or a new zero bias for a Conv without one; the constant of
//! a following `Add` for MatMul, as exporters write `Linear`) is then
//! adjusted. Reads the prepared model, the plan and the samples; returns a
//! corrected copy, which only the quantizer sees — parity is still checked
//! against the original.

use crate::calibrate::run_on_samples;
use crate::calibrate::samples::SampleSource;
use crate::error::{Error, Result};
use crate::ir::node::attr;
use crate::ir::{Graph, Model, Node, NodeId, Tensor, ValueId};
use crate::quantize::QuantizeConfig;
use crate::tract::Level;
use crate::tune::weights::{put_back, quantized_layers, Grid, Layer, Original};
use std::collections::BTreeMap;

/// What the correction did to one layer.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Corrected {
    pub node: String,
    pub op: String,
    /// Largest |shift| removed from a channel, and the mean |shift|.
    pub max_shift: f32,
    pub mean_shift: f32,
    /// The bias before (for [`restore`]).
    #[serde(skip)]
    pub original: Original,
}

/// Where a layer's bias lives.
enum BiasSlot {
    /// Input `slot` of the node itself (Conv B, Gemm C); `scale` multiplies
    /// it (Gemm beta).
    Input { slot: usize, scale: f32 },
    /// The constant operand of the Add that follows a MatMul.
    Add { node: NodeId, slot: usize },
    /// A Conv/ConvTranspose without a bias: add one.
    New,
}

/// One layer to correct.
struct Target {
    id: NodeId,
    channels: usize,
    /// Output channel axis: 1 for convolutions, last for MatMul/Gemm.
    conv: bool,
    delta_w: Tensor,
    bias: Option<BiasSlot>,
}

/// The layers to correct, with their weight rounding error.
fn targets(
    fp32: &Model,
    rounded: &Model,
    cfg: &QuantizeConfig,
    ranges: &BTreeMap<String, (f32, f32)>,
) -> Result<Vec<Target>> {
    let (q, layers) = quantized_layers(fp32, rounded, cfg, ranges)?;
    let g = &fp32.graph;
    let mut out = Vec::new();
    for Layer {
        id,
        node: n,
        weight: w,
        ..
    } in layers
    {
        let conv = matches!(n.op_type.as_str(), "Conv" | "ConvTranspose");
        let Some(y) = n.output(0) else { continue };
        // The quantized model's weight: input 1 of the same node now comes
        // from a DequantizeLinear of the int8 initializer.
        let Some(wq) = Grid::of(&q.graph, id, 1).and_then(|(grid, qt)| grid.dequantize(qt)) else {
            continue;
        };
        let Ok(wf) = w.to_f32_vec() else {
            continue;
        };
        if wq.len() != wf.len() {
            continue;
        }
        let delta: Vec<f32> = wq.iter().zip(&wf).map(|(a, b)| a - b).collect();
        let dims = w.dims().to_vec();
        let trans_b = n.is("Gemm") && n.get_int("transB")?.unwrap_or(0) != 0;
        let channels = match n.op_type.as_str() {
            "Conv" => dims[0],
            "ConvTranspose" => {
                dims.get(1).copied().unwrap_or(0) * n.get_int("group")?.unwrap_or(1) as usize
            }
            "Gemm" if trans_b => dims[0],
            _ => *dims.last().unwrap_or(&0),
        };
        if n.is("Gemm") && n.get_int("transA")?.unwrap_or(0) != 0 {
            continue;
        }
        let bias = match n.op_type.as_str() {
            "Conv" | "ConvTranspose" => match n.input(2) {
                Some(b) if g.initializer(b).is_some_and(|t| t.len() == channels) => {
                    Some(BiasSlot::Input {
                        slot: 2,
                        scale: 1.0,
                    })
                }
                Some(_) => None,
                None => Some(BiasSlot::New),
            },
            "Gemm" => match n.input(2) {
                Some(b) if g.initializer(b).is_some_and(|t| t.len() == channels) => {
                    let beta = n.get_float("beta")?.unwrap_or(1.0);
                    (beta != 0.0).then_some(BiasSlot::Input {
                        slot: 2,
                        scale: beta,
                    })
                }
                _ => None,
            },
            _ => match g.value(y).consumers() {
                [(c, _)] if !g.is_graph_output(y) => {
                    g.node(*c).filter(|a| a.is("Add")).and_then(|a| {
                        let other = if a.input(0) == Some(y) { 1 } else { 0 };
                        let b = g.initializer(a.input(other)?)?;
                        (b.len() == channels && b.dims().len() == 1).then_some(BiasSlot::Add {
                            node: *c,
                            slot: other,
                        })
                    })
                }
                _ => None,
            },
        };
        if bias.is_none() || channels == 0 {
            continue;
        }
        out.push(Target {
            id,
            channels,
            conv,
            delta_w: Tensor::from_f32(dims, &delta),
            bias,
        });
    }
    Ok(out)
}

/// Appends to `g`: `node` again on `ΔW` without bias, and the mean of its
/// output per channel. Returns the name of the `[channels]` mean.
fn shift_probe(g: &mut Graph, opset: i64, k: usize, t: &Target) -> Option<String> {
    let n = g.node(t.id)?.clone();
    let base = format!("__onnxq_bias/{k}");
    let dw = g.add_initializer(&format!("{base}/delta_w"), t.delta_w.clone());
    let mut copy = n.clone();
    copy.name = format!("{base}/{}", n.op_type);
    copy.unnamed = false;
    copy.inputs = vec![n.input(0), Some(dw)];
    copy.outputs = vec![Some(g.new_value(&format!("{base}/y")))];
    let y = copy.output(0)?;
    g.insert_node(copy);
    // [N, C, L] (convolutions) or [L, C] (channels last), then the mean.
    let (shape, axes): (Vec<i64>, Vec<i64>) = if t.conv {
        (vec![0, t.channels as i64, -1], vec![0, 2])
    } else {
        (vec![-1, t.channels as i64], vec![0])
    };
    let sv = g.add_initializer(
        &format!("{base}/shape"),
        Tensor::from_i64(vec![shape.len()], &shape),
    );
    let r = g.new_value(&format!("{base}/reshaped"));
    let mut rn = Node::new(format!("{base}/Reshape"), "Reshape");
    rn.inputs = vec![Some(y), Some(sv)];
    rn.outputs = vec![Some(r)];
    g.insert_node(rn);
    let m = g.new_value(&format!("{base}/mean"));
    let mut mn = Node::new(format!("{base}/ReduceMean"), "ReduceMean");
    mn.outputs = vec![Some(m)];
    mn.attrs.push(attr::int("keepdims", 0));
    if opset >= 18 {
        let av = g.add_initializer(
            &format!("{base}/axes"),
            Tensor::from_i64(vec![axes.len()], &axes),
        );
        mn.inputs = vec![Some(r), Some(av)];
    } else {
        mn.inputs = vec![Some(r)];
        mn.attrs.push(attr::ints("axes", &axes));
    }
    g.insert_node(mn);
    Some(g.value_name(m).to_string())
}

/// `corrected` (from [`correct_biases`]) with the biases of the layers in
/// `float` put back as they were: a layer that stays float computes with
/// its exact weights, so its bias must not carry the correction.
pub fn restore(
    corrected: &Model,
    changes: &[Corrected],
    float: &BTreeMap<NodeId, String>,
) -> Model {
    put_back(corrected, changes.iter().map(|c| &c.original), float)
}

/// Measures and removes the mean output shift of every quantized
/// Conv/ConvTranspose/Gemm/MatMul (with a bias it can move) on `source`.
/// `rounded` is the model the quantizer will see: `fp32` itself, or its
/// copy with error-compensated weights (`tune::gptq`, whose scales `cfg`
/// pins); the shift is of its quantized weights against `fp32`'s.
/// Returns `rounded` corrected (for the quantizer only) and what changed.
pub fn correct_biases(
    fp32: &Model,
    rounded: &Model,
    cfg: &QuantizeConfig,
    ranges: &BTreeMap<String, (f32, f32)>,
    source: &dyn SampleSource,
    jobs: usize,
) -> Result<(Model, Vec<Corrected>)> {
    let targets = targets(fp32, rounded, cfg, ranges)?;
    let mut out = rounded.clone();
    if targets.is_empty() || source.is_empty() {
        return Ok((out, Vec::new()));
    }
    let opset = fp32.onnx_opset()?;
    let mut aug = fp32.clone();
    let mut names = Vec::new();
    let mut kept = Vec::new();
    for (k, t) in targets.iter().enumerate() {
        if let Some(name) = shift_probe(&mut aug.graph, opset, k, t) {
            names.push(name);
            kept.push(t);
        }
    }
    let proto = aug.to_proto()?;
    let per_sample = run_on_samples(&proto, &names, Level::for_model(&proto), source, jobs)?;
    let mut sums: Vec<Vec<f64>> = kept.iter().map(|t| vec![0.0; t.channels]).collect();
    for s in per_sample {
        for (acc, v) in sums.iter_mut().zip(s) {
            if v.len() != acc.len() {
                return Err(Error::Invalid(
                    "bias correction: a channel mean has the wrong length".into(),
                ));
            }
            for (a, x) in acc.iter_mut().zip(v) {
                *a += x as f64;
            }
        }
    }
    let n = source.len() as f64;
    let mut report = Vec::new();
    for (t, sum) in kept.iter().zip(sums) {
        let shift: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        if shift.iter().any(|s| !s.is_finite()) {
            continue;
        }
        let g = &mut out.graph;
        let Some(node) = g.node(t.id).cloned() else {
            continue;
        };
        let (value, scale) = match t.bias.as_ref() {
            Some(BiasSlot::Input { slot, scale }) => match node.input(*slot) {
                Some(v) => (v, *scale),
                None => continue,
            },
            Some(BiasSlot::Add { node: a, slot }) => {
                match g.node(*a).and_then(|a| a.input(*slot)) {
                    Some(v) => (v, 1.0),
                    None => continue,
                }
            }
            Some(BiasSlot::New) => {
                let v: ValueId = g.add_initializer(
                    &format!("{}/bias_correction", node.name),
                    Tensor::from_f32(vec![t.channels], &vec![0.0; t.channels]),
                );
                g.set_input(t.id, 2, Some(v));
                (v, 1.0)
            }
            None => continue,
        };
        let Some(original) = g.initializer(value).cloned() else {
            continue;
        };
        let Ok(b) = original.to_f32_vec() else {
            continue;
        };
        // A bias shared with another node is not ours to move.
        if g.value(value).consumers().len() != 1 || b.len() != t.channels {
            continue;
        }
        let dims = g
            .initializer(value)
            .map(|b| b.dims().to_vec())
            .unwrap_or_default();
        let new: Vec<f32> = b.iter().zip(&shift).map(|(b, s)| b - s / scale).collect();
        g.set_initializer(value, Tensor::from_f32(dims, &new));
        let abs: Vec<f32> = shift.iter().map(|s| s.abs()).collect();
        report.push(Corrected {
            original: Original {
                id: t.id,
                value,
                tensor: original,
            },
            node: node.name.clone(),
            op: node.op_type.clone(),
            max_shift: abs.iter().copied().fold(0.0, f32::max),
            mean_shift: abs.iter().sum::<f32>() / abs.len().max(1) as f32,
        });
    }
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::samples::InMemory;
    use crate::calibrate::Sample;
    use crate::passes::testutil::{model, node, uniform};
    use crate::quantize::QuantizeConfig;

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
        let dw = t[0].delta_w.to_f32_vec().unwrap();
        for o in 0..m {
            let row = &w[o * c * 9..(o + 1) * c * 9];
            let s = row.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
            for (k, &v) in row.iter().enumerate() {
                let q = (v / s).round_ties_even().clamp(-127.0, 127.0) * s;
                assert!((dw[o * c * 9 + k] - (q - v)).abs() < 1e-6);
            }
        }
        let wq: Vec<f32> = w.iter().zip(&dw).map(|(a, d)| a + d).collect();
        let (corrected, report) =
            correct_biases(&fp32, &fp32, &cfg, &ranges, &InMemory(samples), 2).unwrap();
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
}
