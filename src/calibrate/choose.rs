//! `--method auto`: the range of each tensor chosen by the error it causes
//! downstream, not by one global rule.
//!
//! For every wanted tensor `T`, the MinMax, Percentile, Entropy and MSE
//! ranges (from the statistics already collected) are candidates. One
//! augmented copy of the FP32 model computes, for each distinct candidate
//! `j` and each consumer `C` of `T`, the consumer again on
//! `DequantizeLinear(QuantizeLinear(T))` with candidate `j`'s parameters,
//! and reduces its error against the real `C(T)` to one number in the
//! graph (`ReduceSumSquare(C_j − C)`), next to the reference energy
//! `ReduceSumSquare(C)`. Summed over the calibration samples (in parallel,
//! one sample per worker; only scalars come back), the candidate with the
//! least relative error over `T`'s consumers wins; ties go to the earlier
//! method in [`CANDIDATES`]. A tensor with no usable consumer (a graph
//! output) is judged on its own quantization error. Consumers run with
//! their FP32 weights: the choice is about the activation's range, and the
//! weights' rounding is the same for every candidate.
//!
//! The augmented graph runs as a typed, unoptimized tract plan: it is
//! several times the model's size and runs once per sample, so tract's
//! optimizer would cost more than it saves (ShuffleNet: 12.7 s → 6 s).
//!
//! Reads the prepared model and the samples; changes nothing.

use super::methods::{range, Method, RangeOptions, Target};
use super::samples::SampleSource;
use super::{run_on_samples, Collected};
use crate::error::Result;
use crate::ir::node::attr;
use crate::ir::{DataType, Model, Node, ValueId};
use crate::quantize::params::{from_range, QParams, QType};
use crate::tract::Level;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The methods `auto` chooses among, in order of preference on ties.
pub const CANDIDATES: [Method; 4] = [
    Method::Minmax,
    Method::Percentile,
    Method::Mse,
    Method::Entropy,
];

/// Candidate ranges of each tensor, by method.
type Candidates = BTreeMap<String, Vec<(Method, (f32, f32))>>;

/// What was chosen for one tensor.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Choice {
    pub method: Method,
    pub lo: f32,
    pub hi: f32,
    /// Relative consumer-output error (error energy / signal energy,
    /// summed over consumers) per candidate method.
    pub errors: Vec<(Method, f64)>,
}

/// One measured candidate: its methods, and per consumer the names of
/// the error scalar and of the reference energy scalar.
struct Probe {
    tensor: String,
    methods: Vec<Method>,
    /// (error output, reference output) per consumer.
    pairs: Vec<(String, String)>,
}

/// Adds `ReduceSumSquare(a − b)` (or of `a` alone) to `g`; returns the
/// scalar's value.
fn sum_square(g: &mut crate::ir::Graph, base: &str, a: ValueId, b: Option<ValueId>) -> ValueId {
    let x = match b {
        Some(b) => {
            let d = g.new_value(&format!("{base}/diff"));
            let mut n = Node::new(format!("{base}/Sub"), "Sub");
            n.inputs = vec![Some(a), Some(b)];
            n.outputs = vec![Some(d)];
            g.insert_node(n);
            d
        }
        None => a,
    };
    let out = g.new_value(&format!("{base}/sum_square"));
    let mut n = Node::new(format!("{base}/ReduceSumSquare"), "ReduceSumSquare");
    n.inputs = vec![Some(x)];
    n.outputs = vec![Some(out)];
    n.attrs.push(attr::int("keepdims", 0));
    g.insert_node(n);
    out
}

