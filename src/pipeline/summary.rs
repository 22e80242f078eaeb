//! The text summary of a [`Report`]: what `onnxq quantize` prints on
//! stderr after a run (what was quantized, what stayed float and why,
//! the accuracy steps, the gate's verdict, the time per stage).

use super::report::{GptqOutcome, ModelCheck, Report};
use crate::tune::gptq::Rounded;
use crate::tune::{MixedPrecision, Stop};
use crate::verify;
use std::collections::BTreeMap;

/// `Conv 3, Relu 2`, or `none`.
pub fn by_op(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole summary, one fact a line (warnings are not in it: they are
/// the caller's to print first).
pub fn summary(r: &Report) -> String {
    let q = &r.quantization;
    let nq: usize = q.quantized.values().sum();
    let nf: usize = q.float.values().sum();
    let opset = if r.opset_before == r.opset_after {
        format!("opset {}", r.opset_after)
    } else {
        format!("opset {} → {}", r.opset_before, r.opset_after)
    };
    let label = match (r.format, r.target) {
        ("dynamic", _) => "dynamic".to_string(),
        ("qdq", _) => "QDQ".to_string(),
        (_, Some(t)) => format!("QOperator for {t}"),
        (f, None) => f.to_string(),
    };
    let verb = if r.written { "wrote" } else { "did not write" };
    let output = if r.output.is_empty() {
        "the model"
    } else {
        &r.output
    };
    let mut s = format!(
        "{verb} {output} ({label}, {opset})\n  quantized nodes: {nq} ({})\n  float nodes:     {nf} ({})\n",
        by_op(&q.quantized),
        by_op(&q.float),
    );
    if let Some(l) = &r.lowering {
        s += &format!(
            "  tensors: {} activations, {} weights ({} per channel, {}-bit), {} int32 biases\n",
            q.activations, q.weights, q.per_channel_weights, q.weight_bits, q.biases
        );
        s += &format!(
            "  integer ops: {}; {} QuantizeLinear, {} DequantizeLinear at float boundaries\n",
            by_op(&l.integer_ops),
            l.quantize_linear,
            l.dequantize_linear
        );
        if !l.kept_qdq.is_empty() {
            s += &format!(
                "  float between DequantizeLinear and QuantizeLinear: {}\n",
                by_op(&l.kept_qdq)
            );
        }
    } else if r.mode == "static" {
        s += &format!(
            "  tensors: {} activations, {} weights ({} per channel, {}-bit), {} int32 biases; {} QuantizeLinear, {} DequantizeLinear\n",
            q.activations, q.weights, q.per_channel_weights, q.weight_bits, q.biases, q.quantize_linear, q.dequantize_linear
        );
    } else {
        s += &format!(
            "  weights: {} int8 ({} per channel, {}-bit); activations quantized at run time\n",
            q.weights, q.per_channel_weights, q.weight_bits
        );
    }
    if q.clamped_ranges > 0 {
        s += &format!(
            "  ranges clamped where every reader is constant (a hard-swish below -3, a Relu/Clip): {}\n",
            q.clamped_ranges
        );
    }
    if q.weight_scales_raised > 0 {
        s += &format!(
            "  note: {} weight scale(s) raised so the bias fits int32\n",
            q.weight_scales_raised
        );
    }
    let c = &r.calibration;
    if r.mode == "static" {
        let method = match c.method.as_str() {
            "percentile" => format!("percentile {}", c.percentile.unwrap_or(f64::NAN)),
            "auto" => format!("auto (chosen per tensor: {})", by_op(&c.chosen)),
            m => m.to_string(),
        };
        s += &format!(
            "  calibration: {method} on {} samples ({}) in {:.2} s\n",
            c.samples, c.source, r.timings.calibrate
        );
    }
    s += &format!(
        "  size: {} → {} ({:.1}%)\n",
        crate::inspect::human_bytes(r.size_before),
        crate::inspect::human_bytes(r.size_after),
        100.0 * r.size_after as f64 / r.size_before.max(1) as f64
    );
    for g in &r.range_guard {
        s += &format!("  kept float: {} ({}): {}\n", g.node, g.op, g.reason);
    }
    for n in &r.notes {
        s += &format!("  {n}\n");
    }
    if let Some(g) = &r.gptq {
        s += &describe_gptq(g);
    }
    if !r.bias_correction.is_empty() {
        let max = r
            .bias_correction
            .iter()
            .map(|c| c.max_shift)
            .fold(0.0, f32::max);
        s += &format!(
            "  bias correction: {} layer(s), largest mean shift removed {max:.3e}\n",
            r.bias_correction.len()
        );
    }
    if let Some(e) = &r.equalization {
        s += &format!(
            "  cross-layer equalization: {} layer pair(s) in {} round(s); widest channel weight spread {:.1}x -> {:.1}x\n",
            e.pairs, e.rounds, e.worst_spread_before, e.worst_spread_after
        );
    }
    if let Some(m) = &r.mixed_precision {
        s += &describe_mixed(m);
    }
    let v = &r.parity;
    s += &format!(
        "  parity (int8 executor vs FP32 on {} samples of {}, {:.2} s): {}\n{}",
        v.samples,
        r.validation,
        r.timings.gate,
        if v.passed { "passed" } else { "FAILED" },
        verify::describe(v, if v.passed { 0 } else { 5 })
    );
    s += &format!("  time: {}\n", r.timings.line());
    s
}

/// How many layers took error-compensating rounding, the median layer
/// output SQNR on the calibration inputs with nearest and with
/// compensated rounding, what was left alone, and whether the whole model
/// kept it.
fn describe_gptq(g: &GptqOutcome) -> String {
    let (layers, skipped) = (&g.layers, &g.skipped);
    let median = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let taken: Vec<&Rounded> = layers.iter().filter(|r| r.taken).collect();
    let mut out = format!(
        "  error-compensating rounding (GPTQ): {} of {} layer(s)",
        taken.len(),
        layers.len() + skipped.len()
    );
    if !taken.is_empty() {
        out += &format!(
            "; layer output SQNR on the calibration samples, median {:.1} dB -> {:.1} dB",
            median(taken.iter().map(|r| r.nearest_db).collect()),
            median(taken.iter().map(|r| r.compensated_db).collect())
        );
    }
    out += "\n";
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for s in skipped {
        *reasons.entry(s.reason.as_str()).or_default() += 1;
    }
    let not_better = layers.len() - taken.len();
    if not_better > 0 {
        out += &format!(
            "    nearest rounding kept: {not_better} layer(s) where compensation was not better\n"
        );
    }
    for (reason, n) in reasons {
        out += &format!("    nearest rounding kept: {n} layer(s): {reason}\n");
    }
    match &g.model_check {
        Some(ModelCheck {
            compensated_db,
            nearest_db: Some(nearest),
            kept,
        }) => {
            out += &format!(
                "    whole model on the gate's samples, worst output: {compensated_db:.1} dB with it, {nearest:.1} dB with nearest rounding: {}\n",
                if *kept {
                    "kept"
                } else {
                    "dropped, nearest rounding written"
                }
            );
        }
        Some(c) => {
            out += &format!(
                "    whole model on the gate's samples, worst output: {:.1} dB with it: passed the gate, kept (nearest rounding not built)\n",
                c.compensated_db
            );
        }
        None => {}
    }
    out
}

/// The automatic mode's steps and outcome.
fn describe_mixed(m: &MixedPrecision) -> String {
    let mut s = format!(
        "  automatic mixed precision: gate failed by {:.1} dB (worst margin); kept {} of {} candidate node(s) in {} (budget {})\n",
        -m.start_margin_db,
        m.kept_float.len(),
        m.candidates,
        m.kept_as,
        m.budget
    );
    for (i, st) in m.steps.iter().enumerate() {
        s += &format!(
            "    step {}: {} {} → worst margin {:+.1} dB ({:+.1} dB){}\n",
            i + 1,
            m.kept_as,
            st.kept_float.join(", "),
            st.worst_margin_db,
            st.gain_db,
            if st.passed { ", gate passed" } else { "" }
        );
    }
    s += &format!(
        "    ranked {} of {} candidate(s) on {} sample(s) (the first gate's per-layer errors chose which); {} step(s); work {} of {} model runs; {:.1} s (first build and gate: {:.1} s)\n",
        m.ranked,
        m.candidates,
        m.ranking_samples,
        m.steps.len(),
        m.work_used,
        m.work_limit,
        m.secs,
        m.first_secs
    );
    if m.stopped != Stop::Passed {
        s += &format!("    stopped: {}\n", m.stopped.describe());
    }
    if !m.passed {
        s += &if m.kept_float.is_empty() {
            "    no step improved the model: every node stays quantized\n".to_string()
        } else {
            format!(
                "    kept the best attempt: {} {}\n",
                m.kept_as,
                m.kept_float.join(", ")
            )
        };
    }
    s
}
