//! Accuracy search: which nodes hurt the model, and what to keep in float.
//!
//! Reads a prepared FP32 model, the quantization options and the calibrated
//! ranges; writes nothing. Every variant it scores is the QDQ model
//! [`crate::quantize::quantize`] builds with some nodes kept float
//! ([`QuantizeConfig::float_ids`]), run in tract as float fake-quantization
//! on the validation samples and compared with the FP32 outputs, which are
//! computed once ([`Evaluator`]). One calibration serves every variant.
//!
//! - [`sensitivity`]: per candidate node, the outputs' error when *only*
//!   that node is quantized and when *all but* it are, in parallel over
//!   nodes (rayon); [`svg::bar_chart`] draws it.
//! - [`mixed_precision`]: the loop behind `onnxq quantize`'s automatic mode:
//!   keep the most harmful nodes float, a growing group at a time, re-check
//!   with the caller's gate, stop as soon as it passes or the budget is
//!   spent.
//! - [`range_gaps`]: Concat/Add nodes whose inputs' ranges are orders of
//!   magnitude apart (boxes next to probabilities in a detector head): one
//!   output scale would erase the small input.
//! - [`search_needed`]: every tensor any of those variants needs a range
//!   for, so calibration observes them all up front.
//! - [`wide`]: 16-bit activations, the automatic mode's alternative to
//!   float in the QDQ format at opset 21, and their emulation for tract.
//! - [`bias`]: bias correction (the mean output shift weight rounding
//!   causes, measured on the calibration samples, taken out of the bias).
//! - [`gptq`]: error-compensating weight rounding (each rounding error
//!   moved onto the weights not yet rounded, along the layer's input Gram
//!   matrix).
//! - [`weights`]: what those two share (a quantized weight's grid, and
//!   putting a changed initializer back).

pub mod bias;
pub mod gptq;
pub mod svg;
pub mod weights;
pub mod wide;

use crate::calibrate::samples::{check_sample, Sample, SampleSource};
use crate::error::{Error, Result};
use crate::ir::types::input_specs;
use crate::ir::{DataType, Model, NodeId};
use crate::quantize::{plan_model, quantize, ActSpec, Decision, InputRole, Plan, QuantizeConfig};
use crate::tract::Runner;
use crate::verify::kinds::{output_kinds, Kind};
use crate::verify::output::OutputAccum;
use crate::verify::{OutputMetrics, Thresholds};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// FP32 reference outputs on the validation samples, and the scoring of
/// quantized variants against them.
pub struct Evaluator {
    samples: Vec<Sample>,
    out_names: Vec<String>,
    /// Per sample, per output: the FP32 value (float outputs only).
    reference: Vec<Vec<Option<crate::ir::Tensor>>>,
    /// What each output is (its gate metrics follow).
    kinds: Vec<Kind>,
    thresholds: Thresholds,
}

/// How close one variant's outputs are to FP32.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Score {
    /// The lowest SQNR over the outputs (dB): what ranks variants.
    pub worst_sqnr_db: f64,
    /// Whether every output meets the gate's thresholds.
    pub passes: bool,
    pub outputs: Vec<OutputMetrics>,
}

type Signature = Vec<(DataType, Vec<usize>)>;

fn signature(sample: &Sample) -> Signature {
    sample
        .iter()
        .map(|(_, t)| (t.dtype(), t.dims().to_vec()))
        .collect()
}

fn runner_for(
    cache: &mut HashMap<Signature, Runner>,
    proto: &crate::onnx::proto::ModelProto,
    sample: &Sample,
    outputs: Option<&[String]>,
) -> Result<Runner> {
    let sig = signature(sample);
    if let Some(r) = cache.get(&sig) {
        return Ok(r.clone());
    }
    let s: Vec<_> = sample
        .iter()
        .map(|(n, t)| (n.clone(), t.dtype(), t.dims().to_vec()))
        .collect();
    let r = Runner::new(proto, &s, outputs)?;
    cache.insert(sig, r.clone());
    Ok(r)
}

