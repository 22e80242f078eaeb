//! Mean layer inputs, taken while calibrating, for bias correction
//! (`tune::bias`).
//!
//! The mean output shift that rounded weights cause is linear in the
//! layer's input, so it needs only that input's mean as the layer reads it:
//!
//! - MatMul / Gemm (`x·W`): `mean_rows(x·ΔW) = x̄·ΔW`, with `x̄` the mean
//!   input row;
//! - Conv: `mean_o Conv(x, ΔW)[m] = Σ_{c,p} ΔW[m,c,p]·x̄[c,p]`, with
//!   `x̄[c,p]` the mean over the output positions `o` of the input element
//!   read at kernel offset `p` (`o·stride − pad + p·dilation`, zero where it
//!   falls in the padding);
//! - ConvTranspose: each input element `i` lands at `i·stride − pad +
//!   p·dilation`, so `x̄[c,p]` is the sum over the `i` whose landing is
//!   inside the output, over the output's size.
//!
//! Each of these reads, along every spatial dimension, a run of input
//! indices per kernel offset (the stride apart), so `x̄` is the input
//! reduced one dimension at a time (`O(k·size)` for `k` offsets along the
//! dimension reduced first; a unit-stride run summed in sixteen f32 lanes,
//! rows added in f64) rather than a convolution. Calibration already has every quantized
//! layer's input in hand, so it takes these sums there (per sample, then
//! averaged over the samples in sample order) and bias correction needs no
//! pass over the samples of its own. Geometry follows the ONNX operator
//! specification (Conv and ConvTranspose, opset 11 onwards: `auto_pad`,
//! `pads`, `output_padding`), checked against tract's outputs. A
//! ConvTranspose with `output_shape` gets no probe: the specification,
//! onnxruntime and tract place its padding three different ways.

use super::samples::SampleSource;
use super::window::{Axis, Window};
use super::{Calibrator, CollectOptions};
use crate::error::{Error, Result};
use crate::ir::Model;
use std::collections::{BTreeMap, BTreeSet};

/// How a layer reads its input.
#[derive(Clone, Debug, PartialEq)]
enum Reduce {
    /// Rows of `[…, k]` (MatMul, Gemm).
    Rows { k: usize },
    /// Windows of `[N, C, D…]` (Conv, ConvTranspose).
    Window(Window),
}

impl Window {
    /// `x̄[c, p]` (row-major `[C, k₁…k_r]`) of one sample `[N, C, D…]`.
    fn mean(&self, x: &[f32], dims: &[usize], relu: bool) -> Result<Vec<f64>> {
        let r = self.kernel.len();
        if dims.len() != r + 2 || dims[1] != self.channels {
            return Err(Error::Invalid(format!(
                "input of shape {dims:?}, expected [N, {}, {r} spatial dims]",
                self.channels
            )));
        }
        let axes: Vec<Axis> = (0..r)
            .map(|i| self.axis(i, dims[i + 2]))
            .collect::<Result<_>>()?;
        let plane: usize = dims[2..].iter().product();
        let offsets: usize = self.kernel.iter().product();
        let positions = dims[0] as f64 * axes.iter().map(|a| a.out as f64).product::<f64>();
        let mut out = vec![0f64; self.channels * offsets];
        for (k, chunk) in x.chunks_exact(plane.max(1)).enumerate() {
            let c = k % self.channels;
            // buf: [suffix kernel offsets q][prefix positions a], reduced
            // from the last dimension to the first (the first reduction
            // reads the sample itself).
            let mut buf: Option<Vec<f64>> = None;
            let (mut q, mut a) = (1usize, plane);
            for (i, axis) in axes.iter().enumerate().rev() {
                let (size, step) = (dims[i + 2], axis.step.max(1));
                let a2 = a / size;
                let mut next = vec![0f64; axis.reads.len() * q * a2];
                for qi in 0..q {
                    for ai in 0..a2 {
                        let at = qi * a + ai * size;
                        for (p, &(start, count)) in axis.reads.iter().enumerate() {
                            next[(p * q + qi) * a2 + ai] = match &buf {
                                None if step == 1 => {
                                    sum_f32(&chunk[at + start..at + start + count], relu)
                                }
                                None => run_sum(&chunk[at..at + size], start, count, step, |v| {
                                    f64::from(if relu { v.max(0.0) } else { v })
                                }),
                                Some(b) => run_sum(&b[at..at + size], start, count, step, |v| v),
                            };
                        }
                    }
                }
                buf = Some(next);
                q *= axis.reads.len();
                a = a2;
            }
            for (o, b) in out[c * offsets..(c + 1) * offsets]
                .iter_mut()
                .zip(buf.iter().flatten())
            {
                *o += b;
            }
        }
        out.iter_mut().for_each(|v| *v /= positions);
        Ok(out)
    }
}

/// `Σ x` (of `max(x, 0)` when `relu`) of a run of one row (at most a few
/// thousand values), in sixteen single-precision lanes that vectorize,
/// added in double precision.
fn sum_f32(x: &[f32], relu: bool) -> f64 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    if relu {
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v.max(0.0);
            }
        }
    } else {
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v;
            }
        }
    }
    let rest: f64 = rest
        .iter()
        .map(|&v| f64::from(if relu { v.max(0.0) } else { v }))
        .sum();
    acc.iter().map(|&a| f64::from(a)).sum::<f64>() + rest
}

