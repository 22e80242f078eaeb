//! `onnxq optimize`: run the preparation passes and write the result.

use crate::ir::Model;
use crate::onnx::{save_model, SaveOptions};
use crate::passes::{prepare, PassOptions};
use anyhow::Context;
use std::path::PathBuf;

/// Prepare a model for quantization and write it: Constant nodes become
/// initializers, constant subgraphs fold, BatchNorm and per-channel Mul/Add
/// fold into the Conv/Gemm before them, no-op and dead nodes go, shapes are
/// inferred into value_info (symbolic sizes of intermediate values written
/// as unknown, which tract needs), and (with --opset) the opset is upgraded.
/// `onnxq quantize` always runs the same passes first.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model to read.
    model: PathBuf,
    /// Where to write the optimized model.
    #[arg(short, long)]
    output: PathBuf,
    /// Upgrade the default-domain opset to N first (e.g. 13, which
    /// per-channel QuantizeLinear/DequantizeLinear need).
    #[arg(long, value_name = "N")]
    opset: Option<i64>,
    /// Largest tensor, in bytes, that constant folding may create.
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    fold_limit: usize,
    /// Skip shape inference (no value_info written).
    #[arg(long)]
    no_shapes: bool,
    /// Print the pass report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Allow the output to overwrite the input model.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let loaded = crate::onnx::load_model(&args.model)?;
    let mut model =
        Model::from_proto(&loaded.proto).with_context(|| format!("{}", args.model.display()))?;
    let nodes_before = model.graph.node_count();
    let opts = PassOptions {
        target_opset: args.opset,
        fold_limit_bytes: args.fold_limit,
        infer_shapes: !args.no_shapes,
    };
    let report = prepare(&mut model, &opts).with_context(|| format!("{}", args.model.display()))?;
    let mut proto = model.to_proto()?;
    crate::onnx::portable_value_info(&mut proto);
    let save = SaveOptions {
        input: Some(args.model.clone()),
        force: args.force,
        ..Default::default()
    };
    save_model(&proto, &args.output, &save)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let rewrites: Vec<String> = report
        .rewrites
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    eprintln!(
        "wrote {}: {} → {} nodes, opset {} → {}; {}; {} values typed",
        args.output.display(),
        nodes_before,
        model.graph.node_count(),
        report.opset_before,
        report.opset_after,
        if rewrites.is_empty() {
            "nothing to rewrite".to_string()
        } else {
            rewrites.join(", ")
        },
        report.shapes_inferred,
    );
    if let Some(why) = &report.shape_inference_skipped {
        eprintln!("note: shape inference skipped: {why}");
    }
    Ok(super::EXIT_OK)
}
