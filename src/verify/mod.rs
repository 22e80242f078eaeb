//! Parity: how close an INT8 model's outputs are to the FP32 model's, and
//! the gate that refuses a model that drifted too far.
//!
//! Runs the FP32 model through tract and the INT8 model through the
//! reference executor ([`crate::exec`]) on the same samples, and measures per
//! output: max and mean absolute error, cosine similarity, SQNR (dB), and
//! for outputs shaped like class scores (`[N, C]`, C ≥ 2) top-1 / top-5
//! agreement, and the task metrics of the output's kind ([`kinds`]); each
//! output is held to the metrics that fit it ([`gate`]). Per layer: every int8 tensor `T/quantized` whose float
//! counterpart `T` exists in the FP32 model is dequantized and compared
//! (SQNR, cosine), worst first — the layer that broke the model shows up
//! at the top. Reads both models; writes nothing.

use crate::calibrate::samples::{check_sample, SampleSource};
mod accum;
pub mod gate;
pub mod kinds;
pub(crate) mod output;
pub(crate) use accum::Accum;
use accum::LayerPair;
pub use gate::{Check, Metric, Thresholds};

use crate::error::{Error, Result};
use crate::exec::kernels::Arith;
use crate::exec::{Executor, RunStats};
use crate::ir::types::input_specs;
use crate::ir::{DataType, Model, Tensor};
use crate::passes::equalize::ChannelScale;
use crate::tract::{from_tract, Runner};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Parity of one output over all samples.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OutputMetrics {
    pub name: String,
    pub elements: u64,
    pub max_abs_error: f64,
    pub mean_abs_error: f64,
    pub cosine: f64,
    pub sqnr_db: f64,
    /// Class-score outputs only.
    pub top1_agreement: Option<f64>,
    pub top5_agreement: Option<f64>,
    /// Rows that are not near-ties (for probabilities, FP32's top two more
    /// than 0.05 apart; for other scores, every row), and the top-1
    /// agreement on them: what the gate's `top1` holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decisive_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decisive_top1_agreement: Option<f64>,
    /// Class probabilities per position (a Softmax over a sequence or a
    /// map): top-1 agreement per position, and on the foreground
    /// positions ([`kinds`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub positions: Option<kinds::PositionMetrics>,
    /// Per-element probabilities (a Sigmoid map): IoU of the `p > 0.5`
    /// masks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_iou: Option<f64>,
    /// Embeddings: the mean cosine of each vector (last axis) to FP32's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_cosine: Option<f64>,
    /// What the output is, from the graph ([`kinds::Kind::describe`]).
    pub kind: String,
    /// Why it is held to the metrics in `gate`.
    pub judged_by: String,
    /// The metrics the gate held it to: value, minimum, passed.
    pub gate: Vec<Check>,
    /// Why the output fails the gate (empty when it passes).
    pub failures: Vec<String>,
}

/// Parity of one quantized intermediate tensor.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerMetrics {
    pub tensor: String,
    pub node: String,
    pub op: String,
    pub sqnr_db: f64,
    pub cosine: f64,
}

/// The comparison's result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub passed: bool,
    pub samples: usize,
    /// The samples the per-layer comparison (`layers`) ran on: the first
    /// ones.
    pub layer_samples: usize,
    pub arith: Arith,
    pub thresholds: Thresholds,
    pub outputs: Vec<OutputMetrics>,
    /// Worst first.
    pub layers: Vec<LayerMetrics>,
    /// Requantized accumulators beyond ±2^24 (inexact in float32).
    pub accumulators_beyond_2_24: u64,
    /// The runtime that ran the quantized model, when not onnxq's executor
    /// ([`crate::runtime::Session::describe`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

impl Verdict {
    /// The smallest margin of any metric the gate held an output to
    /// ([`Check::margin_db`]; 300 when nothing is gated): what ranks
    /// variants of a model, the automatic mode's progress.
    pub fn worst_margin_db(&self) -> f64 {
        worst_margin(&self.outputs)
    }
}

/// The smallest gate margin over `outputs` (300 when none is gated).
pub fn worst_margin(outputs: &[OutputMetrics]) -> f64 {
    outputs
        .iter()
        .flat_map(|o| o.gate.iter().map(Check::margin_db))
        .fold(300.0, f64::min)
}