/// `Σ f(row[start + j·step])` for `j < count`, in four independent sums
/// (so the adds overlap instead of waiting on each other).
#[inline(always)]
fn run_sum<T: Copy>(
    row: &[T],
    start: usize,
    count: usize,
    step: usize,
    f: impl Fn(T) -> f64,
) -> f64 {
    let at = |j: usize| f(row[start + j * step]);
    let mut acc = [0f64; 4];
    let mut j = 0;
    while j + 4 <= count {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += at(j + l);
        }
        j += 4;
    }
    let tail: f64 = (j..count).map(at).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// One layer whose mean input is measured: `node` reads `input` (its input
/// 0) against a constant weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub node: String,
    pub input: String,
    reduce: Reduce,
}

impl Probe {
    /// The mean input of one sample (`x` of shape `dims`; `relu`: read
    /// `max(x, 0)`, for a Relu output calibration derives from its input).
    pub fn mean(&self, x: &[f32], dims: &[usize], relu: bool) -> Result<Vec<f64>> {
        let in_node = |e: Error| Error::Invalid(format!("mean input of '{}': {e}", self.node));
        if dims.iter().product::<usize>() != x.len() {
            return Err(in_node(Error::Invalid(format!(
                "{} values for shape {dims:?}",
                x.len()
            ))));
        }
        match &self.reduce {
            Reduce::Rows { k } => {
                if dims.last() != Some(k) {
                    return Err(in_node(Error::Invalid(format!(
                        "input of shape {dims:?}, expected rows of {k}"
                    ))));
                }
                let mut out = vec![0f64; *k];
                let rows = x.len() / k.max(&1);
                for row in x.chunks_exact(*k) {
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o += f64::from(if relu { v.max(0.0) } else { v });
                    }
                }
                out.iter_mut().for_each(|v| *v /= rows.max(1) as f64);
                Ok(out)
            }
            Reduce::Window(w) => w.mean(x, dims, relu).map_err(in_node),
        }
    }
}

/// A probe for every Conv, ConvTranspose, Gemm (without `transA`) and
/// MatMul of `model` whose input 1 is a float initializer of rank 2 (MatMul,
/// Gemm) or at least 3 (convolutions): the layers bias correction may
/// correct.
pub fn probes(model: &Model) -> Result<Vec<Probe>> {
    let g = &model.graph;
    let mut out = Vec::new();
    for (_, n) in g.nodes() {
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            continue;
        }
        let (Some(x), Some(w)) = (n.input(0), n.input(1)) else {
            continue;
        };
        let Some(weight) = g.initializer(w) else {
            continue;
        };
        let dims = weight.dims();
        let reduce = match n.op_type.as_str() {
            "Conv" | "ConvTranspose" => match Window::of(n, dims)? {
                Some(w) => Reduce::Window(w),
                None => continue,
            },
            "MatMul" if dims.len() == 2 => Reduce::Rows { k: dims[0] },
            "Gemm" if dims.len() == 2 && n.get_int("transA")?.unwrap_or(0) == 0 => {
                let trans_b = n.get_int("transB")?.unwrap_or(0) != 0;
                Reduce::Rows {
                    k: if trans_b { dims[1] } else { dims[0] },
                }
            }
            _ => continue,
        };
        out.push(Probe {
            node: n.name.clone(),
            input: g.value_name(x).to_string(),
            reduce,
        });
    }
    Ok(out)
}

/// The mean inputs of `probes` on `source`, in a pass of their own (for
/// the layers a calibration did not observe): a calibration of their
/// inputs without histograms.
pub fn measure(
    model: &Model,
    probes: Vec<Probe>,
    source: &dyn SampleSource,
    jobs: usize,
) -> Result<Means> {
    let wanted: BTreeSet<String> = probes.iter().map(|p| p.input.clone()).collect();
    let calibrator = Calibrator::observing(model, Some(&wanted))?.measuring(probes);
    let opts = CollectOptions {
        histograms: false,
        jobs,
        ..Default::default()
    };
    Ok(calibrator.collect(source, &opts)?.means)
}

/// Mean inputs per layer (node name), averaged over the samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Means {
    /// Per node: samples added, and the sum of their means.
    sums: BTreeMap<String, (usize, Vec<f64>)>,
}

impl Means {
    /// Adds one sample's mean input of `node`.
    pub fn add(&mut self, node: &str, mean: &[f64]) -> Result<()> {
        self.add_sum(node, 1, mean)
    }

    /// Adds `n` samples whose means sum to `sum`.
    fn add_sum(&mut self, node: &str, n: usize, sum: &[f64]) -> Result<()> {
        match self.sums.get_mut(node) {
            Some((count, acc)) => {
                if acc.len() != sum.len() {
                    return Err(Error::Invalid(format!(
                        "mean input of '{node}': {} values on one sample, {} on another",
                        sum.len(),
                        acc.len()
                    )));
                }
                acc.iter_mut().zip(sum).for_each(|(a, b)| *a += b);
                *count += n;
            }
            None => {
                self.sums.insert(node.to_string(), (n, sum.to_vec()));
            }
        }
        Ok(())
    }

    /// Adds the samples of `later` (taken after this one's, for sums in
    /// sample order).
    pub fn merge(&mut self, later: Means) -> Result<()> {
        for (node, (n, s)) in later.sums {
            self.add_sum(&node, n, &s)?;
        }
        Ok(())
    }

    /// The mean input of `node` over the samples it was measured on.
    pub fn get(&self, node: &str) -> Option<Vec<f64>> {
        let (n, s) = self.sums.get(node)?;
        (*n > 0).then(|| s.iter().map(|v| v / *n as f64).collect())
    }

    pub fn contains(&self, node: &str) -> bool {
        self.sums.contains_key(node)
    }

    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }
}

#[cfg(test)]
mod tests;
