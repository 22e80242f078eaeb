//! The gate's judgement of one output: which metrics it is held to, and
//! whether it meets them.
//!
//! Each output is judged by what it is ([`super::kinds`]), unless the
//! recipe or a flag names its metrics:
//!
//! | output | judged on |
//! |---|---|
//! | class probabilities over a sequence (Softmax over a CTC recognizer's `[1, T, C]`) | the sequences decoded greedily: 1 − edit distance / FP32's symbols |
//! | class probabilities per position of a map (Softmax over `[N, C, H, W]`) | top-1 agreement on the foreground positions |
//! | class probabilities per row (Softmax over `[N, C]`) | top-1 agreement per row (near-ties aside) and cosine |
//! | per-element probabilities (a Sigmoid map, looked through layout ops) | IoU of the `p > 0.5` masks |
//! | embeddings (LayerNormalization, pooling or normalization output) | mean cosine per vector |
//! | anything else (boxes, logits) | SQNR and cosine (and top-1 for `[N, C]` scores) |
//!
//! A task metric needs evidence: when the samples give it too little (FP32
//! decodes every position to the blank, its masks are empty, every row has
//! the same class: what random samples do) the output falls back to SQNR and
//! cosine, and the verdict says so. The defaults were chosen by measurement
//! on real exports, good and broken (`docs/defaults.md`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Positions, rows or mask elements a task metric needs to judge on.
pub const MIN_EVIDENCE: u64 = 16;

/// The default minimum mean cosine per vector of an embedding output,
/// measured on a real sentence encoder against its retrieval task in
/// onnxruntime (`tools/crosscheck_gate.py`, `docs/defaults.md`): models
/// whose nearest neighbours stay FP32's (93.8–99.2%) measured 0.994–0.998
/// on every output, broken ones (72.9–89.6%) at most 0.960; 0.99 sits in
/// the gap.
pub const MIN_VECTOR_COSINE: f64 = 0.99;

/// The default minimum agreement of greedily decoded sequences, measured
/// on a real CTC recognizer against its reading of 48 held-out text lines
/// (`tools/bench/gate_sweep.py rec`, `docs/defaults.md`): models whose
/// exact strings hold within 5 points of FP32's measured 0.967–0.977,
/// broken ones (8 or more points lost) at most 0.946.
pub const MIN_SEQUENCE_AGREEMENT: f64 = 0.955;

/// A metric an output can be held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// SQNR against FP32 (dB).
    Sqnr,
    Cosine,
    /// Rows whose top class is FP32's (`[N, C]` outputs).
    Top1,
    /// Positions, among the foreground ones, whose top class is FP32's.
    #[serde(alias = "foreground-top1")]
    ForegroundTop1,
    /// 1 − edit distance of the greedily decoded sequences to FP32's, over
    /// FP32's symbols.
    #[serde(alias = "sequence-agreement")]
    SequenceAgreement,
    /// IoU of the `p > 0.5` masks.
    #[serde(alias = "mask-iou")]
    MaskIou,
    /// Mean cosine of each vector (last axis) to FP32's.
    #[serde(alias = "vector-cosine")]
    VectorCosine,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::Sqnr,
        Metric::Cosine,
        Metric::Top1,
        Metric::ForegroundTop1,
        Metric::SequenceAgreement,
        Metric::MaskIou,
        Metric::VectorCosine,
    ];

    /// The name in recipes, flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Sqnr => "sqnr",
            Metric::Cosine => "cosine",
            Metric::Top1 => "top1",
            Metric::ForegroundTop1 => "foreground_top1",
            Metric::SequenceAgreement => "sequence_agreement",
            Metric::MaskIou => "mask_iou",
            Metric::VectorCosine => "vector_cosine",
        }
    }

    /// Parses a name (`-` or `_`).
    pub fn parse(s: &str) -> Option<Metric> {
        let s = s.trim().replace('-', "_");
        Metric::ALL.into_iter().find(|m| m.name() == s)
    }

    fn label(self) -> &'static str {
        match self {
            Metric::Sqnr => "SQNR",
            Metric::Cosine => "cosine",
            Metric::Top1 => "top-1 agreement",
            Metric::ForegroundTop1 => "foreground top-1 agreement",
            Metric::SequenceAgreement => "decoded sequence agreement",
            Metric::MaskIou => "mask IoU",
            Metric::VectorCosine => "mean cosine per vector",
        }
    }

    /// `value` as the verdict prints it.
    pub fn show(self, value: f64) -> String {
        match self {
            Metric::Sqnr => format!("{value:.1} dB"),
            Metric::Cosine | Metric::VectorCosine => format!("{value:.4}"),
            _ => format!("{:.1}%", 100.0 * value),
        }
    }
}

