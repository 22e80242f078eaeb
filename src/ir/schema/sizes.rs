//! Ops whose output size a constant decides (ONNX ConstantOfShape-9/20,
//! Expand-8/13, Tile-6/13, Reshape-5/14/19/21, Resize-10/11/13/18/19,
//! Upsample-7/9, Range-11, OneHot-9/11, Pad-2/11/13/18/19/21, EyeLike-9,
//! RandomNormal/RandomUniform-1, Cast-6/13/19/21).
//!
//! Each output is bounded by [`MAX_ELEMENTS`] before anything allocates:
//! exactly when the input's shape is known, else by what the constant alone
//! implies (an Expand to `[2^20, 2^20]` is at least 2^40 elements whatever
//! its input). Negative sizes, zero steps and non-finite scales are refused.

use super::{list, Ctx, Known, MAX_ELEMENTS};
use crate::error::Result;
use crate::ir::tensor::DataType;

/// The product of `dims`, or `None` past [`MAX_ELEMENTS`] (or overflow).
fn bounded(dims: impl IntoIterator<Item = u64>) -> Option<u64> {
    dims.into_iter()
        .try_fold(1u64, |a, d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
}

fn too_big(c: &Ctx, slot: usize, what: String) -> crate::error::Error {
    c.bad_input(
        slot,
        format!("an output of at most {MAX_ELEMENTS} elements"),
        what,
    )
}

/// Non-negative sizes from constant input `slot`, if constant.
fn sizes(c: &Ctx, slot: usize) -> Result<Option<Vec<u64>>> {
    let Some(v) = c.input(slot).ints() else {
        return Ok(None);
    };
    if v.iter().any(|&d| d < 0) {
        return Err(c.bad_input(slot, "non-negative sizes", list(&v)));
    }
    Ok(Some(v.into_iter().map(|d| d as u64).collect()))
}

/// The known dims of an input, when every one is a number.
fn known_dims(k: &Known) -> Option<Vec<u64>> {
    (0..k.rank()?).map(|i| k.dim(i).map(|d| d as u64)).collect()
}

/// ConstantOfShape: the shape input gives the output's size.
pub fn constant_of_shape(c: &Ctx) -> Result<()> {
    if let Some(s) = sizes(c, 0)? {
        if bounded(s.iter().copied()).is_none() {
            return Err(too_big(c, 0, format!("shape {}", list(&s))));
        }
    }
    Ok(())
}

/// Expand: the output is the broadcast of the input's shape and `shape`.
pub fn expand(c: &Ctx) -> Result<()> {
    let Some(s) = sizes(c, 1)? else {
        return Ok(());
    };
    let out: Vec<u64> = match known_dims(c.input(0)) {
        Some(x) => {
            let n = x.len().max(s.len());
            (0..n)
                .map(|i| {
                    let a = (i + x.len()).checked_sub(n).map_or(1, |j| x[j]);
                    let b = (i + s.len()).checked_sub(n).map_or(1, |j| s[j]);
                    a.max(b)
                })
                .collect()
        }
        None => s.clone(),
    };
    if bounded(out.iter().copied()).is_none() {
        return Err(too_big(c, 1, format!("shape {}", list(&s))));
    }
    Ok(())
}

/// Tile: `repeats` non-negative, one per axis, output bounded.
pub fn tile(c: &Ctx) -> Result<()> {
    let Some(r) = sizes(c, 1)? else {
        return Ok(());
    };
    let x = c.input(0);
    if let Some(rank) = x.rank().filter(|&n| n != r.len()) {
        return Err(c.bad_input(1, format!("{rank} repeats, one per input axis"), list(&r)));
    }
    let out: Vec<u64> = match known_dims(x) {
        Some(d) => d
            .iter()
            .zip(&r)
            .map(|(a, b)| a.saturating_mul(*b))
            .collect(),
        None => r.clone(),
    };
    if bounded(out).is_none() {
        return Err(too_big(c, 1, format!("repeats {}", list(&r))));
    }
    Ok(())
}

/// Reshape: entries of at least -1, at most one -1.
pub fn reshape(c: &Ctx) -> Result<()> {
    let Some(s) = c.input(1).ints() else {
        return Ok(());
    };
    let wild = s.iter().filter(|&&d| d == -1).count();
    if s.iter().any(|&d| d < -1) || wild > 1 {
        return Err(c.bad_input(1, "sizes ≥ 0, with at most one -1 (inferred)", list(&s)));
    }
    let positive = s.iter().filter(|&&d| d > 0).map(|&d| d as u64);
    if !s.contains(&0) && bounded(positive).is_none() {
        return Err(too_big(c, 1, format!("shape {}", list(&s))));
    }
    c.int_in("allowzero", 0, 1)
}

/// Resize / Upsample: `sizes` or `scales` giving a bounded output.
pub fn resize(c: &Ctx) -> Result<()> {
    let upsample = c.node.op_type == "Upsample";
    // Resize-10 and Upsample-9: scales is input 1; Resize-11+: roi, scales,
    // sizes are inputs 1, 2, 3; Upsample-7: a `scales` attribute.
    let (scales_slot, sizes_slot) = if upsample || c.opset < 11 {
        (1, None)
    } else {
        (2, Some(3))
    };
    let given = c.input(scales_slot).present
        || sizes_slot.is_some_and(|s| c.input(s).present)
        || c.node.attr("scales").is_some();
    if !given {
        return Err(c.bad_input(scales_slot, "scales or sizes (one is required)", "neither"));
    }
    if let Some(slot) = sizes_slot {
        if let Some(s) = sizes(c, slot)? {
            if bounded(s.iter().copied()).is_none() {
                return Err(too_big(c, slot, format!("sizes {}", list(&s))));
            }
        }
    }
    let scales = match c.node.get_floats("scales")? {
        Some(s) => Some(s),
        None => c.input(scales_slot).floats(),
    };
    let Some(scales) = scales else {
        return Ok(());
    };
    if scales
        .iter()
        .any(|&s| !s.is_finite() || s <= 0.0 || s > (1 << 20) as f32)
    {
        let shown: Vec<String> = scales.iter().map(|s| s.to_string()).collect();
        return Err(c.bad_input(
            scales_slot,
            "positive finite scales",
            format!("[{}]", shown.join(", ")),
        ));
    }
    if let Some(x) = known_dims(c.input(0)) {
        if x.len() == scales.len() {
            let out = x
                .iter()
                .zip(&scales)
                .map(|(&d, &s)| (d as f64 * s as f64).floor() as u64);
            if bounded(out).is_none() {
                let shown: Vec<String> = scales.iter().map(|s| s.to_string()).collect();
                return Err(too_big(
                    c,
                    scales_slot,
                    format!("scales [{}] of shape {}", shown.join(", "), list(&x)),
                ));
            }
        }
    }
    Ok(())
}

/// Range: a non-zero `delta` and a bounded count.
pub fn range(c: &Ctx) -> Result<()> {
    let scalar = |slot: usize| -> Option<f64> {
        let t = c.input(slot).value.as_ref()?;
        if t.dtype().is_float() {
            t.to_f32_vec().ok()?.first().map(|&v| v as f64)
        } else {
            t.to_i64_vec().ok()?.first().map(|&v| v as f64)
        }
    };
    let (Some(start), Some(limit), Some(delta)) = (scalar(0), scalar(1), scalar(2)) else {
        return Ok(());
    };
    if delta == 0.0 || !delta.is_finite() || !start.is_finite() || !limit.is_finite() {
        return Err(c.bad_input(2, "a finite, non-zero delta", delta.to_string()));
    }
    let n = ((limit - start) / delta).ceil().max(0.0);
    if n > MAX_ELEMENTS as f64 {
        return Err(too_big(
            c,
            2,
            format!("{n} values from {start} to {limit} by {delta}"),
        ));
    }
    Ok(())
}

/// OneHot: a positive, bounded depth.
pub fn one_hot(c: &Ctx) -> Result<()> {
    let Some(v) = c.input(1).floats() else {
        return Ok(());
    };
    let Some(&depth) = v.first() else {
        return Ok(());
    };
    if !depth.is_finite() || depth < 1.0 || depth as f64 > MAX_ELEMENTS as f64 {
        return Err(c.bad_input(1, "a depth from 1 to 2^29", depth.to_string()));
    }
    Ok(())
}

/// Pad: two pads per axis, an output of non-negative, bounded size.
pub fn pad(c: &Ctx) -> Result<()> {
    let (what, slot, pads) = match c.node.get_ints("pads")? {
        Some(p) => ("attribute 'pads'", 0, p),
        None => match c.input(1).ints() {
            Some(p) => ("input 'pads'", 1, p),
            None => return Ok(()),
        },
    };
    let x = c.input(0);
    // Pad-18+ may pad a subset of axes (input 3); then the count is 2 per
    // listed axis.
    let axes = c.input(3).ints().map(|a| a.len());
    let want = axes.or(x.rank()).map(|n| 2 * n);
    if want.is_some_and(|w| w != pads.len()) || pads.len() % 2 == 1 {
        let n = want.unwrap_or(pads.len() + 1);
        return Err(c.bad_input(
            slot,
            format!("{what}: {n} values, a begin and an end per axis"),
            list(&pads),
        ));
    }
    if pads.iter().any(|p| p.unsigned_abs() > MAX_ELEMENTS) {
        return Err(c.bad_input(slot, format!("{what}: bounded pads"), list(&pads)));
    }
    if let (None, Some(dims)) = (axes, known_dims(x)) {
        let n = dims.len();
        let mut out = Vec::with_capacity(n);
        for (i, &d) in dims.iter().enumerate() {
            let size = d as i64 + pads[i] + pads[i + n];
            if size < 0 {
                return Err(c.bad_input(
                    slot,
                    format!("{what}: pads that leave axis {i} ({d}) a non-negative size"),
                    list(&pads),
                ));
            }
            out.push(size as u64);
        }
        if bounded(out).is_none() {
            return Err(too_big(c, slot, format!("{what} {}", list(&pads))));
        }
    }
    Ok(())
}

/// EyeLike: a matrix input.
pub fn eye_like(c: &Ctx) -> Result<()> {
    match c.input(0).rank() {
        Some(r) if r != 2 => Err(c.bad_input(0, "a matrix (rank 2)", format!("rank {r}"))),
        _ => Ok(()),
    }
}

/// RandomNormal / RandomUniform: a `shape` attribute of bounded size.
pub fn shape_attr(c: &Ctx) -> Result<()> {
    let s = c.node.get_ints("shape")?.unwrap_or_default();
    if s.iter().any(|&d| d < 0) || bounded(s.iter().map(|&d| d as u64)).is_none() {
        return Err(c.bad(
            "shape",
            format!("non-negative sizes of at most {MAX_ELEMENTS} elements"),
            list(&s),
        ));
    }
    Ok(())
}

/// Cast: `to` names a tensor type.
pub fn cast(c: &Ctx) -> Result<()> {
    match c.node.get_int("to")? {
        Some(to)
            if i32::try_from(to)
                .ok()
                .and_then(DataType::from_code)
                .is_some() =>
        {
            Ok(())
        }
        other => Err(c.bad(
            "to",
            "an ONNX tensor type code (required)",
            other.map_or("absent".into(), |t| t.to_string()),
        )),
    }
}
