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
//! builds (the same rounding the output gets). The shift is linear in the
//! layer's input, so it is `ΔW = W_q − W` applied to the layer's mean
//! input as the layer reads it (the mean row of a MatMul's input, the mean
//! receptive field of a Conv's: `calibrate::means`), which calibration
//! takes from the inputs it observes anyway; a layer it did not see is
//! measured here in one pass of its own. Left uncorrected: a MatMul or
//! Gemm whose weight is not 2-D, and a ConvTranspose with `output_shape`
//! (no probe: `calibrate::means`). The FP32 model's bias (or a new
//! zero bias for a Conv without one; the constant of a following `Add` for
//! MatMul, as exporters write `Linear`) is then adjusted. Reads the
//! prepared model, the plan and the samples; returns a corrected copy,
//! which only the quantizer sees — parity is still checked against the
//! original.

use crate::calibrate::means::{measure, probes, Means};
use crate::calibrate::samples::SampleSource;
use crate::error::{Error, Result};
use crate::ir::{Model, NodeId, Tensor, ValueId};
use crate::quantize::QuantizeConfig;
use crate::tune::weights::{put_back, quantized_layers, Grid, Layer, Original};
use std::collections::{BTreeMap, BTreeSet};

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

/// How a layer's weight meets its mean input.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// `[M, C/group, k…]` against `x̄[C, k…]`.
    Conv { group: usize },
    /// `[C, M/group, k…]` against `x̄[C, k…]`.
    ConvTranspose { group: usize },
    /// `[K, N]` (or `[N, K]` with `trans_b`) against `x̄[K]`, times `alpha`
    /// (Gemm's).
    Rows { trans_b: bool, alpha: f32 },
}

/// One layer to correct.
struct Target {
    id: NodeId,
    node: String,
    channels: usize,
    layout: Layout,
    /// `W_q − W`, in the weight's layout.
    delta: Vec<f32>,
    dims: Vec<usize>,
    bias: Option<BiasSlot>,
}

impl Target {
    /// The mean output shift per channel, from the layer's mean input.
    fn shift(&self, mean: &[f64]) -> Result<Vec<f64>> {
        let d = &self.dims;
        let wrong = |expected: usize| {
            Error::Invalid(format!(
                "bias correction of '{}': the mean input has {} values, expected {expected}",
                self.node,
                mean.len()
            ))
        };
        let delta = |i: usize| f64::from(self.delta[i]);
        let mut out = vec![0f64; self.channels];
        match self.layout {
            Layout::Conv { group } => {
                let (m, cg) = (d[0], d[1]);
                let p: usize = d[2..].iter().product();
                if mean.len() != cg * group * p {
                    return Err(wrong(cg * group * p));
                }
                for (mi, o) in out.iter_mut().enumerate() {
                    let base = mi / (m / group).max(1) * cg;
                    *o = (0..cg * p)
                        .map(|j| delta(mi * cg * p + j) * mean[base * p + j])
                        .sum();
                }
            }
            Layout::ConvTranspose { group } => {
                let (c, mg) = (d[0], d[1]);
                let p: usize = d[2..].iter().product();
                if mean.len() != c * p {
                    return Err(wrong(c * p));
                }
                let cg = c / group;
                for (mi, o) in out.iter_mut().enumerate() {
                    let (gi, mj) = (mi / mg, mi % mg);
                    *o = (gi * cg..(gi + 1) * cg)
                        .flat_map(|ci| (0..p).map(move |q| (ci, q)))
                        .map(|(ci, q)| delta((ci * mg + mj) * p + q) * mean[ci * p + q])
                        .sum();
                }
            }
            Layout::Rows { trans_b, alpha } => {
                let (k, n) = if trans_b { (d[1], d[0]) } else { (d[0], d[1]) };
                if mean.len() != k {
                    return Err(wrong(k));
                }
                for (ni, o) in out.iter_mut().enumerate().take(n) {
                    let at = |ki: usize| if trans_b { ni * k + ki } else { ki * n + ni };
                    *o = f64::from(alpha) * (0..k).map(|ki| delta(at(ki)) * mean[ki]).sum::<f64>();
                }
            }
        }
        Ok(out)
    }
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
        let group = n.get_int("group")?.unwrap_or(1).max(1) as usize;
        let layout = match n.op_type.as_str() {
            "Conv" if dims.len() >= 3 && dims[0] % group == 0 => Layout::Conv { group },
            "ConvTranspose" if dims.len() >= 3 && dims[0] % group == 0 => {
                Layout::ConvTranspose { group }
            }
            "Gemm" if dims.len() == 2 => Layout::Rows {
                trans_b,
                alpha: n.get_float("alpha")?.unwrap_or(1.0),
            },
            "MatMul" if dims.len() == 2 => Layout::Rows {
                trans_b: false,
                alpha: 1.0,
            },
            _ => continue,
        };
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
            node: n.name.clone(),
            channels,
            layout,
            delta,
            dims,
            bias,
        });
    }
    Ok(out)
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
/// pins); the shift is of its quantized weights against `fp32`'s. `means`
/// holds the layers' mean inputs on `source` as calibration took them
/// (`calibrate::means`); the layers it lacks are measured here, in one
/// pass. Returns `rounded` corrected (for the quantizer only) and what
/// changed.
pub fn correct_biases(
    fp32: &Model,
    rounded: &Model,
    cfg: &QuantizeConfig,
    ranges: &BTreeMap<String, (f32, f32)>,
    source: &dyn SampleSource,
    means: &Means,
    jobs: usize,
) -> Result<(Model, Vec<Corrected>)> {
    let targets = targets(fp32, rounded, cfg, ranges)?;
    let mut out = rounded.clone();
    if targets.is_empty() || source.is_empty() {
        return Ok((out, Vec::new()));
    }
    let lacking: BTreeSet<&str> = targets
        .iter()
        .map(|t| t.node.as_str())
        .filter(|n| !means.contains(n))
        .collect();
    let measured = if lacking.is_empty() {
        Means::default()
    } else {
        let missing = probes(fp32)?
            .into_iter()
            .filter(|p| lacking.contains(p.node.as_str()))
            .collect();
        measure(fp32, missing, source, jobs)?
    };
    let mut report = Vec::new();
    for t in &targets {
        let Some(mean) = means.get(&t.node).or_else(|| measured.get(&t.node)) else {
            continue;
        };
        let shift: Vec<f32> = t.shift(&mean)?.into_iter().map(|s| s as f32).collect();
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
mod tests;
