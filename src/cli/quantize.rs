//! `onnxq quantize`: flags → a recipe laid over the `--config` file's →
//! [`crate::pipeline::quantize_file`] → the summary, the JSON report and
//! the exit code.

use super::args::{parse_dim, ActArg, DecodeArgs, GateArgs, MethodArg};
use crate::calibrate::Method;
use crate::lower::Target as LowerTarget;
use crate::pipeline::{quantize_file, summary, Options};
use crate::quantize::{Format, Mode, QType, Recipe};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

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

/// Runtime family the output is written for.
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
    /// OpenVINO: implies --format qdq (OpenVINO reads per-channel
    /// QLinearConv / QLinearMatMul weights along the wrong axis).
    Openvino,
    /// TensorRT (explicit quantization): implies --format qdq with
    /// symmetric int8 activations and weights, 8-bit weights, residual Add
    /// inputs quantized (its Conv + Add fusion); no 16-bit activations.
    /// Not run here: check it with onnxq's executor, whose exact int32
    /// arithmetic is TensorRT's.
    Tensorrt,
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
    /// 7-bit weights (true/false; the flag alone means true). The u8×s8
    /// kernels of onnxruntime and OpenVINO on x86 CPUs without VNNI (most
    /// AVX2 machines) add two products in int16 and saturate on 8-bit
    /// weights; with 7 bits they are exact, at ~6 dB of weight precision
    /// (which bias correction mostly wins back) [default: true for int8
    /// weights with uint8 activations, or with int8 activations in the QDQ
    /// format (both runtimes compute those as u8), except --target tract].
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
    pub decode: DecodeArgs,
    #[command(flatten)]
    pub gate: GateArgs,
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
    /// Most work automatic mixed precision may spend, as a multiple of the
    /// first build and gate's: model runs over one sample (GPTQ's and bias
    /// correction's calibration passes, each gate's validation samples).
    /// Half goes to the steps (one build and gate each), half to ranking
    /// the candidates the first gate's per-layer errors point at, on 8
    /// validation samples; at least one candidate and one step. Counted in
    /// runs, not seconds, so the output is the same on any machine
    /// [default: 1].
    #[arg(long, value_name = "X")]
    pub auto_effort: Option<f64>,
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
    /// rounding). A model that then fails the gate is built again with
    /// nearest rounding, and the better of the two is written [default:
    /// true when --calib samples are given].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub gptq: Option<bool>,
    /// Calibration worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Write a JSON report of what was done: every stage, the gate's
    /// verdict per output, seconds per stage (`timings`).
    #[arg(long, value_name = "JSON")]
    pub report: Option<PathBuf>,
    /// Allow the output to overwrite the input model, and write a model
    /// that failed the parity gate (the exit code is still 3).
    #[arg(long)]
    pub force: bool,
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
                TargetArg::Openvino => LowerTarget::Openvino,
                TargetArg::Tensorrt => LowerTarget::Tensorrt,
            }),
            mode: self.mode.map(|m| match m {
                ModeArg::Static => Mode::Static,
                ModeArg::Dynamic => Mode::Dynamic,
            }),
            calib: self.calib.clone(),
            ranges: self.ranges.as_ref().map(|p| p.display().to_string()),
            method: self.method.map(Method::from),
            percentile: self.percentile,
            activations: self.activations.map(QType::from),
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
            preprocess: self.decode.preprocess.clone(),
            tokenizer: self.decode.tokenizer.clone(),
            max_length: self.decode.max_length,
            auto: self.no_auto.then_some(false),
            max_float: self.max_float.clone(),
            auto_effort: self.auto_effort,
            max_range_ratio: self.max_range_ratio,
            bias_correction: self.bias_correction,
            equalize: self.equalize,
            gptq: self.gptq,
            nodes: BTreeMap::new(),
            tensors: BTreeMap::new(),
            ..self.gate.recipe()
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let file_recipe = match &args.config {
        Some(p) => Recipe::load(p)?,
        None => Recipe::default(),
    };
    let options = Options {
        recipe: file_recipe.overlay(args.as_recipe()),
        arith: args.gate.arith.into(),
        jobs: args.jobs,
        progress: std::io::stderr().is_terminal(),
        force: args.force,
        ..Options::default()
    };
    let done = quantize_file(&args.model, &args.output, &options)?;
    let r = &done.report;
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(r)? + "\n";
        crate::onnx::save::write_atomic(path, json.as_bytes())?;
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    eprint!("{}", summary(r));
    if r.passed() {
        return Ok(super::EXIT_OK);
    }
    if r.written {
        eprintln!("error: the quantized model failed the parity gate; written anyway (--force)");
    } else {
        eprintln!(
            "error: the quantized model failed the parity gate; nothing written (--force writes it anyway)"
        );
    }
    Ok(super::EXIT_GATE)
}