/// Gate thresholds: the default of each metric, and per-output choices.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Thresholds {
    /// SQNR of each float output against FP32, in dB.
    pub min_sqnr_db: f64,
    pub min_cosine: f64,
    /// Top-1 agreement with FP32 per row of class scores (fraction).
    pub min_top1: f64,
    /// Top-1 agreement on the foreground positions of class probabilities
    /// over a map.
    pub min_foreground_top1: f64,
    /// Agreement of the greedily decoded sequences of class probabilities
    /// over a sequence.
    pub min_sequence_agreement: f64,
    /// IoU of the `p > 0.5` masks of a Sigmoid map.
    pub min_mask_iou: f64,
    /// Mean cosine per vector of an embedding output.
    pub min_vector_cosine: f64,
    /// Outputs held to exactly these metrics (metric → minimum) instead of
    /// the ones their kind picks; an empty map: reported, not gated.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, BTreeMap<Metric, f64>>,
}

impl Default for Thresholds {
    /// 20 dB SQNR (error power 1% of the signal's) and cosine 0.99 where no
    /// task metric applies; 95% of class decisions unchanged (small
    /// validation sets make one flipped near-tie cost points, so not 99%);
    /// 90% of the foreground positions' classes, 95.5% of the decoded
    /// sequences' symbols and a mask IoU of 0.88 (measured:
    /// `docs/defaults.md`).
    fn default() -> Self {
        Thresholds {
            min_sqnr_db: 20.0,
            min_cosine: 0.99,
            min_top1: 0.95,
            min_foreground_top1: 0.9,
            min_sequence_agreement: MIN_SEQUENCE_AGREEMENT,
            min_mask_iou: 0.88,
            min_vector_cosine: MIN_VECTOR_COSINE,
            outputs: BTreeMap::new(),
        }
    }
}

