//! Quantization parameters: from a float range (or a weight tensor) to a
//! scale and zero point, and the quantization of constants.
//!
//! Conventions (the ones onnxruntime's quantizer uses, see NOTES.md):
//! - Every range is widened to contain 0, so 0.0 is exactly representable
//!   (zero padding, Relu).
//! - Asymmetric: `scale = (hi − lo) / (qmax − qmin)`,
//!   `zp = round_half_even(qmin − lo / scale)`, clamped to the type.
//! - Symmetric: `scale = max(|lo|, |hi|) / 127`; zp 0 for int8, 128 for
//!   uint8, so values use −127..127 around the zero point (the int8 value
//!   −128 is never produced for in-range inputs).
//! - A degenerate range (all zeros, or too small to divide) gets scale 1.0:
//!   a scale of 0 would make QuantizeLinear divide by zero.
//!
//! Constants are quantized exactly as ONNX QuantizeLinear (opset 13,
//! "QuantizeLinear") specifies: `q = saturate(round_half_even(x / scale) +
//! zp)` (division, not multiplication by a reciprocal), so a runtime that
//! re-quantizes the float weight gets the same integers.

use crate::error::{Error, Result};
use crate::exec::kernels::quantize_levels;
use crate::ir::{DataType, Tensor};

/// A quantized integer type: 8-bit for weights and activations; 16-bit
/// for activations only, in the QDQ format at opset 21 (where
/// QuantizeLinear/DequantizeLinear take uint16/int16: per-tensor recipe
/// overrides, and the automatic mode's alternative to float).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QType {
    Uint8,
    Int8,
    Uint16,
    Int16,
}

impl QType {
    pub fn qmin(self) -> i32 {
        match self {
            QType::Uint8 | QType::Uint16 => 0,
            QType::Int8 => -128,
            QType::Int16 => -32768,
        }
    }

    pub fn qmax(self) -> i32 {
        match self {
            QType::Uint8 => 255,
            QType::Int8 => 127,
            QType::Uint16 => 65535,
            QType::Int16 => 32767,
        }
    }

    pub fn dtype(self) -> DataType {
        match self {
            QType::Uint8 => DataType::Uint8,
            QType::Int8 => DataType::Int8,
            QType::Uint16 => DataType::Uint16,
            QType::Int16 => DataType::Int16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QType::Uint8 => "uint8",
            QType::Int8 => "int8",
            QType::Uint16 => "uint16",
            QType::Int16 => "int16",
        }
    }

    pub fn is_signed(self) -> bool {
        matches!(self, QType::Int8 | QType::Int16)
    }

    /// 16 bits: QDQ format at opset 21 only.
    pub fn is_wide(self) -> bool {
        matches!(self, QType::Uint16 | QType::Int16)
    }

    /// The 16-bit type of the same signedness.
    pub fn wide(self) -> QType {
        if self.is_signed() {
            QType::Int16
        } else {
            QType::Uint16
        }
    }

    /// The zero point of a symmetric quantization.
    pub fn symmetric_zero_point(self) -> i32 {
        match self {
            QType::Uint8 => 128,
            QType::Uint16 => 32768,
            QType::Int8 | QType::Int16 => 0,
        }
    }

    /// A tensor of this type holding `values` (already in range).
    pub fn tensor(self, dims: Vec<usize>, values: &[i32]) -> Tensor {
        match Tensor::from_ints(self.dtype(), dims.clone(), values) {
            Some(t) => t,
            None => Tensor::from_i32(dims, values),
        }
    }
}

/// Smallest range span that still gets its own scale.
const MIN_SPAN: f32 = 1e-30;

/// Scale and zero point of one range.
pub fn from_range(lo: f32, hi: f32, qtype: QType, symmetric: bool) -> (f32, i32) {
    from_range_bits(lo, hi, qtype, symmetric, false)
}

