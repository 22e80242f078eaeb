//! One output's measurement over the samples and its judgement: the values
//! (SQNR, cosine, top-1 rows), the task metrics of its kind
//! ([`super::kinds`]), near-ties told apart from decisions ([`Decisions`]),
//! and the metrics the gate holds it to ([`super::gate`]).

use super::gate::{self, Metric, Offer, Thresholds};
use super::kinds::{Kind, TaskAccum};
use super::{Accum, OutputMetrics};
use std::collections::BTreeMap;

/// Margin bins of [`Decisions`]: 1/8 octave each, from 2^-20 up.
const BINS: usize = 256;

fn margin_bin(m: f64) -> usize {
    if m > 0.0 {
        (m.log2() * 8.0 + 160.0)
            .floor()
            .clamp(0.0, (BINS - 1) as f64) as usize
    } else {
        0
    }
}

/// Top-1 decisions (per row), counted by how decisive FP32 was: its
/// margin, top class over runner-up, in margin bins (constant memory). A
/// flip where FP32's own top two are within a hair of each other (two
/// probabilities within 0.05 on random samples of a 2-class model) is a
/// coin toss either way; agreement on the decisive rows is what says
/// whether the model still decides as FP32 does.
#[derive(Clone, Debug, Default)]
pub(crate) struct Decisions {
    total: Vec<u64>,
    agree: Vec<u64>,
}

/// Below this margin a row of probabilities (or log-probabilities) is a
/// near-tie: its top two within 0.05.
pub(crate) const NEAR_TIE: f64 = 0.05;

impl Decisions {
    /// One decision: FP32's `margin` and whether the top classes agree.
    pub(crate) fn add(&mut self, margin: f64, agree: bool) {
        if self.total.is_empty() {
            self.total = vec![0; BINS];
            self.agree = vec![0; BINS];
        }
        let k = margin_bin(margin);
        self.total[k] += 1;
        self.agree[k] += u64::from(agree);
    }

    /// Adds the decisions counted in `o`.
    pub(crate) fn merge(&mut self, o: &Decisions) {
        if o.total.is_empty() {
            return;
        }
        if self.total.is_empty() {
            *self = o.clone();
            return;
        }
        for k in 0..BINS {
            self.total[k] += o.total[k];
            self.agree[k] += o.agree[k];
        }
    }

    /// Decisions whose FP32 margin is at least `min_margin` (to bin
    /// resolution; 0: all), and the agreement on them (1 when none).
    pub(crate) fn decisive(&self, min_margin: f64) -> (u64, f64) {
        if self.total.is_empty() {
            return (0, 1.0);
        }
        let from = if min_margin > 0.0 {
            (min_margin.log2() * 8.0 + 160.0)
                .ceil()
                .clamp(0.0, BINS as f64) as usize
        } else {
            0
        };
        let total: u64 = self.total[from.min(BINS)..].iter().sum();
        let agree: u64 = self.agree[from.min(BINS)..].iter().sum();
        (
            total,
            if total == 0 {
                1.0
            } else {
                agree as f64 / total as f64
            },
        )
    }
}

/// The top class of `v` and its margin over the runner-up (infinite for
/// one class).
pub(crate) fn margins(v: &[f32]) -> (usize, f64) {
    let (mut t1, mut t2) = (0usize, usize::MAX);
    for k in 1..v.len() {
        if v[k] > v[t1] {
            t2 = t1;
            t1 = k;
        } else if t2 == usize::MAX || v[k] > v[t2] {
            t2 = k;
        }
    }
    if t2 == usize::MAX {
        return (t1, f64::INFINITY);
    }
    (t1, (v[t1] - v[t2]) as f64)
}

/// Everything measured on one output over the samples: its values
/// (SQNR, cosine, top-1 rows) and the task metrics of its kind, and of the
/// kinds a per-output choice asks for.
#[derive(Clone, Debug)]
pub(crate) struct OutputAccum {
    kind: Kind,
    /// The kind's task metrics, then the ones asked for.
    kinds: Vec<Kind>,
    values: Accum,
    task: TaskAccum,
}

