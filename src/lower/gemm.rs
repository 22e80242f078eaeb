//! `Gemm` ⇒ `QLinearMatMul`, `MatMulInteger` with an int32 bias, or
//! (`--target ort`) `com.microsoft.QGemm`.
//!
//! Matches `DQ(a_q), DQ(w_q) [, DQ(c_q)] → Gemm → Q(y)` with `transA = 0`,
//! `alpha = 1` and `beta = 1`, per-tensor 8-bit `a` and `y`, a constant 2-D
//! 8-bit weight (per tensor or per output column), and an optional constant
//! int32 bias at scale `a_scale · w_scale[n]`, zero point 0.
//!
//! What it emits, and why:
//! - **No bias**: `QLinearMatMul` (ONNX, opset 10). A `transB = 1` weight is
//!   transposed offline to `[K, N]`, its per-row scales become per-column.
//! - **With a bias, standard targets**: `QLinearMatMul` has no bias input, and
//!   adding the bias after its requantization would round twice and saturate
//!   the pre-bias product at the post-bias range. The exact standard form is
//!   `MatMulInteger → Add(int32 bias) → Cast(float) → Mul(a_scale·w_scale[n])
//!   → QuantizeLinear(y)`: the bias is added to the int32 accumulator, as
//!   QLinearConv does, and requantization happens once. (An int8 output
//!   directly from an integer GEMM with a bias has no standard operator.)
//! - **With a bias, `--target ort`**: `com.microsoft.QGemm(a, a_scale, a_zp,
//!   w, w_scale, w_zp, c, y_scale, y_zp)`, onnxruntime's fused kernel.
//!
//! Refuses (QDQ stays) when `transA = 1`, `alpha`/`beta` differ from 1 with a
//! bias, or parameters are not constant.

use super::conv::{activation_dq, bias_matches, closing_q, y_zero_point};
use super::pattern::{dq_producing, Dq, Qn};
use super::{Cx, MS_DOMAIN};
use crate::error::Result;
use crate::ir::node::attr;
use crate::ir::{DataType, NodeId, Tensor, ValueId};

/// A matched Gemm.
struct Matched {
    name: String,
    a: Dq,
    w: Dq,
    /// Weight stored `[N, K]` (`transB = 1`).
    trans_b: bool,
    n: usize,
    c: Option<Dq>,
    q: Qn,
    clamp: Option<NodeId>,
    alpha: f32,
}

fn matched(cx: &Cx, id: NodeId) -> Option<Matched> {
    let node = cx.g.node(id)?;
    let get_i = |k: &str, d: i64| node.get_int(k).ok().flatten().unwrap_or(d);
    let get_f = |k: &str| node.get_float(k).ok().flatten().unwrap_or(1.0);
    let (alpha, beta) = (get_f("alpha"), get_f("beta"));
    if get_i("transA", 0) != 0 {
        return None;
    }
    let trans_b = get_i("transB", 0) != 0;
    let a = activation_dq(cx, node.input(0)?)?;
    let w = dq_producing(cx.g, node.input(1)?)?;
    let wt = cx.g.initializer(w.input)?;
    if wt.dims().len() != 2 || !matches!(w.p.dtype, DataType::Uint8 | DataType::Int8) {
        return None;
    }
    let (n, channel_axis) = if trans_b {
        (wt.dims()[0], 0)
    } else {
        (wt.dims()[1], 1)
    };
    if !w.p.scalar && (w.p.axis != channel_axis || w.p.scale.len() != n) {
        return None;
    }
    let c = match node.input(2) {
        None => None,
        Some(cv) => {
            let c = dq_producing(cx.g, cv)?;
            cx.g.initializer(c.input)?;
            if !bias_matches(&c, &a, &w, n) || alpha != 1.0 || beta != 1.0 {
                return None;
            }
            Some(c)
        }
    };
    let (q, clamp) = closing_q(cx, node.output(0)?)?;
    Some(Matched {
        name: node.name.clone(),
        a,
        w,
        trans_b,
        n,
        c,
        q,
        clamp,
        alpha,
    })
}

/// Removes the Gemm and what the rewrite replaces (the clamp; the Q unless
/// `keep_q`).
fn remove_matched(cx: &mut Cx, id: NodeId, m: &Matched, keep_q: bool) {
    cx.remove(id);
    if let Some(c) = m.clamp {
        cx.remove(c);
    }
    if !keep_q {
        cx.remove(m.q.node);
    }
}

/// The weight as `[K, N]` (transposed offline when stored `[N, K]`).
fn weight_kn(cx: &mut Cx, m: &Matched) -> Option<ValueId> {
    if !m.trans_b {
        return Some(m.w.input);
    }
    let t = cx.g.initializer(m.w.input)?;
    let (n, k) = (t.dims()[0], t.dims()[1]);
    let raw = t.raw()?;
    let mut out = vec![0u8; n * k];
    for r in 0..n {
        for c in 0..k {
            out[c * n + r] = raw[r * k + c];
        }
    }
    let tt = Tensor::from_raw(t.dtype(), vec![k, n], out.into()).ok()?;
    let base = format!("{}_kn", cx.g.value_name(m.w.input));
    Some(cx.constant(&base, tt))
}

