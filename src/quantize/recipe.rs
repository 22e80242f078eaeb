//! The YAML recipe (`onnxq quantize --config recipe.yaml`): every
//! `quantize` option, plus per-node and per-tensor overrides. Keys are the
//! command-line flag names (`per-channel`, `op-types`, …). Unknown keys are
//! an error naming the key. Command-line flags override the recipe
//! ([`Recipe::overlay`]); the merged recipe is what the model's metadata
//! records.
//!
//! ```yaml
//! calib: testdata/digits/cnn_calib   # or ranges: table.json
//! method: percentile
//! percentile: 99.99
//! activations: uint8                 # uint8 (asymmetric) | int8 (symmetric)
//! weights: int8                      # int8 | uint8 (symmetric)
//! per-channel: true
//! reduce-range: true                # 7-bit weights (default for int8 weights with uint8 activations or the qdq format)
//! op-types: [default, Add]           # "default" = the default op set
//! exclude: ["head/*"]                # node names or globs
//! auto: true                         # keep harmful nodes float when the gate fails
//! max-float: 10%                     # …at most this many (count or % of candidates)
//! max-range-ratio: 100               # Concat/Add inputs this far apart stay float
//! bias-correction: true              # take weight rounding's mean shift out of biases
//! equalize: true                     # cross-layer equalization of layer pairs first
//! gptq: true                         # error-compensating weight rounding (GPTQ)
//! nodes:
//!   conv1: {per-channel: false}
//!   fc_out: {keep-float: true}
//! tensors:
//!   logits: {range: [-20, 20]}
//!   relu2_out: {scale: 0.05, zero-point: 0, type: uint8}
//!   attn_scores: {type: uint16}      # 16-bit: --format qdq at opset 21 (--opset 21)
//! ```

use super::params::QType;
use crate::error::{Error, Result};
use crate::verify::{Metric, Thresholds};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Overrides for one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeOverride {
    /// Leave the node in float (like `--exclude`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_float: bool,
    /// Weights per channel (true) or per tensor (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_channel: Option<bool>,
    /// Weight type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<QType>,
    /// Symmetric weights (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_symmetric: Option<bool>,
}

/// Overrides for one tensor (activation).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TensorOverride {
    /// Never quantize this tensor (nodes that need it quantized stay float).
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_float: bool,
    /// Integer type of this tensor.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub qtype: Option<QType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric: Option<bool>,
    /// Range to use instead of the calibrated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[f32; 2]>,
    /// Explicit scale and zero point (both or neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_point: Option<i32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TensorOverride {
    /// Whether it sets parameters (so the tensor cannot share another's).
    pub fn sets_params(&self) -> bool {
        self.qtype.is_some()
            || self.symmetric.is_some()
            || self.range.is_some()
            || self.scale.is_some()
            || self.zero_point.is_some()
    }

    /// Checks values that do not depend on the model.
    pub fn check(&self, tensor: &str) -> Result<()> {
        let bad = |reason: String| Err(Error::tensor(tensor, format!("recipe: {reason}")));
        if let Some([lo, hi]) = self.range {
            if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                return bad(format!("range [{lo}, {hi}] is not an interval"));
            }
        }
        match (self.scale, self.zero_point) {
            (Some(s), Some(z)) => {
                if !(s.is_finite() && s > 0.0) {
                    return bad(format!("scale {s} must be positive and finite"));
                }
                let t = self.qtype.unwrap_or(QType::Uint8);
                if z < t.qmin() || z > t.qmax() {
                    return bad(format!(
                        "zero-point {z} is outside {} ({}..={})",
                        t.name(),
                        t.qmin(),
                        t.qmax()
                    ));
                }
                if self.range.is_some() {
                    return bad("give either range or scale/zero-point, not both".into());
                }
            }
            (None, None) => {}
            _ => return bad("scale and zero-point go together".into()),
        }
        Ok(())
    }
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// QuantizeLinear/DequantizeLinear around float ops.
    Qdq,
    /// Integer operators (QLinearConv, QLinearMatMul, …), int8 between them.
    Qoperator,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Qdq => "qdq",
            Format::Qoperator => "qoperator",
        }
    }
}