/// Whether `C` can be re-run on a fake-quantized input: a standard op
/// without subgraphs whose first output is float. Where the output's type
/// is not declared, ops whose first output is never float (Shape of the
/// tensor, a comparison, a Cast to an integer type) are left out: their
/// error would be summed as int64 (the PaddleOCR recognizer reads
/// `Shape` of its activations).
fn usable_consumer(g: &crate::ir::Graph, c: &Node) -> bool {
    const NOT_FLOAT: &[&str] = &[
        "Shape",
        "Size",
        "ArgMax",
        "ArgMin",
        "NonZero",
        "Equal",
        "Greater",
        "GreaterOrEqual",
        "Less",
        "LessOrEqual",
        "Not",
        "And",
        "Or",
        "Xor",
        "IsNaN",
        "IsInf",
    ];
    let cast_to_float = || match c.get_int("to") {
        Ok(Some(to)) => DataType::from_code(to as i32).is_some_and(DataType::is_float),
        _ => false,
    };
    c.is_onnx()
        && !c.has_subgraphs()
        && !NOT_FLOAT.contains(&c.op_type.as_str())
        && (c.op_type != "Cast" || cast_to_float())
        && c.output(0)
            .is_some_and(|o| crate::ir::types::dtype_of(g, o).is_none_or(DataType::is_float))
}

/// Builds the augmented model and the probes.
fn augment(
    model: &Model,
    candidates: &Candidates,
    qtype: QType,
    symmetric: bool,
) -> (Model, Vec<Probe>) {
    let mut m = model.clone();
    let mut probes = Vec::new();
    for (k, (tensor, cands)) in candidates.iter().enumerate() {
        let g = &mut m.graph;
        let Some(t) = g.find_value(tensor) else {
            continue;
        };
        // Distinct ranges only: equal ranges cost equal errors.
        let mut distinct: Vec<((f32, f32), Vec<Method>)> = Vec::new();
        for (method, r) in cands {
            match distinct.iter_mut().find(|(d, _)| d == r) {
                Some((_, ms)) => ms.push(*method),
                None => distinct.push((*r, vec![*method])),
            }
        }
        if distinct.len() < 2 {
            continue;
        }
        // The consumers in the original model: copies made for an earlier
        // tensor may read this one too, and are not its consumers.
        let orig = &model.graph;
        let consumers: Vec<(crate::ir::NodeId, Node)> = orig
            .value(t)
            .consumers()
            .iter()
            .filter_map(|&(c, _)| orig.node(c).map(|n| (c, n.clone())))
            .filter(|(_, n)| usable_consumer(orig, n))
            .collect();
        let base = format!("__onnxq_choose/{k}");
        // Reference energies, once per consumer (or of T itself).
        let refs: Vec<ValueId> = if consumers.is_empty() {
            vec![sum_square(g, &format!("{base}/ref"), t, None)]
        } else {
            consumers
                .iter()
                .enumerate()
                .filter_map(|(ci, (_, n))| {
                    n.output(0)
                        .map(|y| sum_square(g, &format!("{base}/ref{ci}"), y, None))
                })
                .collect()
        };
        for (j, ((lo, hi), methods)) in distinct.into_iter().enumerate() {
            let cb = format!("{base}/c{j}");
            let (s, z) = from_range(lo, hi, qtype, symmetric);
            let (st, zt) = QParams::scalar(qtype, s, z).tensors();
            let sv = g.add_initializer(&format!("{cb}/scale"), st);
            let zv = g.add_initializer(&format!("{cb}/zero_point"), zt);
            let q = g.new_value(&format!("{cb}/q"));
            let mut qn = Node::new(format!("{cb}/QuantizeLinear"), "QuantizeLinear");
            qn.inputs = vec![Some(t), Some(sv), Some(zv)];
            qn.outputs = vec![Some(q)];
            g.insert_node(qn);
            let fq = g.new_value(&format!("{cb}/dq"));
            let mut dn = Node::new(format!("{cb}/DequantizeLinear"), "DequantizeLinear");
            dn.inputs = vec![Some(q), Some(sv), Some(zv)];
            dn.outputs = vec![Some(fq)];
            g.insert_node(dn);
            let mut pairs = Vec::new();
            if consumers.is_empty() {
                let e = sum_square(g, &format!("{cb}/err"), fq, Some(t));
                pairs.push((
                    g.value_name(e).to_string(),
                    g.value_name(refs[0]).to_string(),
                ));
            }
            for (ci, (_, c)) in consumers.iter().enumerate() {
                let Some(y) = c.output(0) else { continue };
                let mut copy = c.clone();
                copy.name = format!("{cb}/{ci}/{}", c.op_type);
                copy.unnamed = false;
                for slot in copy.inputs.iter_mut() {
                    if *slot == Some(t) {
                        *slot = Some(fq);
                    }
                }
                copy.outputs = c
                    .outputs
                    .iter()
                    .enumerate()
                    .map(|(o, v)| v.map(|_| g.new_value(&format!("{cb}/{ci}/out{o}"))))
                    .collect();
                let Some(yj) = copy.output(0) else { continue };
                g.insert_node(copy);
                let e = sum_square(g, &format!("{cb}/{ci}/err"), yj, Some(y));
                pairs.push((
                    g.value_name(e).to_string(),
                    g.value_name(refs[ci]).to_string(),
                ));
            }
            probes.push(Probe {
                tensor: tensor.clone(),
                methods,
                pairs,
            });
        }
    }
    (m, probes)
}

