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
//! - [`search`] ([`mixed_precision`]): the loop behind `onnxq quantize`'s
//!   automatic mode: keep the most harmful nodes float, a growing group at
//!   a time, re-check with the caller's gate, stop as soon as it passes, a
//!   step buys nothing, or a node or step limit is reached.
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
pub mod search;
pub mod svg;
pub mod weights;
pub mod wide;

use crate::calibrate::samples::{check_sample, Sample, SampleSource};
use crate::error::{Error, Result};
use crate::ir::types::input_specs;
use crate::ir::{DataType, Model, NodeId};
use crate::quantize::{plan_model, quantize, ActSpec, Decision, InputRole, Plan, QuantizeConfig};
use crate::tract::{Planner, Runner};
use crate::verify::kinds::{output_kinds, Kind};
use crate::verify::output::OutputAccum;
use crate::verify::{OutputMetrics, Thresholds};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use search::{mixed_precision, Budget, Limits, MixedPrecision, Step, Stop};

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
    (cache, planner): (&mut HashMap<Signature, Runner>, &Planner),
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
    let r = planner.plan(|| Ok(std::borrow::Cow::Borrowed(proto)), &s, outputs)?;
    cache.insert(sig, r.clone());
    Ok(r)
}

impl Evaluator {
    /// Loads the samples (checked against the model's inputs) and runs the
    /// FP32 model on them once. The samples stay in memory: every variant
    /// runs on them (validation sets are small; calibration, which streams,
    /// is where sample counts grow).
    pub fn new(fp32: &Model, source: &dyn SampleSource, thresholds: Thresholds) -> Result<Self> {
        Self::with_references(fp32, source, thresholds, None)
    }

    /// Like [`Evaluator::new`], taking the FP32 outputs of the samples
    /// `kept` holds (the gate's, on the same samples) instead of running
    /// them again.
    pub fn with_references(
        fp32: &Model,
        source: &dyn SampleSource,
        thresholds: Thresholds,
        kept: Option<&crate::verify::References>,
    ) -> Result<Self> {
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
        // Encoded when a sample's outputs are not kept.
        let mut proto = None;
        let mut cache = HashMap::new();
        let planner = Planner::new();
        let mut samples = Vec::with_capacity(source.len());
        let mut reference = Vec::with_capacity(source.len());
        for i in 0..source.len() {
            let name = source.name(i);
            let sample = source.load(i)?;
            check_sample(&name, &sample, &specs)?;
            let known = kept
                .and_then(|k| k.get(i, &name))
                .filter(|o| o.len() == out_names.len());
            let outs = match known {
                Some(o) => o.as_ref().clone(),
                None => {
                    if proto.is_none() {
                        proto = Some(fp32.to_proto()?);
                    }
                    let proto = proto.as_ref().ok_or_else(|| {
                        Error::Invalid("the FP32 model could not be encoded".into())
                    })?;
                    let runner =
                        runner_for((&mut cache, &planner), proto, &sample, Some(&out_names))?;
                    runner.run(&sample)?
                }
            };
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

    /// How many input types and shapes the samples have: the tract plans
    /// [`Evaluator::score`] builds for every model it scores.
    pub fn signatures(&self) -> usize {
        let sigs: std::collections::HashSet<Signature> =
            self.samples.iter().map(signature).collect();
        sigs.len()
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
        let planner = Planner::new();
        let mut acc: Vec<OutputAccum> = self
            .kinds
            .iter()
            .zip(&self.out_names)
            .map(|(&k, n)| OutputAccum::new(k, self.thresholds.outputs.get(n)))
            .collect();
        for (sample, reference) in self.samples.iter().zip(&self.reference) {
            let runner = runner_for(
                (&mut cache, &planner),
                &proto,
                sample,
                Some(&self.out_names),
            )?;
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
#[derive(Clone, Debug, PartialEq)]
pub struct SensitivityOptions {
    /// Only this node quantized (its own damage).
    pub only: bool,
    /// Every candidate but this node quantized (what keeping it float buys).
    pub all_but: bool,
    /// Worker threads (0: all cores).
    pub jobs: usize,
    /// Score only these candidates (the others still count as candidates:
    /// they are float in each "only" variant); `None`: all.
    pub among: Option<Vec<NodeId>>,
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
    let scored: Vec<NodeId> = match &opts.among {
        Some(among) => cands
            .iter()
            .copied()
            .filter(|c| among.contains(c))
            .collect(),
        None => cands.clone(),
    };
    // The whole quantized model is scored alongside the candidates (each
    // plan is built on one thread: in turn, the first held the others).
    let (all, results): (Result<Score>, Vec<Result<NodeSensitivity>>) = pool.install(|| {
        rayon::join(
            || eval.score(&variant(fp32, cfg, ranges)?),
            || {
                scored
                    .par_iter()
                    .map(|&x| node_sensitivity(fp32, (cfg, ranges), eval, &opts, (&cands, x)))
                    .collect()
            },
        )
    });
    let all = all?;
    let mut rows: Vec<(NodeId, NodeSensitivity)> = scored
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

/// Candidate `x`'s sensitivity: the outputs' error with it alone
/// quantized among `cands`, and with it alone float, as `opts` asks.
fn node_sensitivity(
    fp32: &Model,
    (cfg, ranges): (&QuantizeConfig, &BTreeMap<String, (f32, f32)>),
    eval: &Evaluator,
    opts: &SensitivityOptions,
    (cands, x): (&[NodeId], NodeId),
) -> Result<NodeSensitivity> {
    let node = fp32
        .graph
        .node(x)
        .ok_or_else(|| Error::Invalid("candidate node vanished".into()))?;
    let named = |e: Error| Error::BadNode {
        node: node.name.clone(),
        op: node.op_type.clone(),
        reason: format!("sensitivity variant: {e}"),
    };
    let only = if opts.only {
        let others: Vec<NodeId> = cands.iter().copied().filter(|&c| c != x).collect();
        let m = variant(fp32, &with_float(cfg, &others, "sensitivity"), ranges).map_err(named)?;
        Some(eval.score(&m).map_err(named)?)
    } else {
        None
    };
    let all_but = if opts.all_but {
        let m = variant(fp32, &with_float(cfg, &[x], "sensitivity"), ranges).map_err(named)?;
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
        Some(spec @ ActSpec::Within(..)) => of(root).map(|r| spec.clamp(r)),
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
