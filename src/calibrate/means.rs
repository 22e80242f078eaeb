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
//! Each of these reads, along every spatial dimension, a fixed set of input
//! indices per kernel offset, so `x̄` is the input reduced one dimension at a
//! time (`O(k·size)` for `k` offsets along the dimension reduced first)
//! rather than a convolution. Calibration already has every quantized
//! layer's input in hand, so it takes these sums there (per sample, then
//! averaged over the samples in sample order) and bias correction needs no
//! pass over the samples of its own. Geometry follows the ONNX operator
//! specification (Conv and ConvTranspose, opset 11 onwards: `auto_pad`,
//! `pads`, `output_padding`), checked against tract's outputs. A
//! ConvTranspose with `output_shape` gets no probe: the specification,
//! onnxruntime and tract place its padding three different ways.

use super::samples::SampleSource;
use super::{Calibrator, CollectOptions};
use crate::error::{Error, Result};
use crate::ir::{Model, Node};
use std::collections::{BTreeMap, BTreeSet};

/// How a layer reads its input.
#[derive(Clone, Debug, PartialEq)]
enum Reduce {
    /// Rows of `[…, k]` (MatMul, Gemm).
    Rows { k: usize },
    /// Windows of `[N, C, D…]` (Conv, ConvTranspose).
    Window(Window),
}

#[derive(Clone, Debug, PartialEq)]
enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

/// A Conv's or ConvTranspose's geometry, from its attributes.
#[derive(Clone, Debug, PartialEq)]
struct Window {
    transpose: bool,
    channels: usize,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    /// Begin pads, then end pads (`pads` as the operator writes them).
    pads: Vec<i64>,
    auto_pad: AutoPad,
    output_padding: Vec<usize>,
}

/// Along one spatial dimension: the output's size and, per kernel offset,
/// the input indices read.
struct Axis {
    out: usize,
    reads: Vec<Vec<usize>>,
}

