//! Arguments more than one subcommand takes: sample dimensions, the
//! calibration method, activation type, the gate's thresholds and
//! arithmetic. Each subcommand's file depends on this one, never on a
//! sibling.

use onnxq::calibrate::Method;
use onnxq::exec::kernels::Arith;
use onnxq::quantize::QType;
use onnxq::verify::Thresholds;

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
/// `quantize`).
#[derive(Debug, clap::Args)]
pub struct GateArgs {
    /// Every float output's SQNR against FP32 at least DB [default: 20].
    #[arg(long, value_name = "DB")]
    pub min_sqnr: Option<f64>,
    /// Every output's cosine similarity at least C [default: 0.99].
    #[arg(long, value_name = "C")]
    pub min_cosine: Option<f64>,
    /// Class-score outputs ([N, C]) agree on the top class for at least this
    /// fraction of rows [default: 0.95].
    #[arg(long, value_name = "F")]
    pub min_top1: Option<f64>,
    /// Requantization arithmetic of the int8 executor: ort (onnxruntime's
    /// float32 multiplier) or exact (the ONNX reference, float64).
    #[arg(long, value_enum, default_value = "ort")]
    pub arith: ArithArg,
}

impl GateArgs {
    /// The thresholds: these flags, else `fallback` (a recipe), else the
    /// defaults.
    pub fn thresholds(&self, fallback: [Option<f64>; 3]) -> Thresholds {
        let d = Thresholds::default();
        Thresholds {
            min_sqnr_db: self.min_sqnr.or(fallback[0]).unwrap_or(d.min_sqnr_db),
            min_cosine: self.min_cosine.or(fallback[1]).unwrap_or(d.min_cosine),
            min_top1: self.min_top1.or(fallback[2]).unwrap_or(d.min_top1),
        }
    }
}
