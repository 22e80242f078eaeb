//! What every stage uses: the clock that times the stages, one build of a
//! quantized model (plan, Q/DQ, lowering), and the parity gate.

use super::in_model;
use super::report::Timings;
use crate::calibrate::samples::{Prefix, SampleSource};
use crate::error::Result;
use crate::exec::kernels::Arith;
use crate::ir::Model;
use crate::lower::{lower, LowerOptions, LowerReport, Target};
use crate::passes::equalize::ChannelScale;
use crate::quantize::{plan_model, Format, QuantizeConfig, QuantizeReport};
use crate::verify::{self, References, Thresholds, Verdict};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// A stage whose seconds [`Clock`] adds up.
#[derive(Clone, Copy)]
pub(super) enum Stage {
    Prepare,
    Equalize,
    Gptq,
    BiasCorrection,
    Build,
    Gate,
    MixedPrecision,
}

/// Seconds per stage, added to from closures that only borrow it.
#[derive(Default)]
pub(super) struct Clock(Cell<Timings>);

impl Clock {
    /// Runs `f`, counting its time to `stage`.
    pub(super) fn time<T>(&self, stage: Stage, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        let secs = start.elapsed().as_secs_f64();
        let mut t = self.0.get();
        *match stage {
            Stage::Prepare => &mut t.prepare,
            Stage::Equalize => &mut t.equalize,
            Stage::Gptq => &mut t.gptq,
            Stage::BiasCorrection => &mut t.bias_correction,
            Stage::Build => &mut t.build,
            Stage::Gate => &mut t.gate,
            Stage::MixedPrecision => &mut t.mixed_precision,
        } += secs;
        self.0.set(t);
        out
    }

    pub(super) fn get(&self) -> Timings {
        self.0.get()
    }
}

/// One quantized model: the plan under `cfg`, Q/DQ insertion, lowering.
pub(super) struct Built {
    pub model: Model,
    pub report: QuantizeReport,
    pub lowering: Option<LowerReport>,
}

/// Builds the quantized model of `fp32` under `cfg` and `ranges`.
pub(super) fn build(
    fp32: &Model,
    cfg: &QuantizeConfig,
    ranges: &BTreeMap<String, (f32, f32)>,
    (format, target): (Format, Target),
) -> Result<Built> {
    let mut model = fp32.clone();
    let plan = plan_model(&model, cfg)?;
    let report = crate::quantize::quantize(&mut model, &plan, ranges, cfg)?;
    let lowering = match format {
        Format::Qoperator => Some(lower(&mut model, &LowerOptions { target })?),
        Format::Qdq => None,
    };
    Ok(Built {
        model,
        report,
        lowering,
    })
}

/// Validation samples a failing verdict is also compared layer by layer on
/// (the report's worst layers; the automatic mode's pointers to its
/// candidates, which it ranks on as many samples,
/// [`super::auto::RANKING_SAMPLES`]).
pub(super) const LAYER_SAMPLES: usize = super::auto::RANKING_SAMPLES;

/// The parity gate: the model as given (tract) against a quantized one
/// (the int8 executor) on the validation samples.
pub(super) struct Gate<'a> {
    pub reference: &'a Model,
    pub source: Arc<dyn SampleSource>,
    pub arith: Arith,
    pub thresholds: Thresholds,
    /// Tensors cross-layer equalization rescaled (scaled back before the
    /// per-layer comparison).
    pub rescaled: BTreeMap<String, ChannelScale>,
    pub clock: &'a Clock,
    /// The workers the comparison runs samples on (`--jobs`).
    pub pool: std::sync::Arc<rayon::ThreadPool>,
    /// The reference's outputs on the validation samples, kept between
    /// gates (and from calibration when it ran the same samples).
    pub references: References,
    /// Whether the validation samples are the calibration samples.
    pub on_calibration: bool,
}

impl Gate<'_> {
    /// The verdict on `model`'s outputs: every sample runs only the INT8
    /// model, against the references kept where they are. Layers are
    /// compared afterwards, and only for a verdict that needs them
    /// ([`Gate::with_layers`]).
    pub(super) fn judge(&self, model: &Model) -> Result<Verdict> {
        self.compare(model, self.source.as_ref(), 0)
    }

    /// `verdict` (the one [`Gate::judge`] gave `model`) with its quantized
    /// tensors compared on the first [`LAYER_SAMPLES`] samples when it
    /// failed: the worst layers the report shows and the automatic mode
    /// starts from. A passing verdict is returned as it is: comparing
    /// every layer holds each sample's intermediates in both models, which
    /// took the PaddleOCR detector's gate at 640 px from 4.4 to 6.0 s and
    /// its peak from 0.77 to 1.16 GB (`onnxq check` lists them for any
    /// model).
    pub(super) fn with_layers(&self, model: &Model, mut verdict: Verdict) -> Result<Verdict> {
        if verdict.passed || verdict.layer_samples > 0 {
            return Ok(verdict);
        }
        let few = Prefix {
            inner: self.source.as_ref(),
            n: LAYER_SAMPLES,
        };
        let layered = self.compare(model, &few, LAYER_SAMPLES)?;
        verdict.layers = layered.layers;
        verdict.layer_samples = layered.layer_samples;
        Ok(verdict)
    }

    fn compare(
        &self,
        model: &Model,
        source: &dyn SampleSource,
        layer_samples: usize,
    ) -> Result<Verdict> {
        let how = verify::Comparison {
            arith: self.arith,
            thresholds: &self.thresholds,
            layer_samples,
            rescaled: &self.rescaled,
            references: &self.references,
            runtime: None,
        };
        self.clock.time(Stage::Gate, || {
            self.pool
                .install(|| verify::compare(self.reference, model, source, &how))
                .map_err(|e| in_model("the parity check", e))
        })
    }
}

/// The worst output's SQNR of a verdict.
pub(super) fn worst_sqnr(v: &Verdict) -> f64 {
    v.outputs
        .iter()
        .map(|o| o.sqnr_db)
        .fold(f64::INFINITY, f64::min)
}

/// Whether verdict `a` beats `b`: a pass beats a failure, then the larger
/// worst gate margin ([`Verdict::worst_margin_db`]) wins; a tie goes to `b`.
pub(super) fn better(a: &Verdict, b: &Verdict) -> bool {
    match (a.passed, b.passed) {
        (true, false) => true,
        (false, true) => false,
        _ => a.worst_margin_db().total_cmp(&b.worst_margin_db()).is_gt(),
    }
}
