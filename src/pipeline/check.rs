//! `onnxq check --reference`: any quantized model (onnxq's or another
//! tool's, QDQ or QOperator) compared with the FP32 model it was made from,
//! on samples: the reference in tract, the quantized model in onnxq's int8
//! executor or in a deployment runtime (`--runtime`), the gate's metrics
//! per output.

use super::{in_model, Samples};
use crate::error::Result;
use crate::exec::kernels::Arith;
use crate::ir::Model;
use crate::onnx::LoadedModel;
use crate::passes::{prepare, PassOptions};
use crate::runtime::Runtime;
use crate::verify::{self, Thresholds, Verdict};
use std::collections::BTreeMap;
use std::path::Path;

/// Compares `quantized` with `reference` on `samples` (`dims` sizes the
/// symbolic dimensions of random samples) under `thresholds`; the verdict
/// lists every output's metrics and the worst layers. A failed comparison
/// is `passed: false`, not an error.
pub fn check(
    quantized: &LoadedModel,
    reference: &LoadedModel,
    samples: &Samples,
    thresholds: &Thresholds,
    arith: Arith,
    dims: &BTreeMap<String, usize>,
) -> Result<Verdict> {
    check_in(quantized, reference, samples, thresholds, arith, dims, None)
}

/// Where [`check_in`] runs the quantized model instead of onnxq's int8
/// executor.
#[derive(Clone, Copy, Debug)]
pub struct InRuntime<'a> {
    pub runtime: Runtime,
    /// The quantized model's file, as the runtime reads it.
    pub model: &'a Path,
    /// The runtime's shared library (file or folder); `None`: found as
    /// [`crate::runtime`] says.
    pub library: Option<&'a Path>,
    /// The runtime's threads (0: its default).
    pub threads: usize,
}

/// [`check`], the quantized model run in `runtime` when given: the
/// verdict is then on what that runtime computes (outputs only; no
/// per-layer comparison), and names it.
pub fn check_in(
    quantized: &LoadedModel,
    reference: &LoadedModel,
    samples: &Samples,
    thresholds: &Thresholds,
    arith: Arith,
    dims: &BTreeMap<String, usize>,
    runtime: Option<InRuntime>,
) -> Result<Verdict> {
    let mut fp32 = checked(reference)?;
    // The same preparation quantize starts from, so value names match.
    let what = reference.label();
    prepare(&mut fp32, &PassOptions::default()).map_err(|e| in_model(&what, e))?;
    // A model a runtime runs is that runtime's to accept (it may hold ops
    // onnxq's schemas and executor do not know); onnxq's executor needs
    // them checked.
    let q = match runtime {
        Some(_) => {
            Model::from_proto(&quantized.proto).map_err(|e| in_model(&quantized.label(), e))?
        }
        None => checked(quantized)?,
    };
    let specs = crate::ir::types::input_specs(&fp32.graph);
    let source = samples.open(&specs, dims, "samples")?;
    // A model onnxq equalized: the same balance on the reference gives the
    // per-channel scales of the rescaled layers (compared per layer, which
    // a runtime's check does not do).
    let rescaled = if runtime.is_none()
        && q.metadata()
            .any(|(k, v)| k == "onnxq.equalized" && v == "true")
    {
        crate::passes::equalize::equalize(&mut fp32.clone())
            .map_err(|e| in_model(&what, e))?
            .rescaled
    } else {
        Default::default()
    };
    let session = match runtime {
        Some(r) => Some(std::sync::Mutex::new(crate::runtime::open(
            r.runtime, r.model, r.library, r.threads,
        )?)),
        None => None,
    };
    let how = verify::Comparison {
        arith,
        thresholds,
        layer_samples: usize::MAX,
        rescaled: &rescaled,
        references: &verify::References::new(0),
        runtime: session.as_ref(),
    };
    verify::compare(&fp32, &q, source.as_ref(), &how).map_err(|e| in_model(&quantized.label(), e))
}

/// A loaded model as the graph, its schema checked.
pub(crate) fn checked(loaded: &LoadedModel) -> Result<Model> {
    let what = loaded.label();
    let m = Model::from_proto(&loaded.proto).map_err(|e| in_model(&what, e))?;
    crate::ir::schema::check_model(&m).map_err(|e| in_model(&what, e))?;
    Ok(m)
}