/// The integer interval a quantization uses: the whole type, or with
/// `reduce_range` 7 bits of it (symmetric: zp ± 63; asymmetric: the lower
/// 128 levels of uint8, −64..63 of int8).
pub fn levels(qtype: QType, symmetric: bool, reduce_range: bool) -> (i32, i32) {
    let reduce = reduce_range && !qtype.is_wide();
    let half = if reduce {
        63
    } else {
        (qtype.qmax() - qtype.qmin()) / 2
    };
    if symmetric {
        let z = qtype.symmetric_zero_point();
        return (z - half, z + half);
    }
    match (qtype, reduce) {
        (QType::Uint8, true) => (0, 127),
        (QType::Int8, true) => (-64, 63),
        _ => (qtype.qmin(), qtype.qmax()),
    }
}

/// [`from_range`], optionally on 7 bits (`reduce_range`, see [`levels`]).
pub fn from_range_bits(
    lo: f32,
    hi: f32,
    qtype: QType,
    symmetric: bool,
    reduce_range: bool,
) -> (f32, i32) {
    let lo = lo.min(0.0);
    let hi = hi.max(0.0);
    let (qmin, qmax) = levels(qtype, symmetric, reduce_range);
    if symmetric {
        let m = lo.abs().max(hi.abs());
        let zp = qtype.symmetric_zero_point();
        if !m.is_finite() || m <= MIN_SPAN {
            return (1.0, zp);
        }
        return (m / ((qmax - qmin) / 2) as f32, zp);
    }
    let span = hi - lo;
    if !span.is_finite() || span <= MIN_SPAN {
        return (1.0, qmin.max(0).min(qmax));
    }
    let scale = span / (qmax - qmin) as f32;
    let zp = (qmin as f32 - lo / scale).round_ties_even();
    (scale, (zp as i32).clamp(qmin, qmax))
}

/// Quantization parameters of one tensor: scalar, or per channel along
/// `axis` (one scale and zero point per index of that axis).
#[derive(Clone, Debug, PartialEq)]
pub struct QParams {
    pub qtype: QType,
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
    /// `None`: per tensor (scale and zero point are scalars).
    pub axis: Option<usize>,
}

impl QParams {
    /// Per-tensor parameters.
    pub fn scalar(qtype: QType, scale: f32, zero_point: i32) -> Self {
        QParams {
            qtype,
            scale: vec![scale],
            zero_point: vec![zero_point],
            axis: None,
        }
    }

    /// The scale/zero-point initializers: 0-D tensors when per tensor, 1-D
    /// otherwise.
    pub fn tensors(&self) -> (Tensor, Tensor) {
        let dims = match self.axis {
            None => vec![],
            Some(_) => vec![self.scale.len()],
        };
        let zp = self.qtype.tensor(dims.clone(), &self.zero_point);
        (Tensor::from_f32(dims, &self.scale), zp)
    }
}

/// Splits `dims` around `axis`: (outer, channels, inner) element counts.
fn split_dims(dims: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = dims[..axis].iter().product();
    let inner = dims[axis + 1..].iter().product();
    (outer, dims[axis], inner)
}

/// The elements of a constant, which must all be finite to be quantized.
fn finite_values(name: &str, t: &Tensor, what: &str) -> Result<Vec<f32>> {
    let values = t
        .to_f32_vec()
        .map_err(|e| Error::tensor(name, e.to_string()))?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::tensor(
            name,
            format!(
                "element {i} is {}; a {what} must be finite to be quantized",
                values[i]
            ),
        ));
    }
    Ok(values)
}

/// How to quantize a constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightSpec {
    pub qtype: QType,
    pub symmetric: bool,
    /// Per channel along this axis; `None` for per tensor.
    pub axis: Option<usize>,
    /// 7-bit weights, so that u8×s8 kernels that add two products in int16
    /// (x86 AVX2 without VNNI) cannot saturate: 255·63·2 < 32767.
    pub reduce_range: bool,
}

