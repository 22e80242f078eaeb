//! Automatic mixed precision in the pipeline: when the gate fails, the
//! candidates are ranked by sensitivity (only that node quantized,
//! fake-quantized in tract on a few validation samples) and
//! [`crate::tune::mixed_precision`] keeps the most harmful in float (or,
//! QDQ at opset 21, in 16-bit activations) a growing group at a time.
//!
//! Bounded work: the search may spend at most `--auto-effort` (default 1)
//! times the work of the first build and gate, counted in model runs over
//! one sample as the stages define them (GPTQ's Gram matrices and bias
//! correction's mean inputs one pass over the calibration samples each,
//! whether they run alone or within the calibration pass; each gate's
//! validation samples), so the bound does not move when a stage's work is
//! shared or sped up. Half goes to the steps (each one build and
//! gate), the rest to the ranking: the candidates the first gate's
//! per-layer errors point at (the error a layer adds to what its inputs
//! carried) are scored first, on at most [`RANKING_SAMPLES`] samples, as
//! many as the work allows; a score counts its runs and its tract plans
//! ([`PLAN_RUNS`] runs each, one per input shape). Counting runs instead of seconds keeps the
//! output deterministic: the same inputs make the same model on any
//! machine, however loaded.

use super::ranges::Ranges;
use super::steps::{Gate, Stage};
use crate::calibrate::samples::Prefix;
use crate::error::{Error, Result};
use crate::ir::{Model, NodeId};
use crate::quantize::{plan_model, QuantizeConfig};
use crate::tune::{self, Budget, Evaluator, Limits, MixedPrecision, SensitivityOptions, Stop};
use crate::verify::Verdict;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Validation samples the ranking scores each candidate on (the steps'
/// gates use all of them).
pub const RANKING_SAMPLES: usize = 8;

/// What building one tract plan of a scored variant counts for, in model
/// runs over one sample: ResNet-50's plan took 0.77 s to build, a run
/// 0.13 s (session 25). A variant builds one plan per input shape among
/// the ranking samples (a text model's sentence lengths: 6 of 8 in the
/// suite's MiniLM), which the work bound did not see before.
pub const PLAN_RUNS: usize = 6;

/// What bounds the search: the first build and gate's work (model runs
/// over one sample) and seconds, and the multiple of it allowed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bound {
    pub effort: f64,
    pub first_work: usize,
    pub first_secs: f64,
}

/// The work split: steps (each a gate over `n_val` samples) get half the
/// limit, at least one; the ranking the rest, at least one candidate,
/// after its two fixed scores (the FP32 reference and the all-quantized
/// model), each score costing `per_score` (its runs and plan builds).
/// Returns (limit, steps, candidates to rank).
fn split(limit: usize, n_val: usize, per_score: usize, candidates: usize) -> (usize, usize, usize) {
    let steps = (limit / 2 / n_val.max(1)).max(1);
    let rest = limit.saturating_sub(steps * n_val);
    let ranked = (rest / per_score.max(1))
        .saturating_sub(2)
        .clamp(1, candidates.max(1))
        .min(candidates);
    (limit, steps, ranked)
}

/// Ranks and runs the search with `attempt` as the re-check (build and
/// gate one variant: passed, worst margin, and what the caller keeps).
/// `first` is the failing gate's verdict; `wide`: the chosen nodes get
/// 16-bit activations instead of float.
#[allow(clippy::type_complexity)]
pub(super) fn auto_mixed_precision<T>(
    fp32: &Model,
    cfg: &QuantizeConfig,
    ranges: &mut Ranges,
    (budget, jobs, wide): (Budget, usize, bool),
    (first, gate, bound): (&Verdict, &Gate, Bound),
    mut attempt: impl FnMut(&QuantizeConfig, &BTreeMap<String, (f32, f32)>) -> Result<(bool, f64, T)>,
) -> Result<(MixedPrecision, Option<T>)> {
    let start = Instant::now();
    let context = |e: Error| super::in_model("automatic mixed precision", e);
    // The ranking runs on the uncorrected model: in a variant most layers
    // are float, and a float layer must compute with its own bias.
    ranges
        .ensure(fp32, &tune::search_needed(fp32, cfg)?)
        .map_err(context)?;
    let map = ranges.map();
    let plan = plan_model(fp32, cfg).map_err(context)?;
    let cands = tune::candidates(fp32, &plan);
    let n_val = gate.source.len();
    let rank_n = n_val.min(RANKING_SAMPLES);
    let limit = (bound.effort.max(0.0) * bound.first_work as f64).floor() as usize;
    let few = Prefix {
        inner: gate.source.as_ref(),
        n: rank_n,
    };
    let eval = gate
        .clock
        .time(Stage::MixedPrecision, || {
            Evaluator::with_references(fp32, &few, gate.thresholds.clone(), Some(&gate.references))
        })
        .map_err(context)?;
    let per_score = rank_n + PLAN_RUNS * eval.signatures();
    let (limit, steps, ranked) = split(limit, n_val, per_score, cands.len());
    let among: Vec<NodeId> = by_added_error(fp32, &cands, first)
        .into_iter()
        .take(ranked)
        .collect();
    let sens = gate
        .clock
        .time(Stage::MixedPrecision, || -> Result<_> {
            tune::sensitivity(
                fp32,
                cfg,
                &map,
                &eval,
                SensitivityOptions {
                    only: true,
                    all_but: false,
                    jobs,
                    among: Some(among.clone()),
                },
            )
        })
        .map_err(context)?;
    let ranking: Vec<(NodeId, String, String)> = sens
        .ids
        .iter()
        .zip(&sens.nodes)
        .enumerate()
        .map(|(i, (&id, n))| {
            let alone = n.only.as_ref().map_or(f64::NAN, |s| s.worst_sqnr_db);
            (
                id,
                n.node.clone(),
                format!(
                    "sensitivity rank {}: quantized alone, the worst output drops to {alone:.1} dB",
                    i + 1
                ),
            )
        })
        .collect();
    let nodes = budget.nodes(cands.len());
    let limits = Limits { nodes, steps };
    let (mut rec, last) =
        tune::mixed_precision(&ranking, limits, first.worst_margin_db(), |float| {
            if wide {
                let ids: Vec<NodeId> = float.keys().copied().collect();
                let (c, _) = tune::wide::widen(fp32, cfg, &ids)?;
                return attempt(&c, &map);
            }
            let mut c = cfg.clone();
            for (id, why) in float {
                c.float_ids.entry(*id).or_insert_with(|| why.clone());
            }
            attempt(&c, &map)
        })
        .map_err(context)?;
    if wide {
        rec.kept_as = format!("{} activations", cfg.activations.wide().name());
    }
    // The node budget was the ranking's length, cut by the work limit.
    if rec.stopped == Stop::NodeBudget && ranking.len() < nodes {
        rec.stopped = Stop::WorkLimit;
    }
    rec.budget = nodes;
    rec.candidates = cands.len();
    rec.ranked = ranking.len();
    rec.ranking_samples = rank_n;
    rec.work_limit = limit;
    rec.work_used = (ranking.len() + 2) * per_score + rec.steps.len() * n_val;
    rec.secs = start.elapsed().as_secs_f64();
    rec.first_secs = bound.first_secs;
    Ok((rec, last))
}

