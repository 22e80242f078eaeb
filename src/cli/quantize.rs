//! `onnxq quantize`: prepare → plan → calibrate → quantize → write.

use super::calibrate::{parse_dim, MethodArg};
use anyhow::{bail, Context};
use onnxq::calibrate::SampleSource;
use onnxq::calibrate::{
    model_sha256, open_source, Calibrator, CollectOptions, Method, RangeOptions, RangeTable, Target,
};
use onnxq::exec::kernels::Arith;
use onnxq::ir::Model;
use onnxq::ir::NodeId;
use onnxq::lower::{lower, LowerOptions, LowerReport, Target as LowerTarget};
use onnxq::onnx::{save_model, SaveOptions};
use onnxq::passes::equalize::Equalized;
use onnxq::passes::{prepare, PassOptions};
use onnxq::quantize::dynamic::{quantize_dynamic, MIN_OPSET as DYNAMIC_MIN_OPSET};
use onnxq::quantize::{
    plan_model, quantize, Format, Mode, QType, QuantizeConfig, QuantizeReport, Recipe,
};
use onnxq::tune::bias::{correct_biases, Corrected};
use onnxq::tune::gptq::{round_weights, Rounded, Skipped};
use onnxq::tune::{self, Budget, Evaluator, MixedPrecision, SensitivityOptions};
use onnxq::verify::{self, Verdict};
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum FormatArg {
    /// Integer operators (QLinearConv, QLinearMatMul, …) with int8 tensors
    /// between them: what CPU runtimes execute directly (default). A model
    /// output its last op computes in float (an int8 GEMM with an int32
    /// bias) stays float instead of being rounded to 8 bits.
    Qoperator,
    /// QuantizeLinear/DequantizeLinear pairs around float ops (what
    /// TensorRT and OpenVINO take).
    Qdq,
}

/// Runtime family of the QOperator output.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum TargetArg {
    /// Standard ONNX operators only (default).
    Onnx,
    /// Also onnxruntime's com.microsoft QLinearAdd, QLinearMul,
    /// QLinearConcat, QLinear(Global)AveragePool, QLinearSigmoid,
    /// QLinearLeakyRelu, QGemm.
    Ort,
    /// Standard operators in forms tract accepts.
    Tract,
}

/// Quantization mode.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum ModeArg {
    /// Activation ranges calibrated on samples (default).
    Static,
    /// MatMul/Gemm weights int8; activations quantized at run time by
    /// DynamicQuantizeLinear. No calibration.
    Dynamic,
}

/// Activation type.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ActArg {
    /// Asymmetric uint8 (default; fast u8×s8 kernels on x86).
    Uint8,
    /// Symmetric int8 (zero point 0).
    Int8,
}

/// Weight type.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum WeightArg {
    /// Symmetric int8 (default).
    Int8,
    /// Symmetric uint8 (zero point 128).
    Uint8,
}