/// Quantizes a float constant. `min_scale` (per channel, or one value)
/// raises scales from below: bias quantization asks for it when a bias
/// would overflow int32 at the natural weight scale. `grid` (symmetric
/// weights only) is the scale the values were already rounded to (error-
/// compensating rounding, `tune::gptq`): a channel whose extreme value is
/// no longer on the outermost level keeps that scale instead of a finer
/// one. Also returns how many channel scales `min_scale` raised.
pub fn quantize_weight(
    name: &str,
    w: &Tensor,
    spec: WeightSpec,
    min_scale: Option<&[f32]>,
    grid: Option<&[f32]>,
) -> Result<(Tensor, QParams, usize)> {
    let values = finite_values(name, w, "weight")?;
    let dims = w.dims().to_vec();
    let (outer, channels, inner) = match spec.axis {
        Some(a) if a < dims.len() => split_dims(&dims, a),
        Some(a) => {
            return Err(Error::tensor(
                name,
                format!("per-channel axis {a} is out of range for shape {dims:?}"),
            ))
        }
        None => (1, 1, values.len()),
    };
    let mut lo = vec![0f32; channels];
    let mut hi = vec![0f32; channels];
    for o in 0..outer {
        for c in 0..channels {
            let base = (o * channels + c) * inner;
            for &v in &values[base..base + inner] {
                lo[c] = lo[c].min(v);
                hi[c] = hi[c].max(v);
            }
        }
    }
    let mut scale = Vec::with_capacity(channels);
    let mut zero_point = Vec::with_capacity(channels);
    let mut raised = 0;
    for c in 0..channels {
        let (mut s, mut z) =
            from_range_bits(lo[c], hi[c], spec.qtype, spec.symmetric, spec.reduce_range);
        if let Some(g) = grid
            .filter(|_| spec.symmetric)
            .and_then(|g| g.get(c).or(g.first()))
        {
            s = s.max(*g);
        }
        let floor = min_scale.and_then(|m| m.get(c).or(m.first())).copied();
        if let Some(f) = floor.filter(|&f| f > s) {
            // Widen the range so the scale reaches the floor.
            s = f;
            raised += 1;
            if !spec.symmetric {
                let (qmin, qmax) = levels(spec.qtype, false, spec.reduce_range);
                let zf = (qmin as f32 - lo[c].min(0.0) / s).round_ties_even();
                z = (zf as i32).clamp(qmin, qmax);
            }
        }
        scale.push(s);
        zero_point.push(z);
    }
    let (qmin, qmax) = levels(spec.qtype, spec.symmetric, spec.reduce_range);
    // One run of `inner` values per (outer, channel) index; the whole
    // tensor is one run per tensor.
    let mut q = Vec::with_capacity(values.len());
    for (k, run) in values.chunks(inner.max(1)).enumerate() {
        let c = k % channels;
        quantize_levels(run, scale[c], zero_point[c], (qmin, qmax), &mut q);
    }
    let tensor = spec.qtype.tensor(dims, &q);
    let params = QParams {
        qtype: spec.qtype,
        scale,
        zero_point,
        axis: spec.axis,
    };
    Ok((tensor, params, raised))
}

/// The weight scales (per channel, or one) below which the bias `b`, at
/// scale `x_scale * w_scale[c]`, would overflow int32.
pub fn bias_scale_floor(b: &[f32], x_scale: f32) -> Vec<f32> {
    let limit = i32::MAX as f64;
    b.iter()
        .map(|&v| {
            let need = (v.abs() as f64) / (x_scale as f64 * limit);
            // A little headroom against rounding of the product.
            (need * (1.0 + 1e-6)) as f32
        })
        .collect()
}