/// Static (calibrated activation ranges) or dynamic (ranges computed at
/// run time) quantization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Static,
    Dynamic,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Static => "static",
            Mode::Dynamic => "dynamic",
        }
    }
}

/// Everything `onnxq quantize` can be told, as a file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Recipe {
    /// Output format: qoperator (default) or qdq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Runtime family for the qoperator format: onnx (default), ort, tract;
    /// openvino (implies the qdq format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<crate::lower::Target>,
    /// static (default) or dynamic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Calibration samples (see `onnxq calibrate --calib`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calib: Option<String>,
    /// A calibration table from `onnxq calibrate` (instead of calib).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<String>,
    /// Calibration method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<crate::calibrate::Method>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// Activation type: uint8 (asymmetric) or int8 (symmetric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<QType>,
    /// Weight type: int8 or uint8 (both symmetric unless overridden).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<QType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_channel: Option<bool>,
    /// 7-bit weights (for onnxruntime and OpenVINO on x86 CPUs without
    /// VNNI; default true for int8 weights with uint8 activations, or with
    /// int8 activations in the qdq format, except target tract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce_range: Option<bool>,
    /// Op types to quantize; "default" stands for the default set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_types: Option<Vec<String>>,
    /// Nodes to leave float: names or globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Sizes of symbolic input dimensions (for random samples).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dims: BTreeMap<String, usize>,
    /// Upgrade the opset to at least this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opset: Option<i64>,
    /// Validation samples for the parity gate (default: calib).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<String>,
    /// How image files (a folder or a list file as calib / validate) become
    /// the model's input: `resize=224x224,crop=center,rgb,mean=…,std=…`
    /// (see `calibrate::images`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<String>,
    /// A Hugging Face tokenizer.json: calib / validate are then text files,
    /// a sentence a line (see `calibrate::text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Tokens a sentence keeps at most (default 128, or the model's fixed
    /// sequence length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Gate: minimum SQNR (dB) of every output against FP32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sqnr: Option<f64>,
    /// Gate: minimum cosine similarity of every output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cosine: Option<f64>,
    /// Gate: minimum top-1 agreement of class-score outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_top1: Option<f64>,
    /// Gate: minimum top-1 agreement on the foreground positions of class
    /// probabilities over a map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_foreground_top1: Option<f64>,
    /// Gate: minimum agreement of the greedily decoded sequences of class
    /// probabilities over a sequence (1 − edit distance / FP32's symbols).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sequence_agreement: Option<f64>,
    /// Gate: minimum IoU of the `p > 0.5` masks of a Sigmoid map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_mask_iou: Option<f64>,
    /// Gate: minimum mean cosine per vector of an embedding output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_vector_cosine: Option<f64>,
    /// Gate: outputs held to exactly these metrics (`{name: {sqnr: 15}}`,
    /// metrics sqnr, cosine, top1, foreground_top1, sequence_agreement,
    /// mask_iou, vector_cosine;
    /// `{name: {}}`: not gated) instead of the ones their kind picks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gate_outputs: BTreeMap<String, BTreeMap<Metric, f64>>,
    /// Automatic mixed precision when the gate fails (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<bool>,
    /// Most nodes automatic mixed precision may keep float: a count or a
    /// percentage of the candidates ("10%", the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_float: Option<String>,
    /// Most work automatic mixed precision may spend, as a multiple of the
    /// first build and gate's (model runs over one sample; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_effort: Option<f64>,
    /// Concat/Add inputs whose magnitudes differ more than this stay float
    /// (default 100; `.inf` turns the guard off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_range_ratio: Option<f64>,
    /// Remove the mean output shift weight rounding causes from the biases
    /// (measured on the calibration samples; default true with calib).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_correction: Option<bool>,
    /// Cross-layer equalization of layer pairs (Conv → `[Relu]` → Conv,
    /// Gemm/MatMul alike) before calibration (default true with calib).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equalize: Option<bool>,
    /// Error-compensating weight rounding (GPTQ) on the calibration
    /// samples (default true with calib).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gptq: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodeOverride>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tensors: BTreeMap<String, TensorOverride>,
}