impl Window {
    fn of(n: &Node, weight_dims: &[usize]) -> Result<Option<Self>> {
        let transpose = n.is("ConvTranspose");
        if weight_dims.len() < 3 {
            return Ok(None);
        }
        let r = weight_dims.len() - 2;
        let group = n.get_int("group")?.unwrap_or(1).max(1) as usize;
        let channels = if transpose {
            weight_dims[0]
        } else {
            weight_dims[1] * group
        };
        let ints = |name: &str, default: i64, len: usize| -> Result<Vec<i64>> {
            let v = n.get_ints(name)?.unwrap_or_else(|| vec![default; len]);
            if v.len() != len {
                return Err(Error::Invalid(format!(
                    "node '{}': {name} has {} values, expected {len}",
                    n.name,
                    v.len()
                )));
            }
            Ok(v)
        };
        let positive = |name: &str| -> Result<Vec<usize>> {
            let v = ints(name, 1, r)?;
            if v.iter().any(|&s| s < 1) {
                return Err(Error::Invalid(format!(
                    "node '{}': {name} {v:?} must be positive",
                    n.name
                )));
            }
            Ok(v.into_iter().map(|s| s as usize).collect())
        };
        let auto_pad = match n.get_string("auto_pad")?.as_deref() {
            None | Some("NOTSET") => AutoPad::NotSet,
            Some("VALID") => AutoPad::Valid,
            Some("SAME_UPPER") => AutoPad::SameUpper,
            Some("SAME_LOWER") => AutoPad::SameLower,
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "node '{}': unknown auto_pad '{other}'",
                    n.name
                )))
            }
        };
        if transpose && n.attr("output_shape").is_some() {
            return Ok(None);
        }
        Ok(Some(Window {
            transpose,
            channels,
            kernel: weight_dims[2..].to_vec(),
            strides: positive("strides")?,
            dilations: positive("dilations")?,
            pads: ints("pads", 0, 2 * r)?,
            auto_pad,
            output_padding: if transpose {
                ints("output_padding", 0, r)?
                    .into_iter()
                    .map(|p| p.max(0) as usize)
                    .collect()
            } else {
                vec![0; r]
            },
        }))
    }

    /// Dimension `i` at input size `size`.
    fn axis(&self, i: usize, size: usize) -> Result<Axis> {
        let r = self.kernel.len();
        let (k, s, d) = (self.kernel[i], self.strides[i], self.dilations[i]);
        let extent = ((k.max(1) - 1) * d + 1) as i64;
        let (size_i, s_i) = (size as i64, s as i64);
        let (out, begin) = if self.transpose {
            let op = self.output_padding[i] as i64;
            let full = s_i * (size_i - 1) + op + extent;
            match self.auto_pad {
                // Output `size·stride`; of the total padding, SAME_UPPER
                // puts the smaller half first (the specification's rule).
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let out = size_i * s_i;
                    let total = full - out;
                    let begin = if self.auto_pad == AutoPad::SameUpper {
                        total / 2
                    } else {
                        total - total / 2
                    };
                    (out, begin)
                }
                AutoPad::Valid => (full, 0),
                AutoPad::NotSet => {
                    let (b, e) = (self.pads[i], self.pads[i + r]);
                    (full - b - e, b)
                }
            }
        } else {
            match self.auto_pad {
                AutoPad::NotSet => {
                    let (b, e) = (self.pads[i], self.pads[i + r]);
                    let span = size_i + b + e - extent;
                    (if span < 0 { 0 } else { span / s_i + 1 }, b)
                }
                AutoPad::Valid => {
                    let span = size_i - extent;
                    (if span < 0 { 0 } else { span / s_i + 1 }, 0)
                }
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let out = (size_i + s_i - 1) / s_i;
                    let total = ((out - 1) * s_i + extent - size_i).max(0);
                    let begin = if self.auto_pad == AutoPad::SameUpper {
                        total / 2
                    } else {
                        total - total / 2
                    };
                    (out, begin)
                }
            }
        };
        if out <= 0 {
            return Err(Error::Invalid(format!(
                "an input of size {size} along spatial dimension {i} leaves no output"
            )));
        }
        let reads = (0..k as i64)
            .map(|p| {
                let offset = p * d as i64 - begin;
                if self.transpose {
                    // Input i lands at i·s + offset, inside [0, out).
                    (0..size_i)
                        .filter(|&x| (0..out).contains(&(x * s_i + offset)))
                        .map(|x| x as usize)
                        .collect()
                } else {
                    // Output o reads o·s + offset, inside [0, size).
                    (0..out)
                        .map(|o| o * s_i + offset)
                        .filter(|x| (0..size_i).contains(x))
                        .map(|x| x as usize)
                        .collect()
                }
            })
            .collect();
        Ok(Axis {
            out: out as usize,
            reads,
        })
    }

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
            // from the last dimension to the first.
            let mut buf: Vec<f64> = chunk
                .iter()
                .map(|&v| f64::from(if relu { v.max(0.0) } else { v }))
                .collect();
            let (mut q, mut a) = (1usize, plane);
            for (i, axis) in axes.iter().enumerate().rev() {
                let size = dims[i + 2];
                let a2 = a / size;
                let mut next = vec![0f64; axis.reads.len() * q * a2];
                for (p, reads) in axis.reads.iter().enumerate() {
                    for qi in 0..q {
                        let src = &buf[qi * a..(qi + 1) * a];
                        let dst = &mut next[(p * q + qi) * a2..(p * q + qi + 1) * a2];
                        for (ai, d) in dst.iter_mut().enumerate() {
                            let row = &src[ai * size..(ai + 1) * size];
                            *d = reads.iter().map(|&x| row[x]).sum();
                        }
                    }
                }
                buf = next;
                q *= axis.reads.len();
                a = a2;
            }
            for (o, b) in out[c * offsets..(c + 1) * offsets].iter_mut().zip(&buf) {
                *o += b;
            }
        }
        out.iter_mut().for_each(|v| *v /= positions);
        Ok(out)
    }
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
        per_channel: false,
        jobs,
        progress: false,
        input_means: false,
        summed: None,
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
