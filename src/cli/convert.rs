//! `onnxq convert`: load and re-save a model, e.g. to move weights into or
//! out of an external data file. Nothing in the graph changes.

use crate::ir::Model;
use crate::onnx::{save_model, ExternalDataOptions, SaveOptions};
use anyhow::Context;
use std::path::PathBuf;

/// Re-save a model unchanged: validate it, resolve its external data, and
/// write it (optionally with its weights in an external data file).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model to read.
    model: PathBuf,
    /// Where to write it.
    #[arg(short, long)]
    output: PathBuf,
    /// Store tensors of at least --external-threshold bytes in a data file
    /// beside the output (named after the output plus `.data`, or FILE).
    /// Models over 2 GiB always are.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "")]
    external_data: Option<String>,
    /// Smallest tensor, in bytes, moved to the external data file.
    #[arg(long, default_value_t = 1024, requires = "external_data")]
    external_threshold: usize,
    /// Allow the output to overwrite the input model.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let loaded = crate::onnx::load_model(&args.model)?;
    let model =
        Model::from_proto(&loaded.proto).with_context(|| format!("{}", args.model.display()))?;
    let proto = model.to_proto()?;
    let opts = SaveOptions {
        external_data: args.external_data.map(|loc| ExternalDataOptions {
            location: (!loc.is_empty()).then_some(loc),
            threshold: args.external_threshold,
        }),
        input: Some(args.model.clone()),
        force: args.force,
    };
    save_model(&proto, &args.output, &opts)?;
    eprintln!(
        "wrote {} ({} nodes, {} initializers)",
        args.output.display(),
        model.graph.node_count(),
        model.graph.initializers().count()
    );
    Ok(super::EXIT_OK)
}