/// Quantized tensors of `q` with a float counterpart in `fp`.
fn layer_pairs(fp: &Model, q: &Model) -> Vec<LayerPair> {
    let g = &q.graph;
    let mut params: HashMap<String, (f32, i64)> = HashMap::new();
    let scalar = |v: Option<crate::ir::ValueId>| -> Option<f32> {
        let t = g.initializer(v?)?;
        (t.len() == 1)
            .then(|| t.to_f32_vec().ok()?.first().copied())
            .flatten()
    };
    let zp = |v: Option<crate::ir::ValueId>| -> Option<i64> {
        match v {
            None => Some(0),
            Some(v) => g.initializer(v)?.to_i64_vec().ok()?.first().copied(),
        }
    };
    for (_, n) in g.nodes() {
        let (qv, s, z) = match n.op_type.as_str() {
            "DequantizeLinear" => (n.input(0), n.input(1), n.input(2)),
            "QuantizeLinear" => (n.output(0), n.input(1), n.input(2)),
            "QLinearConv" | "QLinearMatMul" => (n.output(0), n.input(6), n.input(7)),
            _ => continue,
        };
        let Some(qv) = qv else { continue };
        if g.initializer(qv).is_some() {
            continue;
        }
        if let (Some(s), Some(z)) = (scalar(s), zp(z)) {
            params.insert(g.value_name(qv).to_string(), (s, z));
        }
    }
    let mut out = Vec::new();
    for (name, (s, z)) in params {
        let Some(base) = name.strip_suffix("/quantized") else {
            continue;
        };
        let Some(fv) = fp.graph.find_value(base) else {
            continue;
        };
        // A tensor whose only reader is a Relu/Clip is quantized with the
        // clamp's range (the quantizer lends it): compare with the clamp's
        // output, which is what the int8 values stand for.
        let fg = &fp.graph;
        let reference = match fg.value(fv).consumers() {
            [(c, 0)] if !fg.is_graph_output(fv) => fg
                .node(*c)
                .filter(|n| n.is("Relu") || n.is("Clip"))
                .and_then(|n| n.output(0))
                .map(|o| fg.value_name(o).to_string()),
            _ => None,
        }
        .unwrap_or_else(|| base.to_string());
        let clamp = if reference == base {
            crate::ir::analysis::flat_outside(fg, fv)
        } else {
            None
        };
        let Some(v) = g.find_value(&name) else {
            continue;
        };
        let (node, op) = g
            .producer_node(v)
            .map(|(_, n)| (n.name.clone(), n.op_type.clone()))
            .unwrap_or_default();
        out.push(LayerPair {
            int8: name.clone(),
            fp32: reference,
            node,
            op,
            scale: s,
            zero_point: z,
            clamp,
        });
    }
    out.sort_by(|a, b| a.int8.cmp(&b.int8));
    out
}

/// Input dtypes and shapes of a sample: one tract plan each.
type Signature = Vec<(DataType, Vec<usize>)>;

mod references;
pub use references::{References, REFERENCE_BYTES};

/// How [`compare`] judges.
#[derive(Clone, Copy)]
pub struct Comparison<'a> {
    pub arith: Arith,
    pub thresholds: &'a Thresholds,
    /// On the first this many samples, also compare the quantized
    /// intermediates.
    pub layer_samples: usize,
    /// Tensors cross-layer equalization divided per channel
    /// ([`crate::passes::equalize::Equalized::rescaled`]): scaled back
    /// before they are compared with the FP32 model's.
    pub rescaled: &'a BTreeMap<String, ChannelScale>,
    /// FP32 outputs kept between comparisons on the same samples.
    pub references: &'a References,
    /// Where the quantized model runs: a deployment runtime's session
    /// ([`crate::runtime`]; outputs only, no intermediates), else onnxq's
    /// int8 executor.
    pub runtime: Option<&'a std::sync::Mutex<Box<dyn crate::runtime::Session>>>,
}

