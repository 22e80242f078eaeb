//! `onnxq calibrate`: activation ranges of a model on samples, as a table.

use anyhow::Context;
use onnxq::calibrate::{
    model_sha256, open_source, Calibrator, CollectOptions, Method, RangeOptions, RangeTable, Target,
};
use onnxq::ir::Model;
use onnxq::passes::{prepare, PassOptions};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

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

pub fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': expected NAME=VALUE"))?;
    let v = v.parse().map_err(|_| format!("'{s}': {v} is not a size"))?;
    Ok((k.to_string(), v))
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let loaded = onnxq::onnx::load_model(&args.model)?;
    let fingerprint = model_sha256(&loaded.proto);
    let mut model =
        Model::from_proto(&loaded.proto).with_context(|| format!("{}", args.model.display()))?;
    prepare(&mut model, &PassOptions::default())
        .with_context(|| format!("{}", args.model.display()))?;
    let calibrator = Calibrator::new(&model)?;
    let dims: BTreeMap<String, usize> = args.dims.iter().cloned().collect();
    let source = open_source(&args.calib, calibrator.inputs(), &dims)?;
    if args.calib.starts_with("random:") {
        eprintln!("warning: random samples give ranges unlike real data; calibrate on real samples for a usable model");
    }
    let opts = RangeOptions {
        method: args.method.into(),
        percentile: args.percentile,
        target: match args.activations {
            TargetArg::Uint8 => Target::Uint8,
            TargetArg::Int8 => Target::Int8,
        },
    };
    if !(50.0..=100.0).contains(&opts.percentile) {
        anyhow::bail!("--percentile {} is outside 50..=100", opts.percentile);
    }
    let start = Instant::now();
    let collected = calibrator.collect(
        source.as_ref(),
        &CollectOptions {
            histograms: opts.method.needs_histogram(),
            per_channel: args.per_channel,
            jobs: args.jobs,
            progress: std::io::stderr().is_terminal(),
        },
    )?;
    let mut table = RangeTable::compute(&collected, &opts, &fingerprint);
    if opts.method == Method::Auto {
        let wanted = collected.stats.keys().cloned().collect();
        let choices = onnxq::calibrate::choose::choose(
            &model,
            &collected,
            &opts,
            &wanted,
            source.as_ref(),
            args.jobs,
        )?;
        table.apply_choices(&choices);
    }
    let secs = start.elapsed().as_secs_f64();
    table.save(&args.output)?;
    eprintln!(
        "wrote {}: {} tensors, {} samples in {:.2} s ({:.1} samples/s, {} plan{}), method {}",
        args.output.display(),
        table.tensors.len(),
        collected.samples,
        secs,
        collected.samples as f64 / secs.max(1e-9),
        collected.plans,
        if collected.plans == 1 { "" } else { "s" },
        opts.method.name(),
    );
    if opts.method == Method::Auto {
        eprintln!(
            "  chosen per tensor: {}",
            super::quantize::by_op(
                &table
                    .chosen()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect()
            )
        );
    }
    Ok(super::EXIT_OK)
}
