//! `onnxq run`: run a model on samples and write its outputs.

use super::args::{parse_dim, ArithArg};
use crate::calibrate::open_source;
use crate::calibrate::samples::{check_sample, write_npz};
use crate::exec::Executor;
use crate::ir::Model;
use crate::tract::Runner;
use anyhow::Context;
use std::collections::HashMap;
use std::path::PathBuf;

/// Engine that runs the model.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum Engine {
    /// onnxq's reference int8 executor (integer ops ours, float ops
    /// through tract).
    Int8,
    /// tract for the whole model.
    Tract,
}

/// Run a model on samples and write one .npz of outputs per sample, named
/// like the sample (`0003.npz` for `0003.npz`, `test_data_set_3.npz` for a
/// pb folder, `7.npz` for random sample 7), arrays keyed by output name.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model.
    pub model: PathBuf,
    /// Samples (as for `calibrate --calib`).
    #[arg(long, value_name = "SRC")]
    pub data: String,
    /// Output directory (created).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Engine.
    #[arg(long, value_enum, default_value = "int8")]
    pub engine: Engine,
    /// Requantization arithmetic of the int8 engine.
    #[arg(long, value_enum, default_value = "ort")]
    pub arith: ArithArg,
    /// Size of a symbolic input dimension, for random samples (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
}

/// The output file name of sample `name`.
fn out_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let base = base.strip_suffix(".npz").unwrap_or(base);
    format!("{base}.npz")
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let loaded = crate::onnx::load_model(&args.model)?;
    let model =
        Model::from_proto(&loaded.proto).with_context(|| args.model.display().to_string())?;
    crate::ir::schema::check_model(&model).with_context(|| args.model.display().to_string())?;
    let specs = crate::ir::types::input_specs(&model.graph);
    let dims = args.dims.iter().cloned().collect();
    let source = open_source(&args.data, &specs, &dims)?;
    let outputs: Vec<String> = model
        .graph
        .outputs()
        .map(|v| model.graph.value_name(v).to_string())
        .collect();
    let exec = match args.engine {
        Engine::Int8 => Some(Executor::new(&model, args.arith.into(), &[])?),
        Engine::Tract => None,
    };
    let proto = model.to_proto()?;
    let mut runners: HashMap<Vec<Vec<usize>>, Runner> = HashMap::new();
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    for i in 0..source.len() {
        let name = source.name(i);
        let sample = source.load(i)?;
        check_sample(&name, &sample, &specs)?;
        let results: Vec<(String, crate::ir::Tensor)> = match &exec {
            Some(e) => {
                let (mut got, _) = e.run(&sample).with_context(|| format!("sample {name}"))?;
                let mut v = Vec::with_capacity(outputs.len());
                for o in &outputs {
                    let t = got.remove(o).ok_or_else(|| {
                        anyhow::anyhow!("sample {name}: output '{o}' was not computed")
                    })?;
                    v.push((o.clone(), t));
                }
                v
            }
            None => {
                let key: Vec<Vec<usize>> = sample.iter().map(|(_, t)| t.dims().to_vec()).collect();
                if !runners.contains_key(&key) {
                    let s: Vec<_> = sample
                        .iter()
                        .map(|(n, t)| (n.clone(), t.dtype(), t.dims().to_vec()))
                        .collect();
                    runners.insert(key.clone(), Runner::new(&proto, &s, None)?);
                }
                let got = runners[&key].run(&sample)?;
                outputs.iter().cloned().zip(got).collect()
            }
        };
        let path = args.output.join(out_name(&name));
        write_npz(&path, &results)?;
    }
    eprintln!(
        "wrote {} output file(s) to {}",
        source.len(),
        args.output.display()
    );
    Ok(super::EXIT_OK)
}
