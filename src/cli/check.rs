//! `onnxq check`: the parity comparison on any quantized model.

use super::args::{parse_dim, DecodeArgs, GateArgs};
use crate::ir::Model;
use crate::pipeline::Samples;
use crate::runtime::Runtime;
use crate::verify;
use anyhow::Context;
use std::path::PathBuf;

/// Compare a quantized model (onnxq's or another tool's, QDQ or QOperator)
/// with its FP32 reference: the reference runs in tract, the quantized
/// model in onnxq's int8 executor (or, with --runtime, in onnxruntime or
/// OpenVINO, as deployed), on the same samples. Prints per output
/// SQNR, cosine, max error (top-1/top-5 agreement for class scores) and the
/// worst quantized layers; exits 3 when an output misses a threshold.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The quantized model.
    pub model: PathBuf,
    /// The FP32 model it was made from.
    #[arg(
        long,
        value_name = "FP32",
        required_unless_present = "golden",
        requires = "data"
    )]
    pub reference: Option<PathBuf>,
    /// Samples: a directory of .npz files, a directory of
    /// test_data_set_*/input_N.pb folders, one .npz with a leading sample
    /// axis, or random:N[:SEED].
    #[arg(long, value_name = "SRC")]
    pub data: Option<String>,
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Instead of a reference model: a directory of ONNX backend-test
    /// folders (test_data_set_*/input_N.pb and output_N.pb, or inputs.npz
    /// and outputs.npz); the model (int8 executor when it holds quantized
    /// ops, tract otherwise) must reproduce every output within
    /// --rtol/--atol.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["reference", "data"])]
    pub golden: Option<PathBuf>,
    /// Relative tolerance for --golden.
    #[arg(long, default_value_t = 1e-3)]
    pub rtol: f64,
    /// Absolute tolerance for --golden.
    #[arg(long, default_value_t = 1e-5)]
    pub atol: f64,
    #[command(flatten)]
    pub gate: GateArgs,
    /// Size of a symbolic input dimension, for random samples (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
    /// How many of the worst layers to list [default: 5].
    #[arg(long, default_value_t = 5)]
    pub worst: usize,
    /// Run the quantized model in this runtime instead of onnxq's int8
    /// executor, so the verdict is on what the deployment runtime
    /// computes (outputs only; no per-layer list). Its shared library is
    /// opened at run time: --runtime-lib, else ORT_DYLIB_PATH (ort) or
    /// OPENVINO_INSTALL_DIR / INTEL_OPENVINO_DIR / LD_LIBRARY_PATH
    /// (openvino), else the wheel in $VIRTUAL_ENV or ./.venv.
    #[arg(long, value_enum, value_name = "RUNTIME", conflicts_with = "golden")]
    pub runtime: Option<RuntimeArg>,
    /// The runtime's shared library (libonnxruntime.so*, libopenvino_c.so*)
    /// or the folder holding it.
    #[arg(long, value_name = "PATH", requires = "runtime")]
    pub runtime_lib: Option<PathBuf>,
    /// Write the comparison as JSON.
    #[arg(long, value_name = "JSON")]
    pub report: Option<PathBuf>,
}

/// A deployment runtime for `--runtime`.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum RuntimeArg {
    /// onnxruntime's CPU execution provider.
    Ort,
    /// OpenVINO's CPU plugin.
    Openvino,
}