/// Quantize a model to INT8: prepare the graph (Constant weights, BatchNorm
/// folding, opset upgrade when per-channel weights need opset 13),
/// calibrate activation ranges on samples through tract (only the tensors
/// the plan quantizes), insert QuantizeLinear/DequantizeLinear with int8
/// per-channel weights and int32 biases, rewrite them into integer
/// operators (QLinearConv, QLinearMatMul, int8 data movement; --format qdq
/// stops before), check parity against FP32 and write the model only if it
/// passes. When the gate fails, the nodes whose quantization hurts most
/// stay float, a growing group at a time, until it passes (automatic mixed
/// precision; --no-auto, --max-float; with --format qdq at opset 21 they
/// get 16-bit activations instead of float). Concat/Add whose inputs' ranges are
/// orders of magnitude apart stay float. --mode dynamic quantizes
/// MatMul/Gemm weights and quantizes activations at run time, without
/// calibration. Prints what was quantized, what stayed float and why, and
/// the size before and after.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The FP32 ONNX model.
    pub model: PathBuf,
    /// Where to write the quantized model.
    #[arg(short, long)]
    pub output: PathBuf,
    /// A YAML recipe holding any of these options plus per-node and
    /// per-tensor overrides; flags given here override it.
    #[arg(long, value_name = "YAML")]
    pub config: Option<PathBuf>,
    /// Calibration samples: a directory of .npz files, a directory of
    /// test_data_set_*/input_N.pb folders, one .npz with a leading sample
    /// axis, or random:N[:SEED].
    #[arg(long, value_name = "SRC")]
    pub calib: Option<String>,
    /// Reuse a table from `onnxq calibrate` instead of calibrating (it must
    /// have been made for this model).
    #[arg(long, value_name = "JSON", conflicts_with = "calib")]
    pub ranges: Option<PathBuf>,
    /// How activation ranges are chosen [default: minmax].
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Percentile for --method percentile [default: 99.999].
    #[arg(long)]
    pub percentile: Option<f64>,
    /// Output format [default: qoperator].
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Runtime family of the qoperator output [default: onnx].
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,
    /// static: calibrated activation ranges; dynamic: MatMul/Gemm with
    /// activations quantized at run time, no --calib [default: static].
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Activation type [default: uint8].
    #[arg(long, value_enum)]
    pub activations: Option<ActArg>,
    /// Weight type [default: int8].
    #[arg(long, value_enum)]
    pub weights: Option<WeightArg>,
    /// One weight scale per tensor instead of per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// 7-bit weights (true/false; the flag alone means true). onnxruntime's
    /// u8×s8 kernels on x86 CPUs without VNNI (most AVX2 machines) add two
    /// products in int16 and saturate on 8-bit weights; with 7 bits they
    /// are exact, at ~6 dB of weight precision (which bias correction
    /// mostly wins back) [default: true for uint8 activations with int8
    /// weights, except --target tract].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub reduce_range: Option<bool>,
    /// Op types to quantize, comma-separated or repeated; `default` stands
    /// for the default set (Conv, ConvTranspose, MatMul, Gemm, data-movement
    /// ops, Relu, Clip). Opt-in: Add, Mul, AveragePool, GlobalAveragePool,
    /// LeakyRelu, Sigmoid, Softmax; naming Concat also joins inputs of
    /// different ranges. Example: --op-types default,Add
    #[arg(long, value_name = "OPS")]
    pub op_types: Vec<String>,
    /// Leave a node in float: its name or a glob (repeatable). A pattern
    /// that matches no node is an error.
    #[arg(long, value_name = "NODE")]
    pub exclude: Vec<String>,
    /// Size of a symbolic input dimension, for random samples (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
    /// Upgrade the opset to at least N (13 is applied automatically when
    /// weights are per channel).
    #[arg(long, value_name = "N")]
    pub opset: Option<i64>,
    /// Validation samples for the parity gate (same forms as --calib)
    /// [default: the calibration samples].
    #[arg(long, value_name = "SRC")]
    pub validate: Option<String>,
    #[command(flatten)]
    pub gate: super::check::GateArgs,
    /// Do not search for nodes to keep in float when the parity gate fails
    /// (automatic mixed precision is on by default: the most harmful nodes,
    /// ranked by `onnxq sensitivity`'s measure, go float a growing group at
    /// a time until the gate passes; with --format qdq at opset 21, e.g.
    /// --opset 21, they get uint16/int16 activations and keep int8 weights).
    #[arg(long)]
    pub no_auto: bool,
    /// Most nodes automatic mixed precision may keep in float: a count (3)
    /// or a percentage of the quantized compute nodes (10%) [default: 10%].
    #[arg(long, value_name = "N|PCT")]
    pub max_float: Option<String>,
    /// A Concat or Add whose inputs' magnitudes differ more than this
    /// factor stays float: one output scale would erase the smaller input
    /// (boxes next to class scores in a detector head) [default: 100; inf
    /// turns the guard off].
    #[arg(long, value_name = "R")]
    pub max_range_ratio: Option<f64>,
    /// Bias correction (true/false; the flag alone means true): measure on
    /// the calibration samples the mean shift that rounding the weights
    /// causes in each Conv/Gemm/MatMul output channel, and take it out of
    /// the bias before quantizing it [default: true when --calib samples
    /// are given].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub bias_correction: Option<bool>,
    /// Cross-layer equalization (true/false; the flag alone means true):
    /// before calibrating, rescale the channels between Conv → [Relu |
    /// LeakyRelu] → Conv pairs (and Gemm/MatMul pairs) so both layers'
    /// per-channel weight ranges match (MobileNet-style depthwise-separable
    /// blocks above all); the FP32 function is unchanged and the parity
    /// gate still compares with the model as given [default: true in
    /// static mode with --calib; false with --ranges, whose table was made
    /// without it].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub equalize: Option<bool>,
    /// Error-compensating weight rounding, GPTQ (true/false; the flag alone
    /// means true): measure each Conv/Gemm/MatMul's input correlations on
    /// the calibration samples and round its weights column by column,
    /// moving each rounding error onto the weights not rounded yet, so the
    /// layer's output error is smallest on that data (same scales; layers
    /// with more than 4608 inputs per output channel keep nearest
    /// rounding). The whole model is then checked on the gate's samples
    /// with and without it, and the better one is written [default: true
    /// when --calib samples are given].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub gptq: Option<bool>,
    /// Calibration worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Write a JSON report of what was done.
    #[arg(long, value_name = "JSON")]
    pub report: Option<PathBuf>,
    /// Allow the output to overwrite the input model, and write a model
    /// that failed the parity gate (the exit code is still 3).
    #[arg(long)]
    pub force: bool,
}

/// Requantization arithmetic of the reference executor.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum ArithArg {
    /// onnxruntime's CPU kernels: float32 multiplier, round half to even.
    Ort,
    /// The ONNX reference: float64 requantization.
    Exact,
}

impl From<ArithArg> for Arith {
    fn from(a: ArithArg) -> Self {
        match a {
            ArithArg::Ort => Arith::Ort,
            ArithArg::Exact => Arith::Exact,
        }
    }
}

impl Args {
    /// The options given as flags, as a recipe to lay over the file's.
    fn as_recipe(&self) -> Recipe {
        Recipe {
            format: self.format.map(|f| match f {
                FormatArg::Qoperator => Format::Qoperator,
                FormatArg::Qdq => Format::Qdq,
            }),
            target: self.target.map(|t| match t {
                TargetArg::Onnx => LowerTarget::Onnx,
                TargetArg::Ort => LowerTarget::Ort,
                TargetArg::Tract => LowerTarget::Tract,
            }),
            mode: self.mode.map(|m| match m {
                ModeArg::Static => Mode::Static,
                ModeArg::Dynamic => Mode::Dynamic,
            }),
            calib: self.calib.clone(),
            ranges: self.ranges.as_ref().map(|p| p.display().to_string()),
            method: self.method.map(Method::from),
            percentile: self.percentile,
            activations: self.activations.map(|a| match a {
                ActArg::Uint8 => QType::Uint8,
                ActArg::Int8 => QType::Int8,
            }),
            weights: self.weights.map(|w| match w {
                WeightArg::Int8 => QType::Int8,
                WeightArg::Uint8 => QType::Uint8,
            }),
            per_channel: self.per_tensor.then_some(false),
            reduce_range: self.reduce_range,
            op_types: (!self.op_types.is_empty()).then(|| self.op_types.clone()),
            exclude: self.exclude.clone(),
            dims: self.dims.iter().cloned().collect(),
            opset: self.opset,
            validate: self.validate.clone(),
            min_sqnr: self.gate.min_sqnr,
            min_cosine: self.gate.min_cosine,
            min_top1: self.gate.min_top1,
            auto: self.no_auto.then_some(false),
            max_float: self.max_float.clone(),
            max_range_ratio: self.max_range_ratio,
            bias_correction: self.bias_correction,
            equalize: self.equalize,
            gptq: self.gptq,
            nodes: BTreeMap::new(),
            tensors: BTreeMap::new(),
        }
    }
}

