//! Axis attributes and ranks (ONNX: an `axis` of a rank-r tensor lies in
//! `[-r, r)`, Flatten's in `[-r, r]`; `axes` lists hold distinct axes;
//! Transpose's `perm` is a permutation of `0..r`; normalization inputs are
//! `[N, C, …]` with per-channel parameters of length C).
//!
//! Axes may come as attributes (older opsets) or as constant inputs
//! (Squeeze/Unsqueeze/ReduceSum from opset 13, the other reductions from
//! 18, Slice from 10, TopK's `k` from 10, CumSum's axis): both are checked.

use super::{list, Ctx};
use crate::error::Result;

/// The most dimensions a tensor may have where its rank is not known yet
/// (an axis past it is refused before tract sees it); ONNX sets no limit,
/// real models stay under 10.
pub const MAX_RANK: usize = 64;

/// Checks that `axis` indexes a rank-`rank` tensor (`end_ok`: `rank`
/// itself is allowed, as in Flatten and Unsqueeze's output); with the rank
/// unknown, that it could index one of at most [`MAX_RANK`] dims.
fn axis_in(c: &Ctx, what: &str, axis: i64, rank: Option<usize>, end_ok: bool) -> Result<()> {
    let Some(rank) = rank else {
        if axis.unsigned_abs() > MAX_RANK as u64 {
            return Err(c.bad(
                what,
                format!("an axis of a tensor of at most {MAX_RANK} dims"),
                axis.to_string(),
            ));
        }
        return Ok(());
    };
    let r = rank as i64;
    let hi = if end_ok { r } else { r - 1 };
    if axis < -r || axis > hi {
        return Err(c.bad(
            what,
            format!("an axis in {}..={hi} (input rank {rank})", -r),
            axis.to_string(),
        ));
    }
    Ok(())
}

/// Distinct axes of a rank-`rank` tensor (after wrapping negatives); with
/// the rank unknown, each within [`MAX_RANK`].
fn axes_in(c: &Ctx, what: &str, axes: &[i64], rank: Option<usize>) -> Result<()> {
    let Some(rank) = rank else {
        for &a in axes {
            axis_in(c, what, a, None, false)?;
        }
        return Ok(());
    };
    let mut seen = vec![false; rank];
    for &a in axes {
        axis_in(c, what, a, Some(rank), false)?;
        let k = a.rem_euclid(rank as i64) as usize;
        if std::mem::replace(&mut seen[k], true) {
            return Err(c.bad(what, "distinct axes", list(axes)));
        }
    }
    Ok(())
}

/// The `axis` attribute checked against input 0's rank.
pub fn axis_of_input0(c: &Ctx) -> Result<()> {
    if let Some(a) = c.node.get_int("axis")? {
        let r = c.input(0).rank();
        if r == Some(0) && c.node.op_type == "Compress" {
            return Ok(());
        }
        axis_in(c, "axis", a, r, false)?;
    }
    Ok(())
}

/// Transpose: `perm` is a permutation of `0..rank`.
pub fn transpose(c: &Ctx) -> Result<()> {
    let Some(perm) = c.node.get_ints("perm")? else {
        return Ok(());
    };
    let n = c.input(0).rank().unwrap_or(perm.len());
    let mut seen = vec![false; perm.len()];
    let ok = perm.len() == n
        && perm.iter().all(|&p| {
            usize::try_from(p)
                .ok()
                .and_then(|p| seen.get_mut(p))
                .is_some_and(|s| !std::mem::replace(s, true))
        });
    if !ok {
        return Err(c.bad("perm", format!("a permutation of 0..{n}"), list(&perm)));
    }
    Ok(())
}

/// LayerNormalization: `axis` inside the input's rank.
pub fn layer_norm(c: &Ctx) -> Result<()> {
    let r = c.input(0).rank();
    if r == Some(0) {
        return Err(c.bad_input(0, "a tensor of rank 1 or more", "a scalar"));
    }
    axis_in(c, "axis", c.int("axis", -1)?, r, false)?;
    c.int_in("stash_type", 1, 16)
}