impl Evaluator {
    /// Loads the samples (checked against the model's inputs) and runs the
    /// FP32 model on them once. The samples stay in memory: every variant
    /// runs on them (validation sets are small; calibration, which streams,
    /// is where sample counts grow).
    pub fn new(fp32: &Model, source: &dyn SampleSource, thresholds: Thresholds) -> Result<Self> {
        if source.is_empty() {
            return Err(Error::Invalid("no validation samples".into()));
        }
        let specs = input_specs(&fp32.graph);
        let out_names: Vec<String> = fp32
            .graph
            .outputs()
            .map(|v| fp32.graph.value_name(v).to_string())
            .collect();
        thresholds.check_outputs(&out_names)?;
        let proto = fp32.to_proto()?;
        let mut cache = HashMap::new();
        let mut samples = Vec::with_capacity(source.len());
        let mut reference = Vec::with_capacity(source.len());
        for i in 0..source.len() {
            let sample = source.load(i)?;
            check_sample(&source.name(i), &sample, &specs)?;
            let runner = runner_for(&mut cache, &proto, &sample, Some(&out_names))?;
            let outs = runner.run(&sample)?;
            reference.push(
                outs.into_iter()
                    .map(|t| t.dtype().is_float().then_some(t))
                    .collect(),
            );
            samples.push(sample);
        }
        Ok(Evaluator {
            samples,
            out_names,
            reference,
            kinds: output_kinds(fp32),
            thresholds,
        })
    }

    pub fn samples(&self) -> usize {
        self.samples.len()
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Runs `model` (float or QDQ, same inputs and outputs as the FP32
    /// model) in tract on every sample and compares its outputs with FP32.
    pub fn score(&self, model: &Model) -> Result<Score> {
        let proto = if wide::has_wide_qdq(model) {
            wide::emulate_wide_qdq(model)?.to_proto()?
        } else {
            model.to_proto()?
        };
        let mut cache = HashMap::new();
        let mut acc: Vec<OutputAccum> = self
            .kinds
            .iter()
            .zip(&self.out_names)
            .map(|(&k, n)| OutputAccum::new(k, self.thresholds.outputs.get(n)))
            .collect();
        for (sample, reference) in self.samples.iter().zip(&self.reference) {
            let runner = runner_for(&mut cache, &proto, sample, Some(&self.out_names))?;
            let got = runner.run(sample)?;
            for (k, (r, t)) in reference.iter().zip(&got).enumerate() {
                let Some(r) = r else { continue };
                if r.dims() != t.dims() {
                    return Err(Error::tensor(
                        &self.out_names[k],
                        format!(
                            "FP32 output {:?}, quantized output {:?}",
                            r.dims(),
                            t.dims()
                        ),
                    ));
                }
                acc[k].add(&r.to_f32_vec()?, &t.to_f32_vec()?, r.dims());
            }
        }
        let outputs: Vec<OutputMetrics> = self
            .out_names
            .iter()
            .zip(&acc)
            .filter(|(_, a)| !a.is_empty())
            .map(|(n, a)| a.finish(n, &self.thresholds))
            .collect();
        Ok(Score {
            worst_sqnr_db: outputs
                .iter()
                .map(|o| o.sqnr_db)
                .fold(f64::INFINITY, f64::min),
            passes: outputs.iter().all(|o| o.failures.is_empty()),
            outputs,
        })
    }
}

/// Nodes whose quantization can be switched off on its own: quantized
/// nodes that compute new values (an output with its own parameters).
/// Data-movement ops and Relu/Clip that share their input's parameters
/// follow their producer and are not candidates.
pub fn candidates(model: &Model, plan: &Plan) -> Vec<NodeId> {
    let g = &model.graph;
    plan.nodes
        .iter()
        .filter_map(|(&id, d)| match d {
            Decision::Quantize { outputs, .. }
                if outputs.iter().any(|(_, s)| !matches!(s, ActSpec::Share(_))) =>
            {
                g.node(id).map(|_| id)
            }
            _ => None,
        })
        .collect()
}

/// `cfg` with `ids` (more) kept in float for `reason`.
fn with_float(cfg: &QuantizeConfig, ids: &[NodeId], reason: &str) -> QuantizeConfig {
    let mut c = cfg.clone();
    for &id in ids {
        c.float_ids.entry(id).or_insert_with(|| reason.to_string());
    }
    c
}

/// Names of every tensor that the full plan or any single-node variant of
/// it needs a range for: calibrate these once and every variant of the
/// search (and every step of the automatic mode) has its ranges.
pub fn search_needed(model: &Model, cfg: &QuantizeConfig) -> Result<BTreeSet<String>> {
    let plan = plan_model(model, cfg)?;
    let mut needed = plan.needed_ranges(model);
    let cands = candidates(model, &plan);
    for &x in &cands {
        let others: Vec<NodeId> = cands.iter().copied().filter(|&c| c != x).collect();
        let p = plan_model(model, &with_float(cfg, &others, "search"))?;
        needed.extend(p.needed_ranges(model));
        let p = plan_model(model, &with_float(cfg, &[x], "search"))?;
        needed.extend(p.needed_ranges(model));
    }
    Ok(needed)
}

/// The QDQ model of `fp32` with `cfg` (its `float_ids` included).
pub fn variant(
    fp32: &Model,
    cfg: &QuantizeConfig,
    ranges: &BTreeMap<String, (f32, f32)>,
) -> Result<Model> {
    let mut m = fp32.clone();
    let plan = plan_model(&m, cfg)?;
    quantize(&mut m, &plan, ranges, cfg)?;
    Ok(m)
}

/// What to measure per node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SensitivityOptions {
    /// Only this node quantized (its own damage).
    pub only: bool,
    /// Every candidate but this node quantized (what keeping it float buys).
    pub all_but: bool,
    /// Worker threads (0: all cores).
    pub jobs: usize,
}

/// One node's sensitivity.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NodeSensitivity {
    pub node: String,
    pub op: String,
    /// Outputs' error with only this node quantized.
    pub only: Option<Score>,
    /// Outputs' error with every candidate but this one quantized.
    pub all_but: Option<Score>,
}