/// The JSON report (`--report`).
#[derive(serde::Serialize)]
struct Report<'a> {
    onnxq_version: &'static str,
    model: String,
    output: String,
    format: &'static str,
    mode: &'static str,
    target: Option<&'static str>,
    opset_before: i64,
    opset_after: i64,
    size_before: u64,
    size_after: u64,
    calibration: &'a serde_json::Value,
    quantization: &'a QuantizeReport,
    lowering: Option<&'a LowerReport>,
    /// Concat/Add kept float because their inputs' ranges are too far
    /// apart.
    range_guard: &'a [GuardedNode],
    /// What automatic mixed precision did (absent when the first gate
    /// passed, or with --no-auto).
    mixed_precision: Option<&'a MixedPrecision>,
    /// Layers whose bias took out their weights' mean rounding shift.
    bias_correction: &'a [Corrected],
    /// Error-compensating weight rounding per layer (absent when it was
    /// off), the layers it left to nearest rounding, and whether the
    /// whole model kept it.
    gptq: Option<&'a GptqOutcome>,
    /// What cross-layer equalization did (absent when it was off).
    equalization: Option<&'a Equalized>,
    parity: &'a Verdict,
    written: bool,
}

/// What error-compensating weight rounding did.
#[derive(serde::Serialize)]
struct GptqOutcome {
    layers: Vec<Rounded>,
    skipped: Vec<Skipped>,
    /// The whole model with and without it on the gate's samples (absent
    /// when no layer took it).
    model_check: Option<ModelCheck>,
}

impl GptqOutcome {
    /// Whether the written model carries its weights.
    fn kept(&self) -> bool {
        self.model_check.as_ref().is_some_and(|c| c.kept)
    }
}

/// The gate's worst-output SQNR with compensated and with nearest
/// rounding (each after bias correction), and which one was kept.
#[derive(serde::Serialize)]
struct ModelCheck {
    compensated_db: f64,
    nearest_db: f64,
    kept: bool,
}

/// Bias correction, the built model and its gate verdict, for one choice
/// of weights.
struct Finished {
    base: Model,
    corrected: Vec<Corrected>,
    built: Built,
    verdict: Verdict,
    gate_secs: f64,
}

/// Whether verdict `a` beats `b`: a pass beats a failure, then the higher
/// worst-output SQNR wins; a tie goes to `b`.
fn better(a: &Verdict, b: &Verdict) -> bool {
    match (a.passed, b.passed) {
        (true, false) => true,
        (false, true) => false,
        _ => worst_sqnr(a).total_cmp(&worst_sqnr(b)).is_gt(),
    }
}

#[derive(serde::Serialize)]
pub(super) struct GuardedNode {
    node: String,
    op: String,
    reason: String,
}

/// How the activation ranges were obtained (for the summary).
struct CalibNote {
    table: Option<RangeTable>,
    source: String,
    secs: f64,
}

/// Activation ranges: from a table, or calibrated on samples — and
/// calibrated again for tensors a later plan needs (the range guard's and
/// the automatic mode's variants).
pub(super) struct Ranges {
    pub table: RangeTable,
    pub source_note: String,
    calib: Option<String>,
    ropts: RangeOptions,
    dims: BTreeMap<String, usize>,
    jobs: usize,
    fingerprint: String,
    pub secs: f64,
}

impl Ranges {
    /// The ranges `needed` (tensor names of the prepared `model`), from
    /// `recipe.ranges` or by calibrating on `recipe.calib`.
    pub fn new(
        model: &Model,
        needed: &BTreeSet<String>,
        recipe: &Recipe,
        cfg: &QuantizeConfig,
        jobs: usize,
        fingerprint: &str,
    ) -> anyhow::Result<Self> {
        let percentile = recipe.percentile.unwrap_or(99.999);
        if !(50.0..=100.0).contains(&percentile) {
            bail!("percentile {percentile} is outside 50..=100");
        }
        let ropts = RangeOptions {
            method: recipe.method.unwrap_or(Method::Minmax),
            percentile,
            target: if cfg.activations.is_signed() {
                Target::Int8
            } else {
                Target::Uint8
            },
        };
        let start = Instant::now();
        let mut r = match (&recipe.ranges, &recipe.calib) {
            (Some(path), _) => {
                let path = PathBuf::from(path);
                let t = RangeTable::load(&path)?;
                t.check_model(&path, fingerprint)?;
                Ranges {
                    table: t,
                    source_note: format!("table {}", path.display()),
                    calib: None,
                    ropts,
                    dims: recipe.dims.clone(),
                    jobs,
                    fingerprint: fingerprint.to_string(),
                    secs: 0.0,
                }
            }
            (None, Some(src)) => {
                if src.starts_with("random:") {
                    eprintln!("warning: random samples give ranges unlike real data; calibrate on real samples for a usable model");
                }
                let mut r = Ranges {
                    table: RangeTable {
                        onnxq_version: onnxq::VERSION.to_string(),
                        model_sha256: fingerprint.to_string(),
                        samples_sha256: String::new(),
                        samples: 0,
                        method: ropts.method,
                        percentile,
                        target: ropts.target,
                        tensors: BTreeMap::new(),
                    },
                    source_note: src.clone(),
                    calib: Some(src.clone()),
                    ropts,
                    dims: recipe.dims.clone(),
                    jobs,
                    fingerprint: fingerprint.to_string(),
                    secs: 0.0,
                };
                r.calibrate(model, needed)?;
                r
            }
            (None, None) => {
                bail!("quantize needs calibration samples (--calib SRC) or a table (--ranges JSON)")
            }
        };
        r.secs = start.elapsed().as_secs_f64();
        Ok(r)
    }