impl Thresholds {
    /// The default minimum of `metric`.
    pub fn min(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Sqnr => self.min_sqnr_db,
            Metric::Cosine => self.min_cosine,
            Metric::Top1 => self.min_top1,
            Metric::ForegroundTop1 => self.min_foreground_top1,
            Metric::SequenceAgreement => self.min_sequence_agreement,
            Metric::MaskIou => self.min_mask_iou,
            Metric::VectorCosine => self.min_vector_cosine,
        }
    }

    /// Checks the per-output choices against the model's output names.
    pub fn check_outputs(&self, outputs: &[String]) -> crate::Result<()> {
        for (name, metrics) in &self.outputs {
            if !outputs.contains(name) {
                return Err(crate::Error::Invalid(format!(
                    "gate metrics for output '{name}': the model has no such output (outputs: {})",
                    outputs.join(", ")
                )));
            }
            for (m, v) in metrics {
                if v.is_nan() {
                    return Err(crate::Error::Invalid(format!(
                        "gate metric {} of output '{name}': minimum is NaN",
                        m.name()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Parses a flag's `NAME=METRIC:MIN[,METRIC:MIN…]` (or `NAME=none`: not
/// gated) into (output name, metrics).
pub fn parse_output_gate(s: &str) -> Result<(String, BTreeMap<Metric, f64>), String> {
    let (name, spec) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("'{s}': expected NAME=METRIC:MIN[,METRIC:MIN] or NAME=none"))?;
    if name.is_empty() {
        return Err(format!("'{s}': the output name is empty"));
    }
    let mut metrics = BTreeMap::new();
    if spec.trim() != "none" {
        for part in spec.split(',') {
            let (m, v) = part
                .split_once(':')
                .ok_or_else(|| format!("'{part}': expected METRIC:MIN"))?;
            let metric = Metric::parse(m).ok_or_else(|| {
                let names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "'{m}': unknown metric (one of {}, or none)",
                    names.join(", ")
                )
            })?;
            let v: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("'{v}': the minimum of {m} is not a number"))?;
            if v.is_nan() {
                return Err(format!("the minimum of {m} is NaN"));
            }
            metrics.insert(metric, v);
        }
    }
    Ok((name.to_string(), metrics))
}

/// One metric an output was held to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub metric: Metric,
    /// NaN when the metric does not apply to the output.
    pub value: f64,
    pub min: f64,
    pub passed: bool,
}

impl Check {
    /// How far the value is above its minimum, in dB (negative: failing),
    /// so that metrics of different kinds compare: SQNR's own dB; for a
    /// fraction that should be near 1 (cosine, agreement, IoU), the allowed
    /// shortfall over the actual one, `10 log10((1 - min) / (1 - value))`.
    /// NaN values are -300.
    pub fn margin_db(&self) -> f64 {
        if self.value.is_nan() {
            return -300.0;
        }
        let m = match self.metric {
            Metric::Sqnr => self.value - self.min,
            _ => {
                let allowed = (1.0 - self.min).max(1e-12);
                let short = (1.0 - self.value).max(1e-30);
                10.0 * (allowed / short).log10()
            }
        };
        m.clamp(-300.0, 300.0)
    }

    /// The failure text (`None` when it passed).
    pub fn failure(&self) -> Option<String> {
        (!self.passed).then(|| {
            if self.value.is_nan() {
                format!("{} not measurable on this output", self.metric.label())
            } else {
                format!(
                    "{} {} < {}",
                    self.metric.label(),
                    self.metric.show(self.value),
                    self.metric.show(self.min)
                )
            }
        })
    }
}

/// What an output offers the gate: its metrics and their evidence.
pub(crate) struct Offer {
    /// The task metric the output's kind picks, with its evidence count
    /// and what it is called in the verdict.
    pub task: Option<(Metric, u64, &'static str)>,
    /// Whether the output looks like `[N, C]` class scores (its top-1 is
    /// gated beside SQNR and cosine when no task metric applies).
    pub class_like: bool,
}

/// The metrics `output` is held to and why: the per-output choice, else the
/// task metric of its kind when the samples give it evidence, else SQNR and
/// cosine (and top-1 for class scores).
pub(crate) fn choose(
    output: &str,
    offer: &Offer,
    thresholds: &Thresholds,
) -> (Vec<(Metric, f64)>, String) {
    if let Some(chosen) = thresholds.outputs.get(output) {
        let basis = if chosen.is_empty() {
            "not gated (chosen by the recipe's gate-outputs or --gate-output)"
        } else {
            "metrics chosen by the recipe's gate-outputs or --gate-output"
        };
        return (
            chosen.iter().map(|(&m, &v)| (m, v)).collect(),
            basis.to_string(),
        );
    }
    let fallback = |class_like: bool| {
        let mut v = vec![
            (Metric::Sqnr, thresholds.min_sqnr_db),
            (Metric::Cosine, thresholds.min_cosine),
        ];
        if class_like {
            v.push((Metric::Top1, thresholds.min_top1));
        }
        v
    };
    match offer.task {
        // Class rows also keep the cosine: top-1 on a few dozen rows cannot
        // tell 97% from 92% (measured: docs/defaults.md), the shape of the
        // probabilities can.
        Some((Metric::Top1, evidence, what)) if evidence >= MIN_EVIDENCE => (
            vec![
                (Metric::Top1, thresholds.min_top1),
                (Metric::Cosine, thresholds.min_cosine),
            ],
            what.to_string(),
        ),
        // A mean cosine is a measurement, not a count of decisions: any
        // vector is evidence.
        Some((Metric::VectorCosine, evidence, what)) if evidence > 0 => (
            vec![(Metric::VectorCosine, thresholds.min_vector_cosine)],
            what.to_string(),
        ),
        Some((m, evidence, what)) if evidence >= MIN_EVIDENCE => {
            (vec![(m, thresholds.min(m))], what.to_string())
        }
        Some((metric, evidence, what)) => (
            fallback(offer.class_like),
            format!(
                "{what}, but the samples give {evidence} {} (fewer than {MIN_EVIDENCE}): SQNR and cosine instead",
                match metric {
                    Metric::Top1 => "decisive rows (with more than one FP32 class)",
                    Metric::MaskIou => "mask elements",
                    Metric::VectorCosine => "vectors",
                    Metric::SequenceAgreement => "decoded symbols",
                    _ => "foreground positions",
                }
            ),
        ),
        None => (
            fallback(offer.class_like),
            if offer.class_like {
                "scores [N, C]: SQNR, cosine and top-1".to_string()
            } else {
                "no task metric applies: SQNR and cosine".to_string()
            },
        ),
    }
}

/// Holds each `(metric, min)` to `value_of(metric)` (NaN metrics fail).
pub(crate) fn hold(
    chosen: &[(Metric, f64)],
    value_of: impl Fn(Metric) -> Option<f64>,
) -> Vec<Check> {
    chosen
        .iter()
        .map(|&(metric, min)| {
            let value = value_of(metric).unwrap_or(f64::NAN);
            Check {
                metric,
                value,
                min,
                passed: value >= min,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_to_per_output_metrics() {
        let (n, m) = parse_output_gate("a=b=sqnr:15,mask-iou:0.8").unwrap();
        assert_eq!(n, "a=b");
        assert_eq!(m[&Metric::Sqnr], 15.0);
        assert_eq!(m[&Metric::MaskIou], 0.8);
        assert!(parse_output_gate("x=none").unwrap().1.is_empty());
        for bad in [
            "x",
            "=sqnr:1",
            "x=psnr:3",
            "x=sqnr",
            "x=sqnr:abc",
            "x=sqnr:NaN",
        ] {
            assert!(parse_output_gate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_task_metric_needs_evidence_and_a_choice_beats_the_kind() {
        let t = Thresholds::default();
        let offer = |evidence| Offer {
            task: Some((
                Metric::ForegroundTop1,
                evidence,
                "class probabilities per position",
            )),
            class_like: false,
        };
        let (m, _) = choose("y", &offer(100), &t);
        assert_eq!(m, vec![(Metric::ForegroundTop1, 0.9)]);
        let (m, why) = choose("y", &offer(3), &t);
        assert_eq!(m, vec![(Metric::Sqnr, 20.0), (Metric::Cosine, 0.99)]);
        assert!(why.contains("3 foreground positions"), "{why}");
        let mut t2 = t.clone();
        t2.outputs
            .insert("y".into(), BTreeMap::from([(Metric::Sqnr, 12.0)]));
        assert_eq!(choose("y", &offer(100), &t2).0, vec![(Metric::Sqnr, 12.0)]);
        let checks = hold(&[(Metric::Sqnr, 12.0), (Metric::MaskIou, 0.5)], |m| {
            (m == Metric::Sqnr).then_some(13.0)
        });
        assert!(checks[0].passed && !checks[1].passed);
        assert!(checks[1].failure().unwrap().contains("not measurable"));
        assert!(t2.check_outputs(&["z".into()]).is_err());
    }

    #[test]
    fn embeddings_are_held_to_their_mean_vector_cosine_on_any_evidence() {
        let t = Thresholds::default();
        let offer = Offer {
            task: Some((Metric::VectorCosine, 2, "embeddings")),
            class_like: true,
        };
        // Two pooled vectors ([2, 384]) are enough, and an embedding
        // [N, C] is not held to top-1.
        let (m, why) = choose("v", &offer, &t);
        assert_eq!(m, vec![(Metric::VectorCosine, MIN_VECTOR_COSINE)]);
        assert_eq!(why, "embeddings");
        assert_eq!(
            parse_output_gate("v=vector-cosine:0.98").unwrap().1[&Metric::VectorCosine],
            0.98
        );
        assert_eq!(Metric::VectorCosine.show(0.99512), "0.9951");
    }
}