impl NodeSensitivity {
    /// Sort key, most harmful first: the lowest SQNR when quantized alone,
    /// else the highest SQNR when it alone stays float.
    fn harm(&self) -> f64 {
        match (&self.only, &self.all_but) {
            (Some(o), _) => o.worst_sqnr_db,
            (None, Some(a)) => -a.worst_sqnr_db,
            (None, None) => 0.0,
        }
    }
}

/// The whole analysis.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Sensitivity {
    pub samples: usize,
    pub thresholds: Thresholds,
    /// Every candidate quantized.
    pub all: Score,
    /// Most harmful first.
    pub nodes: Vec<NodeSensitivity>,
    /// Node ids in the order of `nodes` (for callers that act on them).
    #[serde(skip)]
    pub ids: Vec<NodeId>,
}

/// Scores every candidate node of `fp32` (prepared) under `cfg` with
/// `ranges` (from [`search_needed`]'s tensors).
pub fn sensitivity(
    fp32: &Model,
    cfg: &QuantizeConfig,
    ranges: &BTreeMap<String, (f32, f32)>,
    eval: &Evaluator,
    opts: SensitivityOptions,
) -> Result<Sensitivity> {
    let plan = plan_model(fp32, cfg)?;
    let cands = candidates(fp32, &plan);
    let (pool, _) = crate::calibrate::worker_pool(opts.jobs)?;
    let all = eval.score(&variant(fp32, cfg, ranges)?)?;
    let g = &fp32.graph;
    let results: Vec<Result<NodeSensitivity>> = pool.install(|| {
        cands
            .par_iter()
            .map(|&x| {
                let node = g
                    .node(x)
                    .ok_or_else(|| Error::Invalid("candidate node vanished".into()))?;
                let named = |e: Error| Error::BadNode {
                    node: node.name.clone(),
                    op: node.op_type.clone(),
                    reason: format!("sensitivity variant: {e}"),
                };
                let only = if opts.only {
                    let others: Vec<NodeId> = cands.iter().copied().filter(|&c| c != x).collect();
                    let m = variant(fp32, &with_float(cfg, &others, "sensitivity"), ranges)
                        .map_err(named)?;
                    Some(eval.score(&m).map_err(named)?)
                } else {
                    None
                };
                let all_but = if opts.all_but {
                    let m = variant(fp32, &with_float(cfg, &[x], "sensitivity"), ranges)
                        .map_err(named)?;
                    Some(eval.score(&m).map_err(named)?)
                } else {
                    None
                };
                Ok(NodeSensitivity {
                    node: node.name.clone(),
                    op: node.op_type.clone(),
                    only,
                    all_but,
                })
            })
            .collect()
    });
    let mut rows: Vec<(NodeId, NodeSensitivity)> = cands
        .iter()
        .copied()
        .zip(results.into_iter().collect::<Result<Vec<_>>>()?)
        .collect();
    rows.sort_by(|a, b| {
        a.1.harm()
            .total_cmp(&b.1.harm())
            .then(a.1.node.cmp(&b.1.node))
    });
    Ok(Sensitivity {
        samples: eval.samples(),
        thresholds: eval.thresholds().clone(),
        all,
        ids: rows.iter().map(|r| r.0).collect(),
        nodes: rows.into_iter().map(|r| r.1).collect(),
    })
}

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
    /// Stopped before the budget because a step did not raise the worst
    /// margin.
    pub stopped_early: bool,
}

