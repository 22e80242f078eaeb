//! Convolution and pooling attributes (ONNX Conv-1/11, ConvTranspose-1/11,
//! ConvInteger-10, QLinearConv-10, MaxPool-1..12, AveragePool-1..19,
//! LpPool-1..18, MaxRoiPool-1, DepthToSpace/SpaceToDepth, LRN-1/13).
//!
//! The schema: `kernel_shape`, `strides`, `dilations` hold one positive
//! value per spatial axis, `pads` two non-negative values per spatial axis
//! (all begins, then all ends), the weight is `[M, C/group, k1, …]` for Conv
//! and `[C, M/group, k1, …]` for ConvTranspose, `group` divides the
//! channels, and the input has the weight's rank. The spatial rank comes
//! from the weight when it is known, else from the input, else from
//! `kernel_shape`. Values are also capped at [`MAX_WINDOW`] so no arithmetic
//! on them can overflow.

use super::{list, Ctx};
use crate::error::Result;

/// The largest kernel size, stride, dilation or pad accepted (2^20): far
/// past any real model, small enough that sizes computed from it cannot
/// overflow.
pub const MAX_WINDOW: i64 = 1 << 20;

/// Conv, ConvInteger, QLinearConv, ConvTranspose.
pub fn conv(c: &Ctx) -> Result<()> {
    let op = c.node.op_type.as_str();
    let transpose = op == "ConvTranspose";
    let w_slot = if op == "QLinearConv" { 3 } else { 1 };
    let x = c.input(0);
    let w = c.input(w_slot);
    if let Some(r) = w.rank() {
        if r < 3 {
            return Err(c.bad_input(
                w_slot,
                "a weight of rank 3 or more (out, in/group, kernel…)",
                format!("rank {r}"),
            ));
        }
    }
    if let Some(r) = x.rank() {
        if r < 3 {
            return Err(c.bad_input(
                0,
                "an input of rank 3 or more (N, C, spatial…)",
                format!("rank {r}"),
            ));
        }
        if let Some(wr) = w.rank() {
            if wr != r {
                return Err(c.bad_input(
                    0,
                    format!("rank {wr}, the weight's"),
                    format!("rank {r}"),
                ));
            }
        }
    }
    let kernel = c.node.get_ints("kernel_shape")?;
    let spatial = w
        .rank()
        .or(x.rank())
        .map(|r| r - 2)
        .or(kernel.as_ref().map(Vec::len));
    spatial_lists(c, spatial)?;
    if let Some(k) = &kernel {
        for (i, &kv) in k.iter().enumerate() {
            if let Some(wd) = w.dim(2 + i) {
                if wd as i64 != kv {
                    return Err(c.bad(
                        "kernel_shape",
                        format!("the weight's spatial dims {}", dims_list(w, 2)),
                        list(k),
                    ));
                }
            }
        }
    }
    let group = c.int("group", 1)?;
    if !(1..=MAX_WINDOW).contains(&group) {
        return Err(c.bad("group", "a positive number", group.to_string()));
    }
    let g = group as usize;
    let (w0, w1, xc) = (w.dim(0), w.dim(1), x.dim(1));
    if transpose {
        // W [C, M/group, k…]: C is the input's channels, divisible by group.
        if let Some(xc) = xc {
            if xc % g != 0 {
                return Err(c.bad(
                    "group",
                    format!("a divisor of the input's {xc} channels"),
                    group.to_string(),
                ));
            }
            if let Some(w0) = w0.filter(|&w0| w0 != xc) {
                return Err(c.bad_input(
                    w_slot,
                    format!("{xc} rows, one per input channel"),
                    w0.to_string(),
                ));
            }
        }
        for name in ["output_padding", "output_shape"] {
            if let Some(v) = c.node.get_ints(name)? {
                if spatial.is_some_and(|n| v.len() != n) || v.iter().any(|&p| p < 0) {
                    return Err(c.bad(
                        name,
                        format!("{} non-negative values", spatial.unwrap_or(v.len())),
                        list(&v),
                    ));
                }
                if v.iter().any(|&p| p > MAX_WINDOW * MAX_WINDOW) {
                    return Err(c.bad(name, "sizes a tensor can have", list(&v)));
                }
            }
        }
    } else {
        // W [M, C/group, k…]: M divisible by group, C = C/group · group.
        if let Some(w0) = w0.filter(|w0| w0 % g != 0) {
            return Err(c.bad(
                "group",
                format!("a divisor of the weight's {w0} output channels"),
                group.to_string(),
            ));
        }
        if let (Some(xc), Some(w1)) = (xc, w1) {
            if xc != w1 * g {
                return Err(c.bad(
                    "group",
                    format!("{xc} input channels = {w1} (weight axis 1) × group"),
                    group.to_string(),
                ));
            }
        }
    }
    auto_pad(c)
}

