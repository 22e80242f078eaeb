//! `onnxq calibrate`: activation ranges of a model on samples, as a table
//! ([`crate::pipeline::calibrate`]).

use super::args::{parse_dim, DecodeArgs, MethodArg};
use crate::calibrate::{CollectOptions, Method, RangeOptions, Target};
use crate::pipeline::{by_op, Samples, RANDOM_RANGES_WARNING};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

/// The activation type the ranges are meant for.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TargetArg {
    /// Asymmetric uint8 (default).
    Uint8,
    /// Symmetric int8.
    Int8,
}

/// Calibrate: run the (prepared) model through tract on samples and write
/// each activation's quantization range to a JSON table, which
/// `onnxq quantize --ranges` reuses.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The FP32 ONNX model.
    pub model: PathBuf,
    /// Samples: a directory of .npz files (one sample each, arrays named
    /// after the model inputs), a directory of test_data_set_*/input_N.pb
    /// folders, one .npz with a leading sample axis, or random:N[:SEED].
    #[arg(long, value_name = "SRC")]
    pub calib: String,
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// How ranges are chosen.
    #[arg(long, value_enum, default_value = "minmax")]
    pub method: MethodArg,
    /// Percentile for --method percentile.
    #[arg(long, default_value_t = 99.999)]
    pub percentile: f64,
    /// Activation type the ranges are for (matters for --method mse).
    #[arg(long, value_enum, default_value = "uint8")]
    pub activations: TargetArg,
    /// Size of a symbolic input dimension, for random samples (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
    /// Worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Also record per-channel (axis 1) extremes of every activation.
    #[arg(long)]
    pub per_channel: bool,
    /// Where to write the table (JSON).
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let loaded = crate::onnx::load_model(&args.model)?;
    let samples = Samples::Spec(args.calib.clone()).decoded(&args.decode.recipe())?;
    let opts = RangeOptions {
        method: args.method.into(),
        percentile: args.percentile,
        target: match args.activations {
            TargetArg::Uint8 => Target::Uint8,
            TargetArg::Int8 => Target::Int8,
        },
    };
    let collect = CollectOptions {
        histograms: false,
        per_channel: args.per_channel,
        jobs: args.jobs,
        progress: std::io::stderr().is_terminal(),
        ..CollectOptions::default()
    };
    let dims: BTreeMap<String, usize> = args.dims.iter().cloned().collect();
    let done = crate::pipeline::calibrate(&loaded, &samples, &opts, &collect, &dims)?;
    let table = &done.table;
    if samples.is_random() {
        eprintln!("warning: {RANDOM_RANGES_WARNING}");
    }
    table.save(&args.output)?;
    eprintln!(
        "wrote {}: {} tensors, {} samples in {:.2} s ({:.1} samples/s, {} plan{}), method {}",
        args.output.display(),
        table.tensors.len(),
        table.samples,
        done.secs,
        table.samples as f64 / done.secs.max(1e-9),
        done.plans,
        if done.plans == 1 { "" } else { "s" },
        opts.method.name(),
    );
    if opts.method == Method::Auto {
        let chosen = table
            .chosen()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        eprintln!("  chosen per tensor: {}", by_op(&chosen));
    }
    Ok(super::EXIT_OK)
}