    /// Calibrates the tensors of `wanted` the table lacks (nothing to do
    /// for a table from `--ranges`: `onnxq calibrate` records every tensor).
    pub fn ensure(&mut self, model: &Model, wanted: &BTreeSet<String>) -> anyhow::Result<()> {
        let start = Instant::now();
        let missing: BTreeSet<String> = wanted
            .iter()
            .filter(|t| !self.table.tensors.contains_key(*t))
            .cloned()
            .collect();
        if !missing.is_empty() && self.calib.is_some() {
            self.calibrate(model, &missing)?;
        }
        self.secs += start.elapsed().as_secs_f64();
        Ok(())
    }

    fn calibrate(&mut self, model: &Model, wanted: &BTreeSet<String>) -> anyhow::Result<()> {
        let Some(src) = &self.calib else {
            return Ok(());
        };
        let calibrator = Calibrator::observing(model, Some(wanted))?;
        let source = open_source(src, calibrator.inputs(), &self.dims)?;
        let collected = calibrator.collect(
            source.as_ref(),
            &CollectOptions {
                histograms: self.ropts.method.needs_histogram(),
                per_channel: false,
                jobs: self.jobs,
                progress: std::io::stderr().is_terminal(),
            },
        )?;
        let mut t = RangeTable::compute(&collected, &self.ropts, &self.fingerprint);
        if self.ropts.method == Method::Auto {
            let choices = onnxq::calibrate::choose::choose(
                model,
                &collected,
                &self.ropts,
                wanted,
                source.as_ref(),
                self.jobs,
            )?;
            t.apply_choices(&choices);
        }
        self.table.samples = t.samples;
        self.table.samples_sha256 = t.samples_sha256;
        self.table.tensors.extend(t.tensors);
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

    fn calibration_json(&self) -> serde_json::Value {
        serde_json::json!({
            "source": self.source_note,
            "method": self.table.method.name(),
            "percentile": self.table.percentile,
            "samples": self.table.samples,
            "samples_sha256": self.table.samples_sha256,
            "model_sha256": self.fingerprint,
        })
    }
}

/// The range guard: keeps Concat/Add nodes whose inputs' ranges are too
/// far apart in float (in `cfg.float_ids`), re-planning until no gap is
/// left; returns the nodes it kept.
pub(super) fn guard_ranges(
    model: &Model,
    cfg: &mut QuantizeConfig,
    ranges: &mut Ranges,
    max_ratio: f64,
) -> anyhow::Result<Vec<GuardedNode>> {
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

/// One quantized model: the plan under `cfg`, Q/DQ insertion, lowering.
struct Built {
    model: Model,
    report: QuantizeReport,
    lowering: Option<LowerReport>,
}

fn build(
    fp32: &Model,
    cfg: &QuantizeConfig,
    ranges: &BTreeMap<String, (f32, f32)>,
    format: Format,
    target: LowerTarget,
) -> onnxq::Result<Built> {
    let mut model = fp32.clone();
    let plan = plan_model(&model, cfg)?;
    let report = quantize(&mut model, &plan, ranges, cfg)?;
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

fn worst_sqnr(v: &Verdict) -> f64 {
    v.outputs
        .iter()
        .map(|o| o.sqnr_db)
        .fold(f64::INFINITY, f64::min)
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let file_recipe = match &args.config {
        Some(p) => Recipe::load(p)?,
        None => Recipe::default(),
    };
    let recipe = file_recipe.overlay(args.as_recipe());
    if recipe.calib.is_some() && recipe.ranges.is_some() {
        bail!("give calibration samples (calib) or a calibration table (ranges), not both");
    }
    let mode = recipe.mode.unwrap_or(Mode::Static);
    let format = recipe.format.unwrap_or(Format::Qoperator);
    let target = recipe.target.unwrap_or(LowerTarget::Onnx);
    if mode == Mode::Dynamic && format == Format::Qdq {
        bail!("--mode dynamic writes integer operators (DynamicQuantizeLinear, MatMulInteger); --format qdq is for static quantization");
    }
    if format == Format::Qdq && recipe.target.is_some() {
        eprintln!("warning: --target applies to the qoperator format; the QDQ output uses standard operators only");
    }
    let mut cfg = QuantizeConfig::from_recipe(&recipe)?;
    if cfg.has_wide() && (format != Format::Qdq || mode == Mode::Dynamic) {
        bail!("16-bit activations (recipe tensors with type uint16/int16) need --format qdq (opset 21): the integer operators take 8 bits");
    }
    let auto = recipe.auto.unwrap_or(true);
    let budget = Budget::parse(recipe.max_float.as_deref().unwrap_or("10%"))?;
    let max_ratio = recipe.max_range_ratio.unwrap_or(100.0);
    if max_ratio.is_nan() || max_ratio < 1.0 {
        bail!("max-range-ratio {max_ratio} must be at least 1");
    }

    let loaded = onnxq::onnx::load_model(&args.model)?;
    let fingerprint = model_sha256(&loaded.proto);
    let size_before = prost::Message::encoded_len(&loaded.proto) as u64;
    let what = || format!("{}", args.model.display());
    let mut model = Model::from_proto(&loaded.proto).with_context(what)?;
    let opset_before = model.onnx_opset()?;
    let min_opset = match mode {
        Mode::Static => cfg.min_opset(),
        Mode::Dynamic => DYNAMIC_MIN_OPSET,
    };
    let want = recipe.opset.unwrap_or(0).max(min_opset);
    let opts = PassOptions {
        target_opset: (want > opset_before).then_some(want),
        ..Default::default()
    };
    prepare(&mut model, &opts).with_context(what)?;
    // Cross-layer equalization: the working model is rescaled, the gate
    // still compares with the prepared model as given.
    // On by default when calibrating here (README "Choosing the defaults":
    // better or equal on 10 of 11 suite models); a --ranges table was made
    // without it.
    let equalize = match (recipe.equalize, &recipe.ranges) {
        (Some(true), Some(_)) if mode == Mode::Static => bail!("--equalize rescales activations, so a --ranges table made without it does not fit: calibrate with --calib SRC instead (or --equalize false)"),
        (Some(e), _) => e,
        (None, ranges) => mode == Mode::Static && ranges.is_none(),
    };
    let reference = equalize.then(|| model.clone());
    let equalized = if equalize {
        Some(onnxq::passes::equalize::equalize(&mut model).with_context(what)?)
    } else {
        None
    };
    let fp32 = model;
    let reference = reference.as_ref().unwrap_or(&fp32);
    let rescaled = equalized
        .as_ref()
        .map(|e| e.rescaled.clone())
        .unwrap_or_default();

    // The parity gate's samples and thresholds: FP32 (tract) vs INT8 (our
    // executor). The recipe already holds the flags laid over the file's.
    let thresholds = args
        .gate
        .thresholds([recipe.min_sqnr, recipe.min_cosine, recipe.min_top1]);
    let specs = onnxq::ir::types::input_specs(&fp32.graph);
    let mut gate_dims = recipe.dims.clone();
    let validation = match (&recipe.validate, &recipe.calib) {
        (Some(v), _) | (None, Some(v)) => v.clone(),
        (None, None) => {
            // Symbolic dims nobody sized default to 1.
            for s in &specs {
                for d in s.dims.iter().flatten() {
                    if let onnxq::ir::types::Dim::Symbolic(name) = d {
                        gate_dims.entry(name.clone()).or_insert(1);
                    }
                }
            }
            eprintln!("warning: no --validate or --calib samples: the parity gate runs on random:8 inputs; give --validate SRC for a meaningful check");
            "random:8:0".to_string()
        }
    };
    let open_validation = || {
        open_source(&validation, &specs, &gate_dims)
            .with_context(|| format!("validation samples {validation}"))
    };
    let gate = |m: &Model| -> anyhow::Result<Verdict> {
        let source = open_validation()?;
        verify::compare(
            reference,
            m,
            source.as_ref(),
            args.gate.arith.into(),
            thresholds,
            true,
            &rescaled,
        )
        .with_context(|| "the parity check".to_string())
    };

    let mut guarded = Vec::new();
    let mut mixed = None;
    let mut corrected = Vec::new();
    let mut rounded: Option<GptqOutcome> = None;
    let (built, verdict, calibration, note, gate_secs) = match mode {
        Mode::Static => {
            let plan = plan_model(&fp32, &cfg).with_context(what)?;
            let mut ranges = Ranges::new(
                &fp32,
                &plan.needed_ranges(&fp32),
                &recipe,
                &cfg,
                args.jobs,
                &fingerprint,
            )?;
            guarded = guard_ranges(&fp32, &mut cfg, &mut ranges, max_ratio).with_context(what)?;
            // The model the quantizer works on: the FP32 model, or a copy
            // with error-compensated weights and corrected biases. Parity is
            // always against `fp32`.
            let map = ranges.map();
            let calib_source = |what: &str| -> anyhow::Result<Box<dyn SampleSource>> {
                let Some(src) = &recipe.calib else {
                    bail!("{what} measures on the calibration samples: give --calib SRC (or --{what} false)");
                };
                open_source(src, &specs, &recipe.dims)
                    .with_context(|| format!("calibration samples {src}"))
            };
            // Bias correction, quantization and the gate, on the FP32
            // weights or on GPTQ's (whose scales `cfg` pins).
            let bias_correction = recipe.bias_correction.unwrap_or(recipe.calib.is_some());
            let finish = |weights: &Model, cfg: &QuantizeConfig| -> anyhow::Result<Finished> {
                let (base, corrected) = if bias_correction {
                    let source = calib_source("bias-correction")?;
                    correct_biases(&fp32, weights, cfg, &map, source.as_ref(), args.jobs)
                        .with_context(|| "bias correction".to_string())?
                } else {
                    (weights.clone(), Vec::new())
                };
                let built = build(&base, cfg, &map, format, target).with_context(what)?;
                let start = Instant::now();
                let verdict = gate(&built.model)?;
                Ok(Finished {
                    base,
                    corrected,
                    built,
                    verdict,
                    gate_secs: start.elapsed().as_secs_f64(),
                })
            };
            let done = if recipe.gptq.unwrap_or(recipe.calib.is_some()) {
                let source = calib_source("gptq")?;
                let o = round_weights(&fp32, &cfg, &map, source.as_ref(), args.jobs)
                    .with_context(|| "error-compensating weight rounding".to_string())?;
                let mut pinned = cfg.clone();
                pinned.weight_grids = o.grids;
                let with = finish(&o.model, &pinned)?;
                // Each layer's gain is on its own FP32 inputs; the whole
                // model, on the gate's samples, decides whether it stays.
                let (done, check) = if o.rounded.iter().any(|r| r.taken) {
                    let without = finish(&fp32, &cfg)?;
                    let check = ModelCheck {
                        compensated_db: worst_sqnr(&with.verdict),
                        nearest_db: worst_sqnr(&without.verdict),
                        kept: better(&with.verdict, &without.verdict),
                    };
                    let secs = with.gate_secs + without.gate_secs;
                    let mut done = if check.kept {
                        cfg = pinned;
                        with
                    } else {
                        without
                    };
                    done.gate_secs = secs;
                    (done, Some(check))
                } else {
                    (with, None)
                };
                rounded = Some(GptqOutcome {
                    layers: o.rounded,
                    skipped: o.skipped,
                    model_check: check,
                });
                done
            } else {
                finish(&fp32, &cfg)?
            };
            let Finished {
                base,
                corrected: c,
                mut built,
                mut verdict,
                mut gate_secs,
            } = done;
            corrected = c;
            if !verdict.passed && auto {
                let start = Instant::now();
                let wide = format == Format::Qdq && fp32.onnx_opset()? >= 21;
                let (rec, last) = auto_mixed_precision(
                    &fp32,
                    &cfg,
                    &mut ranges,
                    (budget, thresholds, args.jobs, wide),
                    worst_sqnr(&verdict),
                    &open_validation,
                    |c, r| {
                        // Float layers get their own weights and biases back.
                        let m = tune::bias::restore(&base, &corrected, &c.float_ids);
                        let m = match &rounded {
                            Some(g) if g.kept() => tune::gptq::restore(&m, &g.layers, &c.float_ids),
                            _ => m,
                        };
                        let b = build(&m, c, r, format, target)?;
                        let v = gate(&b.model)?;
                        Ok((v.passed, worst_sqnr(&v), (b, v)))
                    },
                )?;
                if let Some((b, v)) = last {
                    built = b;
                    verdict = v;
                }
                gate_secs += start.elapsed().as_secs_f64();
                mixed = Some(rec);
            }
            let calibration = ranges.calibration_json();
            let note = CalibNote {
                secs: ranges.secs,
                source: ranges.source_note.clone(),
                table: Some(ranges.table),
            };
            (built, verdict, calibration, note, gate_secs)
        }
        Mode::Dynamic => {
            if recipe.calib.is_some() || recipe.ranges.is_some() {
                eprintln!("warning: --mode dynamic computes activation ranges at run time; the calibration samples are not used");
            }
            let mut model = fp32.clone();
            let report = quantize_dynamic(&mut model, &cfg).with_context(what)?;
            let note = CalibNote {
                table: None,
                source: String::new(),
                secs: 0.0,
            };
            let gate_start = Instant::now();
            let verdict = gate(&model)?;
            let built = Built {
                model,
                report,
                lowering: None,
            };
            (
                built,
                verdict,
                serde_json::json!({"method": "dynamic"}),
                note,
                gate_start.elapsed().as_secs_f64(),
            )
        }
    };
    let Built {
        mut model,
        report,
        lowering,
    } = built;
    let format_name = match (mode, format) {
        (Mode::Dynamic, _) => "dynamic",
        (_, f) => f.name(),
    };
    let target_name = (format == Format::Qoperator).then_some(target.name());

    model.set_metadata("onnxq.version", onnxq::VERSION);
    model.set_metadata("onnxq.format", format_name);
    if let Some(t) = target_name {
        model.set_metadata("onnxq.target", t);
    }
    model.set_metadata("onnxq.recipe", &recipe.to_yaml()?);
    model.set_metadata("onnxq.calibration", &calibration.to_string());
    if let Some(m) = mixed.as_ref().filter(|m| !m.kept_float.is_empty()) {
        if m.kept_as == "float" {
            model.set_metadata("onnxq.kept_float", &m.kept_float.join(","));
        } else {
            model.set_metadata("onnxq.kept_wide", &m.kept_float.join(","));
        }
    }
    if equalized.as_ref().is_some_and(|e| e.pairs > 0) {
        // `onnxq check` redoes the (deterministic) balance on its FP32
        // reference to compare the rescaled layers.
        model.set_metadata("onnxq.equalized", "true");
    }
    let parity: serde_json::Map<String, serde_json::Value> = verdict
        .outputs
        .iter()
        .map(|o| {
            let v = serde_json::json!({"sqnr_db": o.sqnr_db, "cosine": o.cosine, "top1": o.top1_agreement});
            (o.name.clone(), v)
        })
        .collect();
    let parity = serde_json::json!({"samples": verdict.samples, "source": validation, "arith": verdict.arith, "outputs": parity});
    model.set_metadata("onnxq.parity", &parity.to_string());
    let proto = model.to_proto()?;
    let size_after = prost::Message::encoded_len(&proto) as u64;
    let write = verdict.passed || args.force;
    if write {
        let save = SaveOptions {
            input: Some(args.model.clone()),
            force: args.force,
            ..Default::default()
        };
        save_model(&proto, &args.output, &save)?;
    }
    let opset_after = model.onnx_opset()?;
    if let Some(path) = &args.report {
        let r = Report {
            onnxq_version: onnxq::VERSION,
            model: args.model.display().to_string(),
            output: args.output.display().to_string(),
            format: format_name,
            mode: mode.name(),
            target: target_name,
            opset_before,
            opset_after,
            size_before,
            size_after,
            calibration: &calibration,
            quantization: &report,
            lowering: lowering.as_ref(),
            range_guard: &guarded,
            mixed_precision: mixed.as_ref(),
            bias_correction: &corrected,
            gptq: rounded.as_ref(),
            equalization: equalized.as_ref(),
            parity: &verdict,
            written: write,
        };
        let json = serde_json::to_string_pretty(&r)? + "\n";
        onnxq::onnx::save::write_atomic(path, json.as_bytes())?;
    }
    let label = match (mode, format) {
        (Mode::Dynamic, _) => "dynamic".to_string(),
        (_, Format::Qdq) => "QDQ".to_string(),
        (_, Format::Qoperator) => format!("QOperator for {}", target.name()),
    };
    eprint!(
        "{}",
        summary(
            &args,
            write,
            &label,
            &report,
            lowering.as_ref(),
            &note,
            (size_before, size_after),
            (opset_before, opset_after)
        )
    );
    for g in &guarded {
        eprintln!("  kept float: {} ({}): {}", g.node, g.op, g.reason);
    }
    if mode == Mode::Static && recipe.bias_correction.is_none() && recipe.calib.is_none() {
        eprintln!("  bias correction: off (it measures on calibration samples; a --ranges table has none)");
    }
    if mode == Mode::Static && recipe.gptq.is_none() && recipe.calib.is_none() {
        eprintln!("  error-compensating rounding: off (it measures on calibration samples; a --ranges table has none)");
    }
    if mode == Mode::Static && recipe.equalize.is_none() && recipe.ranges.is_some() {
        eprintln!("  cross-layer equalization: off (the --ranges table was calibrated without it)");
    }
    if let Some(g) = &rounded {
        eprint!("{}", describe_gptq(g));
    }
    if !corrected.is_empty() {
        let max = corrected.iter().map(|c| c.max_shift).fold(0.0, f32::max);
        eprintln!(
            "  bias correction: {} layer(s), largest mean shift removed {max:.3e}",
            corrected.len()
        );
    }
    if let Some(e) = &equalized {
        eprintln!(
            "  cross-layer equalization: {} layer pair(s) in {} round(s); widest channel weight spread {:.1}x -> {:.1}x",
            e.pairs, e.rounds, e.worst_spread_before, e.worst_spread_after
        );
    }
    if let Some(m) = &mixed {
        eprint!("{}", describe_mixed(m));
    }
    eprint!(
        "  parity (int8 executor vs FP32 on {} samples of {validation}, {:.2} s): {}\n{}",
        verdict.samples,
        gate_secs,
        if verdict.passed { "passed" } else { "FAILED" },
        verify::describe(&verdict, if verdict.passed { 0 } else { 5 })
    );
    if !verdict.passed {
        if write {
            eprintln!(
                "error: the quantized model failed the parity gate; written anyway (--force)"
            );
        } else {
            eprintln!(
                "error: the quantized model failed the parity gate; nothing written (--force writes it anyway)"
            );
        }
        return Ok(super::EXIT_GATE);
    }
    Ok(super::EXIT_OK)
}

/// The summary lines of error-compensating weight rounding: how many
/// layers took it, the median layer output SQNR on the calibration inputs
/// with nearest and with compensated rounding, what was left alone, and
/// whether the whole model kept it.
fn describe_gptq(g: &GptqOutcome) -> String {
    let (layers, skipped) = (&g.layers, &g.skipped);
    let median = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let taken: Vec<&Rounded> = layers.iter().filter(|r| r.taken).collect();
    let mut out = format!(
        "  error-compensating rounding (GPTQ): {} of {} layer(s)",
        taken.len(),
        layers.len() + skipped.len()
    );
    if !taken.is_empty() {
        out += &format!(
            "; layer output SQNR on the calibration samples, median {:.1} dB -> {:.1} dB",
            median(taken.iter().map(|r| r.nearest_db).collect()),
            median(taken.iter().map(|r| r.compensated_db).collect())
        );
    }
    out += "\n";
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for s in skipped {
        *reasons.entry(s.reason.as_str()).or_default() += 1;
    }
    let not_better = layers.len() - taken.len();
    if not_better > 0 {
        out += &format!(
            "    nearest rounding kept: {not_better} layer(s) where compensation was not better\n"
        );
    }
    for (reason, n) in reasons {
        out += &format!("    nearest rounding kept: {n} layer(s): {reason}\n");
    }
    if let Some(c) = &g.model_check {
        out += &format!(
            "    whole model on the gate's samples, worst output: {:.1} dB with it, {:.1} dB with nearest rounding: {}\n",
            c.compensated_db,
            c.nearest_db,
            if c.kept {
                "kept"
            } else {
                "dropped, nearest rounding written"
            }
        );
    }
    out
}

/// The gate failed: rank the candidates by sensitivity (only that node
/// quantized, fake-quantized in tract on the validation samples) and run
/// [`tune::mixed_precision`] with `attempt` as the re-check. `wide` (QDQ
/// at opset 21): the chosen nodes get 16-bit activations instead of float.
#[allow(clippy::type_complexity)]
fn auto_mixed_precision<T>(
    fp32: &Model,
    cfg: &QuantizeConfig,
    ranges: &mut Ranges,
    (budget, thresholds, jobs, wide): (Budget, verify::Thresholds, usize, bool),
    start_sqnr: f64,
    open_validation: &dyn Fn() -> anyhow::Result<Box<dyn SampleSource>>,
    mut attempt: impl FnMut(
        &QuantizeConfig,
        &BTreeMap<String, (f32, f32)>,
    ) -> anyhow::Result<(bool, f64, T)>,
) -> anyhow::Result<(MixedPrecision, Option<T>)> {
    // The ranking runs on the uncorrected model: in a variant most layers
    // are float, and a float layer must compute with its own bias.
    ranges.ensure(fp32, &tune::search_needed(fp32, cfg)?)?;
    let map = ranges.map();
    let source = open_validation()?;
    let eval = Evaluator::new(fp32, source.as_ref(), thresholds)?;
    let sens = tune::sensitivity(
        fp32,
        cfg,
        &map,
        &eval,
        SensitivityOptions {
            only: true,
            all_but: false,
            jobs,
        },
    )?;
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
    // QDQ at opset 21: the nodes get 16-bit activations instead of float
    // (their weights stay int8).
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
    .context("automatic mixed precision")?;
    if wide {
        rec.kept_as = format!("{} activations", cfg.activations.wide().name());
    }
    Ok((rec, last))
}

/// The summary lines of the automatic mode.
fn describe_mixed(m: &MixedPrecision) -> String {
    let mut s = format!(
        "  automatic mixed precision: gate failed at {:.1} dB; kept {} of {} candidate node(s) in {} (budget {})\n",
        m.start_sqnr_db,
        m.kept_float.len(),
        m.candidates,
        m.kept_as,
        m.budget
    );
    for (i, st) in m.steps.iter().enumerate() {
        s += &format!(
            "    step {}: {} {} → worst output {:.1} dB ({:+.1} dB){}\n",
            i + 1,
            m.kept_as,
            st.kept_float.join(", "),
            st.worst_sqnr_db,
            st.gain_db,
            if st.passed { ", gate passed" } else { "" }
        );
    }
    if m.steps.is_empty() {
        s += "    no step: the budget allows no node (--max-float)\n";
    } else if m.stopped_early {
        s += "    stopped: the last step did not raise the worst output's SQNR, so the failure is not in the nodes ranked first (see `onnxq sensitivity`)\n";
    } else if !m.passed {
        s += "    budget spent and the gate still fails (raise --max-float, or see `onnxq sensitivity`)\n";
    }
    if !m.passed {
        s += &if m.kept_float.is_empty() {
            "    no step improved the model: every node stays quantized\n".to_string()
        } else {
            format!(
                "    kept the best attempt: {} {}\n",
                m.kept_as,
                m.kept_float.join(", ")
            )
        };
    }
    s
}

pub(super) fn by_op(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[allow(clippy::too_many_arguments)]
fn summary(
    args: &Args,
    written: bool,
    label: &str,
    r: &QuantizeReport,
    lowering: Option<&LowerReport>,
    calib: &CalibNote,
    (before, after): (u64, u64),
    (opset_before, opset_after): (i64, i64),
) -> String {
    let nq: usize = r.quantized.values().sum();
    let nf: usize = r.float.values().sum();
    let opset = if opset_before == opset_after {
        format!("opset {opset_after}")
    } else {
        format!("opset {opset_before} → {opset_after}")
    };
    let verb = if written { "wrote" } else { "did not write" };
    let mut s = format!(
        "{verb} {} ({label}, {opset})\n  quantized nodes: {nq} ({})\n  float nodes:     {nf} ({})\n",
        args.output.display(),
        by_op(&r.quantized),
        by_op(&r.float),
    );
    if let Some(l) = lowering {
        s += &format!(
            "  tensors: {} activations, {} weights ({} per channel, {}-bit), {} int32 biases\n",
            r.activations, r.weights, r.per_channel_weights, r.weight_bits, r.biases
        );
        s += &format!(
            "  integer ops: {}; {} QuantizeLinear, {} DequantizeLinear at float boundaries\n",
            by_op(&l.integer_ops),
            l.quantize_linear,
            l.dequantize_linear
        );
        if !l.kept_qdq.is_empty() {
            s += &format!(
                "  float between DequantizeLinear and QuantizeLinear: {}\n",
                by_op(&l.kept_qdq)
            );
        }
    } else if calib.table.is_some() {
        s += &format!(
            "  tensors: {} activations, {} weights ({} per channel, {}-bit), {} int32 biases; {} QuantizeLinear, {} DequantizeLinear\n",
            r.activations, r.weights, r.per_channel_weights, r.weight_bits, r.biases, r.quantize_linear, r.dequantize_linear
        );
    } else {
        s += &format!(
            "  weights: {} int8 ({} per channel, {}-bit); activations quantized at run time\n",
            r.weights, r.per_channel_weights, r.weight_bits
        );
    }
    if r.weight_scales_raised > 0 {
        s += &format!(
            "  note: {} weight scale(s) raised so the bias fits int32\n",
            r.weight_scales_raised
        );
    }
    if let Some(table) = &calib.table {
        let method = match table.method {
            Method::Percentile => format!("percentile {}", table.percentile),
            Method::Auto => {
                let chosen: BTreeMap<String, usize> = table
                    .chosen()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                format!("auto (chosen per tensor: {})", by_op(&chosen))
            }
            m => m.name().to_string(),
        };
        s += &format!(
            "  calibration: {method} on {} samples ({}) in {:.2} s\n",
            table.samples, calib.source, calib.secs
        );
    }
    s += &format!(
        "  size: {} → {} ({:.1}%)\n",
        onnxq::inspect::human_bytes(before),
        onnxq::inspect::human_bytes(after),
        100.0 * after as f64 / before.max(1) as f64
    );
    s
}