/// MaxPool, AveragePool, LpPool: `kernel_shape` is required.
pub fn pool(c: &Ctx) -> Result<()> {
    let Some(kernel) = c.node.get_ints("kernel_shape")? else {
        return Err(c.bad(
            "kernel_shape",
            "one window size per spatial axis (required)",
            "absent",
        ));
    };
    if kernel.is_empty() {
        return Err(c.bad("kernel_shape", "at least one value", "[]"));
    }
    if let Some(r) = c.input(0).rank() {
        if r != kernel.len() + 2 {
            return Err(c.bad_input(
                0,
                format!(
                    "rank {} (N, C and one axis per kernel size)",
                    kernel.len() + 2
                ),
                format!("rank {r}"),
            ));
        }
    }
    spatial_lists(c, Some(kernel.len()))?;
    c.int_in("ceil_mode", 0, 1)?;
    c.int_in("storage_order", 0, 1)?;
    c.int_in("count_include_pad", 0, 1)?;
    c.int_in("p", 1, 64)?;
    auto_pad(c)
}

/// MaxRoiPool: `pooled_shape` is two positive sizes.
pub fn roi_pool(c: &Ctx) -> Result<()> {
    let shape = c.node.get_ints("pooled_shape")?.unwrap_or_default();
    if shape.len() != 2 || shape.iter().any(|&s| !(1..=MAX_WINDOW).contains(&s)) {
        return Err(c.bad("pooled_shape", "two positive sizes", list(&shape)));
    }
    Ok(())
}

/// DepthToSpace, SpaceToDepth: a positive `blocksize` on a rank-4 input.
pub fn blocksize(c: &Ctx) -> Result<()> {
    required_size(c, "blocksize", "a positive block size (required)")?;
    rank_is(c, 0, 4)
}

/// LRN: a positive `size` (required).
pub fn lrn(c: &Ctx) -> Result<()> {
    required_size(c, "size", "a positive window size (required)")
}

/// A required integer attribute in `1..=MAX_WINDOW`.
fn required_size(c: &Ctx, name: &str, expected: &str) -> Result<()> {
    let v = c.node.get_int(name)?;
    if !v.is_some_and(|v| (1..=MAX_WINDOW).contains(&v)) {
        return Err(c.bad(name, expected, v.map_or("absent".into(), |v| v.to_string())));
    }
    Ok(())
}

/// Input `slot` has rank `want`, when its rank is known.
fn rank_is(c: &Ctx, slot: usize, want: usize) -> Result<()> {
    match c.input(slot).rank() {
        Some(r) if r != want => Err(c.bad_input(slot, format!("rank {want}"), format!("rank {r}"))),
        _ => Ok(()),
    }
}

/// `kernel_shape`, `strides`, `dilations` (one positive value per spatial
/// axis) and `pads` (two non-negative values per axis).
fn spatial_lists(c: &Ctx, spatial: Option<usize>) -> Result<()> {
    for name in ["kernel_shape", "strides", "dilations"] {
        let Some(v) = c.node.get_ints(name)? else {
            continue;
        };
        if let Some(n) = spatial.filter(|&n| v.len() != n) {
            return Err(c.bad(name, format!("{n} values, one per spatial axis"), list(&v)));
        }
        if v.iter().any(|&s| !(1..=MAX_WINDOW).contains(&s)) {
            return Err(c.bad(
                name,
                format!("positive values up to {MAX_WINDOW}"),
                list(&v),
            ));
        }
    }
    if let Some(p) = c.node.get_ints("pads")? {
        let n = spatial.unwrap_or(p.len() / 2);
        if p.len() != 2 * n {
            return Err(c.bad(
                "pads",
                format!("{} values, a begin and an end per spatial axis", 2 * n),
                list(&p),
            ));
        }
        if p.iter().any(|&s| !(0..=MAX_WINDOW).contains(&s)) {
            return Err(c.bad("pads", format!("values from 0 to {MAX_WINDOW}"), list(&p)));
        }
    }
    Ok(())
}

fn auto_pad(c: &Ctx) -> Result<()> {
    match c.node.get_string("auto_pad")?.as_deref() {
        None | Some("NOTSET" | "SAME_UPPER" | "SAME_LOWER" | "VALID") => Ok(()),
        Some(other) => Err(c.bad(
            "auto_pad",
            "NOTSET, SAME_UPPER, SAME_LOWER or VALID",
            format!("{other:?}"),
        )),
    }
}

fn dims_list(k: &super::Known, from: usize) -> String {
    let dims: Vec<String> = k
        .dims
        .iter()
        .flatten()
        .skip(from)
        .map(|d| d.to_string())
        .collect();
    format!("[{}]", dims.join(", "))
}
