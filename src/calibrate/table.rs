//! The calibration table: tensor name → range, with what produced it.
//!
//! Written by `onnxq calibrate -o ranges.json`, read back by
//! `onnxq quantize --ranges`, which refuses a table made for another model
//! (the model fingerprint must match).

use super::methods::{range, RangeOptions};
use super::samples::SampleSource;
use super::{Calibrator, CollectOptions, Collected, Method, Target};
use crate::error::{Error, Result};
use crate::ir::Model;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The range of one tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorRange {
    /// Quantization range (contains 0).
    pub lo: f32,
    pub hi: f32,
    /// Observed extremes.
    pub min: f32,
    pub max: f32,
    /// NaN/inf elements seen (skipped).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nonfinite: u64,
    /// Per-channel (axis 1) observed extremes, when collected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_min: Vec<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channel_max: Vec<f32>,
    /// With `method: auto`, the method chosen for this tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A calibration table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeTable {
    pub onnxq_version: String,
    /// SHA-256 of the model the table was made for (as loaded, before
    /// preparation).
    pub model_sha256: String,
    pub samples_sha256: String,
    pub samples: usize,
    pub method: Method,
    pub percentile: f64,
    pub target: Target,
    pub tensors: BTreeMap<String, TensorRange>,
}

/// What a calibration run gives besides its table.
#[derive(Clone, Debug, Default)]
pub struct Collection {
    /// Distinct input shapes seen (one tract plan each).
    pub plans: usize,
    /// Mean layer inputs (with [`CollectOptions::input_means`]).
    pub means: super::means::Means,
    /// The input Gram matrices of [`CollectOptions::grams`] by layer,
    /// summed over the samples.
    pub grams: BTreeMap<String, Vec<f64>>,
    /// The inputs of [`CollectOptions::gram_inputs`]' layers, kept.
    pub gram_inputs: super::gram::KeptInputs,
    /// Each sample's name and graph outputs, with
    /// [`CollectOptions::keep_outputs`].
    pub outputs: Vec<(String, Vec<crate::ir::Tensor>)>,
}

impl RangeTable {
    /// Calibrates `model` on `source`: the tensors of `wanted` (every
    /// activation when `None`) are observed through tract, their ranges
    /// computed by `opts.method` (with `auto`, one more pass chooses a
    /// method per tensor). Returns the table, how many tract plans the
    /// samples' shapes needed, the mean layer inputs when
    /// `collect.input_means` asked for them and the Gram matrices of
    /// `collect.grams`.
    pub fn calibrate(
        model: &Model,
        wanted: Option<&BTreeSet<String>>,
        source: &dyn SampleSource,
        opts: &RangeOptions,
        collect: &CollectOptions,
        model_sha256: &str,
    ) -> Result<(Self, Collection)> {
        // Mean inputs and Gram matrices: every such layer's input is
        // observed (a quantized layer's input may have no range of its
        // own: a MaxPool's or a Reshape's output shares its producer's),
        // its statistics dropped from the table below.
        let probes = if collect.input_means {
            super::means::probes(model)?
        } else {
            Vec::new()
        };
        let inputs: BTreeSet<String> = crate::ir::types::input_specs(&model.graph)
            .into_iter()
            .map(|i| i.name)
            .collect();
        let extra: BTreeSet<String> = match wanted {
            Some(w) => probes
                .iter()
                .map(|p| &p.input)
                .chain(collect.grams.iter().map(|p| &p.input))
                .chain(collect.gram_inputs.iter().map(|p| &p.input))
                .filter(|t| !w.contains(*t) && !inputs.contains(*t))
                .cloned()
                .collect(),
            None => BTreeSet::new(),
        };
        let observed: Option<BTreeSet<String>> =
            wanted.map(|w| w.iter().chain(&extra).cloned().collect());
        let mut calibrator = Calibrator::observing(model, observed.as_ref())?
            .measuring(probes)
            .summing_grams(collect.grams.clone())
            .keeping_gram_inputs(collect.gram_inputs.clone());
        if collect.keep_outputs > 0 {
            calibrator = calibrator.keeping_outputs(model);
        }
        let collected = calibrator.collect(
            source,
            &CollectOptions {
                histograms: opts.method.needs_histogram(),
                ..collect.clone()
            },
        )?;
        let mut table = RangeTable::compute(&collected, opts, model_sha256);
        if opts.method == Method::Auto {
            let all: BTreeSet<String>;
            let wanted = match wanted {
                Some(w) => w,
                None => {
                    all = collected.stats.keys().cloned().collect();
                    &all
                }
            };
            let choices =
                super::choose::choose(model, &collected, opts, wanted, source, collect.jobs)?;
            table.apply_choices(&choices);
        }
        table.tensors.retain(|name, _| !extra.contains(name));
        let plans = collected.plans;
        Ok((
            table,
            Collection {
                plans,
                means: collected.means,
                grams: collected.grams,
                gram_inputs: collected.gram_inputs,
                outputs: collected.outputs,
            },
        ))
    }

    /// Ranges for every collected tensor.
    pub fn compute(collected: &Collected, opts: &RangeOptions, model_sha256: &str) -> Self {
        use rayon::prelude::*;
        let stats: Vec<(&String, &super::TensorStats)> = collected.stats.iter().collect();
        let tensors = stats
            .into_par_iter()
            .map(|(name, s)| {
                let (lo, hi) = range(s, opts);
                (
                    name.clone(),
                    TensorRange {
                        lo,
                        hi,
                        min: s.min,
                        max: s.max,
                        nonfinite: s.nonfinite,
                        channel_min: s.channel_min.clone(),
                        channel_max: s.channel_max.clone(),
                        method: None,
                    },
                )
            })
            .collect();
        RangeTable {
            onnxq_version: crate::VERSION.to_string(),
            model_sha256: model_sha256.to_string(),
            samples_sha256: collected.samples_sha256.clone(),
            samples: collected.samples,
            method: opts.method,
            percentile: opts.percentile,
            target: opts.target,
            tensors,
        }
    }

    /// Applies per-tensor choices (`method: auto`): each chosen tensor's
    /// range and method.
    pub fn apply_choices(&mut self, choices: &BTreeMap<String, super::choose::Choice>) {
        for (name, c) in choices {
            if let Some(t) = self.tensors.get_mut(name) {
                t.lo = c.lo;
                t.hi = c.hi;
                t.method = Some(c.method);
            }
        }
    }

    /// How many tensors each chosen method got (`method: auto`).
    pub fn chosen(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for t in self.tensors.values() {
            if let Some(c) = t.method {
                *m.entry(c.name()).or_insert(0) += 1;
            }
        }
        m
    }

    /// Writes the table as JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::onnx::save::write_atomic(path, (json + "\n").as_bytes())
    }

    /// Reads a table.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::onnx::read_text(path)?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!("{}: not a calibration table: {e}", path.display()))
        })
    }

    /// Refuses a table made for another model.
    pub fn check_model(&self, path: &Path, model_sha256: &str) -> Result<()> {
        if self.model_sha256 != model_sha256 {
            return Err(Error::Invalid(format!(
                "{}: calibration table was made for another model (model sha256 {}, this model {})",
                path.display(),
                self.model_sha256,
                model_sha256
            )));
        }
        Ok(())
    }
}