/// Per-channel parameters (slots `from..`) of length C = input dim 1.
fn channel_params(c: &Ctx, from: usize, to: usize) -> Result<()> {
    let Some(ch) = c.input(0).dim(1) else {
        return Ok(());
    };
    for slot in from..to {
        let k = c.input(slot);
        if let Some(r) = k.rank() {
            if r != 1 || k.dim(0).is_some_and(|d| d != ch) {
                return Err(c.bad_input(
                    slot,
                    format!("a vector of {ch} values, one per channel"),
                    format!("shape {}", list(k.dims.as_deref().unwrap_or(&[]))),
                ));
            }
        }
    }
    Ok(())
}

fn rank_at_least(c: &Ctx, slot: usize, min: usize, what: &str) -> Result<()> {
    match c.input(slot).rank() {
        Some(r) if r < min => Err(c.bad_input(slot, what.to_string(), format!("rank {r}"))),
        _ => Ok(()),
    }
}

/// BatchNormalization: X is `[N, C, …]`; scale, B, mean, var have C values.
pub fn batch_norm(c: &Ctx) -> Result<()> {
    rank_at_least(c, 0, 2, "an input of rank 2 or more (N, C, …)")?;
    c.int_in("training_mode", 0, 1)?;
    channel_params(c, 1, 5)
}

/// InstanceNormalization: X is `[N, C, D…]`; scale and B have C values.
pub fn instance_norm(c: &Ctx) -> Result<()> {
    rank_at_least(c, 0, 3, "an input of rank 3 or more (N, C, D…)")?;
    channel_params(c, 1, 3)
}

/// Concat: inputs of one rank, `axis` (required) inside it.
pub fn concat(c: &Ctx) -> Result<()> {
    let Some(axis) = c.node.get_int("axis")? else {
        return Err(c.bad("axis", "the axis to concatenate on (required)", "absent"));
    };
    let ranks: Vec<usize> = c.inputs.iter().filter_map(|k| k.rank()).collect();
    if let Some(&r) = ranks.first() {
        if let Some(&other) = ranks.iter().find(|&&x| x != r) {
            return Err(c.bad_input(
                0,
                format!("inputs of one rank ({r})"),
                format!("ranks {r} and {other}"),
            ));
        }
    }
    axis_in(c, "axis", axis, ranks.first().copied(), false)
}

/// Split: `axis` in range, sizes non-negative and summing to the axis.
pub fn split(c: &Ctx) -> Result<()> {
    let x = c.input(0);
    let axis = c.int("axis", 0)?;
    axis_in(c, "axis", axis, x.rank(), false)?;
    c.int_in("num_outputs", 1, i64::from(u16::MAX))?;
    let sizes = match c.node.get_ints("split")? {
        Some(s) => Some(("split", s)),
        None => c.input(1).ints().map(|s| ("input 'split'", s)),
    };
    if let Some((what, s)) = sizes {
        let dim = x
            .rank()
            .and_then(|r| x.dim(axis.rem_euclid(r.max(1) as i64) as usize));
        let sum = s.iter().try_fold(0i64, |a, &b| a.checked_add(b));
        if s.iter().any(|&v| v < 0) || dim.is_some_and(|d| sum != Some(d as i64)) {
            let want = dim.map_or("non-negative sizes".into(), |d| {
                format!("non-negative sizes summing to {d}")
            });
            return Err(c.bad(what, want, list(&s)));
        }
    }
    Ok(())
}

/// Flatten: `axis` in `[-r, r]`.
pub fn flatten(c: &Ctx) -> Result<()> {
    axis_in(c, "axis", c.int("axis", 1)?, c.input(0).rank(), true)
}

/// TopK: `axis` in range; `k` (attribute before opset 10, else input 1)
/// non-negative and at most the axis' size.
pub fn top_k(c: &Ctx) -> Result<()> {
    let x = c.input(0);
    let axis = c.int("axis", -1)?;
    axis_in(c, "axis", axis, x.rank(), false)?;
    let k = match c.node.get_int("k")? {
        Some(k) => Some(k),
        None => c.input(1).ints().and_then(|v| v.first().copied()),
    };
    if let Some(k) = k {
        let dim = x
            .rank()
            .filter(|&r| r > 0)
            .and_then(|r| x.dim(axis.rem_euclid(r as i64) as usize));
        if k < 0 || dim.is_some_and(|d| k as u64 > d as u64) {
            let want = dim.map_or("a non-negative k".into(), |d| format!("k in 0..={d}"));
            return Err(c.bad("k", want, k.to_string()));
        }
    }
    c.int_in("largest", 0, 1)?;
    c.int_in("sorted", 0, 1)
}

