//! The automatic mode's search: keep the most harmful nodes float, a
//! growing group at a time, re-check with the caller's gate, and stop when
//! it passes, when a step buys nothing, when `--max-float`'s node budget is
//! spent, or when the step limit (the work limit the pipeline sets,
//! [`crate::pipeline`]'s automatic mode) is reached. Reads a ranking and a
//! re-check callback; builds nothing itself.

use crate::error::{Error, Result};
use crate::ir::NodeId;
use std::collections::BTreeMap;

/// `--max-float`: a count of nodes or a percentage of the candidates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    Nodes(usize),
    Percent(f64),
}

impl Budget {
    /// Parses `N` or `PCT%`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = || {
            Error::Invalid(format!(
                "max-float '{s}': expected a node count (3) or a percentage (10%)"
            ))
        };
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&v) {
                return Err(bad());
            }
            Ok(Budget::Percent(v))
        } else {
            Ok(Budget::Nodes(s.parse().map_err(|_| bad())?))
        }
    }

    /// Nodes allowed out of `candidates` (a percentage rounds up, so any
    /// non-zero percentage allows at least one node).
    pub fn nodes(self, candidates: usize) -> usize {
        match self {
            Budget::Nodes(n) => n.min(candidates),
            Budget::Percent(p) => ((p / 100.0 * candidates as f64).ceil() as usize).min(candidates),
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Nodes(n) => write!(f, "{n}"),
            Budget::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// One step of the automatic mode.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Step {
    /// Nodes this step added to the float set.
    pub kept_float: Vec<String>,
    /// The gate's worst margin after the step (dB above the thresholds,
    /// negative while failing: [`crate::verify::Check::margin_db`]).
    pub worst_margin_db: f64,
    /// What the step bought over the previous one (dB).
    pub gain_db: f64,
    pub passed: bool,
}

/// What the automatic mode did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MixedPrecision {
    /// Nodes it was allowed to keep float, and out of how many candidates.
    pub budget: usize,
    pub candidates: usize,
    /// The gate's worst margin before the first step (dB).
    pub start_margin_db: f64,
    pub steps: Vec<Step>,
    /// The nodes float in the model handed back, in the order they were
    /// added (empty when no step improved on the all-quantized model).
    pub kept_float: Vec<String>,
    /// What those nodes were kept in: "float", or "int16 activations" /
    /// "uint16 activations" (QDQ format at opset 21).
    pub kept_as: String,
    pub passed: bool,
    /// Why it stopped.
    pub stopped: Stop,
    /// Candidates scored for the ranking (the rest were not measured: the
    /// work limit), and on how many validation samples.
    pub ranked: usize,
    pub ranking_samples: usize,
    /// Work in model runs over one sample (ranking variants in tract, each
    /// step's gate in the int8 executor): the limit (`--auto-effort` times
    /// the first build and gate's runs) and what was spent.
    pub work_limit: usize,
    pub work_used: usize,
    /// Wall time of the search and of the first build and gate it is
    /// bounded by (seconds; the only fields that vary between runs).
    pub secs: f64,
    pub first_secs: f64,
}

/// Why the automatic mode stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// A step passed the gate.
    Passed,
    /// A step did not raise the worst margin: the failure is not in the
    /// nodes ranked first.
    NoGain,
    /// Every node `--max-float` allows is float.
    NodeBudget,
    /// The work limit allows no more steps.
    WorkLimit,
    /// No step was possible: the node budget is 0 or nothing was ranked.
    NoStep,
}

impl Stop {
    /// One line for the summary.
    pub fn describe(self) -> &'static str {
        match self {
            Stop::Passed => "the gate passed",
            Stop::NoGain => "the last step did not raise the worst margin, so the failure is not in the nodes ranked first (see `onnxq sensitivity`)",
            Stop::NodeBudget => "every node --max-float allows is float and the gate still fails (raise --max-float, or see `onnxq sensitivity`)",
            Stop::WorkLimit => "the work limit (--auto-effort times the first build and gate's work) allows no more steps",
            Stop::NoStep => "no step: the budget allows no node (--max-float)",
        }
    }
}

