//! `onnxq check --reference`: any quantized model (onnxq's or another
//! tool's, QDQ or QOperator) compared with the FP32 model it was made from,
//! on samples: the reference in tract, the quantized model in onnxq's int8
//! executor, the gate's metrics per output.

use super::{in_model, Samples};
use crate::error::Result;
use crate::exec::kernels::Arith;
use crate::ir::Model;
use crate::onnx::LoadedModel;
use crate::passes::{prepare, PassOptions};
use crate::verify::{self, Thresholds, Verdict};
use std::collections::BTreeMap;

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
    let mut fp32 = checked(reference)?;
    // The same preparation quantize starts from, so value names match.
    let what = reference.label();
    prepare(&mut fp32, &PassOptions::default()).map_err(|e| in_model(&what, e))?;
    let q = checked(quantized)?;
    let specs = crate::ir::types::input_specs(&fp32.graph);
    let source = samples.open(&specs, dims, "samples")?;
    // A model onnxq equalized: the same balance on the reference gives the
    // per-channel scales of the rescaled layers.
    let rescaled = if q
        .metadata()
        .any(|(k, v)| k == "onnxq.equalized" && v == "true")
    {
        crate::passes::equalize::equalize(&mut fp32.clone())
            .map_err(|e| in_model(&what, e))?
            .rescaled
    } else {
        Default::default()
    };
    let how = verify::Comparison {
        arith,
        thresholds,
        layer_samples: usize::MAX,
        rescaled: &rescaled,
        references: &verify::References::new(0),
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