/// Chooses a range per tensor of `wanted` that `collected` has statistics
/// (with histograms) for, by running the augmented model on `source`.
pub fn choose(
    model: &Model,
    collected: &Collected,
    opts: &RangeOptions,
    wanted: &BTreeSet<String>,
    source: &dyn SampleSource,
    jobs: usize,
) -> Result<BTreeMap<String, Choice>> {
    let (qtype, symmetric) = match opts.target {
        Target::Uint8 => (QType::Uint8, false),
        Target::Int8 => (QType::Int8, true),
    };
    // Candidate ranges per tensor.
    let mut cands: Candidates = BTreeMap::new();
    for (name, stats) in &collected.stats {
        if !wanted.contains(name) {
            continue;
        }
        let dt = model
            .graph
            .find_value(name)
            .and_then(|v| crate::ir::types::dtype_of(&model.graph, v));
        if dt.is_some_and(|d| d != DataType::Float) {
            continue;
        }
        let list = CANDIDATES
            .iter()
            .map(|&m| (m, range(stats, &RangeOptions { method: m, ..*opts })))
            .collect();
        cands.insert(name.clone(), list);
    }
    let (aug, probes) = augment(model, &cands, qtype, symmetric);
    let mut errors: Vec<f64> = vec![0.0; probes.len()];
    if !probes.is_empty() {
        let names: Vec<String> = {
            let mut set = BTreeSet::new();
            for p in &probes {
                for (e, r) in &p.pairs {
                    set.insert(e.clone());
                    set.insert(r.clone());
                }
            }
            set.into_iter().collect()
        };
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let proto = aug.to_proto()?;
        let outs = run_on_samples(&proto, &names, Level::Typed, source, jobs)?;
        let mut total = vec![0.0f64; names.len()];
        for sample in outs {
            for (t, v) in total.iter_mut().zip(sample) {
                *t += v.iter().map(|&x| x as f64).sum::<f64>();
            }
        }
        for (p, e) in probes.iter().zip(errors.iter_mut()) {
            *e = p
                .pairs
                .iter()
                .map(|(err, refn)| {
                    let err = total[index[err.as_str()]];
                    let r = total[index[refn.as_str()]];
                    if r > 0.0 {
                        err / r
                    } else if err > 0.0 {
                        f64::INFINITY
                    } else {
                        0.0
                    }
                })
                .sum();
            if e.is_nan() {
                *e = f64::INFINITY;
            }
        }
    }
    // Per tensor: every candidate method with its error; the least wins.
    let mut out = BTreeMap::new();
    for (name, list) in &cands {
        let measured: Vec<&Probe> = probes.iter().filter(|p| &p.tensor == name).collect();
        let err_of = |m: Method| -> f64 {
            probes
                .iter()
                .zip(&errors)
                .find(|(p, _)| &p.tensor == name && p.methods.contains(&m))
                .map_or(0.0, |(_, e)| *e)
        };
        let errs: Vec<(Method, f64)> = list.iter().map(|(m, _)| (*m, err_of(*m))).collect();
        let best = if measured.is_empty() {
            0
        } else {
            (0..errs.len()).fold(0, |b, i| if errs[i].1 < errs[b].1 { i } else { b })
        };
        let (method, (lo, hi)) = list[best];
        out.insert(
            name.clone(),
            Choice {
                method,
                lo,
                hi,
                errors: errs,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::samples::InMemory;
    use crate::calibrate::{Calibrator, CollectOptions, Sample};
    use crate::ir::Tensor;
    use crate::passes::testutil::{model, node};

    /// Samples held in memory.
    /// Deterministic heavy-tailed values: mostly within ±2, a few up to ±60.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((s >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0;
                let tail = if i % 997 == 0 { 30.0 } else { 1.0 };
                (u * 2.0 * tail) as f32
            })
            .collect()
    }

    /// Quantize-dequantize as ONNX QuantizeLinear/DequantizeLinear (uint8).
    fn fake_quant(x: &[f32], lo: f32, hi: f32) -> Vec<f32> {
        let (s, z) = from_range(lo, hi, QType::Uint8, false);
        x.iter()
            .map(|&v| {
                let q = ((v / s).round_ties_even() + z as f32).clamp(0.0, 255.0);
                (q - z as f32) * s
            })
            .collect()
    }

    #[test]
    fn picks_the_range_with_the_least_consumer_error() {
        let (k, n) = (2048usize, 3usize);
        // The consumer ignores the positions where the outliers are: the
        // tensor's own best range (MinMax keeps the outliers) is not the
        // consumer's.
        let w: Vec<f32> = values(k * n, 99)
            .iter()
            .enumerate()
            .map(|(i, v)| if (i / n) % 997 == 0 { 0.0 } else { v / 10.0 })
            .collect();
        let m = model(
            13,
            &[("x", &[1, k as i64])],
            &["y"],
            vec![node("MatMul", "mm", &["x", "w"], &["y"], vec![])],
            vec![("w", Tensor::from_f32(vec![k, n], &w))],
        );
        let samples: Vec<Sample> = (0..6)
            .map(|i| vec![("x".to_string(), Tensor::from_f32(vec![1, k], &values(k, i)))])
            .collect();
        let src = InMemory(samples.clone());
        let cal = Calibrator::new(&m).unwrap();
        let collected = cal
            .collect(
                &src,
                &CollectOptions {
                    histograms: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let opts = RangeOptions {
            method: Method::Auto,
            percentile: 99.0,
            target: Target::Uint8,
        };
        let wanted: BTreeSet<String> = ["x".to_string()].into();
        let choices = choose(&m, &collected, &opts, &wanted, &src, 2).unwrap();
        let c = &choices["x"];
        // The same errors, computed directly: y = x·W against fq(x)·W.
        let matmul = |x: &[f32]| -> Vec<f64> {
            (0..n)
                .map(|j| (0..k).map(|i| x[i] as f64 * w[i * n + j] as f64).sum())
                .collect()
        };
        let stats = &collected.stats["x"];
        let mut direct = Vec::new();
        for &meth in &CANDIDATES {
            let (lo, hi) = range(
                stats,
                &RangeOptions {
                    method: meth,
                    ..opts
                },
            );
            let (mut err, mut sig) = (0.0, 0.0);
            for s in &samples {
                let x = s[0].1.to_f32_vec().unwrap();
                let y = matmul(&x);
                let yq = matmul(&fake_quant(&x, lo, hi));
                err += y
                    .iter()
                    .zip(&yq)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>();
                sig += y.iter().map(|a| a * a).sum::<f64>();
            }
            direct.push((meth, err / sig, (lo, hi)));
        }
        let distinct: BTreeSet<String> = direct.iter().map(|d| format!("{:?}", d.2)).collect();
        assert!(
            distinct.len() >= 3,
            "the candidates should differ: {direct:?}"
        );
        for ((m1, e1), (m2, e2, _)) in c.errors.iter().zip(&direct) {
            assert_eq!(m1, m2);
            assert!(
                (e1 - e2).abs() <= 1e-3 * e2.max(1e-9),
                "{m1:?}: {e1} vs {e2}"
            );
        }
        let best = direct
            .iter()
            .fold(&direct[0], |b, d| if d.1 < b.1 { d } else { b });
        assert_eq!(c.method, best.0, "{direct:?}");
        assert_ne!(c.method, Method::Minmax, "{direct:?}");
        assert_eq!((c.lo, c.hi), best.2);
    }
}
