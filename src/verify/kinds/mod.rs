//! What a model output is for, read from the graph, and the task metrics
//! that fit it, measured beside SQNR and cosine ([`super::gate`] picks
//! which of them an output is held to).
//!
//! - **Class probabilities per position**: a Softmax / LogSoftmax output
//!   whose other dimensions (batch aside) hold more than one position (a
//!   CTC recognizer's `[N, T, C]`, a segmentation map's `[N, C, H, W]`).
//!   Per sample, the top-1 class of every position, FP32 against INT8:
//!   agreement over all positions, and over the *foreground* positions,
//!   where either side's top-1 is not FP32's most frequent class of the
//!   sample (CTC's blank, a map's background), which dominate the first.
//!   When the positions form one sequence (a sample of batch 1: `[1, T,
//!   C]`, every other dimension 1), each side's top-1 classes are also
//!   decoded greedily, as a CTC recognizer's are read: repeats collapsed,
//!   the background class dropped (a position where INT8 picked FP32's
//!   runner-up within 0.05 of FP32's top, a near-tie FP32 itself could not
//!   call, counts as FP32's class). The INT8 sequence is compared with
//!   FP32's by edit distance: the *sequence agreement* is 1 − (edits /
//!   FP32's symbols), and the share of sequences decoded identically.
//! - **Per-element probabilities**: a Sigmoid output of more than one
//!   element per sample (a text detector's probability map): the IoU of
//!   the `p > 0.5` masks. Layout ops after the Sigmoid (Transpose, Reshape,
//!   Flatten, Squeeze, Unsqueeze, Identity) keep it one; after a Softmax,
//!   Transposes move its axis and Identity keeps it.
//! - **Embeddings**: the output of a LayerNormalization, a pooling over a
//!   sequence (ReduceMean over axis 1, a sum divided by a count) or a
//!   normalization (LpNormalization, a division by a norm), looked through
//!   layout ops and single-input Concats (a sentence encoder's hidden
//!   states and pooled vector, an image encoder's features): the mean
//!   cosine of each vector (along the last axis) to FP32's, which is what
//!   a search or a similarity over them reads.
//! - Everything else: no task metric here (rank-2 class scores have their
//!   top-1/top-5 agreement in the gate already).

use super::output::NEAR_TIE;
use crate::ir::Model;
use serde::Serialize;

/// What an output is, from the node that produces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Softmax / LogSoftmax over `axis` (negative: from the end);
    /// `flattened`: below opset 13, where the classes are every element
    /// from `axis` on (the input coerced to 2-D).
    Classes {
        axis: i64,
        flattened: bool,
    },
    /// Sigmoid.
    Probabilities,
    /// Vectors along the last axis (LayerNormalization, pooling,
    /// normalization).
    Embedding,
    Other,
}

/// The kind of every graph output of `model`, in output order.
pub fn output_kinds(model: &Model) -> Vec<Kind> {
    let g = &model.graph;
    let opset = model.onnx_opset().unwrap_or(13);
    g.outputs()
        .map(|v| {
            if let Some(axis) = upgraded_softmax(g, v) {
                return Kind::Classes {
                    axis,
                    flattened: true,
                };
            }
            // Layout ops between the output and what computes it.
            let mut perms: Vec<Vec<i64>> = Vec::new();
            let mut reshaped = false;
            let mut at = g.producer_node(v);
            while let Some((_, n)) = at {
                match n.op_type.as_str() {
                    "Identity" => {}
                    "Transpose" => match n.get_ints("perm").ok().flatten() {
                        Some(p) => perms.push(p),
                        None => reshaped = true,
                    },
                    "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => reshaped = true,
                    "Concat" if n.inputs.len() == 1 => {}
                    _ => break,
                }
                at = n.input(0).and_then(|i| g.producer_node(i));
            }
            match at {
                Some((_, n)) if n.op_type == "Softmax" || n.op_type == "LogSoftmax" => {
                    // Before opset 13 the default axis is 1 (the row is every
                    // dimension from it on); from 13, the last.
                    let default = if opset >= 13 { -1 } else { 1 };
                    let axis = n.get_int("axis").ok().flatten().unwrap_or(default);
                    let flattened = opset < 13;
                    if perms.is_empty() && !reshaped {
                        return Kind::Classes { axis, flattened };
                    }
                    if reshaped || flattened {
                        return Kind::Other;
                    }
                    // Innermost Transpose first: the classes axis moves to
                    // where each perm puts it.
                    let rank = perms[0].len() as i64;
                    let mut a = if axis < 0 { axis + rank } else { axis };
                    for p in perms.iter().rev() {
                        match p.iter().position(|&d| d == a) {
                            Some(i) if p.len() as i64 == rank => a = i as i64,
                            _ => return Kind::Other,
                        }
                    }
                    Kind::Classes {
                        axis: a,
                        flattened: false,
                    }
                }
                Some((_, n)) if n.op_type == "Sigmoid" => Kind::Probabilities,
                Some((_, n)) if perms.is_empty() && is_embedding(g, n) => Kind::Embedding,
                _ => Kind::Other,
            }
        })
        .collect()
}

