//! The stages of one run, in order: options resolved (`settings.rs`), the model prepared
//! (and equalized), then static (ranges, guard, GPTQ, bias correction,
//! build, gate, automatic mixed precision) or dynamic quantization, then
//! onnxq's metadata stamped and the report assembled.

use super::auto::{auto_mixed_precision, Bound};
use super::ranges::{guard_ranges, range_options, Ranges};
use super::report::{Calibration, GptqOutcome, ModelCheck, Report};
use super::settings::{settings, Settings};
use super::steps::{better, build, worst_sqnr, Built, Clock, Gate, Stage};
use super::{in_model, Options, Quantized, Samples};
use crate::calibrate::gram::GramProbe;
use crate::calibrate::samples::SampleSource;
use crate::calibrate::{model_sha256, CollectOptions};
use crate::error::{Error, Result};
use crate::ir::types::{input_specs, Dim};
use crate::ir::Model;
use crate::onnx::LoadedModel;
use crate::passes::{prepare, PassOptions};
use crate::quantize::dynamic::{quantize_dynamic, MIN_OPSET as DYNAMIC_MIN_OPSET};
use crate::quantize::{plan_model, Format, Mode, QuantizeConfig};
use crate::tune::bias::{correct_biases, Corrected};
use crate::tune::gptq::{gram_probes, round_weights, FUSED_ENTRIES, KEPT_INPUT_BYTES};
use crate::verify::Verdict;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// What static or dynamic quantization hands back.
struct Outcome {
    built: Built,
    verdict: Verdict,
    calibration: Calibration,
    calibrate_secs: f64,
    range_guard: Vec<super::GuardedNode>,
    mixed: Option<crate::tune::MixedPrecision>,
    corrected: Vec<Corrected>,
    gptq: Option<GptqOutcome>,
}

/// Everything static and dynamic quantization share.
struct Run<'a> {
    o: &'a Options,
    s: &'a Settings,
    cfg: QuantizeConfig,
    fp32: &'a Model,
    gate: &'a Gate<'a>,
    fingerprint: &'a str,
    /// The model's name for errors.
    what: &'a str,
    warnings: &'a mut Vec<String>,
}

