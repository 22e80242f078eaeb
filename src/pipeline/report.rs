//! What a pipeline run did, as data: the JSON report (`--report`), the
//! summary the CLI prints ([`super::summary`]) and the Python package's
//! dict are all this one struct.

use super::ranges::GuardedNode;
use crate::lower::LowerReport;
use crate::passes::equalize::Equalized;
use crate::quantize::QuantizeReport;
use crate::tune::bias::Corrected;
use crate::tune::gptq::{Rounded, Skipped};
use crate::tune::MixedPrecision;
use crate::verify::Verdict;
use std::collections::BTreeMap;

/// The report of one `quantize` run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub onnxq_version: &'static str,
    /// The input model's path (empty for a model given in memory).
    pub model: String,
    /// Where the model was written (empty when the caller writes it).
    pub output: String,
    /// `qoperator`, `qdq` or `dynamic`.
    pub format: &'static str,
    pub mode: &'static str,
    /// Runtime family of the QOperator output (absent for QDQ/dynamic).
    pub target: Option<&'static str>,
    pub opset_before: i64,
    pub opset_after: i64,
    /// Encoded protobuf sizes in bytes.
    pub size_before: u64,
    pub size_after: u64,
    pub calibration: Calibration,
    pub quantization: QuantizeReport,
    pub lowering: Option<LowerReport>,
    /// Concat/Add kept float because their inputs' ranges are too far
    /// apart.
    pub range_guard: Vec<GuardedNode>,
    /// What automatic mixed precision did (absent when the first gate
    /// passed, or with `auto: false`).
    pub mixed_precision: Option<MixedPrecision>,
    /// Layers whose bias took out their weights' mean rounding shift.
    pub bias_correction: Vec<Corrected>,
    /// Error-compensating weight rounding per layer (absent when it was
    /// off), the layers it left to nearest rounding, and whether the
    /// whole model kept it.
    pub gptq: Option<GptqOutcome>,
    /// What cross-layer equalization did (absent when it was off).
    pub equalization: Option<Equalized>,
    pub parity: Verdict,
    /// The gate's samples (their source or label).
    pub validation: String,
    /// Seconds per stage.
    pub timings: Timings,
    /// Things the user should know that did not stop the run (random
    /// samples, options that do not apply).
    pub warnings: Vec<String>,
    /// Default features that were off, and why.
    pub notes: Vec<String>,
    /// Whether the model was written (by [`super::quantize_file`]).
    pub written: bool,
}

impl Report {
    /// Whether the quantized model passed the parity gate.
    pub fn passed(&self) -> bool {
        self.parity.passed
    }
}

/// How the activation ranges were obtained (dynamic mode: only
/// `method: dynamic`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Calibration {
    /// The samples' source, or `table PATH`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// `minmax`, `percentile`, …; `dynamic` when ranges are computed at
    /// run time.
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    #[serde(skip_serializing_if = "is_zero")]
    pub samples: usize,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub samples_sha256: String,
    /// Fingerprint of the model as loaded.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model_sha256: String,
    /// With method `auto`: how many tensors each method got.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub chosen: BTreeMap<String, usize>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Wall seconds per stage. Each second is counted once: the builds and
/// gates the GPTQ check and automatic mixed precision run are in `build`
/// and `gate`; `mixed_precision` is its ranking alone.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Timings {
    /// Reading the model (by [`super::quantize_file`]).
    pub load: f64,
    /// Graph preparation and opset upgrade.
    pub prepare: f64,
    /// Cross-layer equalization.
    pub equalize: f64,
    /// Activation statistics through tract, every tensor any plan needed.
    pub calibrate: f64,
    /// Error-compensating weight rounding (its Gram pass and solves).
    pub gptq: f64,
    /// Bias correction's passes.
    pub bias_correction: f64,
    /// Plans, Q/DQ insertion and lowering, every variant.
    pub build: f64,
    /// Parity comparisons, every variant.
    pub gate: f64,
    /// Automatic mixed precision's sensitivity ranking.
    pub mixed_precision: f64,
    /// Serializing and writing the model (by [`super::quantize_file`]).
    pub write: f64,
    /// The whole run.
    pub total: f64,
}

impl Timings {
    /// One line: the stages that took time, largest first.
    pub fn line(&self) -> String {
        let mut parts: Vec<(&str, f64)> = vec![
            ("load", self.load),
            ("prepare", self.prepare),
            ("equalize", self.equalize),
            ("calibrate", self.calibrate),
            ("gptq", self.gptq),
            ("bias correction", self.bias_correction),
            ("build", self.build),
            ("gate", self.gate),
            ("mixed precision", self.mixed_precision),
            ("write", self.write),
        ];
        parts.retain(|(_, s)| *s >= 0.005);
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        let list: Vec<String> = parts.iter().map(|(k, s)| format!("{k} {s:.2}")).collect();
        format!("{:.2} s ({})", self.total, list.join(", "))
    }
}

/// What error-compensating weight rounding did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GptqOutcome {
    pub layers: Vec<Rounded>,
    pub skipped: Vec<Skipped>,
    /// The whole model with and without it on the gate's samples (absent
    /// when no layer took it).
    pub model_check: Option<ModelCheck>,
}

impl GptqOutcome {
    /// Whether the written model carries its weights.
    pub fn kept(&self) -> bool {
        self.model_check.as_ref().is_some_and(|c| c.kept)
    }
}

/// The gate's worst-output SQNR with compensated and with nearest
/// rounding (each after bias correction), and which one was kept. The
/// nearest-rounding model is built only when the compensated one fails
/// the gate (`nearest_db` is null when it passed, and it is kept).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelCheck {
    pub compensated_db: f64,
    pub nearest_db: Option<f64>,
    pub kept: bool,
}