/// The axes a Reduce* node reduces (attribute, or constant input 1 from
/// opset 18).
fn reduced_axes(g: &crate::ir::Graph, n: &crate::ir::Node) -> Option<Vec<i64>> {
    if let Some(a) = n.get_ints("axes").ok().flatten() {
        return Some(a);
    }
    let t = g.initializer(n.input(1)?)?;
    t.to_i64_vec().ok()
}

/// Whether `n` makes vectors: a LayerNormalization, a pooling over a
/// sequence, or a normalization (a Div of a sum or mean, or by a norm).
fn is_embedding(g: &crate::ir::Graph, n: &crate::ir::Node) -> bool {
    match n.op_type.as_str() {
        "LayerNormalization" | "LpNormalization" => true,
        // Pooling over a sequence ([N, T, D] → [N, D]); a mean over a
        // map's positions (GlobalAveragePool, ReduceMean over [2, 3]) ends
        // CNN classifiers too, whose output is class scores.
        "ReduceMean" => reduced_axes(g, n).is_some_and(|a| a == [1] || a == [-2]),
        "Div" => {
            let made_by = |slot: usize, ops: &[&str]| {
                // Through the ops that carry a norm or a count to the Div.
                let mut at = n.input(slot).and_then(|v| g.producer_node(v));
                while let Some((_, p)) = at {
                    if ops.contains(&p.op_type.as_str()) {
                        return true;
                    }
                    match p.op_type.as_str() {
                        "Clip" | "Max" | "Unsqueeze" | "Expand" | "Cast" | "Identity" => {
                            at = p.input(0).and_then(|v| g.producer_node(v));
                        }
                        _ => return false,
                    }
                }
                false
            };
            // Exp(x) / ReduceSum(Exp(x)) is a Softmax written out (magika's
            // class probabilities), not a normalized vector.
            let softmax = n
                .input(0)
                .and_then(|v| g.producer_node(v))
                .is_some_and(|(_, p)| p.op_type == "Exp");
            !softmax
                && (made_by(0, &["ReduceSum", "ReduceMean"])
                    || made_by(1, &["ReduceL2", "Sqrt", "ReduceSum", "LpNormalization"]))
        }
        _ => false,
    }
}

/// The classes axis of an opset-11 Softmax the opset upgrade rebuilt as
/// `Reshape(Softmax(Flatten(x, axis)), Shape(x))` ([`crate::passes::opset`]),
/// when `v` is that Reshape's output.
fn upgraded_softmax(g: &crate::ir::Graph, v: crate::ir::ValueId) -> Option<i64> {
    let (_, reshape) = g.producer_node(v).filter(|(_, n)| n.op_type == "Reshape")?;
    let (_, soft) = g
        .producer_node(reshape.input(0)?)
        .filter(|(_, n)| n.op_type == "Softmax" || n.op_type == "LogSoftmax")?;
    let (_, flatten) = g
        .producer_node(soft.input(0)?)
        .filter(|(_, n)| n.op_type == "Flatten")?;
    let (_, shape) = g
        .producer_node(reshape.input(1)?)
        .filter(|(_, n)| n.op_type == "Shape")?;
    (shape.input(0)? == flatten.input(0)?).then_some(())?;
    Some(flatten.get_int("axis").ok().flatten().unwrap_or(1))
}

impl Kind {
    /// What the verdict calls it.
    pub fn describe(self) -> String {
        match self {
            Kind::Classes { axis, .. } => format!("class probabilities (Softmax, axis {axis})"),
            Kind::Probabilities => "per-element probabilities (Sigmoid)".to_string(),
            Kind::Embedding => "embeddings (vectors along the last axis)".to_string(),
            Kind::Other => "values".to_string(),
        }
    }
}

