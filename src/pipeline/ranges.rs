//! Activation ranges for the pipeline: read from a table or calibrated on
//! samples, calibrated again for the tensors a later plan needs (the range
//! guard's and the automatic mode's variants), and the range guard itself.

use super::Samples;
use crate::calibrate::means::Means;
use crate::calibrate::samples::SampleSource;
use crate::calibrate::{CollectOptions, Method, RangeOptions, RangeTable, Target};
use crate::error::{Error, Result};
use crate::ir::Model;
use crate::quantize::{plan_model, QuantizeConfig, Recipe};
use crate::tune;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What a run calibrated on `random:` samples is told.
pub const RANDOM_RANGES_WARNING: &str =
    "random samples give ranges unlike real data; calibrate on real samples for a usable model";

/// Refuses a percentile outside 50..=100.
pub(super) fn check_percentile(percentile: f64) -> Result<()> {
    if !(50.0..=100.0).contains(&percentile) {
        return Err(Error::Invalid(format!(
            "percentile {percentile} is outside 50..=100"
        )));
    }
    Ok(())
}

/// The range options a recipe asks for (method, percentile, and the
/// activation type `cfg` quantizes to).
pub fn range_options(recipe: &Recipe, cfg: &QuantizeConfig) -> Result<RangeOptions> {
    let percentile = recipe.percentile.unwrap_or(99.999);
    check_percentile(percentile)?;
    Ok(RangeOptions {
        method: recipe.method.unwrap_or(Method::Minmax),
        percentile,
        target: if cfg.activations.is_signed() {
            Target::Int8
        } else {
            Target::Uint8
        },
    })
}

/// Activation ranges, and the samples to calibrate more of them on.
pub struct Ranges {
    pub table: RangeTable,
    /// Where they came from: the table's path or the samples' label.
    pub source_note: String,
    calib: Option<Arc<dyn SampleSource>>,
    ropts: RangeOptions,
    collect: CollectOptions,
    fingerprint: String,
    /// Seconds spent calibrating so far.
    pub secs: f64,
    /// Mean layer inputs, taken by the first calibration when
    /// `collect.input_means` asked (for bias correction).
    pub input_means: Means,
    /// The Gram matrices of `collect.grams` by layer, summed by the first
    /// calibration (GPTQ's).
    pub grams: BTreeMap<String, Vec<f64>>,
    /// The inputs of `collect.gram_inputs`' layers, kept by the first
    /// calibration.
    pub gram_inputs: crate::calibrate::gram::KeptInputs,
    /// Each sample's name and graph outputs, kept by the first calibration
    /// when `collect.keep_outputs` asked (the gate's FP32 references).
    pub outputs: Vec<(String, Vec<crate::ir::Tensor>)>,
    /// Whether a calibration ran already (the later ones take neither).
    first_done: bool,
}

impl Ranges {
    /// The table at `path`, refused when it was made for another model
    /// (`fingerprint`: [`crate::calibrate::model_sha256`] of the model as
    /// loaded).
    pub fn from_table(path: &Path, fingerprint: &str, ropts: RangeOptions) -> Result<Self> {
        let table = RangeTable::load(path)?;
        table.check_model(path, fingerprint)?;
        Ok(Ranges {
            table,
            source_note: format!("table {}", path.display()),
            calib: None,
            ropts,
            collect: CollectOptions::default(),
            fingerprint: fingerprint.to_string(),
            secs: 0.0,
            input_means: Means::default(),
            grams: BTreeMap::new(),
            gram_inputs: Default::default(),
            outputs: Vec::new(),
            first_done: false,
        })
    }

    /// The ranges of the tensors `needed` (names in the prepared `model`),
    /// calibrated on `source` (labelled `note`).
    pub fn calibrated(
        model: &Model,
        needed: &BTreeSet<String>,
        (note, source): (&str, Arc<dyn SampleSource>),
        ropts: RangeOptions,
        collect: CollectOptions,
        fingerprint: &str,
    ) -> Result<Self> {
        let mut r = Ranges {
            table: RangeTable {
                onnxq_version: crate::VERSION.to_string(),
                model_sha256: fingerprint.to_string(),
                samples_sha256: String::new(),
                samples: 0,
                method: ropts.method,
                percentile: ropts.percentile,
                target: ropts.target,
                tensors: BTreeMap::new(),
            },
            source_note: note.to_string(),
            calib: Some(source),
            ropts,
            collect,
            fingerprint: fingerprint.to_string(),
            secs: 0.0,
            input_means: Means::default(),
            grams: BTreeMap::new(),
            gram_inputs: Default::default(),
            outputs: Vec::new(),
            first_done: false,
        };
        r.ensure(model, needed)?;
        Ok(r)
    }