/// CumSum: the axis (input 1) inside the input's rank.
pub fn cumsum(c: &Ctx) -> Result<()> {
    if let Some(&a) = c.input(1).ints().as_deref().and_then(<[i64]>::first) {
        axis_in(c, "input 'axis'", a, c.input(0).rank(), false)?;
    }
    c.int_in("exclusive", 0, 1)?;
    c.int_in("reverse", 0, 1)
}

/// QuantizeLinear / DequantizeLinear: `axis` inside the input's rank when
/// the scale is per axis; `block_size` non-negative.
pub fn quant_axis(c: &Ctx) -> Result<()> {
    let per_axis = c.input(1).rank().is_some_and(|r| r > 0);
    if per_axis {
        axis_in(c, "axis", c.int("axis", 1)?, c.input(0).rank(), false)?;
    }
    c.int_in("block_size", 0, i64::from(i32::MAX))?;
    c.int_in("saturate", 0, 1)
}

/// The `axes` of a node: attribute (older opsets) or constant input 1.
fn axes_list(c: &Ctx) -> Result<Option<(&'static str, Vec<i64>)>> {
    Ok(match c.node.get_ints("axes")? {
        Some(a) => Some(("axes", a)),
        None => c.input(1).ints().map(|a| ("input 'axes'", a)),
    })
}

/// Squeeze: distinct axes inside the rank.
pub fn squeeze(c: &Ctx) -> Result<()> {
    if let Some((what, axes)) = axes_list(c)? {
        axes_in(c, what, &axes, c.input(0).rank())?;
    }
    Ok(())
}

/// Unsqueeze: distinct axes inside the output's rank (input rank + count).
pub fn unsqueeze(c: &Ctx) -> Result<()> {
    let Some((what, axes)) = axes_list(c)? else {
        return Ok(());
    };
    if axes.len() > 64 {
        return Err(c.bad(what, "at most 64 new axes", format!("{}", axes.len())));
    }
    axes_in(c, what, &axes, c.input(0).rank().map(|r| r + axes.len()))
}

/// Reductions: distinct axes inside the rank; `keepdims` 0 or 1.
pub fn reduce(c: &Ctx) -> Result<()> {
    c.int_in("keepdims", 0, 1)?;
    c.int_in("noop_with_empty_axes", 0, 1)?;
    match (c.input(0).rank(), axes_list(c)?) {
        (Some(0), _) | (_, None) => Ok(()),
        (r, Some((what, axes))) => axes_in(c, what, &axes, r),
    }
}

/// Gemm: `transA`/`transB` 0 or 1, A and B matrices.
pub fn gemm(c: &Ctx) -> Result<()> {
    c.int_in("transA", 0, 1)?;
    c.int_in("transB", 0, 1)?;
    for slot in 0..2 {
        if let Some(r) = c.input(slot).rank().filter(|&r| r != 2) {
            return Err(c.bad_input(slot, "a matrix (rank 2)", format!("rank {r}")));
        }
    }
    Ok(())
}

/// Slice: distinct axes in range, no step of 0 (inputs from opset 10,
/// attributes before).
pub fn slice(c: &Ctx) -> Result<()> {
    let axes = match c.node.get_ints("axes")? {
        Some(a) => Some(("axes", a)),
        None => c.input(3).ints().map(|a| ("input 'axes'", a)),
    };
    if let Some((what, axes)) = axes {
        axes_in(c, what, &axes, c.input(0).rank())?;
    }
    if let Some(steps) = c.input(4).ints() {
        if steps.contains(&0) {
            return Err(c.bad_input(4, "non-zero steps", list(&steps)));
        }
    }
    Ok(())
}