/// Quantizes a bias to int32 at scale `x_scale * w_scale[c]` (zero point
/// 0), as QLinearConv/QLinearMatMul expect: `q = round_half_even(b /
/// (x_scale · w_scale[c]))`, saturated to int32. `w_scale` has one entry
/// per bias element, or one for all.
pub fn quantize_bias(
    name: &str,
    b: &Tensor,
    x_scale: f32,
    w_scale: &[f32],
) -> Result<(Tensor, Vec<f32>)> {
    let values = finite_values(name, b, "bias")?;
    if w_scale.len() != 1 && w_scale.len() != values.len() {
        return Err(Error::tensor(
            name,
            format!(
                "bias has {} elements, the weight has {} channel scales",
                values.len(),
                w_scale.len()
            ),
        ));
    }
    let scales: Vec<f32> = w_scale.iter().map(|&w| x_scale * w).collect();
    let q: Vec<i32> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = if scales.len() == 1 {
                scales[0]
            } else {
                scales[i]
            };
            let r = (v as f64 / s as f64).round_ties_even();
            r.clamp(i32::MIN as f64, i32::MAX as f64) as i32
        })
        .collect();
    Ok((Tensor::from_i32(b.dims().to_vec(), &q), scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asymmetric_uint8_matches_the_formula() {
        let (s, z) = from_range(-1.0, 3.0, QType::Uint8, false);
        assert_eq!(s, 4.0 / 255.0);
        assert_eq!(z, (1.0f32 / s).round_ties_even() as i32);
        // Range widened to contain 0.
        let (s, z) = from_range(2.0, 4.0, QType::Uint8, false);
        assert_eq!((s, z), (4.0 / 255.0, 0));
        let (s, z) = from_range(-4.0, -2.0, QType::Uint8, false);
        assert_eq!((s, z), (4.0 / 255.0, 255));
    }

    #[test]
    fn symmetric_and_degenerate() {
        assert_eq!(from_range(-2.0, 1.0, QType::Int8, true), (2.0 / 127.0, 0));
        assert_eq!(
            from_range(-2.0, 1.0, QType::Uint8, true),
            (2.0 / 127.0, 128)
        );
        assert_eq!(from_range(0.0, 0.0, QType::Uint8, false), (1.0, 0));
        assert_eq!(from_range(0.0, 0.0, QType::Int8, true), (1.0, 0));
        assert_eq!(from_range(0.0, 0.0, QType::Int8, false), (1.0, 0));
    }

    #[test]
    fn per_channel_weights_use_each_channels_extreme() {
        // [2 channels, 3]: channel 0 max |w| 0.5, channel 1 max |w| 2.54.
        let w = Tensor::from_f32(vec![2, 3], &[0.5, -0.25, 0.0, 1.0, -2.54, 0.02]);
        let spec = WeightSpec {
            qtype: QType::Int8,
            symmetric: true,
            axis: Some(0),
            reduce_range: false,
        };
        let (q, p, _) = quantize_weight("w", &w, spec, None, None).unwrap();
        assert_eq!(p.scale, vec![0.5 / 127.0, 2.54 / 127.0]);
        assert_eq!(p.zero_point, vec![0, 0]);
        let raw = q.raw().unwrap();
        let v: Vec<i8> = raw.iter().map(|&b| b as i8).collect();
        assert_eq!(v, vec![127, -64, 0, 50, -127, 1]);
        // Axis 1: three channels.
        let spec = WeightSpec {
            axis: Some(1),
            ..spec
        };
        let (_, p, _) = quantize_weight("w", &w, spec, None, None).unwrap();
        assert_eq!(p.scale, vec![1.0 / 127.0, 2.54 / 127.0, 0.02 / 127.0]);
        // 7 bits: ±63.
        let spec = WeightSpec {
            reduce_range: true,
            ..spec
        };
        let (q, p, _) = quantize_weight("w", &w, spec, None, None).unwrap();
        assert_eq!(p.scale, vec![1.0 / 63.0, 2.54 / 63.0, 0.02 / 63.0]);
        let v: Vec<i8> = q.raw().unwrap().iter().map(|&b| b as i8).collect();
        // 0.5 / (1/63) is 31.499998 in f32.
        assert_eq!(v, vec![31, -6, 0, 63, -63, 63]);
    }

    #[test]
    fn bias_overflow_raises_the_weight_scale() {
        let b = [1e6f32, 1e-6];
        let x_scale = 1e-4;
        let floor = bias_scale_floor(&b, x_scale);
        let w = Tensor::from_f32(vec![2, 1], &[1e-6, 1e-6]);
        let spec = WeightSpec {
            qtype: QType::Int8,
            symmetric: true,
            axis: Some(0),
            reduce_range: false,
        };
        let (_, p, _) = quantize_weight("w", &w, spec, Some(&floor), None).unwrap();
        assert!(p.scale[0] >= floor[0]);
        assert_eq!(p.scale[1], 1e-6 / 127.0);
        let bt = Tensor::from_f32(vec![2], &b);
        let (q, scales) = quantize_bias("b", &bt, x_scale, &p.scale).unwrap();
        let v: Vec<i32> = q
            .raw()
            .unwrap()
            .chunks(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert!(v[0] < i32::MAX && v[0] > 2_000_000_000, "{v:?}");
        assert_eq!(scales[1], x_scale * (1e-6 / 127.0));
        assert_eq!(
            v[1],
            (1e-6f32 as f64 / scales[1] as f64).round_ties_even() as i32
        );
    }

    /// The levels are `round_ties_even(w / s) + z`, saturated, for every
    /// type, per channel and per tensor, ties and values past the grid
    /// (a raised scale floor, a pinned grid) included.
    #[test]
    fn weight_levels_round_half_to_even_and_saturate() {
        let mut w = vec![0.0f32; 4 * 3 * 5];
        let mut x = 0x2545_f491u32;
        for (i, v) in w.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *v = (x % 2001) as f32 / 1000.0 - 1.0 + (i % 3) as f32 * 0.25;
        }
        w[0] = 0.0;
        w[7] = -3.0;
        w[11] = 2.5;
        let t = Tensor::from_f32(vec![4, 3, 5], &w);
        for qtype in [QType::Int8, QType::Uint8, QType::Int16, QType::Uint16] {
            for symmetric in [true, false] {
                for axis in [None, Some(0), Some(1), Some(2)] {
                    for grid in [None, Some(vec![0.125f32])] {
                        let spec = WeightSpec {
                            qtype,
                            symmetric,
                            axis,
                            reduce_range: false,
                        };
                        // A floor four times the grid's own scale sends
                        // the extremes past the last level.
                        let (_, p0, _) = quantize_weight("w", &t, spec, None, None).unwrap();
                        let floor: Vec<f32> = p0.scale.iter().map(|s| s * 4.0).collect();
                        let floor = grid.is_none().then_some(floor);
                        let (q, p, _) =
                            quantize_weight("w", &t, spec, floor.as_deref(), grid.as_deref())
                                .unwrap();
                        let (lo, hi) = levels(qtype, symmetric, false);
                        let dims = [4usize, 3, 5];
                        let inner: usize = axis.map_or(60, |a| dims[a + 1..].iter().product());
                        let want: Vec<i32> = w
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| {
                                let c = axis.map_or(0, |a| (i / inner) % dims[a]);
                                let r = (v / p.scale[c]).round_ties_even() as i64
                                    + i64::from(p.zero_point[c]);
                                r.clamp(i64::from(lo), i64::from(hi)) as i32
                            })
                            .collect();
                        assert_eq!(q, qtype.tensor(vec![4, 3, 5], &want), "{spec:?} {grid:?}");
                    }
                }
            }
        }
        // Exact ties: 0.5, 1.5, 2.5 and −0.5 levels at scale 1/127.
        let spec = WeightSpec {
            qtype: QType::Int8,
            symmetric: true,
            axis: None,
            reduce_range: false,
        };
        let t = Tensor::from_f32(vec![5], &[127.0, 0.5, 1.5, 2.5, -0.5]);
        let (q, p, _) = quantize_weight("w", &t, spec, None, None).unwrap();
        assert_eq!(p.scale, vec![1.0]);
        let v: Vec<i8> = q.raw().unwrap().iter().map(|&b| b as i8).collect();
        assert_eq!(v, vec![127, 0, 2, 2, 0]);
    }

    #[test]
    fn nonfinite_weights_are_an_error() {
        let w = Tensor::from_f32(vec![2], &[1.0, f32::NAN]);
        let spec = WeightSpec {
            qtype: QType::Int8,
            symmetric: true,
            axis: None,
            reduce_range: false,
        };
        let e = quantize_weight("conv.w", &w, spec, None, None).unwrap_err();
        assert!(e.to_string().contains("conv.w"), "{e}");
    }
}
