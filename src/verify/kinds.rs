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
//! - **Per-element probabilities**: a Sigmoid output of more than one
//!   element per sample (a text detector's probability map): the IoU of
//!   the `p > 0.5` masks. Layout ops after the Sigmoid (Transpose, Reshape,
//!   Flatten, Squeeze, Unsqueeze, Identity) keep it one; after a Softmax,
//!   Transposes move its axis and Identity keeps it.
//! - Everything else: no task metric here (rank-2 class scores have their
//!   top-1/top-5 agreement in the gate already).

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
                _ => Kind::Other,
            }
        })
        .collect()
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
}

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
                let mut ta = Vec::with_capacity(outer * inner);
                let mut tb = Vec::with_capacity(outer * inner);
                for o in 0..outer {
                    for i in 0..inner {
                        ta.push(top(a, o, i));
                        tb.push(top(b, o, i));
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
            Kind::Other => {}
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::samples::InMemory;
    use crate::passes::testutil::{inputs, model, node};

    /// `x [1, 5, 4]` → Softmax (a sequence of 5 positions over 4 classes)
    /// and → Sigmoid (a map); `axis` of the Softmax, if any.
    fn heads(opset: i64, axis: Option<i64>) -> Model {
        let attrs = axis
            .map(|a| vec![crate::ir::node::attr::int("axis", a)])
            .unwrap_or_default();
        model(
            opset,
            &[("x", &[1, 5, 4])],
            &["p", "s"],
            vec![
                node("Softmax", "sm", &["x"], &["p"], attrs),
                node("Sigmoid", "sg", &["x"], &["s"], vec![]),
            ],
            vec![],
        )
    }

    #[test]
    fn kinds_come_from_the_producers_with_the_opset_default_axis() {
        let k = output_kinds(&heads(13, None));
        let classes = |axis, flattened| Kind::Classes { axis, flattened };
        assert_eq!(k, vec![classes(-1, false), Kind::Probabilities]);
        assert_eq!(output_kinds(&heads(11, None))[0], classes(1, true));
        assert_eq!(output_kinds(&heads(11, Some(2)))[0], classes(2, true));
    }

    #[test]
    fn the_comparison_reports_positions_and_masks() {
        let m = heads(13, None);
        let samples = InMemory(vec![inputs(&m, 1), inputs(&m, 2)]);
        let v = crate::verify::compare(
            &m,
            &m,
            &samples,
            crate::exec::kernels::Arith::Ort,
            &crate::verify::Thresholds::default(),
            false,
            &Default::default(),
        )
        .unwrap();
        let p = v.outputs[0].positions.as_ref().unwrap();
        assert_eq!((p.positions, p.top1_agreement), (10, 1.0));
        assert_eq!(v.outputs[0].mask_iou, None);
        assert_eq!(v.outputs[1].mask_iou, Some(1.0));
        assert!(v.outputs[1].positions.is_none());
    }

    #[test]
    fn sequence_agreement_counts_foreground_apart_from_blanks() {
        // [1, 4, 3]: positions 0..4, class 0 the blank.
        let a = [
            0.9, 0.05, 0.05, // blank
            0.1, 0.8, 0.1, // 1
            0.9, 0.05, 0.05, // blank
            0.9, 0.05, 0.05, // blank
        ];
        let b = [
            0.9, 0.05, 0.05, // blank
            0.1, 0.1, 0.8, // 2: disagrees
            0.9, 0.05, 0.05, // blank
            0.1, 0.8, 0.1, // 1 where FP32 has a blank: disagrees
        ];
        let mut acc = TaskAccum::default();
        acc.add(
            Kind::Classes {
                axis: -1,
                flattened: false,
            },
            &a,
            &b,
            &[1, 4, 3],
        );
        let p = acc.positions().unwrap();
        assert_eq!(p.positions, 4);
        assert_eq!(p.top1_agreement, 0.5);
        assert_eq!(p.foreground_positions, 2);
        assert_eq!(p.foreground_top1_agreement, 0.0);
    }

    #[test]
    fn class_axis_in_the_middle_is_strided() {
        // [1, 2, 3]: 2 classes (axis 1) at 3 positions.
        let a = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let b = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
        let mut acc = TaskAccum::default();
        acc.add(
            Kind::Classes {
                axis: 1,
                flattened: false,
            },
            &a,
            &b,
            &[1, 2, 3],
        );
        // Below opset 13 the same axis flattens: one row of 6, no positions.
        let mut flat = TaskAccum::default();
        let kind = Kind::Classes {
            axis: 1,
            flattened: true,
        };
        flat.add(kind, &a, &b, &[1, 2, 3]);
        assert!(flat.positions().is_none());
        let p = acc.positions().unwrap();
        // top-1 per position: a = [0, 1, 0], b = [0, 0, 0].
        assert_eq!((p.positions, p.top1_agreement), (3, 2.0 / 3.0));
        assert_eq!(
            (p.foreground_positions, p.foreground_top1_agreement),
            (1, 0.0)
        );
    }

    #[test]
    fn batch_rows_alone_are_not_positions_and_masks_compare_at_one_half() {
        let mut acc = TaskAccum::default();
        acc.add(
            Kind::Classes {
                axis: -1,
                flattened: false,
            },
            &[0.2, 0.8],
            &[0.8, 0.2],
            &[1, 2],
        );
        assert!(acc.positions().is_none());
        acc.add(
            Kind::Probabilities,
            &[0.9, 0.6, 0.1, 0.7],
            &[0.9, 0.4, 0.1, 0.8],
            &[1, 1, 2, 2],
        );
        assert_eq!(acc.mask_iou(), Some(2.0 / 3.0));
    }

    #[test]
    fn kinds_look_through_layout_ops_and_the_opset_upgrade() {
        use crate::ir::node::attr;
        // Softmax over axis 1 of [1, 4, 5], transposed to [1, 5, 4]: the
        // classes are axis 2 of the output; a Sigmoid reshaped stays one.
        let m = model(
            13,
            &[("x", &[1, 4, 5])],
            &["p", "s"],
            vec![
                node("Softmax", "sm", &["x"], &["sm"], vec![attr::int("axis", 1)]),
                node(
                    "Transpose",
                    "t",
                    &["sm"],
                    &["p"],
                    vec![attr::ints("perm", &[0, 2, 1])],
                ),
                node("Sigmoid", "sg", &["x"], &["sg"], vec![]),
                node("Flatten", "f", &["sg"], &["s"], vec![]),
            ],
            vec![],
        );
        let classes = |axis, flattened| Kind::Classes { axis, flattened };
        assert_eq!(
            output_kinds(&m),
            vec![classes(2, false), Kind::Probabilities]
        );
        // A Softmax reshaped is no longer classes along an axis.
        let m = model(
            13,
            &[("x", &[1, 4, 5])],
            &["p"],
            vec![
                node("Softmax", "sm", &["x"], &["sm"], vec![]),
                node("Flatten", "f", &["sm"], &["p"], vec![]),
            ],
            vec![],
        );
        assert_eq!(output_kinds(&m), vec![Kind::Other]);
        // Opset 11, axis 1 of a rank-3 input: the upgrade to 13 rebuilds it
        // as Flatten → Softmax → Reshape, still classes from axis 1 on.
        let mut m = heads(11, Some(1));
        use crate::passes::Pass;
        let opts = crate::passes::PassOptions {
            target_opset: Some(13),
            ..Default::default()
        };
        crate::passes::opset::UpgradeOpset
            .run(&mut m, &opts)
            .unwrap();
        assert_eq!(m.onnx_opset().unwrap(), 13);
        assert_eq!(output_kinds(&m)[0], classes(1, true));
    }
}