/// Most nodes and most steps (re-checks) the loop may take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub nodes: usize,
    pub steps: usize,
}

/// The automatic mixed-precision loop. `ranking`: candidates most harmful
/// first (from [`super::sensitivity`]), with their names and why they are first;
/// `limits`: at most this many nodes go float in at most this many
/// steps; `start_sqnr`: the failing gate's
/// worst margin (dB). `attempt` builds and checks the model with a float
/// set and returns (passed, worst margin, whatever the caller keeps). Groups grow
/// 1, 1, 2, 4, …: the first steps are fine-grained, a long tail is not
/// re-checked node by node. A step that does not raise the worst margin ends
/// the search. Returns the record and the passing attempt's value; when
/// none passes, the best attempt's if it beat `start_sqnr` (`kept_float`
/// lists its float nodes), else `None` and an empty `kept_float`. Returns the record and the last attempt's
/// value (`None` when the budget allowed no step).
pub fn mixed_precision<T, E>(
    ranking: &[(NodeId, String, String)],
    limits: Limits,
    start_sqnr: f64,
    mut attempt: impl FnMut(&BTreeMap<NodeId, String>) -> std::result::Result<(bool, f64, T), E>,
) -> std::result::Result<(MixedPrecision, Option<T>), E> {
    let budget = limits.nodes.min(ranking.len());
    let mut rec = MixedPrecision {
        budget,
        candidates: ranking.len(),
        start_margin_db: start_sqnr,
        steps: Vec::new(),
        kept_float: Vec::new(),
        kept_as: "float".to_string(),
        passed: false,
        stopped: Stop::NoStep,
        ranked: ranking.len(),
        ranking_samples: 0,
        work_limit: 0,
        work_used: 0,
        secs: 0.0,
        first_secs: 0.0,
    };
    let mut float: BTreeMap<NodeId, String> = BTreeMap::new();
    // The best failing attempt so far: its SQNR, how many steps it took,
    // its value. Only one that beats the start counts.
    let mut best: Option<(f64, usize, T)> = None;
    let mut prev = start_sqnr;
    let mut taken = 0;
    let mut group = 1;
    while taken < budget {
        if rec.steps.len() >= limits.steps {
            rec.stopped = Stop::WorkLimit;
            break;
        }
        let end = (taken + group).min(budget);
        let mut names = Vec::new();
        for (id, name, why) in &ranking[taken..end] {
            float.insert(
                *id,
                format!("kept float by automatic mixed precision ({why})"),
            );
            names.push(name.clone());
        }
        if !rec.steps.is_empty() {
            group *= 2;
        }
        taken = end;
        let (passed, sqnr, value) = attempt(&float)?;
        rec.steps.push(Step {
            kept_float: names,
            worst_margin_db: sqnr,
            gain_db: sqnr - prev,
            passed,
        });
        if passed {
            rec.passed = true;
            rec.stopped = Stop::Passed;
            rec.kept_float = rec
                .steps
                .iter()
                .flat_map(|s| s.kept_float.clone())
                .collect();
            return Ok((rec, Some(value)));
        }
        if sqnr > best.as_ref().map_or(start_sqnr, |b| b.0) {
            best = Some((sqnr, rec.steps.len(), value));
        }
        // A step that bought nothing: the failure is not in the nodes the
        // ranking puts first (a top-1 near-tie, error spread over every
        // layer); more float nodes would cost speed for nothing.
        if sqnr <= prev {
            rec.stopped = Stop::NoGain;
            break;
        }
        prev = sqnr;
        if taken == budget {
            rec.stopped = Stop::NodeBudget;
        }
    }
    // The gate still fails: hand back the best attempt, or nothing (the
    // caller keeps its all-quantized model) when no step improved on it.
    Ok(match best {
        Some((_, steps, value)) => {
            rec.kept_float = rec.steps[..steps]
                .iter()
                .flat_map(|s| s.kept_float.clone())
                .collect();
            (rec, Some(value))
        }
        None => (rec, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_round_up() {
        assert_eq!(Budget::parse("3").unwrap(), Budget::Nodes(3));
        assert_eq!(Budget::parse("10%").unwrap(), Budget::Percent(10.0));
        assert!(Budget::parse("x").is_err());
        assert!(Budget::parse("120%").is_err());
        assert_eq!(Budget::Percent(10.0).nodes(25), 3);
        assert_eq!(Budget::Percent(1.0).nodes(5), 1);
        assert_eq!(Budget::Percent(0.0).nodes(5), 0);
        assert_eq!(Budget::Nodes(9).nodes(4), 4);
    }

    fn lim(nodes: usize) -> Limits {
        Limits {
            nodes,
            steps: usize::MAX,
        }
    }

    #[test]
    fn the_loop_grows_groups_and_stops_when_the_gate_passes() {
        let ids: Vec<(NodeId, String, String)> = (0..10)
            .map(|i| (NodeId(i), format!("n{i}"), String::new()))
            .collect();
        // Passes once 4 nodes are float: steps of 1, 1, 2.
        let (rec, last) = mixed_precision(&ids, lim(10), 5.0, |f| {
            Ok::<_, Error>((f.len() >= 4, 5.0 + f.len() as f64, f.len()))
        })
        .unwrap();
        assert!(rec.passed);
        assert_eq!(last, Some(4));
        let sizes: Vec<usize> = rec.steps.iter().map(|s| s.kept_float.len()).collect();
        assert_eq!(sizes, vec![1, 1, 2]);
        assert_eq!(rec.kept_float, vec!["n0", "n1", "n2", "n3"]);
        assert!(rec.steps.iter().all(|s| s.gain_db > 0.0));
        // A budget of 3 stops after 1, 1, 1 and fails.
        let (rec, last) = mixed_precision(&ids, lim(3), 0.0, |f| {
            Ok::<_, Error>((f.len() >= 4, f.len() as f64, f.len()))
        })
        .unwrap();
        assert!(!rec.passed);
        assert_eq!(rec.stopped, Stop::NodeBudget);
        assert_eq!(last, Some(3));
        assert_eq!(rec.kept_float.len(), 3);
        // A step that buys nothing stops the search.
        let (rec, last) = mixed_precision(&ids, lim(10), 5.0, |f| {
            Ok::<_, Error>((false, 5.0 - f.len() as f64, f.len()))
        })
        .unwrap();
        assert!(rec.stopped == Stop::NoGain && !rec.passed);
        assert_eq!((rec.steps.len(), last), (1, None));
        assert!(rec.kept_float.is_empty());
        // Failing at the budget: the best attempt comes back.
        let (rec, last) = mixed_precision(&ids, lim(4), 5.0, |f| {
            let sqnr = [0.0, 6.0, 9.0, 7.0][f.len().min(3)];
            Ok::<_, Error>((false, sqnr, f.len()))
        })
        .unwrap();
        assert!(!rec.passed && rec.stopped == Stop::NoGain);
        assert_eq!(last, Some(2));
        assert_eq!(rec.kept_float, vec!["n0", "n1"]);
        // No budget: no step.
        let (rec, last) =
            mixed_precision(&ids, lim(0), 5.0, |f| Ok::<_, Error>((true, 0.0, f.len()))).unwrap();
        assert!(rec.steps.is_empty() && last.is_none() && !rec.passed);
        assert_eq!(rec.stopped, Stop::NoStep);
        // A step limit of 2 stops after 1, 1 although nodes are left, and
        // hands back the best attempt.
        let limits = Limits {
            nodes: 10,
            steps: 2,
        };
        let (rec, last) = mixed_precision(&ids, limits, 5.0, |f| {
            Ok::<_, Error>((f.len() >= 4, 5.0 + f.len() as f64, f.len()))
        })
        .unwrap();
        assert_eq!(
            (rec.steps.len(), rec.stopped, last),
            (2, Stop::WorkLimit, Some(2))
        );
        assert!(!rec.passed);
    }
}