impl OutputAccum {
    /// For an output of `kind`; `chosen`: its metrics from the recipe or
    /// flags, if any (a mask IoU or foreground agreement asked of an output
    /// of another kind reads it as a Sigmoid map, or as classes over the
    /// last axis).
    pub(crate) fn new(kind: Kind, chosen: Option<&BTreeMap<Metric, f64>>) -> Self {
        let mut kinds = vec![kind];
        let asks = |m| chosen.is_some_and(|c| c.contains_key(&m));
        if asks(Metric::MaskIou) && kind != Kind::Probabilities {
            kinds.push(Kind::Probabilities);
        }
        if asks(Metric::VectorCosine) && kind != Kind::Embedding {
            kinds.push(Kind::Embedding);
        }
        let asks_classes = asks(Metric::ForegroundTop1) || asks(Metric::SequenceAgreement);
        if asks_classes && !matches!(kind, Kind::Classes { .. }) {
            kinds.push(Kind::Classes {
                axis: -1,
                flattened: false,
            });
        }
        OutputAccum {
            kind,
            kinds,
            values: Accum::default(),
            task: TaskAccum::default(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Adds one sample (`a` FP32, `b` quantized, both of shape `dims`).
    pub(crate) fn add(&mut self, a: &[f32], b: &[f32], dims: &[usize]) {
        self.values.add(a, b, dims);
        for &k in &self.kinds {
            self.task.add(k, a, b, dims);
        }
    }

    /// The metrics of output `name`, held to what the gate picks for it.
    pub(crate) fn finish(&self, name: &str, thresholds: &Thresholds) -> OutputMetrics {
        let mut m = self.values.output_metrics(name);
        m.positions = self.task.positions();
        m.mask_iou = self.task.mask_iou();
        m.vector_cosine = self.task.vector_cosine();
        m.kind = self.kind.describe();
        if m.top1_agreement.is_some() {
            // Probabilities have a scale to call a near-tie by; logits and
            // other scores do not: every row counts.
            let near_tie = match self.kind {
                Kind::Classes { .. } => NEAR_TIE,
                _ => 0.0,
            };
            let (n, agree) = self.values.decisive_rows(near_tie);
            m.decisive_rows = Some(n);
            m.decisive_top1_agreement = Some(agree);
        }
        let what = match self.kind {
            Kind::Classes { .. }
                if m.positions.as_ref().is_some_and(|p| p.sequences.is_some()) =>
            {
                Some((
                    Metric::SequenceAgreement,
                    self.task.symbols,
                    "class probabilities over a sequence: the greedily decoded sequences' agreement",
                ))
            }
            Kind::Classes { .. } if m.positions.is_some() => Some((
                Metric::ForegroundTop1,
                self.task.foreground,
                "class probabilities per position: top-1 agreement on the foreground",
            )),
            Kind::Classes { .. } if m.top1_agreement.is_some() => Some((
                Metric::Top1,
                m.decisive_rows.unwrap_or(0),
                "class probabilities per row: top-1 agreement on the decisive rows, and cosine",
            )),
            Kind::Probabilities if m.mask_iou.is_some() => Some((
                Metric::MaskIou,
                self.task.union,
                "a probability map: IoU of the p > 0.5 masks",
            )),
            Kind::Embedding if m.vector_cosine.is_some() => Some((
                Metric::VectorCosine,
                self.task.vectors,
                "embeddings: mean cosine of each vector to FP32's",
            )),
            _ => None,
        };
        let offer = Offer {
            task: what,
            class_like: m.top1_agreement.is_some(),
        };
        let (chosen, basis) = gate::choose(name, &offer, thresholds);
        m.gate = gate::hold(&chosen, |metric| match metric {
            Metric::Sqnr => Some(m.sqnr_db),
            Metric::Cosine => Some(m.cosine),
            Metric::Top1 => m.decisive_top1_agreement,
            Metric::ForegroundTop1 => m.positions.as_ref().map(|p| p.foreground_top1_agreement),
            Metric::SequenceAgreement => m
                .positions
                .as_ref()
                .and_then(|p| p.sequences.as_ref())
                .map(|s| s.agreement),
            Metric::MaskIou => m.mask_iou,
            Metric::VectorCosine => m.vector_cosine,
        });
        m.judged_by = basis;
        m.failures = m.gate.iter().filter_map(|c| c.failure()).collect();
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_ties_are_not_decisive() {
        let mut d = Decisions::default();
        // 90 clear decisions (margin 0.5) that agree, 10 near-ties (margin
        // 0.01) that flip.
        for _ in 0..90 {
            d.add(0.5, true);
        }
        for _ in 0..10 {
            d.add(0.01, false);
        }
        assert_eq!(d.decisive(NEAR_TIE), (90, 1.0));
        assert_eq!(d.decisive(0.0), (100, 0.9));
        // A flip of a clear decision counts.
        d.add(0.5, false);
        let (n, agree) = d.decisive(NEAR_TIE);
        assert_eq!(n, 91);
        assert!((agree - 90.0 / 91.0).abs() < 1e-12);
        assert_eq!(margins(&[0.25, 0.75, 0.5]), (1, 0.25));
    }
}