/// Compares `int8` with `fp32` on `samples` (checked against the FP32
/// model's inputs), the quantized intermediates too on the first
/// `how.layer_samples` samples. The other samples' FP32 outputs are taken
/// from `how.references` when kept there, and kept there when computed.
pub fn compare(
    fp32: &Model,
    int8: &Model,
    samples: &dyn SampleSource,
    how: &Comparison,
) -> Result<Verdict> {
    let Comparison {
        arith,
        thresholds,
        layer_samples,
        rescaled,
        references,
        runtime,
    } = *how;
    if samples.is_empty() {
        return Err(Error::Invalid("no validation samples".into()));
    }
    let specs = input_specs(&fp32.graph);
    let pairs = if layer_samples > 0 && runtime.is_none() {
        layer_pairs(fp32, int8)
    } else {
        Vec::new()
    };
    let layer_samples = if pairs.is_empty() {
        0
    } else {
        layer_samples.min(samples.len())
    };
    let keep: Vec<String> = pairs.iter().map(|p| p.int8.clone()).collect();
    let exec = match runtime {
        Some(_) => None,
        None => Some(Executor::new(int8, arith, &keep)?.sharing(references.regions.clone())),
    };
    let run_int8 =
        |sample: &[(String, Tensor)], all: bool| -> Result<(BTreeMap<String, Tensor>, RunStats)> {
            match (&exec, runtime) {
                (Some(e), _) if all => e.run(sample),
                (Some(e), _) => e.run_outputs(sample),
                (None, Some(session)) => {
                    let mut session = session.lock().map_err(|_| {
                        Error::Invalid("a runtime session failed in another run".into())
                    })?;
                    Ok((session.run(sample)?, RunStats::default()))
                }
                (None, None) => Err(Error::Invalid("no executor for the quantized model".into())),
            }
        };
    let out_names: Vec<String> = fp32
        .graph
        .outputs()
        .map(|v| fp32.graph.value_name(v).to_string())
        .collect();
    let mut fp_names = out_names.clone();
    fp_names.extend(pairs.iter().map(|p| p.fp32.clone()));
    // Encoded when a plan has to be built.
    let mut fp_proto = None;
    let weight_bytes: usize = fp32
        .graph
        .initializers()
        .map(|(_, i)| i.tensor.byte_len())
        .sum();
    let room = references::plans_kept(weight_bytes);
    // Plans with the compared intermediates exposed (any kept plan that
    // exposes them), and with the outputs only (tract fuses more), and
    // where each wanted tensor is among their outputs.
    type Plans = HashMap<Signature, (Arc<Runner>, Vec<usize>)>;
    let mut layered: Plans = HashMap::new();
    let mut plain: Plans = HashMap::new();
    thresholds.check_outputs(&out_names)?;
    let mut outs: Vec<output::OutputAccum> = kinds::output_kinds(fp32)
        .into_iter()
        .zip(&out_names)
        .map(|(k, n)| output::OutputAccum::new(k, thresholds.outputs.get(n)))
        .collect();
    let mut layers: Vec<Accum> = vec![Accum::default(); pairs.len()];
    let mut beyond = 0;
    // A chunk of samples (one per worker of the current rayon pool) runs
    // in parallel, FP32 in tract and INT8 in the executor; the chunk's
    // results are then accumulated in sample order, so the verdict is the
    // same for any number of workers. Memory: one chunk's outputs and
    // compared intermediates.
    let chunk = rayon::current_num_threads().max(1);
    let mut start = 0;
    while start < samples.len() {
        let end = (start + chunk).min(samples.len());
        let mut loaded = Vec::with_capacity(end - start);
        for i in start..end {
            let name = samples.name(i);
            let sample = samples.load(i)?;
            check_sample(&name, &sample, &specs)?;
            let sig: Signature = sample
                .iter()
                .map(|(_, t)| (t.dtype(), t.dims().to_vec()))
                .collect();
            let with_layers = i < layer_samples;
            let kept = if with_layers {
                None
            } else {
                references.get(i, &name)
            };
            let (runners, names) = if with_layers {
                (&mut layered, &fp_names)
            } else {
                (&mut plain, &out_names)
            };
            if kept.is_none() && !runners.contains_key(&sig) {
                let s: Vec<_> = sample
                    .iter()
                    .map(|(n, t)| (n.clone(), t.dtype(), t.dims().to_vec()))
                    .collect();
                let plan = references.plan(&sig, names, (!with_layers, room), || {
                    if fp_proto.is_none() {
                        fp_proto = Some(fp32.to_proto()?);
                    }
                    let proto = fp_proto.as_ref().ok_or_else(|| {
                        Error::Invalid("the FP32 model could not be encoded".into())
                    })?;
                    let proto = || Ok(std::borrow::Cow::Borrowed(proto));
                    references.planner.plan(proto, &s, Some(names))
                })?;
                runners.insert(sig.clone(), plan);
            }
            loaded.push((i, name, sample, sig, kept));
        }
        // Each worker reduces its sample's intermediates to layer sums and
        // hands back only the outputs.
        let (layered, plain) = (&layered, &plain);
        let results: Vec<Result<_>> = loaded
            .par_iter()
            .map(|(i, _, sample, sig, kept)| {
                if *i < layer_samples {
                    let (runner, at) = &layered[sig];
                    let all = runner.run_tract(sample)?;
                    let picked = |r: std::ops::Range<usize>| -> Result<Vec<_>> {
                        at[r]
                            .iter()
                            .map(|&k| {
                                all.get(k).cloned().ok_or_else(|| {
                                    Error::Invalid("an FP32 tensor is missing".into())
                                })
                            })
                            .collect()
                    };
                    let (mut got, stats) = run_int8(sample, true)?;
                    let sums = accum::layer_sums(
                        &pairs,
                        rescaled,
                        &picked(out_names.len()..at.len())?,
                        &got,
                    )?;
                    let reference: Vec<Tensor> = picked(0..out_names.len())?
                        .iter()
                        .map(|t| from_tract(t))
                        .collect::<Result<_>>()?;
                    got.retain(|name, _| out_names.contains(name));
                    return Ok((Arc::new(reference), got, Some(sums), stats));
                }
                let reference = match kept {
                    Some(r) => r.clone(),
                    None => Arc::new(plain[sig].0.run(sample)?),
                };
                let (got, stats) = run_int8(sample, false)?;
                Ok((reference, got, None, stats))
            })
            .collect();
        for ((i, name, ..), r) in loaded.iter().zip(results) {
            let (reference, got, sums, stats) = r?;
            beyond += stats.accumulators_beyond_2_24;
            accum::add_outputs(&out_names, (reference.as_slice(), &got), &mut outs)?;
            for (layer, s) in layers.iter_mut().zip(sums.iter().flatten()) {
                layer.merge(s);
            }
            references.put(*i, name, reference);
        }
        start = end;
    }
    let outputs: Vec<OutputMetrics> = out_names
        .iter()
        .zip(&outs)
        .filter(|(_, a)| !a.is_empty())
        .map(|(name, a)| a.finish(name, thresholds))
        .collect();
    let mut layer_metrics: Vec<LayerMetrics> = pairs
        .iter()
        .zip(&layers)
        .filter(|(_, a)| !a.is_empty())
        .map(|(p, a)| LayerMetrics {
            tensor: p.fp32.clone(),
            node: p.node.clone(),
            op: p.op.clone(),
            sqnr_db: a.sqnr(),
            cosine: a.cosine(),
        })
        .collect();
    layer_metrics.sort_by(|a, b| {
        a.sqnr_db
            .total_cmp(&b.sqnr_db)
            .then(a.tensor.cmp(&b.tensor))
    });
    let passed = outputs.iter().all(|o| o.failures.is_empty());
    Ok(Verdict {
        passed,
        samples: samples.len(),
        layer_samples,
        arith,
        thresholds: thresholds.clone(),
        outputs,
        layers: layer_metrics,
        accumulators_beyond_2_24: beyond,
        runtime: match runtime {
            Some(session) => Some(
                session
                    .lock()
                    .map_err(|_| Error::Invalid("a runtime session failed in another run".into()))?
                    .describe(),
            ),
            None => None,
        },
    })
}

