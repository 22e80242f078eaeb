//! `onnxq sensitivity`: which nodes hurt the quantized model, node by node.

use super::args::{parse_dim, ActArg, MethodArg};
use crate::calibrate::{model_sha256, open_source, CollectOptions, Method};
use crate::ir::Model;
use crate::passes::{prepare, PassOptions};
use crate::pipeline::{range_options, Ranges, Samples};
use crate::quantize::{QType, QuantizeConfig, Recipe};
use crate::tune::{self, Evaluator, Score, SensitivityOptions};
use anyhow::Context;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

/// Per-node sensitivity: for every node onnxq would quantize (Conv, MatMul,
/// Gemm, requantizing ops — data movement follows its producer), the
/// model outputs' SQNR against FP32 (and top-1 agreement for class scores)
/// when only that node is quantized, and when every other one is. Prints a
/// table most harmful first; --report writes it as JSON, --plot as an SVG
/// bar chart. Calibrates once; every variant runs as fake-quantization in
/// tract on the validation samples, in parallel. The nodes at the top are
/// the ones to `--exclude` (or that `onnxq quantize` keeps float by itself
/// when its gate fails).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The FP32 ONNX model.
    pub model: PathBuf,
    /// Calibration samples (same forms as `quantize --calib`).
    #[arg(long, value_name = "SRC")]
    pub calib: Option<String>,
    /// A calibration table from `onnxq calibrate` instead of --calib.
    #[arg(long, value_name = "JSON", conflicts_with = "calib")]
    pub ranges: Option<PathBuf>,
    /// Samples the variants are scored on [default: the calibration samples].
    #[arg(long, value_name = "SRC")]
    pub validate: Option<String>,
    /// A quantize recipe (YAML): the options the variants are built with.
    #[arg(long, value_name = "YAML")]
    pub config: Option<PathBuf>,
    /// How activation ranges are chosen [default: minmax].
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Percentile for --method percentile [default: 99.999].
    #[arg(long)]
    pub percentile: Option<f64>,
    /// Activation type [default: uint8].
    #[arg(long, value_enum)]
    pub activations: Option<ActArg>,
    /// One weight scale per tensor instead of per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Op types to quantize (as `quantize --op-types`).
    #[arg(long, value_name = "OPS")]
    pub op_types: Vec<String>,
    /// Leave a node in float in every variant (name or glob, repeatable).
    #[arg(long, value_name = "NODE")]
    pub exclude: Vec<String>,
    /// Size of a symbolic input dimension, for random samples (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
    /// Measure only "only this node quantized" (half the work).
    #[arg(long, conflicts_with = "all_but")]
    pub only: bool,
    /// Measure only "all but this node quantized".
    #[arg(long)]
    pub all_but: bool,
    /// The gate's SQNR threshold, drawn on the chart and marked in the
    /// table [default: 20].
    #[arg(long, value_name = "DB")]
    pub min_sqnr: Option<f64>,
    /// Rows of the printed table (0: all) [default: 20].
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Write an SVG bar chart of every node.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write the analysis as JSON.
    #[arg(long, value_name = "JSON")]
    pub report: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
}