/// Top-1 agreement of class probabilities per position.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PositionMetrics {
    /// Positions compared (over all samples).
    pub positions: u64,
    pub top1_agreement: f64,
    /// Positions where either side's top-1 is not FP32's most frequent
    /// class of that sample.
    pub foreground_positions: u64,
    /// Agreement on those (1 when there are none).
    pub foreground_top1_agreement: f64,
    /// Decoded sequences, when the positions form one per sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequences: Option<SequenceMetrics>,
}

/// The greedy decoding of sequences of class probabilities, INT8 against
/// FP32.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SequenceMetrics {
    pub sequences: u64,
    /// Symbols of FP32's decoded sequences (over all samples).
    pub symbols: u64,
    /// 1 − (edit distance to FP32's sequences / FP32's symbols), at least
    /// 0 (1 when FP32 decodes no symbol).
    pub agreement: f64,
    /// Sequences decoded exactly as FP32's.
    pub equal: f64,
}

/// Longest sequence decoded (the edit distance is quadratic in it).
const MAX_SEQUENCE: usize = 4096;

/// Streaming counts of the task metrics of one output.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskAccum {
    positions: u64,
    agree: u64,
    pub(crate) foreground: u64,
    foreground_agree: u64,
    inter: u64,
    pub(crate) union: u64,
    masks: bool,
    pub(crate) vectors: u64,
    /// Sum of the vectors' cosines.
    cosines: f64,
    sequences: u64,
    pub(crate) symbols: u64,
    edits: u64,
    sequences_equal: u64,
}

impl TaskAccum {
    /// Adds one sample (`a` FP32, `b` INT8, both of shape `dims`).
    pub(crate) fn add(&mut self, kind: Kind, a: &[f32], b: &[f32], dims: &[usize]) {
        match kind {
            Kind::Classes { axis, flattened } => {
                let rank = dims.len() as i64;
                let ax = if axis < 0 { axis + rank } else { axis };
                if !(0..rank).contains(&ax) || a.len() != b.len() {
                    return;
                }
                let ax = ax as usize;
                let (c, inner) = if flattened {
                    (dims[ax..].iter().product(), 1)
                } else {
                    (dims[ax], dims[ax + 1..].iter().product())
                };
                let outer: usize = dims[..ax].iter().product();
                // Positions besides the batch: a sequence or a map.
                if c < 2 || outer * inner <= dims.first().copied().unwrap_or(1) {
                    return;
                }
                let top = |v: &[f32], o: usize, i: usize| -> usize {
                    let at = |k: usize| v[(o * c + k) * inner + i];
                    (1..c).fold(0, |best, k| if at(k) > at(best) { k } else { best })
                };
                // FP32's runner-up where it is within NEAR_TIE of the top.
                let tied = |o: usize, i: usize, first: usize| -> Option<usize> {
                    let at = |k: usize| a[(o * c + k) * inner + i];
                    let second = (0..c).filter(|&k| k != first).fold(
                        None,
                        |m: Option<usize>, k| match m {
                            Some(m) if at(m) >= at(k) => Some(m),
                            _ => Some(k),
                        },
                    )?;
                    (f64::from(at(first) - at(second)) < NEAR_TIE).then_some(second)
                };
                let mut ta = Vec::with_capacity(outer * inner);
                let mut tb = Vec::with_capacity(outer * inner);
                // INT8's top-1 for the sequences: FP32's where INT8 picked
                // FP32's near-tied runner-up (FP32 itself could not tell
                // the two apart: an O from a 0), as class rows leave
                // near-ties out.
                let mut tb_seq = Vec::with_capacity(outer * inner);
                for o in 0..outer {
                    for i in 0..inner {
                        let (x, y) = (top(a, o, i), top(b, o, i));
                        ta.push(x);
                        tb.push(y);
                        tb_seq.push(if y != x && tied(o, i, x) == Some(y) {
                            x
                        } else {
                            y
                        });
                    }
                }
                let mut counts = vec![0u32; c];
                for &k in &ta {
                    counts[k] += 1;
                }
                let background = (0..c).fold(0, |m, k| if counts[k] > counts[m] { k } else { m });
                for (&x, &y) in ta.iter().zip(&tb) {
                    self.positions += 1;
                    self.agree += u64::from(x == y);
                    if x != background || y != background {
                        self.foreground += 1;
                        self.foreground_agree += u64::from(x == y);
                    }
                }
                let positions: Vec<usize> = if flattened {
                    dims[..ax].to_vec()
                } else {
                    dims.iter()
                        .enumerate()
                        .filter(|&(d, _)| d != ax)
                        .map(|(_, &n)| n)
                        .collect()
                };
                if let Some(len) = sequence_length(&positions) {
                    for (sa, sb) in ta.chunks_exact(len).zip(tb_seq.chunks_exact(len)) {
                        let (da, db) = (decode(sa, background), decode(sb, background));
                        self.sequences += 1;
                        self.symbols += da.len() as u64;
                        self.edits += edit_distance(&da, &db) as u64;
                        self.sequences_equal += u64::from(da == db);
                    }
                }
            }
            Kind::Probabilities => {
                let batch = dims.first().copied().unwrap_or(1).max(1);
                if a.len() <= batch || a.len() != b.len() {
                    return;
                }
                self.masks = true;
                for (&x, &y) in a.iter().zip(b) {
                    let (x, y) = (x > 0.5, y > 0.5);
                    self.inter += u64::from(x && y);
                    self.union += u64::from(x || y);
                }
            }
            Kind::Embedding => {
                let d = dims.last().copied().unwrap_or(0);
                if d < 2 || a.len() != b.len() {
                    return;
                }
                for (x, y) in a.chunks_exact(d).zip(b.chunks_exact(d)) {
                    let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
                    for (&p, &q) in x.iter().zip(y) {
                        let (p, q) = (f64::from(p), f64::from(q));
                        xy += p * q;
                        xx += p * p;
                        yy += q * q;
                    }
                    // Two zero vectors agree; one zero vector does not.
                    let cos = match (xx > 0.0, yy > 0.0) {
                        (true, true) => xy / (xx.sqrt() * yy.sqrt()),
                        (false, false) => 1.0,
                        _ => 0.0,
                    };
                    self.vectors += 1;
                    self.cosines += if cos.is_finite() { cos } else { 0.0 };
                }
            }
            Kind::Other => {}
        }
    }