pub(super) fn run(loaded: &LoadedModel, o: &Options) -> Result<Quantized> {
    let mut warnings = Vec::new();
    let s = settings(o, &mut warnings)?;
    let recipe = &o.recipe;
    let cfg = QuantizeConfig::from_recipe(recipe)?;
    if cfg.has_wide() && (s.format != Format::Qdq || s.mode == Mode::Dynamic) {
        return Err(invalid("16-bit activations (recipe tensors with type uint16/int16) need --format qdq (opset 21): the integer operators take 8 bits"));
    }
    let clock = Clock::default();
    let what = loaded.label();
    let size_before = prost::Message::encoded_len(&loaded.proto) as u64;
    // The model's fingerprint (its encoded bytes hashed: a third of a
    // second for 100 MB) on another thread while preparation runs on this
    // one, unless one worker was asked for.
    let fingerprint_of = || model_sha256(&loaded.proto);
    let (fingerprint, prepared) = std::thread::scope(|scope| {
        let hashing = (o.jobs != 1).then(|| scope.spawn(fingerprint_of));
        let prepared = clock.time(Stage::Prepare, || -> Result<_> {
            let mut model = Model::from_proto(&loaded.proto).map_err(|e| in_model(&what, e))?;
            let opset_before = model.onnx_opset()?;
            let min_opset = match s.mode {
                Mode::Static => cfg.min_opset(),
                Mode::Dynamic => DYNAMIC_MIN_OPSET,
            };
            let want = recipe.opset.unwrap_or(0).max(min_opset);
            let opts = PassOptions {
                target_opset: (want > opset_before).then_some(want),
                ..Default::default()
            };
            prepare(&mut model, &opts).map_err(|e| in_model(&what, e))?;
            Ok((model, opset_before))
        });
        let fingerprint = match hashing.map(|h| h.join()) {
            Some(Ok(f)) => f,
            _ => fingerprint_of(),
        };
        (fingerprint, prepared)
    });
    let (mut model, opset_before) = prepared?;
    // Cross-layer equalization: the working model is rescaled, the gate
    // still compares with the prepared model as given. On by default when
    // calibrating here (docs/defaults.md: better or equal on 10 of 11
    // suite models); a ranges table was made without it.
    let equalize = match (recipe.equalize, &recipe.ranges) {
        (Some(true), Some(_)) if s.mode == Mode::Static => return Err(invalid("--equalize rescales activations, so a --ranges table made without it does not fit: calibrate with --calib SRC instead (or --equalize false)")),
        (Some(e), _) => e,
        (None, ranges) => s.mode == Mode::Static && ranges.is_none(),
    };
    let reference = equalize.then(|| model.clone());
    let equalized = if equalize {
        let e = clock.time(Stage::Equalize, || {
            crate::passes::equalize::equalize(&mut model)
        });
        Some(e.map_err(|e| in_model(&what, e))?)
    } else {
        None
    };
    let fp32 = model;
    let reference = reference.as_ref().unwrap_or(&fp32);

    // The gate's samples: given, else the calibration samples, else
    // random inputs (symbolic dims nobody sized are 1).
    let specs = input_specs(&fp32.graph);
    let mut gate_dims = recipe.dims.clone();
    let on_calibration = o.validation.is_none() && recipe.validate.is_none() && s.calib.is_some();
    let validation = if let Some(v) = &o.validation {
        v.clone().decoded(recipe)?
    } else if let Some(v) = &recipe.validate {
        Samples::Spec(v.clone()).decoded(recipe)?
    } else if let Some(c) = &s.calib {
        c.clone()
    } else {
        for d in specs.iter().flat_map(|s| s.dims.iter().flatten()) {
            if let Dim::Symbolic(name) = d {
                gate_dims.entry(name.clone()).or_insert(1);
            }
        }
        warnings.push("no --validate or --calib samples: the parity gate runs on random:8 inputs; give --validate SRC for a meaningful check".into());
        Samples::Spec("random:8:0".into())
    };
    let gate = Gate {
        reference,
        source: validation.open(&specs, &gate_dims, "validation samples")?,
        arith: o.arith,
        thresholds: s.thresholds.clone(),
        rescaled: equalized
            .as_ref()
            .map(|e| e.rescaled.clone())
            .unwrap_or_default(),
        clock: &clock,
        pool: crate::calibrate::worker_pool(o.jobs)?.0,
        references: Default::default(),
        on_calibration,
    };
    let mut run = Run {
        o,
        s: &s,
        cfg,
        fp32: &fp32,
        gate: &gate,
        fingerprint: &fingerprint,
        what: &what,
        warnings: &mut warnings,
    };
    let out = match s.mode {
        Mode::Static => run.quantize_static()?,
        Mode::Dynamic => run.quantize_dynamic()?,
    };
    let mut timings = clock.get();
    timings.calibrate = out.calibrate_secs;
    let start = Instant::now();
    let format_name = match (s.mode, s.format) {
        (Mode::Dynamic, _) => "dynamic",
        (_, f) => f.name(),
    };
    // The QOperator format (dynamic mode's too) records its target, and
    // so do the targets that take QDQ only.
    let target_name =
        (s.format == Format::Qoperator || s.target.qdq_only()).then_some(s.target.name());
    let mut model = out.built.model;
    model.set_metadata("onnxq.version", crate::VERSION);
    model.set_metadata("onnxq.format", format_name);
    if let Some(t) = target_name {
        model.set_metadata("onnxq.target", t);
    }
    model.set_metadata("onnxq.recipe", &recipe.to_yaml()?);
    let calibration_json =
        serde_json::to_string(&out.calibration).map_err(|e| invalid(e.to_string()))?;
    model.set_metadata("onnxq.calibration", &calibration_json);
    if let Some(m) = out.mixed.as_ref().filter(|m| !m.kept_float.is_empty()) {
        let key = if m.kept_as == "float" {
            "onnxq.kept_float"
        } else {
            "onnxq.kept_wide"
        };
        model.set_metadata(key, &m.kept_float.join(","));
    }
    if equalized.as_ref().is_some_and(|e| e.pairs > 0) {
        // `onnxq check` redoes the (deterministic) balance on its FP32
        // reference to compare the rescaled layers.
        model.set_metadata("onnxq.equalized", "true");
    }
    let verdict = out.verdict;
    let parity: serde_json::Map<String, serde_json::Value> = verdict
        .outputs
        .iter()
        .map(|o| {
            let v = serde_json::json!({"sqnr_db": o.sqnr_db, "cosine": o.cosine, "top1": o.top1_agreement});
            (o.name.clone(), v)
        })
        .collect();
    let parity = serde_json::json!({"samples": verdict.samples, "source": validation.label(), "arith": verdict.arith, "outputs": parity});
    model.set_metadata("onnxq.parity", &parity.to_string());
    let mut proto = model.to_proto()?;
    crate::onnx::portable_value_info(&mut proto);
    timings.build += start.elapsed().as_secs_f64();
    let mut notes = Vec::new();
    if s.mode == Mode::Static && s.calib.is_none() {
        if recipe.bias_correction.is_none() {
            notes.push("bias correction: off (it measures on calibration samples; a --ranges table has none)".to_string());
        }
        if recipe.gptq.is_none() {
            notes.push("error-compensating rounding: off (it measures on calibration samples; a --ranges table has none)".to_string());
        }
        if recipe.equalize.is_none() {
            notes.push(
                "cross-layer equalization: off (the --ranges table was calibrated without it)"
                    .to_string(),
            );
        }
    }
    let report = Report {
        onnxq_version: crate::VERSION,
        model: loaded
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        output: String::new(),
        format: format_name,
        mode: s.mode.name(),
        target: target_name,
        opset_before,
        opset_after: model.onnx_opset()?,
        size_before,
        size_after: prost::Message::encoded_len(&proto) as u64,
        calibration: out.calibration,
        quantization: out.built.report,
        lowering: out.built.lowering,
        range_guard: out.range_guard,
        mixed_precision: out.mixed,
        bias_correction: out.corrected,
        gptq: out.gptq,
        equalization: equalized,
        parity: verdict,
        validation: validation.label().to_string(),
        timings,
        warnings,
        notes,
        written: false,
    };
    Ok(Quantized {
        model: proto,
        report,
    })
}