/// The automatic mixed-precision loop. `ranking`: candidates most harmful
/// first (from [`sensitivity`]), with their names and why they are first;
/// `budget`: at most this many go float; `start_sqnr`: the failing gate's
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
    budget: usize,
    start_sqnr: f64,
    mut attempt: impl FnMut(&BTreeMap<NodeId, String>) -> std::result::Result<(bool, f64, T), E>,
) -> std::result::Result<(MixedPrecision, Option<T>), E> {
    let budget = budget.min(ranking.len());
    let mut rec = MixedPrecision {
        budget,
        candidates: ranking.len(),
        start_margin_db: start_sqnr,
        steps: Vec::new(),
        kept_float: Vec::new(),
        kept_as: "float".to_string(),
        passed: false,
        stopped_early: false,
    };
    let mut float: BTreeMap<NodeId, String> = BTreeMap::new();
    // The best failing attempt so far: its SQNR, how many steps it took,
    // its value. Only one that beats the start counts.
    let mut best: Option<(f64, usize, T)> = None;
    let mut prev = start_sqnr;
    let mut taken = 0;
    let mut group = 1;
    while taken < budget {
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
            rec.stopped_early = true;
            break;
        }
        prev = sqnr;
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

/// The range of the values an activation carries (following shared
/// parameters), if known.
fn effective_range(
    model: &Model,
    plan: &Plan,
    v: crate::ir::ValueId,
    ranges: &BTreeMap<String, (f32, f32)>,
) -> Option<(f32, f32)> {
    let g = &model.graph;
    let root = plan.root(v).unwrap_or(v);
    // What calibration observed first: a Sigmoid's output is quantized
    // over [0, 1], but the values it carries may all be 1e-5.
    let of = |t: crate::ir::ValueId| -> Option<(f32, f32)> {
        ranges.get(g.value_name(t)).copied().or_else(|| {
            match g.producer_node(t).map(|(_, n)| n.op_type.as_str()) {
                Some("Softmax") | Some("Sigmoid") => Some((0.0, 1.0)),
                _ => None,
            }
        })
    };
    match plan.activations.get(&root) {
        Some(ActSpec::RangeOf(t)) => of(*t),
        Some(ActSpec::Fixed(lo, hi)) => Some((*lo, *hi)),
        _ => of(root),
    }
}

/// Quantized Concat and Add nodes whose activation inputs' magnitudes
/// differ by more than `max_ratio`, each with the reason to keep it float.
/// Inputs whose range is all zeros do not count.
pub fn range_gaps(
    model: &Model,
    plan: &Plan,
    ranges: &BTreeMap<String, (f32, f32)>,
    max_ratio: f64,
) -> Vec<(NodeId, String)> {
    let g = &model.graph;
    let mut out = Vec::new();
    for (&id, d) in &plan.nodes {
        let Decision::Quantize { inputs, .. } = d else {
            continue;
        };
        let Some(node) = g.node(id) else { continue };
        if !matches!(node.op_type.as_str(), "Concat" | "Add" | "Sum") {
            continue;
        }
        let mut mags: Vec<(f64, String)> = Vec::new();
        for (slot, role) in inputs {
            if *role != InputRole::Activation {
                continue;
            }
            let Some(v) = node.input(*slot) else { continue };
            let Some((lo, hi)) = effective_range(model, plan, v, ranges) else {
                continue;
            };
            let m = (lo.abs().max(hi.abs())) as f64;
            if m > 0.0 && m.is_finite() {
                mags.push((m, g.value_name(v).to_string()));
            }
        }
        let (Some(big), Some(small)) = (
            mags.iter().max_by(|a, b| a.0.total_cmp(&b.0)),
            mags.iter().min_by(|a, b| a.0.total_cmp(&b.0)),
        ) else {
            continue;
        };
        let ratio = big.0 / small.0;
        if ratio > max_ratio {
            out.push((
                id,
                format!(
                    "inputs' ranges are {:.1} orders of magnitude apart (|x| up to {:.3e} in '{}', {:.3e} in '{}'): one output scale would erase the smaller (--max-range-ratio)",
                    ratio.log10(),
                    big.0,
                    big.1,
                    small.0,
                    small.1
                ),
            ));
        }
    }
    out
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

    #[test]
    fn the_loop_grows_groups_and_stops_when_the_gate_passes() {
        let ids: Vec<(NodeId, String, String)> = (0..10)
            .map(|i| (NodeId(i), format!("n{i}"), String::new()))
            .collect();
        // Passes once 4 nodes are float: steps of 1, 1, 2.
        let (rec, last) = mixed_precision(&ids, 10, 5.0, |f| {
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
        let (rec, last) = mixed_precision(&ids, 3, 0.0, |f| {
            Ok::<_, Error>((f.len() >= 4, f.len() as f64, f.len()))
        })
        .unwrap();
        assert!(!rec.passed);
        assert_eq!(last, Some(3));
        assert_eq!(rec.kept_float.len(), 3);
        // A step that buys nothing stops the search.
        let (rec, last) = mixed_precision(&ids, 10, 5.0, |f| {
            Ok::<_, Error>((false, 5.0 - f.len() as f64, f.len()))
        })
        .unwrap();
        assert!(rec.stopped_early && !rec.passed);
        assert_eq!((rec.steps.len(), last), (1, None));
        assert!(rec.kept_float.is_empty());
        // Failing at the budget: the best attempt comes back.
        let (rec, last) = mixed_precision(&ids, 4, 5.0, |f| {
            let sqnr = [0.0, 6.0, 9.0, 7.0][f.len().min(3)];
            Ok::<_, Error>((false, sqnr, f.len()))
        })
        .unwrap();
        assert!(!rec.passed && rec.stopped_early);
        assert_eq!(last, Some(2));
        assert_eq!(rec.kept_float, vec!["n0", "n1"]);
        // No budget: no step.
        let (rec, last) =
            mixed_precision(&ids, 0, 5.0, |f| Ok::<_, Error>((true, 0.0, f.len()))).unwrap();
        assert!(rec.steps.is_empty() && last.is_none() && !rec.passed);
    }
}
