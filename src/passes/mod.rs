//! Graph preparation: the passes that put a real export into the shape a
//! quantizer needs, and the manager that runs them.
//!
//! Order, and why:
//!
//! 1. [`opset::UpgradeOpset`] (only when a target opset is asked for): first,
//!    so every later pass sees one op signature per op type (axes as inputs,
//!    Clip bounds as inputs, …).
//! 2. The fixed-point list [`PREPARE`], run until nothing changes:
//!    Constant nodes become initializers (so weights are visible), no-op
//!    nodes go (Identity, inference Dropout, identity Reshape/Transpose/Cast),
//!    constant subgraphs fold (so weights computed from constants become
//!    constants), BatchNorm and per-channel Mul/Add fold into the producing
//!    Conv/Gemm, then dead nodes and unused or duplicate initializers go.
//! 3. [`shapes::infer_shapes`]: types and shapes of every value, from tract,
//!    written into `value_info`.
//!
//! Before 1 and after 3, [`crate::ir::schema::check_model`] refuses nodes
//! whose attributes break the ONNX schema (tract panics or hangs on some);
//! after 3 it also sees the ranks of inner values.
//!
//! Outside that order: [`equalize::equalize`] (cross-layer equalization),
//! which `quantize` runs after preparation (`--equalize`).
//!
//! Every pass is wrapped in error context ("pass 'fold-batchnorm': …") and
//! followed by [`Graph::validate`](crate::ir::Graph::validate).

pub mod cleanup;
pub mod constants;
pub mod equalize;
pub mod fold;
pub mod fold_bn;
pub mod opset;
pub mod shapes;

use crate::error::{Error, Result};
use crate::ir::Model;
use std::collections::BTreeMap;

/// Settings shared by the passes.
#[derive(Clone, Debug)]
pub struct PassOptions {
    /// Upgrade the default-domain opset to this version first.
    pub target_opset: Option<i64>,
    /// Largest tensor (bytes) constant folding may create.
    pub fold_limit_bytes: usize,
    /// Run shape inference at the end and write `value_info`.
    pub infer_shapes: bool,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions {
            target_opset: None,
            fold_limit_bytes: 16 << 20,
            infer_shapes: true,
        }
    }
}

/// A graph pass. `run` returns how many rewrites it made (0: nothing to do).
pub trait Pass: Sync {
    /// Short name, used in reports and error context.
    fn name(&self) -> &'static str;
    fn run(&self, model: &mut Model, opts: &PassOptions) -> Result<usize>;
}

/// The fixed-point passes, in the order they run.
pub static PREPARE: &[&dyn Pass] = &[
    &constants::ConstantToInitializer,
    &cleanup::RemoveNoOps,
    &fold::ConstantFold,
    &fold_bn::FoldBatchNorm,
    &fold_bn::FoldChannelAffine,
    &cleanup::RemoveDeadNodes,
    &cleanup::DedupInitializers,
];

/// How many times the fixed-point list may run before we stop.
const MAX_ROUNDS: usize = 16;

/// What the passes did: rewrites per pass, rounds run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PassReport {
    pub rewrites: BTreeMap<&'static str, usize>,
    pub rounds: usize,
    /// Values given a type/shape by shape inference.
    pub shapes_inferred: usize,
    /// Why shape inference could not run, if it could not.
    pub shape_inference_skipped: Option<String>,
    pub opset_before: i64,
    pub opset_after: i64,
}

fn run_one(pass: &dyn Pass, model: &mut Model, opts: &PassOptions) -> Result<usize> {
    let wrap = |e: Error| Error::Pass {
        pass: pass.name(),
        source: Box::new(e),
    };
    let n = pass.run(model, opts).map_err(wrap)?;
    if n > 0 {
        model.graph.validate().map_err(wrap)?;
    }
    Ok(n)
}

/// Runs the preparation passes on `model`.
pub fn prepare(model: &mut Model, opts: &PassOptions) -> Result<PassReport> {
    // Nothing reaches tract (folding, shape inference) unchecked.
    crate::ir::schema::check_model(model)?;
    let mut report = PassReport {
        opset_before: model.onnx_opset()?,
        ..Default::default()
    };
    // IR < 4 lists every initializer as a graph input because the spec
    // required it; runtimes treat them as constants. Make that explicit, so
    // folding and weight detection see them (IR 4 no longer requires it).
    if model.ir_version() < 4 {
        let n = model.graph.unlist_initializer_inputs();
        report.rewrites.insert("unlist-initializer-inputs", n);
        model.set_ir_version(4);
    }
    if opts.target_opset.is_some() {
        let n = run_one(&opset::UpgradeOpset, model, opts)?;
        report.rewrites.insert(opset::UpgradeOpset.name(), n);
    }
    for round in 1..=MAX_ROUNDS {
        report.rounds = round;
        let mut changed = 0;
        for pass in PREPARE {
            let n = run_one(*pass, model, opts)?;
            *report.rewrites.entry(pass.name()).or_insert(0) += n;
            changed += n;
        }
        if changed == 0 {
            break;
        }
    }
    if opts.infer_shapes {
        match shapes::infer_shapes(model) {
            Ok(n) => report.shapes_inferred = n,
            Err(e) => report.shape_inference_skipped = Some(e.to_string()),
        }
        // Ranks now known for inner values: the rank-dependent checks again.
        crate::ir::schema::check_model(model)?;
    }
    report.opset_after = model.onnx_opset()?;
    Ok(report)
}

#[cfg(test)]
pub(crate) mod testutil;