/// `cands` ordered by the error each adds in the first gate's per-layer
/// comparison, largest first: the noise-to-signal ratio at its output
/// minus the largest its inputs already carried (a tensor the gate did
/// not compare carries what its producer's inputs carried; graph inputs
/// and weights carry none). Candidates whose output was not compared come
/// last, in their order.
fn by_added_error(fp32: &Model, cands: &[NodeId], first: &Verdict) -> Vec<NodeId> {
    let g = &fp32.graph;
    let nsr: HashMap<&str, f64> = first
        .layers
        .iter()
        .map(|l| (l.tensor.as_str(), 10f64.powf(-l.sqnr_db / 10.0)))
        .collect();
    let order = g.topo_order().unwrap_or_default();
    let mut carried: HashMap<crate::ir::ValueId, f64> = HashMap::new();
    for &id in &order {
        let Some(n) = g.node(id) else { continue };
        let inherited = n
            .inputs
            .iter()
            .flatten()
            .map(|v| carried.get(v).copied().unwrap_or(0.0))
            .fold(0.0, f64::max);
        for v in n.outputs.iter().flatten() {
            let own = nsr.get(g.value_name(*v)).copied();
            carried.insert(*v, own.unwrap_or(inherited));
        }
    }
    // A layer whose only reader is a Relu/Clip is compared at the clamp's
    // output (the values its int8 output stands for).
    let measured = |v: crate::ir::ValueId| -> Option<f64> {
        nsr.get(g.value_name(v)).copied().or_else(|| {
            g.value(v)
                .consumers()
                .iter()
                .filter_map(|&(c, _)| g.node(c))
                .filter(|c| matches!(c.op_type.as_str(), "Relu" | "Clip"))
                .filter_map(|c| c.output(0).and_then(|o| nsr.get(g.value_name(o)).copied()))
                .reduce(f64::max)
        })
    };
    let mut scored: Vec<(usize, Option<f64>, NodeId)> = cands
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let added = g.node(id).and_then(|n| {
                let out = n
                    .outputs
                    .iter()
                    .flatten()
                    .filter_map(|&v| measured(v))
                    .reduce(f64::max)?;
                let inp = n
                    .inputs
                    .iter()
                    .flatten()
                    .map(|v| carried.get(v).copied().unwrap_or(0.0))
                    .fold(0.0, f64::max);
                Some((out - inp).max(0.0))
            });
            (i, added, id)
        })
        .collect();
    scored.sort_by(|a, b| match (a.1, b.1) {
        (Some(x), Some(y)) => y.total_cmp(&x).then(a.0.cmp(&b.0)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.0.cmp(&b.0),
    });
    scored.into_iter().map(|s| s.2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_split_gives_steps_half_and_ranks_with_the_rest() {
        // PaddleOCR recognizer, 32 samples, GPTQ and bias correction on:
        // 32 (Gram) + 2 × (32 bias + 32 gate) = 160 runs.
        assert_eq!(split(160, 32, 8, 51), (160, 2, 10));
        // With one plan build a score (8 runs + PLAN_RUNS), fewer.
        assert_eq!(split(160, 32, 8 + PLAN_RUNS, 51), (160, 2, 4));
        // A tiny budget still allows one candidate and one step.
        assert_eq!(split(8, 8, 8, 51), (8, 1, 1));
        // Never more candidates than there are.
        assert_eq!(split(10_000, 8, 8, 5), (10_000, 625, 5));
        assert_eq!(split(100, 8, 8, 0), (100, 6, 0));
    }
}
