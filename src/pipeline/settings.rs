//! The run's settings: the options after their defaults, and the checks
//! between them (format and mode, target and format, thresholds, effort),
//! before any stage runs.

use super::{Options, Samples};
use crate::error::{Error, Result};
use crate::lower::Target;
use crate::quantize::{Format, Mode};
use crate::tune::Budget;
use crate::verify::Thresholds;

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// The options after defaults, and the checks between them.
pub(super) struct Settings {
    pub(super) mode: Mode,
    pub(super) format: Format,
    pub(super) target: Target,
    pub(super) auto: bool,
    pub(super) budget: Budget,
    pub(super) effort: f64,
    pub(super) max_ratio: f64,
    pub(super) thresholds: Thresholds,
    pub(super) calib: Option<Samples>,
}

pub(super) fn settings(o: &Options, warnings: &mut Vec<String>) -> Result<Settings> {
    let recipe = &o.recipe;
    let calib = o.calibration()?;
    if calib.is_some() && recipe.ranges.is_some() {
        return Err(invalid(
            "give calibration samples (calib) or a calibration table (ranges), not both",
        ));
    }
    let mode = recipe.mode.unwrap_or(Mode::Static);
    let qdq_only = recipe.target.filter(|t| t.qdq_only());
    let format = recipe.format.unwrap_or(if qdq_only.is_some() {
        Format::Qdq
    } else {
        Format::Qoperator
    });
    if let (Some(t), Format::Qoperator) = (qdq_only, format) {
        return Err(invalid(match t {
            Target::Openvino => "--target openvino writes the qdq format: OpenVINO's ONNX frontend dequantizes QLinearConv and \
             QLinearMatMul weights along axis 1, so per-channel qoperator models fail to load there, or load \
             and compute wrong results where a layer has as many input as output channels",
            _ => "--target tensorrt writes the qdq format: TensorRT's explicit quantization reads Q/DQ pairs, not \
             integer operators",
        }));
    }
    if let (Some(t), Mode::Dynamic) = (qdq_only, mode) {
        return Err(invalid(format!(
            "--target {} writes the qdq format, which is for static quantization; drop --mode dynamic",
            t.name()
        )));
    }
    if mode == Mode::Dynamic && format == Format::Qdq {
        return Err(invalid("--mode dynamic writes integer operators (DynamicQuantizeLinear, MatMulInteger); --format qdq is for static quantization"));
    }
    if mode == Mode::Static && calib.is_none() && recipe.ranges.is_none() {
        return Err(invalid(
            "quantize needs calibration samples (--calib SRC) or a table (--ranges JSON)",
        ));
    }
    if format == Format::Qdq && recipe.target.is_some() && qdq_only.is_none() {
        warnings.push(
            "--target applies to the qoperator format; the QDQ output uses standard operators only"
                .into(),
        );
    }
    let max_ratio = recipe.max_range_ratio.unwrap_or(100.0);
    if max_ratio.is_nan() || max_ratio < 1.0 {
        return Err(invalid(format!(
            "max-range-ratio {max_ratio} must be at least 1"
        )));
    }
    let effort = recipe.auto_effort.unwrap_or(1.0);
    if !(effort.is_finite() && effort > 0.0) {
        return Err(invalid(format!(
            "auto-effort {effort} must be a positive number (a multiple of the first build and gate's work)"
        )));
    }
    Ok(Settings {
        mode,
        format,
        target: recipe.target.unwrap_or(Target::Onnx),
        auto: recipe.auto.unwrap_or(true),
        budget: Budget::parse(recipe.max_float.as_deref().unwrap_or("10%"))?,
        effort,
        max_ratio,
        thresholds: recipe.thresholds(),
        calib,
    })
}
