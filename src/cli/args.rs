//! Arguments more than one subcommand takes: sample dimensions, the
//! calibration method, activation type, the gate's thresholds and
//! arithmetic. Each subcommand's file depends on this one, never on a
//! sibling.

use crate::calibrate::Method;
use crate::exec::kernels::Arith;
use crate::quantize::QType;
use crate::quantize::Recipe;
use crate::verify::Metric;
use std::collections::BTreeMap;

/// `NAME=VALUE` of `--dim`.
pub fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': expected NAME=VALUE"))?;
    let v = v.parse().map_err(|_| format!("'{s}': {v} is not a size"))?;
    Ok((k.to_string(), v))
}

/// Range statistics for a model's activations.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum MethodArg {
    /// Observed minimum and maximum.
    Minmax,
    /// Mean over samples of each sample's minimum and maximum.
    AvgMinmax,
    /// The --percentile-th percentile of all values (and its mirror).
    Percentile,
    /// KL-divergence threshold (TensorRT's entropy calibration).
    Entropy,
    /// The clipping range with the least quantization mean squared error.
    Mse,
    /// Per tensor, whichever of minmax, percentile, mse and entropy gives
    /// the tensor's consumers (the next Conv, MatMul, …) the least output
    /// error on the samples (one more pass over them).
    Auto,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Minmax => Method::Minmax,
            MethodArg::AvgMinmax => Method::AvgMinmax,
            MethodArg::Percentile => Method::Percentile,
            MethodArg::Entropy => Method::Entropy,
            MethodArg::Mse => Method::Mse,
            MethodArg::Auto => Method::Auto,
        }
    }
}

/// Activation type.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ActArg {
    /// Asymmetric uint8 (default; fast u8×s8 kernels on x86).
    Uint8,
    /// Symmetric int8 (zero point 0).
    Int8,
}

impl From<ActArg> for QType {
    fn from(a: ActArg) -> Self {
        match a {
            ActArg::Uint8 => QType::Uint8,
            ActArg::Int8 => QType::Int8,
        }
    }
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

/// Thresholds and arithmetic of a parity comparison (shared by `check` and
/// `quantize`). Each output is held to the metric its kind picks (a
/// Softmax sequence: decoded sequence agreement; a Softmax map: foreground
/// top-1; a Sigmoid map: mask IoU; class rows:
/// top-1; anything else: SQNR and cosine), unless `--gate-output` names it.
#[derive(Debug, clap::Args)]
pub struct GateArgs {
    /// Outputs without a task metric: SQNR against FP32 at least DB
    /// [default: 20].
    #[arg(long, value_name = "DB")]
    pub min_sqnr: Option<f64>,
    /// Outputs without a task metric: cosine similarity at least C
    /// [default: 0.99].
    #[arg(long, value_name = "C")]
    pub min_cosine: Option<f64>,
    /// Class scores ([N, C], or a Softmax over C): the top class agrees
    /// with FP32's on at least this fraction of the rows (for a Softmax,
    /// near-ties aside: rows whose FP32 top two probabilities are within
    /// 0.05) [default: 0.95].
    #[arg(long, value_name = "F")]
    pub min_top1: Option<f64>,
    /// A Softmax over a map (a segmenter): the top class agrees on at
    /// least this fraction of the foreground positions (where either side's
    /// top class is not the sample's most frequent one) [default: 0.9].
    #[arg(long, value_name = "F")]
    pub min_foreground_top1: Option<f64>,
    /// A Softmax over a sequence ([1, T, C]: a CTC recognizer): each
    /// sequence decoded greedily (repeats collapsed, the most frequent
    /// class, CTC's blank, dropped) keeps at least this fraction of FP32's
    /// symbols (1 − edit distance / FP32's symbols) [default: 0.955].
    #[arg(long, value_name = "F")]
    pub min_sequence_agreement: Option<f64>,
    /// A Sigmoid map (a text detector's probabilities, a mask): IoU of the
    /// p > 0.5 masks at least F [default: 0.88].
    #[arg(long, value_name = "F")]
    pub min_mask_iou: Option<f64>,
    /// Embeddings (a LayerNormalization, pooling or normalization output:
    /// an encoder's hidden states or sentence vector): the mean cosine of
    /// each vector to FP32's at least F [default: 0.99].
    #[arg(long, value_name = "F")]
    pub min_vector_cosine: Option<f64>,
    /// Hold output NAME to exactly these metrics instead of the one its kind
    /// picks: NAME=METRIC:MIN[,METRIC:MIN] with METRIC one of sqnr, cosine,
    /// top1, foreground_top1, sequence_agreement, mask_iou, vector_cosine
    /// (e.g. boxes=sqnr:15), or NAME=none
    /// (reported, not gated). Repeatable; over the recipe's gate-outputs.
    #[arg(long = "gate-output", value_name = "NAME=METRIC:MIN",
          value_parser = crate::verify::gate::parse_output_gate)]
    pub outputs: Vec<(String, BTreeMap<Metric, f64>)>,
    /// Requantization arithmetic of the int8 executor: ort (onnxruntime's
    /// float32 multiplier) or exact (the ONNX reference, float64).
    #[arg(long, value_enum, default_value = "ort")]
    pub arith: ArithArg,
}

impl GateArgs {
    /// These flags as a recipe (only the gate's keys set), to overlay on a
    /// recipe file.
    pub fn recipe(&self) -> Recipe {
        Recipe {
            min_sqnr: self.min_sqnr,
            min_cosine: self.min_cosine,
            min_top1: self.min_top1,
            min_foreground_top1: self.min_foreground_top1,
            min_sequence_agreement: self.min_sequence_agreement,
            min_mask_iou: self.min_mask_iou,
            min_vector_cosine: self.min_vector_cosine,
            gate_outputs: self.outputs.iter().cloned().collect(),
            ..Recipe::default()
        }
    }
}

/// How sample files that are not tensors become the model's inputs
/// (shared by `calibrate`, `quantize` and `check`).
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// The samples are image files (a folder, or a text file listing
    /// them): how one becomes the model's input, comma-separated:
    /// resize=WxH, crop=center | letterbox, rgb | bgr | gray, scale=F
    /// (default 1/255), mean=…, std=… (one value or one per channel),
    /// layout=nchw | nhwc. Example:
    /// "resize=224x224,crop=center,rgb,mean=0.485,0.456,0.406,std=0.229,0.224,0.225".
    #[arg(long, value_name = "SPEC", conflicts_with = "tokenizer")]
    pub preprocess: Option<String>,
    /// The samples are a text file, a sentence a line (a tab splits a
    /// pair): tokenized by this Hugging Face tokenizer.json into the
    /// model's input_ids / attention_mask / token_type_ids / position_ids.
    #[arg(long, value_name = "JSON")]
    pub tokenizer: Option<String>,
    /// Tokens a sentence keeps at most [default: 128, or the sequence
    /// length the model fixes].
    #[arg(long, value_name = "N", requires = "tokenizer")]
    pub max_length: Option<usize>,
}

impl DecodeArgs {
    /// These flags as a recipe (only their keys set).
    pub fn recipe(&self) -> Recipe {
        Recipe {
            preprocess: self.preprocess.clone(),
            tokenizer: self.tokenizer.clone(),
            max_length: self.max_length,
            ..Recipe::default()
        }
    }
}