impl Recipe {
    /// Reads a recipe; unknown keys and bad values are errors naming them.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::onnx::read_text(path)?;
        Self::parse(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// The gate's thresholds: the recipe's, else the defaults.
    pub fn thresholds(&self) -> Thresholds {
        let d = Thresholds::default();
        Thresholds {
            min_sqnr_db: self.min_sqnr.unwrap_or(d.min_sqnr_db),
            min_cosine: self.min_cosine.unwrap_or(d.min_cosine),
            min_top1: self.min_top1.unwrap_or(d.min_top1),
            min_foreground_top1: self.min_foreground_top1.unwrap_or(d.min_foreground_top1),
            min_sequence_agreement: self
                .min_sequence_agreement
                .unwrap_or(d.min_sequence_agreement),
            min_mask_iou: self.min_mask_iou.unwrap_or(d.min_mask_iou),
            min_vector_cosine: self.min_vector_cosine.unwrap_or(d.min_vector_cosine),
            outputs: self.gate_outputs.clone(),
        }
    }

    /// Parses recipe text.
    pub fn parse(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(Recipe::default());
        }
        let r: Recipe =
            serde_norway::from_str(text).map_err(|e| Error::Invalid(format!("bad recipe: {e}")))?;
        for (name, t) in &r.tensors {
            t.check(name)?;
        }
        Ok(r)
    }

    /// `self` with every option `top` sets taken from `top` (command-line
    /// flags over the recipe); `exclude` lists are joined, override maps
    /// merged (top wins per key).
    pub fn overlay(mut self, top: Recipe) -> Recipe {
        macro_rules! take {
            ($($f:ident),*) => { $( if top.$f.is_some() { self.$f = top.$f; } )* };
        }
        take!(
            format,
            target,
            mode,
            calib,
            ranges,
            method,
            percentile,
            activations,
            weights,
            per_channel,
            reduce_range,
            op_types,
            opset,
            validate,
            preprocess,
            tokenizer,
            max_length,
            min_sqnr,
            min_cosine,
            min_top1,
            min_foreground_top1,
            min_sequence_agreement,
            min_mask_iou,
            min_vector_cosine,
            auto,
            max_float,
            auto_effort,
            max_range_ratio,
            bias_correction,
            equalize,
            gptq
        );
        for e in top.exclude {
            if !self.exclude.contains(&e) {
                self.exclude.push(e);
            }
        }
        self.dims.extend(top.dims);
        self.gate_outputs.extend(top.gate_outputs);
        self.nodes.extend(top.nodes);
        self.tensors.extend(top.tensors);
        self
    }

