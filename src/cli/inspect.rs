//! `onnxq inspect`: what a model holds, as a table or JSON.

use crate::ir::Model;
use anyhow::Context;
use std::path::PathBuf;

/// Show what a model holds: producer, opsets, inputs/outputs, op types,
/// parameters by dtype, where weights live, and which nodes INT8 would
/// quantize.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let loaded = crate::onnx::load_model(&args.model)?;
    let model =
        Model::from_proto(&loaded.proto).with_context(|| format!("{}", args.model.display()))?;
    let report = crate::inspect::inspect(&loaded, &model);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(super::EXIT_OK)
}
