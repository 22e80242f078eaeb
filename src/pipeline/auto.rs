//! Automatic mixed precision in the pipeline: when the gate fails, the
//! candidates are ranked by sensitivity (only that node quantized,
//! fake-quantized in tract on the validation samples) and
//! [`crate::tune::mixed_precision`] keeps the most harmful in float (or,
//! QDQ at opset 21, in 16-bit activations) a growing group at a time.

use super::ranges::Ranges;
use super::steps::{Gate, Stage};
use crate::error::{Error, Result};
use crate::ir::Model;
use crate::ir::NodeId;
use crate::quantize::QuantizeConfig;
use crate::tune::{self, Budget, Evaluator, MixedPrecision, SensitivityOptions};
use std::collections::BTreeMap;

/// Ranks and runs the search with `attempt` as the re-check (build and
/// gate one variant: passed, worst SQNR, and what the caller keeps).
/// `start_sqnr` is the failing gate's worst SQNR; `wide`: the chosen nodes
/// get 16-bit activations instead of float.
#[allow(clippy::type_complexity)]
pub(super) fn auto_mixed_precision<T>(
    fp32: &Model,
    cfg: &QuantizeConfig,
    ranges: &mut Ranges,
    (budget, jobs, wide): (Budget, usize, bool),
    (start_sqnr, gate): (f64, &Gate),
    mut attempt: impl FnMut(&QuantizeConfig, &BTreeMap<String, (f32, f32)>) -> Result<(bool, f64, T)>,
) -> Result<(MixedPrecision, Option<T>)> {
    let context = |e: Error| super::in_model("automatic mixed precision", e);
    // The ranking runs on the uncorrected model: in a variant most layers
    // are float, and a float layer must compute with its own bias.
    ranges
        .ensure(fp32, &tune::search_needed(fp32, cfg)?)
        .map_err(context)?;
    let map = ranges.map();
    let sens = gate
        .clock
        .time(Stage::MixedPrecision, || -> Result<_> {
            let eval = Evaluator::new(fp32, gate.source.as_ref(), gate.thresholds.clone())?;
            tune::sensitivity(
                fp32,
                cfg,
                &map,
                &eval,
                SensitivityOptions {
                    only: true,
                    all_but: false,
                    jobs,
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
    let n = budget.nodes(ranking.len());
    let (mut rec, last) = tune::mixed_precision(&ranking, n, start_sqnr, |float| {
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
    Ok((rec, last))
}