fn load(p: &PathBuf) -> anyhow::Result<Model> {
    let l = crate::onnx::load_model(p)?;
    let m = Model::from_proto(&l.proto).with_context(|| p.display().to_string())?;
    crate::ir::schema::check_model(&m).with_context(|| p.display().to_string())?;
    Ok(m)
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    if let Some(dir) = &args.golden {
        return golden(&args, dir);
    }
    let (Some(reference), Some(data)) = (&args.reference, &args.data) else {
        anyhow::bail!("give --reference FP32 --data SRC, or --golden DIR");
    };
    let thresholds = args.gate.recipe().thresholds();
    let dims = args.dims.iter().cloned().collect();
    let in_runtime = args.runtime.map(|r| crate::pipeline::InRuntime {
        runtime: match r {
            RuntimeArg::Ort => Runtime::Ort,
            RuntimeArg::Openvino => Runtime::Openvino,
        },
        model: &args.model,
        library: args.runtime_lib.as_deref(),
        threads: 0,
    });
    let verdict = crate::pipeline::check_in(
        &crate::onnx::load_model(&args.model)?,
        &crate::onnx::load_model(reference)?,
        &Samples::Spec(data.clone()).decoded(&args.decode.recipe())?,
        &thresholds,
        args.gate.arith.into(),
        &dims,
        in_runtime,
    )?;
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&verdict)? + "\n";
        crate::onnx::save::write_atomic(path, json.as_bytes())?;
    }
    println!(
        "{} vs {} on {} samples of {}{}: {}",
        args.model.display(),
        reference.display(),
        verdict.samples,
        data,
        verdict
            .runtime
            .as_ref()
            .map(|r| format!(", run in {r}"))
            .unwrap_or_default(),
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

/// `--golden DIR`: reproduce recorded outputs within tolerances.
fn golden(args: &Args, dir: &std::path::Path) -> anyhow::Result<u8> {
    use crate::calibrate::samples::{read_npz, read_pb_files, PbDirs, Sample, SampleSource};
    use crate::onnx::tensor::tensor_from_proto;
    let model = load(&args.model)?;
    let g = &model.graph;
    let specs = crate::ir::types::input_specs(g);
    let outputs: Vec<String> = g.outputs().map(|v| g.value_name(v).to_string()).collect();
    let quantized = g.nodes().any(|(_, n)| {
        crate::exec::INTEGER_OPS.contains(&n.op_type.as_str()) || n.domain == "com.microsoft"
    });
    let exec = if quantized {
        Some(crate::exec::Executor::new(
            &model,
            args.gate.arith.into(),
            &[],
        )?)
    } else {
        None
    };
    let proto = model.to_proto()?;
    let sets = PbDirs::open(dir, &specs)?;
    if sets.is_empty() {
        anyhow::bail!("{}: no test_data_set_* folders", dir.display());
    }
    let mut failed = 0usize;
    for i in 0..sets.len() {
        let set = sets.set(i).to_path_buf();
        let set_name = sets.name(i);
        let npz = set.join("inputs.npz");
        let (sample, expected): (Sample, Sample) = if npz.exists() {
            let ins = read_npz(&npz)?.into_iter().collect();
            let outs = read_npz(&set.join("outputs.npz"))?.into_iter().collect();
            (ins, outs)
        } else {
            let ins = sets.load(i)?;
            let mut outs = Vec::new();
            for (k, (path, t)) in read_pb_files(&set, "output")?.into_iter().enumerate() {
                let name = if outputs.iter().any(|o| o == t.name()) {
                    t.name().to_string()
                } else {
                    outputs.get(k).cloned().ok_or_else(|| {
                        anyhow::anyhow!("{}: the model has no output {k}", path.display())
                    })?
                };
                outs.push((
                    name,
                    tensor_from_proto(&t).with_context(|| path.display().to_string())?,
                ));
            }
            (ins, outs)
        };
        crate::calibrate::samples::check_sample(&set_name, &sample, &specs)?;
        let got: std::collections::BTreeMap<String, crate::ir::Tensor> = match &exec {
            Some(e) => e.run(&sample)?.0,
            None => {
                let s: Vec<_> = sample
                    .iter()
                    .map(|(n, t)| (n.clone(), t.dtype(), t.dims().to_vec()))
                    .collect();
                let r = crate::tract::Runner::new(&proto, &s, None)?;
                outputs.iter().cloned().zip(r.run(&sample)?).collect()
            }
        };
        for (name, want) in &expected {
            let have = got.get(name).ok_or_else(|| {
                anyhow::anyhow!("{set_name}: the model computed no output '{name}'")
            })?;
            if have.dims() != want.dims() {
                println!(
                    "  {set_name} {name}: shape {:?}, expected {:?}",
                    have.dims(),
                    want.dims()
                );
                failed += 1;
                continue;
            }
            let (a, b) = (
                have.to_f32_vec().or_else(|_| ints(have))?,
                want.to_f32_vec().or_else(|_| ints(want))?,
            );
            let mut bad = 0usize;
            let mut worst = 0f64;
            for (&x, &y) in a.iter().zip(&b) {
                let d = (x as f64 - y as f64).abs();
                worst = worst.max(d);
                if d > args.atol + args.rtol * (y as f64).abs() || d.is_nan() {
                    bad += 1;
                }
            }
            let verdict = if bad == 0 { "ok" } else { "MISMATCH" };
            println!(
                "  {set_name} {name}: {verdict} ({bad} of {} elements outside rtol {} atol {}, max |diff| {worst:.3e})",
                a.len(),
                args.rtol,
                args.atol
            );
            failed += usize::from(bad > 0);
        }
    }
    println!(
        "{} on {} golden set(s) of {} ({}): {}",
        args.model.display(),
        sets.len(),
        dir.display(),
        if exec.is_some() {
            "int8 executor"
        } else {
            "tract"
        },
        if failed == 0 { "passed" } else { "FAILED" }
    );
    Ok(if failed == 0 {
        super::EXIT_OK
    } else {
        super::EXIT_GATE
    })
}

fn ints(t: &crate::ir::Tensor) -> crate::Result<Vec<f32>> {
    Ok(t.to_i64_vec()?.into_iter().map(|v| v as f32).collect())
}