    /// The ranges of `needed`: from the table at `table`, else calibrated
    /// on `calib` (the samples and their opened source; random ones add
    /// [`RANDOM_RANGES_WARNING`] to `warnings`).
    #[allow(clippy::too_many_arguments)]
    pub fn obtain(
        model: &Model,
        needed: &BTreeSet<String>,
        table: Option<&Path>,
        calib: Option<(&Samples, Arc<dyn SampleSource>)>,
        ropts: RangeOptions,
        collect: CollectOptions,
        fingerprint: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Self> {
        match (table, calib) {
            (Some(path), _) => Self::from_table(path, fingerprint, ropts),
            (None, Some((samples, source))) => {
                if samples.is_random() {
                    warnings.push(RANDOM_RANGES_WARNING.to_string());
                }
                let note = (samples.label(), source);
                Self::calibrated(model, needed, note, ropts, collect, fingerprint)
            }
            (None, None) => Err(Error::Invalid(
                "activation ranges need calibration samples (--calib SRC) or a table (--ranges JSON)"
                    .into(),
            )),
        }
    }

    /// Calibrates the tensors of `wanted` the table lacks (nothing to do
    /// for a table read from a file: `onnxq calibrate` records every
    /// tensor).
    pub fn ensure(&mut self, model: &Model, wanted: &BTreeSet<String>) -> Result<()> {
        let Some(source) = &self.calib else {
            return Ok(());
        };
        let missing: BTreeSet<String> = wanted
            .iter()
            .filter(|t| !self.table.tensors.contains_key(*t))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        // The mean inputs and Gram matrices once, with the first calibration.
        let collect = if self.first_done {
            CollectOptions {
                input_means: false,
                grams: Vec::new(),
                gram_inputs: Vec::new(),
                keep_outputs: 0,
                ..self.collect.clone()
            }
        } else {
            self.collect.clone()
        };
        let (t, c) = RangeTable::calibrate(
            model,
            Some(&missing),
            source.as_ref(),
            &self.ropts,
            &collect,
            &self.fingerprint,
        )?;
        if !self.first_done {
            self.input_means = c.means;
            self.grams = c.grams;
            self.gram_inputs = c.gram_inputs;
            self.outputs = c.outputs;
            self.first_done = true;
            self.collect.grams.clear();
            self.collect.gram_inputs.clear();
            self.collect.keep_outputs = 0;
        }
        self.table.samples = t.samples;
        self.table.samples_sha256 = t.samples_sha256;
        self.table.tensors.extend(t.tensors);
        self.secs += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// `(lo, hi)` per tensor name.
    pub fn map(&self) -> BTreeMap<String, (f32, f32)> {
        self.table
            .tensors
            .iter()
            .map(|(k, r)| (k.clone(), (r.lo, r.hi)))
            .collect()
    }
}

/// A Concat or Add the range guard kept float.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GuardedNode {
    pub node: String,
    pub op: String,
    pub reason: String,
}

/// The range guard: keeps Concat/Add nodes whose inputs' ranges are more
/// than `max_ratio` apart in float (in `cfg.float_ids`), re-planning until
/// no gap is left; returns the nodes it kept.
pub fn guard_ranges(
    model: &Model,
    cfg: &mut QuantizeConfig,
    ranges: &mut Ranges,
    max_ratio: f64,
) -> Result<Vec<GuardedNode>> {
    let mut guarded = Vec::new();
    if !(max_ratio.is_finite()) {
        return Ok(guarded);
    }
    for _ in 0..8 {
        let plan = plan_model(model, cfg)?;
        ranges.ensure(model, &plan.needed_ranges(model))?;
        let gaps = tune::range_gaps(model, &plan, &ranges.map(), max_ratio);
        if gaps.is_empty() {
            break;
        }
        for (id, reason) in gaps {
            if let Some(n) = model.graph.node(id) {
                guarded.push(GuardedNode {
                    node: n.name.clone(),
                    op: n.op_type.clone(),
                    reason: reason.clone(),
                });
            }
            cfg.float_ids.insert(id, reason);
        }
    }
    Ok(guarded)
}