/// A short text of a verdict: one line per output, then the worst layers.
pub fn describe(v: &Verdict, worst: usize) -> String {
    let mut s = String::new();
    for o in &v.outputs {
        let mut line = format!(
            "  output {}: SQNR {:.1} dB, cosine {:.4}, max |err| {:.4}",
            o.name, o.sqnr_db, o.cosine, o.max_abs_error
        );
        if let (Some(t1), Some(t5)) = (o.top1_agreement, o.top5_agreement) {
            line += &format!(", top-1 {:.1}%, top-5 {:.1}%", 100.0 * t1, 100.0 * t5);
            if let (Some(n), Some(d)) = (o.decisive_rows, o.decisive_top1_agreement) {
                line += &format!(" (top-1 {:.1}% of {n} decisive)", 100.0 * d);
            }
        }
        if let Some(p) = &o.positions {
            line += &format!(
                ", top-1 per position {:.1}% ({:.1}% of {} foreground)",
                100.0 * p.top1_agreement,
                100.0 * p.foreground_top1_agreement,
                p.foreground_positions
            );
        }
        if let Some(iou) = o.mask_iou {
            line += &format!(", mask IoU {:.1}%", 100.0 * iou);
        }
        s += &line;
        s.push('\n');
        let held: Vec<String> = o
            .gate
            .iter()
            .map(|c| {
                format!(
                    "{} {} (min {}) {}",
                    c.metric.name(),
                    if c.value.is_nan() {
                        "n/a".to_string()
                    } else {
                        c.metric.show(c.value)
                    },
                    c.metric.show(c.min),
                    if c.passed { "ok" } else { "FAIL" }
                )
            })
            .collect();
        s += &format!(
            "    gate: {} [{}]\n",
            if held.is_empty() {
                "-".to_string()
            } else {
                held.join(", ")
            },
            o.judged_by
        );
    }
    if !v.layers.is_empty() && worst > 0 {
        let list: Vec<String> = v
            .layers
            .iter()
            .take(worst)
            .map(|l| format!("{} ({}) {:.1} dB", l.tensor, l.op, l.sqnr_db))
            .collect();
        s += &format!("  worst layers: {}\n", list.join(", "));
    }
    s
}
