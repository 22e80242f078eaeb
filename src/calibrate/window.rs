//! A convolution's geometry (Conv, ConvTranspose) from its attributes, as
//! the ONNX operator specification defines it (opset 11 onwards:
//! `auto_pad`, `pads`, `strides`, `dilations`, `output_padding`): the
//! output's size and begin padding along each spatial dimension, and the
//! input indices each kernel offset reads. Shared by the statistics
//! calibration takes for the layers (mean inputs, [`super::means`]; Gram
//! matrices, [`super::gram`]).

use crate::error::{Error, Result};
use crate::ir::Node;

/// `auto_pad`.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

/// A Conv's or ConvTranspose's geometry, from its attributes.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Window {
    pub transpose: bool,
    /// Input channels (all groups).
    pub channels: usize,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Begin pads, then end pads (`pads` as the operator writes them).
    pub pads: Vec<i64>,
    pub auto_pad: AutoPad,
    pub output_padding: Vec<usize>,
}

/// Along one spatial dimension: the output's size and, per kernel offset,
/// the input indices read: `start, start + step, …`, `count` of them (the
/// stride apart for a Conv, adjacent for a ConvTranspose).
pub(super) struct Axis {
    pub out: usize,
    pub step: usize,
    /// Per kernel offset: `(start, count)`.
    pub reads: Vec<(usize, usize)>,
}

impl Window {
    /// The geometry of Conv or ConvTranspose `n` with a weight of
    /// `weight_dims`; `None` when it has none (a weight of rank < 3, a
    /// ConvTranspose with `output_shape`).
    pub fn of(n: &Node, weight_dims: &[usize]) -> Result<Option<Self>> {
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

    /// Along dimension `i` at input size `size`: the output's size and
    /// the padding before the input (an error when no output is left).
    pub fn span(&self, i: usize, size: usize) -> Result<(i64, i64)> {
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
        Ok((out, begin))
    }

    /// Dimension `i` at input size `size`: the output's size and the input
    /// indices each kernel offset reads.
    pub fn axis(&self, i: usize, size: usize) -> Result<Axis> {
        let (k, s, d) = (self.kernel[i], self.strides[i], self.dilations[i]);
        let (size_i, s_i) = (size as i64, s as i64);
        let (out, begin) = self.span(i, size)?;
        let reads = (0..k as i64)
            .map(|p| {
                let offset = p * d as i64 - begin;
                // The first index read and how many: a run of consecutive
                // outputs (Conv) or inputs (ConvTranspose) stays inside.
                let (first, count) = if self.transpose {
                    // Input x lands at x·s + offset, inside [0, out).
                    let mut xs = (0..size_i).filter(|&x| (0..out).contains(&(x * s_i + offset)));
                    (xs.next(), 1 + xs.count())
                } else {
                    // Output o reads o·s + offset, inside [0, size).
                    let mut xs = (0..out)
                        .map(|o| o * s_i + offset)
                        .filter(|x| (0..size_i).contains(x));
                    (xs.next(), 1 + xs.count())
                };
                match first {
                    Some(x) => (x as usize, count),
                    None => (0, 0),
                }
            })
            .collect();
        Ok(Axis {
            out: out as usize,
            step: if self.transpose { 1 } else { s },
            reads,
        })
    }
}
