//! `onnxq check`: the parity comparison on any quantized model.

use super::calibrate::parse_dim;
use super::quantize::ArithArg;
use anyhow::Context;
use onnxq::calibrate::open_source;
use onnxq::ir::Model;
use onnxq::passes::{prepare, PassOptions};
use onnxq::verify::{self, Thresholds};
use std::path::PathBuf;

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

/// Compare a quantized model (onnxq's or another tool's, QDQ or QOperator)
/// with its FP32 reference: the reference runs in tract, the quantized
/// model in onnxq's int8 executor, on the same samples. Prints per output
/// SQNR, cosine, max error (top-1/top-5 agreement for class scores) and the
/// worst quantized layers; exits 3 when an output misses a threshold.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The quantized model.
    pub model: PathBuf,
    /// The FP32 model it was made from.
    #[arg(long, value_name = "FP32")]
    pub reference: PathBuf,
    /// Samples: a directory of .npz files, a directory of
    /// test_data_set_*/input_N.pb folders, one .npz with a leading sample
    /// axis, or random:N[:SEED].
    #[arg(long, value_name = "SRC")]
    pub data: String,
    #[command(flatten)]
    pub gate: GateArgs,
    /// Size of a symbolic input dimension, for random samples (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
    /// How many of the worst layers to list [default: 5].
    #[arg(long, default_value_t = 5)]
    pub worst: usize,
    /// Write the comparison as JSON.
    #[arg(long, value_name = "JSON")]
    pub report: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let load = |p: &PathBuf| -> anyhow::Result<Model> {
        let l = onnxq::onnx::load_model(p)?;
        Model::from_proto(&l.proto).with_context(|| p.display().to_string())
    };
    let mut fp32 = load(&args.reference)?;
    // The same preparation quantize starts from, so value names match.
    prepare(&mut fp32, &PassOptions::default())
        .with_context(|| args.reference.display().to_string())?;
    let q = load(&args.model)?;
    let thresholds = args.gate.thresholds([None; 3]);
    let specs = onnxq::ir::types::input_specs(&fp32.graph);
    let dims = args.dims.iter().cloned().collect();
    let source = open_source(&args.data, &specs, &dims)?;
    let verdict = verify::compare(
        &fp32,
        &q,
        source.as_ref(),
        args.gate.arith.into(),
        thresholds,
        true,
    )
    .with_context(|| args.model.display().to_string())?;
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&verdict)? + "\n";
        onnxq::onnx::save::write_atomic(path, json.as_bytes())?;
    }
    println!(
        "{} vs {} on {} samples of {}: {}",
        args.model.display(),
        args.reference.display(),
        verdict.samples,
        args.data,
        if verdict.passed { "passed" } else { "FAILED" }
    );
    print!("{}", verify::describe(&verdict, args.worst));
    if verdict.accumulators_beyond_2_24 > 0 {
        println!(
            "  note: {} accumulators beyond 2^24 (float32 requantization is inexact there)",
            verdict.accumulators_beyond_2_24
        );
    }
    Ok(if verdict.passed {
        super::EXIT_OK
    } else {
        super::EXIT_GATE
    })
}