/// Bias correction, the built model and its gate verdict, for one choice
/// of weights.
struct Finished {
    base: Model,
    corrected: Vec<Corrected>,
    built: Built,
    verdict: Verdict,
}

impl Run<'_> {
    /// How calibration collects: with the layers' mean inputs when bias
    /// correction will use them, GPTQ's Gram probes, and the outputs the
    /// gate compares with when it runs on the same samples.
    fn collect(
        &self,
        input_means: bool,
        (grams, gram_inputs): (Vec<GramProbe>, Vec<GramProbe>),
    ) -> CollectOptions {
        CollectOptions {
            histograms: false,
            per_channel: false,
            jobs: self.o.jobs,
            progress: self.o.progress,
            input_means,
            grams,
            gram_inputs,
            gram_input_bytes: KEPT_INPUT_BYTES,
            keep_outputs: if self.gate.on_calibration {
                crate::verify::REFERENCE_BYTES
            } else {
                0
            },
        }
    }

    fn quantize_static(&mut self) -> Result<Outcome> {
        let (o, s, fp32, gate) = (self.o, self.s, self.fp32, self.gate);
        let recipe = &o.recipe;
        let clock = gate.clock;
        let what = self.what;
        let plan = plan_model(fp32, &self.cfg).map_err(|e| in_model(what, e))?;
        let specs = input_specs(&fp32.graph);
        let calib = match &s.calib {
            Some(c) => Some(c.open(&specs, &recipe.dims, "calibration samples")?),
            None => None,
        };
        let ropts = range_options(recipe, &self.cfg)?;
        let bias_correction = recipe.bias_correction.unwrap_or(s.calib.is_some());
        let gptq_on = recipe.gptq.unwrap_or(s.calib.is_some());
        // GPTQ's Gram matrices, summed within the calibration pass (up to
        // FUSED_ENTRIES), the other layers' inputs kept by it (up to
        // KEPT_INPUT_BYTES; the rest in GPTQ's own passes).
        let grams = if calib.is_some() && gptq_on && recipe.ranges.is_none() {
            gram_probes(fp32, FUSED_ENTRIES)
                .map_err(|e| in_model("error-compensating weight rounding", e))?
        } else {
            (Vec::new(), Vec::new())
        };
        let mut ranges = Ranges::obtain(
            fp32,
            &plan.needed_ranges(fp32),
            recipe.ranges.as_deref().map(Path::new),
            s.calib.as_ref().zip(calib.clone()),
            ropts,
            self.collect(bias_correction, grams),
            self.fingerprint,
            self.warnings,
        )?;
        // The FP32 outputs calibration computed are the gate's references
        // (the equalized model's: the same function, to float rounding).
        for (i, (name, outs)) in std::mem::take(&mut ranges.outputs).into_iter().enumerate() {
            gate.references.put(i, &name, Arc::new(outs));
        }
        let range_guard = guard_ranges(fp32, &mut self.cfg, &mut ranges, s.max_ratio)
            .map_err(|e| in_model(what, e))?;
        let map = ranges.map();
        let calib_source = |what: &str| -> Result<&Arc<dyn SampleSource>> {
            calib.as_ref().ok_or_else(|| {
                invalid(format!("{what} measures on the calibration samples: give --calib SRC (or --{what} false)"))
            })
        };
        let jobs = o.jobs;
        // Bias correction, quantization and the gate, on the FP32 weights
        // or on GPTQ's (whose scales `cfg` pins). Parity is always against
        // the model as given.
        // The layers' mean inputs, taken by calibration (bias correction
        // measures the ones it lacks).
        let input_means = std::mem::take(&mut ranges.input_means);
        let measured = std::mem::take(&mut ranges.grams);
        let kept_inputs = std::mem::take(&mut ranges.gram_inputs);
        // The first build and gate's work and time: what bounds the
        // automatic mode. Work counts passes over one sample as the stages
        // define them: GPTQ's Gram matrices and bias correction's mean
        // inputs are one pass each, whether they run alone or within the
        // calibration pass, so the bound (and the model it leads to) does
        // not move when a stage's work is shared or sped up.
        let n_calib = calib.as_ref().map_or(0, |c| c.len());
        let work = std::cell::Cell::new(0usize);
        let first_start = Instant::now();
        let finish = |weights: &Model, cfg: &QuantizeConfig| -> Result<Finished> {
            work.set(work.get() + gate.source.len());
            let (base, corrected) = if bias_correction {
                work.set(work.get() + n_calib);
                let source = calib_source("bias-correction")?;
                clock
                    .time(Stage::BiasCorrection, || {
                        correct_biases(
                            fp32,
                            weights,
                            cfg,
                            &map,
                            source.as_ref(),
                            &input_means,
                            jobs,
                        )
                    })
                    .map_err(|e| in_model("bias correction", e))?
            } else {
                (weights.clone(), Vec::new())
            };
            let built = clock.time(Stage::Build, || {
                build(&base, cfg, &map, (s.format, s.target)).map_err(|e| in_model(what, e))
            })?;
            let verdict = gate.judge(&built.model)?;
            Ok(Finished {
                base,
                corrected,
                built,
                verdict,
            })
        };
        let mut gptq = None;
        let done = if gptq_on {
            let source = calib_source("gptq")?;
            work.set(work.get() + n_calib);
            let r = clock
                .time(Stage::Gptq, || {
                    round_weights(
                        fp32,
                        &self.cfg,
                        &map,
                        source.as_ref(),
                        (&measured, &kept_inputs),
                        jobs,
                    )
                })
                .map_err(|e| in_model("error-compensating weight rounding", e))?;
            drop(kept_inputs);
            let mut pinned = self.cfg.clone();
            pinned.weight_grids = r.grids;
            let with = finish(&r.model, &pinned)?;
            // Each layer's gain is on its own FP32 inputs; the whole model,
            // on the gate's samples, decides whether it stays. A model the
            // gate passes is kept as it is: the nearest-rounding one would
            // cost a second bias correction, build and gate, for margins
            // within the noise of the gate's samples (docs/defaults.md).
            let (done, check) = if r.rounded.iter().any(|r| r.taken) {
                let compensated_db = worst_sqnr(&with.verdict);
                let (nearest_db, kept, without) = if with.verdict.passed {
                    (None, true, None)
                } else {
                    let without = finish(fp32, &self.cfg)?;
                    let kept = better(&with.verdict, &without.verdict);
                    (Some(worst_sqnr(&without.verdict)), kept, Some(without))
                };
                let check = Some(ModelCheck {
                    compensated_db,
                    nearest_db,
                    kept,
                });
                match without {
                    Some(without) if !kept => (without, check),
                    _ => {
                        self.cfg = pinned;
                        (with, check)
                    }
                }
            } else {
                (with, None)
            };
            gptq = Some(GptqOutcome {
                layers: r.rounded,
                skipped: r.skipped,
                model_check: check,
            });
            done
        } else {
            finish(fp32, &self.cfg)?
        };
        let Finished {
            base,
            corrected,
            mut built,
            verdict,
        } = done;
        // The automatic mode starts from the failing verdict's layers.
        let mut verdict = gate.with_layers(&built.model, verdict)?;
        let bound = Bound {
            effort: s.effort,
            first_work: work.get(),
            first_secs: first_start.elapsed().as_secs_f64(),
        };
        let mut mixed = None;
        if !verdict.passed && s.auto {
            // TensorRT has no 16-bit integer activations.
            let wide = s.format == Format::Qdq
                && s.target != crate::lower::Target::Tensorrt
                && fp32.onnx_opset()? >= 21;
            let (rec, last) = auto_mixed_precision(
                fp32,
                &self.cfg,
                &mut ranges,
                (s.budget, jobs, wide),
                (&verdict, gate, bound),
                |c, r| {
                    // Float layers get their own weights and biases back.
                    let m = crate::tune::bias::restore(&base, &corrected, &c.float_ids);
                    let m = match &gptq {
                        Some(g) if g.kept() => {
                            crate::tune::gptq::restore(&m, &g.layers, &c.float_ids)
                        }
                        _ => m,
                    };
                    let b = clock.time(Stage::Build, || build(&m, c, r, (s.format, s.target)))?;
                    let v = gate.judge(&b.model)?;
                    Ok((v.passed, v.worst_margin_db(), (b, v)))
                },
            )?;
            if let Some((b, v)) = last {
                verdict = gate.with_layers(&b.model, v)?;
                built = b;
            }
            mixed = Some(rec);
        }
        let t = &ranges.table;
        let calibration = Calibration {
            source: ranges.source_note.clone(),
            method: t.method.name().to_string(),
            percentile: Some(t.percentile),
            samples: t.samples,
            samples_sha256: t.samples_sha256.clone(),
            model_sha256: self.fingerprint.to_string(),
            chosen: t
                .chosen()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        Ok(Outcome {
            built,
            verdict,
            calibration,
            calibrate_secs: ranges.secs,
            range_guard,
            mixed,
            corrected,
            gptq,
        })
    }

    fn quantize_dynamic(&mut self) -> Result<Outcome> {
        if self.s.calib.is_some() || self.o.recipe.ranges.is_some() {
            self.warnings.push("--mode dynamic computes activation ranges at run time; the calibration samples are not used".into());
        }
        let clock = self.gate.clock;
        let mut model = self.fp32.clone();
        let report = clock
            .time(Stage::Build, || quantize_dynamic(&mut model, &self.cfg))
            .map_err(|e| in_model(self.what, e))?;
        let verdict = self.gate.judge(&model)?;
        let verdict = self.gate.with_layers(&model, verdict)?;
        Ok(Outcome {
            built: Built {
                model,
                report,
                lowering: None,
            },
            verdict,
            calibration: Calibration {
                method: "dynamic".into(),
                ..Calibration::default()
            },
            calibrate_secs: 0.0,
            range_guard: Vec::new(),
            mixed: None,
            corrected: Vec::new(),
            gptq: None,
        })
    }
}