fn cell(s: &Option<Score>) -> String {
    match s {
        None => "—".into(),
        Some(s) => {
            let t1: Vec<String> = s
                .outputs
                .iter()
                .filter_map(|o| o.top1_agreement)
                .map(|t| format!("{:.1}%", 100.0 * t))
                .collect();
            if t1.is_empty() {
                format!("{:.1}", s.worst_sqnr_db)
            } else {
                format!("{:.1} (top-1 {})", s.worst_sqnr_db, t1.join("/"))
            }
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let file_recipe = match &args.config {
        Some(p) => Recipe::load(p)?,
        None => Recipe::default(),
    };
    let flags = Recipe {
        calib: args.calib.clone(),
        ranges: args.ranges.as_ref().map(|p| p.display().to_string()),
        method: args.method.map(Method::from),
        percentile: args.percentile,
        activations: args.activations.map(QType::from),
        per_channel: args.per_tensor.then_some(false),
        op_types: (!args.op_types.is_empty()).then(|| args.op_types.clone()),
        exclude: args.exclude.clone(),
        dims: args.dims.iter().cloned().collect(),
        validate: args.validate.clone(),
        min_sqnr: args.min_sqnr,
        ..Default::default()
    };
    let recipe = file_recipe.overlay(flags);
    if recipe.calib.is_some() && recipe.ranges.is_some() {
        anyhow::bail!("give calibration samples (calib) or a calibration table (ranges), not both");
    }
    let cfg = QuantizeConfig::from_recipe(&recipe)?;
    let loaded = crate::onnx::load_model(&args.model)?;
    let fingerprint = model_sha256(&loaded.proto);
    let what = || format!("{}", args.model.display());
    let mut model = Model::from_proto(&loaded.proto).with_context(what)?;
    let before = model.onnx_opset()?;
    let want = recipe.opset.unwrap_or(0).max(cfg.min_opset());
    prepare(
        &mut model,
        &PassOptions {
            target_opset: (want > before).then_some(want),
            ..Default::default()
        },
    )
    .with_context(what)?;

    let start = Instant::now();
    let needed = tune::search_needed(&model, &cfg).with_context(what)?;
    let samples = recipe
        .calib
        .clone()
        .map(|c| Samples::Spec(c).decoded(&recipe))
        .transpose()?;
    let calib = match &samples {
        Some(c) => {
            let specs = crate::ir::types::input_specs(&model.graph);
            Some((c, c.open(&specs, &recipe.dims, "calibration samples")?))
        }
        None => None,
    };
    let collect = CollectOptions {
        histograms: false,
        per_channel: false,
        jobs: args.jobs,
        progress: std::io::stderr().is_terminal(),
        ..CollectOptions::default()
    };
    let mut warnings = Vec::new();
    let ranges = Ranges::obtain(
        &model,
        &needed,
        recipe.ranges.as_deref().map(std::path::Path::new),
        calib,
        range_options(&recipe, &cfg)?,
        collect,
        &fingerprint,
        &mut warnings,
    )?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let validation = match (&recipe.validate, &recipe.calib) {
        (Some(v), _) | (None, Some(v)) => v.clone(),
        (None, None) => {
            anyhow::bail!("give --validate SRC: the samples the variants are scored on")
        }
    };
    let specs = crate::ir::types::input_specs(&model.graph);
    let source = open_source(&validation, &specs, &recipe.dims)
        .with_context(|| format!("validation samples {validation}"))?;
    let thresholds = recipe.thresholds();
    let eval = Evaluator::new(&model, source.as_ref(), thresholds.clone())?;
    let opts = SensitivityOptions {
        only: !args.all_but,
        all_but: !args.only,
        jobs: args.jobs,
        among: None,
    };
    let sens = tune::sensitivity(&model, &cfg, &ranges.map(), &eval, opts).with_context(what)?;
    let secs = start.elapsed().as_secs_f64();

    if let Some(p) = &args.report {
        let json = serde_json::json!({
            "onnxq_version": crate::VERSION,
            "model": args.model.display().to_string(),
            "calibration": {"source": ranges.source_note, "method": ranges.table.method.name(), "samples": ranges.table.samples},
            "validation": validation,
            "sensitivity": sens,
        });
        let text = serde_json::to_string_pretty(&json)? + "\n";
        crate::onnx::save::write_atomic(p, text.as_bytes())?;
    }
    if let Some(p) = &args.plot {
        let title = format!(
            "onnxq sensitivity: {}",
            args.model
                .file_name()
                .map_or_else(what, |f| f.to_string_lossy().into_owned())
        );
        crate::onnx::save::write_atomic(p, tune::svg::bar_chart(&sens, &title).as_bytes())?;
    }

    let mut out = format!(
        "sensitivity of {} nodes on {} samples of {validation} ({:.2} s; ranges: {} on {}); worst output SQNR in dB, gate {} dB\n",
        sens.nodes.len(),
        sens.samples,
        secs,
        ranges.table.method.name(),
        ranges.source_note,
        thresholds.min_sqnr_db,
    );
    out += &format!(
        "all quantized: {}{}\n",
        cell(&Some(sens.all.clone())),
        if sens.all.passes {
            ""
        } else {
            "  (fails the gate)"
        }
    );
    let rows = if args.top == 0 {
        sens.nodes.len()
    } else {
        args.top.min(sens.nodes.len())
    };
    let width = sens
        .nodes
        .iter()
        .take(rows)
        .map(|n| n.node.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    out += &format!(
        "{:>4}  {:<width$}  {:<12}  {:<24}  {}\n",
        "rank", "node", "op", "only this node", "all but this node"
    );
    for (i, n) in sens.nodes.iter().take(rows).enumerate() {
        out += &format!(
            "{:>4}  {:<width$}  {:<12}  {:<24}  {}\n",
            i + 1,
            n.node,
            n.op,
            cell(&n.only),
            cell(&n.all_but)
        );
    }
    if rows < sens.nodes.len() {
        out += &format!("… {} more (--top 0 shows all)\n", sens.nodes.len() - rows);
    }
    print!("{out}");
    Ok(super::EXIT_OK)
}