    /// The recipe as YAML (recorded in the output's metadata).
    pub fn to_yaml(&self) -> Result<String> {
        serde_norway::to_string(self).map_err(|e| Error::Invalid(format!("recipe: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
calib: testdata/digits/cnn_calib
method: percentile
percentile: 99.99
activations: uint8
weights: int8
per-channel: true
op-types: [default, Add]
exclude: ["head/*"]
nodes:
  conv1: {per-channel: false}
  fc_out: {keep-float: true}
tensors:
  logits: {range: [-20, 20]}
  relu2_out: {scale: 0.05, zero-point: 0, type: uint8}
"#;
        let r = Recipe::parse(text).unwrap();
        assert_eq!(r.method, Some(crate::calibrate::Method::Percentile));
        assert_eq!(r.nodes["conv1"].per_channel, Some(false));
        assert!(r.nodes["fc_out"].keep_float);
        assert_eq!(r.tensors["logits"].range, Some([-20.0, 20.0]));
        assert_eq!(r.tensors["relu2_out"].zero_point, Some(0));
        // Round trip through YAML.
        assert_eq!(Recipe::parse(&r.to_yaml().unwrap()).unwrap(), r);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Recipe::parse("per_channel: true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("per_channel"), "{e}");
        let e = Recipe::parse("nodes:\n  conv1: {keepfloat: true}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keepfloat"), "{e}");
        let e = Recipe::parse("tensors:\n  t: {scale: 0.1}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'t'") && e.contains("zero-point"), "{e}");
    }

    /// 7-bit weights by default wherever onnxruntime or OpenVINO compute
    /// u8 × s8 products (saturating pairs on x86 without VNNI): uint8
    /// activations, and int8 activations in the QDQ format; 8 bits for
    /// tract, QOperator s8×s8 and uint8 weights, and when asked.
    #[test]
    fn seven_bit_weights_where_a_runtime_saturates() {
        use crate::lower::Target;
        use crate::quantize::{params::QType, QuantizeConfig};
        let bits = |r: Recipe| QuantizeConfig::from_recipe(&r).unwrap().reduce_range;
        let int8 = Some(QType::Int8);
        assert!(bits(Recipe::default()));
        assert!(bits(Recipe {
            activations: int8,
            format: Some(Format::Qdq),
            ..Default::default()
        }));
        assert!(bits(Recipe {
            activations: int8,
            target: Some(Target::Openvino),
            ..Default::default()
        }));
        assert!(!bits(Recipe {
            activations: int8,
            ..Default::default()
        }));
        assert!(!bits(Recipe {
            activations: int8,
            format: Some(Format::Qdq),
            target: Some(Target::Tract),
            ..Default::default()
        }));
        assert!(!bits(Recipe {
            weights: Some(QType::Uint8),
            ..Default::default()
        }));
        assert!(!bits(Recipe {
            format: Some(Format::Qdq),
            reduce_range: Some(false),
            ..Default::default()
        }));
    }

    /// Target tensorrt: symmetric int8 activations, 8-bit weights, float
    /// biases, residual Adds quantized; asymmetric or 16-bit overrides
    /// refused, naming the tensor.
    #[test]
    fn tensorrt_takes_symmetric_int8_only() {
        use crate::quantize::{params::QType, QuantizeConfig};
        let trt = Recipe {
            target: Some(crate::lower::Target::Tensorrt),
            ..Default::default()
        };
        let cfg = QuantizeConfig::from_recipe(&trt).unwrap();
        assert_eq!(cfg.activations, QType::Int8);
        assert!(cfg.activation_symmetric && !cfg.reduce_range && cfg.float_bias);
        assert!(cfg.op_types.contains("Add"));
        for (name, text) in [
            ("t1", "zero-point: 3, scale: 0.1"),
            ("t2", "type: uint16"),
            ("t3", "symmetric: false"),
        ] {
            let r = Recipe {
                tensors: Recipe::parse(&format!("tensors:\n  {name}: {{{text}}}\n"))
                    .unwrap()
                    .tensors,
                ..trt.clone()
            };
            let e = QuantizeConfig::from_recipe(&r).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("TensorRT"), "{e}");
        }
    }

    #[test]
    fn flags_override_the_recipe() {
        let file = Recipe {
            method: Some(crate::calibrate::Method::Entropy),
            per_channel: Some(true),
            exclude: vec!["a".into()],
            ..Default::default()
        };
        let flags = Recipe {
            per_channel: Some(false),
            exclude: vec!["b".into()],
            ..Default::default()
        };
        let m = file.overlay(flags);
        assert_eq!(m.method, Some(crate::calibrate::Method::Entropy));
        assert_eq!(m.per_channel, Some(false));
        assert_eq!(m.exclude, vec!["a".to_string(), "b".to_string()]);
    }
}