    /// Mean cosine of the vectors to FP32's.
    pub(crate) fn vector_cosine(&self) -> Option<f64> {
        (self.vectors > 0).then(|| self.cosines / self.vectors as f64)
    }

    pub(crate) fn positions(&self) -> Option<PositionMetrics> {
        (self.positions > 0).then(|| PositionMetrics {
            positions: self.positions,
            top1_agreement: self.agree as f64 / self.positions as f64,
            foreground_positions: self.foreground,
            foreground_top1_agreement: if self.foreground == 0 {
                1.0
            } else {
                self.foreground_agree as f64 / self.foreground as f64
            },
            sequences: (self.sequences > 0).then(|| SequenceMetrics {
                sequences: self.sequences,
                symbols: self.symbols,
                agreement: if self.symbols == 0 {
                    1.0
                } else {
                    (1.0 - self.edits as f64 / self.symbols as f64).max(0.0)
                },
                equal: self.sequences_equal as f64 / self.sequences as f64,
            }),
        })
    }

    /// IoU of the `p > 0.5` masks (1 when both are empty).
    pub(crate) fn mask_iou(&self) -> Option<f64> {
        self.masks.then(|| {
            if self.union == 0 {
                1.0
            } else {
                self.inter as f64 / self.union as f64
            }
        })
    }
}

/// The length of the sequence when the positions of the dimensions `dims`
/// (the class axis taken out) form one: a single dimension longer than 1
/// (a sample of batch 1, `[1, T, C]` or `[T, 1, C]`). A batch of several
/// sequences is left out: which dimension is the batch (`[N, T, C]` or
/// `[T, N, C]`) cannot be told from the shape. `None` for maps and single
/// positions.
fn sequence_length(dims: &[usize]) -> Option<usize> {
    let mut long = dims.iter().filter(|&&n| n > 1);
    let len = *long.next()?;
    (long.next().is_none() && len <= MAX_SEQUENCE).then_some(len)
}

/// Greedy decoding: repeats collapsed, then `background` dropped.
pub(crate) fn decode(top: &[usize], background: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut last = usize::MAX;
    for &k in top {
        if k != last && k != background {
            out.push(k);
        }
        last = k;
    }
    out
}

/// Levenshtein distance (insertions, deletions, substitutions, each 1).
pub(crate) fn edit_distance(a: &[usize], b: &[usize]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let next = (diag + usize::from(x != y))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