/// Standard targets: QLinearMatMul without a bias, MatMulInteger with one.
pub fn gemm(cx: &mut Cx, id: NodeId) -> Result<Option<&'static str>> {
    let Some(m) = matched(cx, id) else {
        return Ok(None);
    };
    let name = m.name.clone();
    let Some(bkn) = weight_kn(cx, &m) else {
        return Ok(None);
    };
    let Some(c) = &m.c else {
        // y = alpha · a·w: alpha goes into the weight scale.
        let mut w = m.w.clone();
        if m.alpha != 1.0 {
            let scaled: Vec<f32> = w.p.scale.iter().map(|s| s * m.alpha).collect();
            let dims = if w.p.scalar {
                vec![]
            } else {
                vec![scaled.len()]
            };
            w.p.scale_value =
                cx.constant(&format!("{name}/w_scale"), Tensor::from_f32(dims, &scaled));
        }
        let Some(yz) = y_zero_point(cx, &m.q, &name) else {
            return Ok(None);
        };
        let Some(ins) = super::matmul::inputs(cx, &name, &m.a, bkn, &w, m.q.p.scale_value, yz)
        else {
            return Ok(None);
        };
        remove_matched(cx, id, &m, false);
        cx.add(&name, "QLinearMatMul", "", ins, vec![m.q.output], vec![]);
        return Ok(Some("Gemm → QLinearMatMul"));
    };
    // MatMulInteger(a, w[K,N], a_zp[, w_zp]) + c → Cast → Mul(a_s·w_s) → Q.
    let Some(az) = super::conv::zero_point_input(cx, &m.a, &format!("{name}/a")) else {
        return Ok(None);
    };
    let w_zp = if m.w.p.zero_point.iter().all(|&z| z == 0) {
        None
    } else {
        m.w.p.zero_point_value
    };
    let mult: Vec<f32> = (0..if m.w.p.scalar { 1 } else { m.n })
        .map(|k| m.a.p.scale[0] * m.w.p.scale[k])
        .collect();
    let mdims = if m.w.p.scalar { vec![] } else { vec![m.n] };
    let mult = cx.constant(
        &format!("{name}/multiplier"),
        Tensor::from_f32(mdims, &mult),
    );
    remove_matched(cx, id, &m, true);
    let acc = cx.g.new_value(&format!("{name}/accumulator"));
    let mut mm_in = vec![Some(m.a.input), Some(bkn), Some(az)];
    if w_zp.is_some() {
        mm_in.push(w_zp);
    }
    cx.add(&name, "MatMulInteger", "", mm_in, vec![acc], vec![]);
    let biased = cx.g.new_value(&format!("{name}/accumulator_bias"));
    cx.add(
        &format!("{name}/AddBias"),
        "Add",
        "",
        vec![Some(acc), Some(c.input)],
        vec![biased],
        vec![],
    );
    let f = cx.g.new_value(&format!("{name}/accumulator_float"));
    cx.add(
        &format!("{name}/Cast"),
        "Cast",
        "",
        vec![Some(biased)],
        vec![f],
        vec![attr::int("to", DataType::Float.code() as i64)],
    );
    let y = cx.g.new_value(&format!("{name}/float"));
    cx.add(
        &format!("{name}/Rescale"),
        "Mul",
        "",
        vec![Some(f), Some(mult)],
        vec![y],
        vec![],
    );
    cx.g.set_input(m.q.node, 0, Some(y));
    Ok(Some("Gemm → MatMulInteger + int32 bias"))
}

/// `--target ort`: com.microsoft.QGemm, bias in int32.
pub fn qgemm(cx: &mut Cx, id: NodeId) -> Result<Option<&'static str>> {
    let Some(m) = matched(cx, id) else {
        return Ok(None);
    };
    let Some(c) = &m.c else {
        return Ok(None); // the standard QLinearMatMul form is as good
    };
    let name = m.name.clone();
    let (Some(az), Some(wz), Some(yz)) = (
        super::conv::zero_point_input(cx, &m.a, &format!("{name}/a")),
        super::conv::zero_point_input(cx, &m.w, &format!("{name}/w")),
        y_zero_point(cx, &m.q, &name),
    ) else {
        return Ok(None);
    };
    let ins = vec![
        Some(m.a.input),
        Some(m.a.p.scale_value),
        Some(az),
        Some(m.w.input),
        Some(m.w.p.scale_value),
        Some(wz),
        Some(c.input),
        Some(m.q.p.scale_value),
        Some(yz),
    ];
    remove_matched(cx, id, &m, false);
    let attrs = vec![
        attr::int("transA", 0),
        attr::int("transB", i64::from(m.trans_b)),
        attr::float("alpha", 1.0),
    ];
    cx.add(&name, "QGemm", MS_DOMAIN, ins, vec![m.q.output], attrs);
    Ok(Some("Gemm → com.microsoft.QGemm"))
}
