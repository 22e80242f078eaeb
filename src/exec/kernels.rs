//! Integer kernels, written from the ONNX operator specification.
//!
//! Every kernel computes exactly in integers up to the requantization; the
//! requantization is the one place where arithmetic modes differ
//! ([`Arith`]):
//! - `Ort` (default): what onnxruntime's CPU kernels compute (NOTES.md):
//!   `f32(acc + bias) · f32(x_scale · w_scale[c] / y_scale)` with the
//!   multiplier formed in float32 left to right, then round half to even,
//!   add the output zero point, saturate to the output type.
//! - `Exact`: the ONNX reference implementation: the same expression in
//!   float64, round half to even, add zero point, saturate.
//!
//! Accumulators are `i32` over zero-point-centred operands widened to
//! `i16` (|a − a_zp|, |w − w_zp| ≤ 255, so a product is ≤ 65025 and a sum
//! of up to 33025 terms cannot overflow); longer reductions use `i64`.

use super::gemm::{gemm_map, PackedA, PackedB, Sums};
use crate::error::{Error, Result};
use crate::ir::{DataType, Tensor};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// How requantization rounds (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arith {
    /// onnxruntime's CPU kernels: float32 multiplier, round half to even
    /// (the default: what most quantized models run on).
    #[default]
    Ort,
    /// The ONNX reference: float64 requantization.
    Exact,
}

/// An 8-bit (or int32) integer tensor as i32 values with its type.
#[derive(Clone, Debug)]
pub struct Ints {
    pub dtype: DataType,
    pub dims: Vec<usize>,
    pub data: Vec<i32>,
}

/// Saturation range of an integer type.
pub fn qrange(dt: DataType) -> Option<(i32, i32)> {
    match dt {
        DataType::Uint8 => Some((0, 255)),
        DataType::Int8 => Some((-128, 127)),
        DataType::Int32 => Some((i32::MIN, i32::MAX)),
        _ => None,
    }
}

/// The integer range of a QuantizeLinear output / DequantizeLinear input:
/// [`qrange`] plus uint16 and int16 (opset 21).
pub fn qdq_range(dt: DataType) -> Option<(i32, i32)> {
    match dt {
        DataType::Uint16 => Some((0, 65535)),
        DataType::Int16 => Some((-32768, 32767)),
        _ => qrange(dt),
    }
}

impl Ints {
    /// [`Ints::from_tensor`] for a DequantizeLinear input, which may also
    /// be uint16 or int16 (opset 21).
    pub fn from_qdq_tensor(t: &Tensor, what: &str) -> Result<Self> {
        if !matches!(t.dtype(), DataType::Uint16 | DataType::Int16) {
            return Self::from_tensor(t, what);
        }
        let data = t
            .to_i64_vec()
            .map_err(|e| Error::tensor(what, e.to_string()))?
            .into_iter()
            .map(|v| v as i32)
            .collect();
        Ok(Ints {
            dtype: t.dtype(),
            dims: t.dims().to_vec(),
            data,
        })
    }

    /// Refuses a tensor that is not uint8, int8 or int32.
    pub fn check_dtype(t: &Tensor, what: &str) -> Result<()> {
        match qrange(t.dtype()) {
            Some(_) => Ok(()),
            None => Err(Error::tensor(
                what,
                format!("expected uint8, int8 or int32, got {}", t.dtype().name()),
            )),
        }
    }

    pub fn from_tensor(t: &Tensor, what: &str) -> Result<Self> {
        Self::check_dtype(t, what)?;
        let data = match (t.dtype(), t.raw()) {
            (DataType::Uint8, Some(b)) if b.len() == t.len() => {
                b.iter().map(|&v| v as i32).collect()
            }
            (DataType::Int8, Some(b)) if b.len() == t.len() => {
                b.iter().map(|&v| v as i8 as i32).collect()
            }
            _ => t
                .to_i64_vec()
                .map_err(|e| Error::tensor(what, e.to_string()))?
                .into_iter()
                .map(|v| v as i32)
                .collect(),
        };
        Ok(Ints {
            dtype: t.dtype(),
            dims: t.dims().to_vec(),
            data,
        })
    }

    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_ints(self.dtype, self.dims.clone(), &self.data)
            .unwrap_or_else(|| Tensor::from_i32(self.dims.clone(), &self.data))
    }
}

/// Per-tensor or per-axis parameters: `scale[i]`, `zero_point[i]` for index
/// `i` along `axis` (one value each when per tensor).
#[derive(Clone, Debug)]
pub struct Params {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
}

impl Params {
    /// Checked parameters: at least one scale, and one zero point or one
    /// per scale.
    pub fn new(scale: Vec<f32>, zero_point: Vec<i32>, what: &str) -> Result<Self> {
        if scale.is_empty() || (zero_point.len() != 1 && zero_point.len() != scale.len()) {
            return Err(Error::tensor(
                what,
                format!(
                    "{} scales and {} zero points",
                    scale.len(),
                    zero_point.len()
                ),
            ));
        }
        Ok(Params { scale, zero_point })
    }

    /// Requires per-tensor parameters.
    pub fn scalar(self, what: &str) -> Result<Self> {
        if self.scale.len() != 1 {
            return Err(Error::tensor(
                what,
                format!("expected one scale, got {}", self.scale.len()),
            ));
        }
        Ok(self)
    }

    /// Requires 1 or `n` scales.
    pub fn for_channels(self, n: usize, what: &str) -> Result<Self> {
        if self.scale.len() != 1 && self.scale.len() != n {
            return Err(Error::tensor(
                what,
                format!("{} scales for {n} channels", self.scale.len()),
            ));
        }
        Ok(self)
    }

    pub fn at(&self, i: usize) -> (f32, i32) {
        let s = self.scale[if self.scale.len() == 1 { 0 } else { i }];
        let z = self.zero_point[if self.zero_point.len() == 1 { 0 } else { i }];
        (s, z)
    }
}

/// The channel index of flat element `i` of `dims` along `axis`.
fn channel_of(dims: &[usize], axis: usize) -> impl Fn(usize) -> usize {
    let inner: usize = dims[axis + 1..].iter().product();
    let n = dims[axis];
    move |i| (i / inner.max(1)) % n.max(1)
}

/// Normalizes a (possibly negative) axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize, what: &str) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        return Err(Error::tensor(
            what,
            format!("axis {axis} is out of range for rank {rank}"),
        ));
    }
    Ok(a as usize)
}

/// Checks that per-axis parameters fit `dims` along `axis`.
fn check_params(p: &Params, dims: &[usize], axis: usize, what: &str) -> Result<()> {
    let n = p.scale.len();
    if n != 1 && (axis >= dims.len() || dims[axis] != n) {
        return Err(Error::tensor(
            what,
            format!(
                "{n} scales for axis {axis} of shape {dims:?} (expected 1 or {})",
                dims.get(axis).copied().unwrap_or(0)
            ),
        ));
    }
    if p.zero_point.len() != n && p.zero_point.len() != 1 {
        return Err(Error::tensor(
            what,
            format!("{} zero points for {n} scales", p.zero_point.len()),
        ));
    }
    Ok(())
}

/// ONNX QuantizeLinear (opset 10/13/19/21): `y = saturate(round_half_even(x
/// / scale) + zero_point)`; division, not a reciprocal multiply. NaN becomes
/// the zero point. Saturates to uint8, int8, uint16 or int16 (opset 21).
pub fn quantize_linear(
    x: &[f32],
    dims: &[usize],
    p: &Params,
    axis: usize,
    out: DataType,
) -> Result<Ints> {
    let (lo, hi) = qdq_range(out)
        .ok_or_else(|| Error::tensor("y", format!("unsupported output type {}", out.name())))?;
    check_params(p, dims, axis, "QuantizeLinear")?;
    let run = channel_run(p, dims, axis, x.len());
    let mut data = Vec::with_capacity(x.len());
    for (k, chunk) in x.chunks(run).enumerate() {
        let (s, z) = p.at(if p.scale.len() > 1 {
            k % p.scale.len()
        } else {
            0
        });
        quantize_run(chunk, s, z, (lo, hi), &mut data);
    }
    Ok(Ints {
        dtype: out,
        dims: dims.to_vec(),
        data,
    })
}

/// [`quantize_linear`] to uint8 or int8, as the output tensor's bytes
/// (no 32-bit intermediate); `None` for another output type.
pub fn quantize_to_bytes(
    x: &[f32],
    dims: &[usize],
    p: &Params,
    axis: usize,
    out: DataType,
) -> Result<Option<Tensor>> {
    let Some((lo, hi)) = qrange(out).filter(|_| matches!(out, DataType::Uint8 | DataType::Int8))
    else {
        return Ok(None);
    };
    check_params(p, dims, axis, "QuantizeLinear")?;
    let run = channel_run(p, dims, axis, x.len());
    let mut data = vec![0u8; x.len()];
    for (k, (chunk, dst)) in x.chunks(run).zip(data.chunks_mut(run)).enumerate() {
        let (s, z) = p.at(if p.scale.len() > 1 {
            k % p.scale.len()
        } else {
            0
        });
        quantize_bytes_run(chunk, s, z, (lo, hi), dst);
    }
    Ok(Some(Tensor::from_bytes(out, dims.to_vec(), data)))
}

/// [`quantize_run`] into 8-bit values (the low byte of each level, as
/// uint8 or int8). Compiled twice: with AVX2 when the CPU has it (runtime
/// detection), and for the baseline target.
fn quantize_bytes_run(x: &[f32], s: f32, z: i32, (lo, hi): (i32, i32), out: &mut [u8]) {
    let (qlo, qhi) = ((lo - z) as f32, (hi - z) as f32);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { quantize_bytes_avx2(x, s, z, (qlo, qhi), out) };
            return;
        }
    }
    quantize_bytes_portable(x, s, z, (qlo, qhi), out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_bytes_avx2(x: &[f32], s: f32, z: i32, bounds: (f32, f32), out: &mut [u8]) {
    quantize_bytes_portable(x, s, z, bounds, out);
}

#[inline(always)]
fn quantize_bytes_portable(x: &[f32], s: f32, z: i32, (qlo, qhi): (f32, f32), out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quantize_one(v, s, z, qlo, qhi) as u8;
    }
}

/// Elements per run of one channel: the whole tensor per tensor, the
/// elements after `axis` per axis index otherwise.
fn channel_run(p: &Params, dims: &[usize], axis: usize, len: usize) -> usize {
    if p.scale.len() > 1 {
        dims[axis + 1..].iter().product::<usize>().max(1)
    } else {
        len.max(1)
    }
}

/// [`dequantize_linear`] of a uint8 or int8 tensor read from its bytes
/// (the same products, no 32-bit intermediate); `None` for another type.
pub fn dequantize_bytes(t: &Tensor, p: &Params, axis: usize) -> Result<Option<Vec<f32>>> {
    let signed = match t.dtype() {
        DataType::Uint8 => false,
        DataType::Int8 => true,
        _ => return Ok(None),
    };
    let Some(raw) = t.raw().filter(|r| r.len() == t.len()) else {
        return Ok(None);
    };
    check_params(p, t.dims(), axis, "DequantizeLinear")?;
    let run = channel_run(p, t.dims(), axis, raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for (k, chunk) in raw.chunks(run).enumerate() {
        let (s, z) = p.at(if p.scale.len() > 1 {
            k % p.scale.len()
        } else {
            0
        });
        if signed {
            out.extend(chunk.iter().map(|&b| (i32::from(b as i8) - z) as f32 * s));
        } else {
            out.extend(chunk.iter().map(|&b| (i32::from(b) - z) as f32 * s));
        }
    }
    Ok(Some(out))
}

/// DequantizeLinear of a tensor of any integer type it takes: from its
/// bytes for 8-bit ones ([`dequantize_bytes`]), through [`Ints`] otherwise.
pub fn dequantize_tensor(t: &Tensor, p: &Params, axis: usize) -> Result<Vec<f32>> {
    match dequantize_bytes(t, p, axis)? {
        Some(y) => Ok(y),
        None => dequantize_linear(&Ints::from_qdq_tensor(t, "x")?, p, axis),
    }
}

/// ONNX DequantizeLinear: `y = (x − zero_point) · scale` in float32.
pub fn dequantize_linear(x: &Ints, p: &Params, axis: usize) -> Result<Vec<f32>> {
    check_params(p, &x.dims, axis, "DequantizeLinear")?;
    let per_axis = p.scale.len() > 1;
    let ch = |i: usize| {
        if per_axis {
            channel_of(&x.dims, axis)(i)
        } else {
            0
        }
    };
    Ok(x.data
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let (s, z) = p.at(ch(i));
            (q - z) as f32 * s
        })
        .collect())
}

/// The requantization of one accumulator (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct Requant {
    /// float32 multiplier `(in_scale · w_scale) / y_scale` (ort mode).
    m32: f32,
    /// float64 multiplier (exact mode).
    m64: f64,
    zp: i32,
    lo: i32,
    hi: i32,
    arith: Arith,
}

impl Requant {
    pub fn new(
        in_scale: f32,
        w_scale: f32,
        y_scale: f32,
        zp: i32,
        out: DataType,
        arith: Arith,
    ) -> Self {
        let (lo, hi) = qrange(out).unwrap_or((0, 255));
        Requant {
            m32: in_scale * w_scale / y_scale,
            m64: in_scale as f64 * w_scale as f64 / y_scale as f64,
            zp,
            lo,
            hi,
            arith,
        }
    }

    #[inline]
    pub fn apply(&self, acc: i64) -> i32 {
        match self.arith {
            Arith::Ort if self.hi - self.lo <= 255 => self.ort_8bit(acc),
            Arith::Ort => {
                let r = round_even_f32((acc as f32) * self.m32) as f64;
                (r + self.zp as f64).clamp(self.lo as f64, self.hi as f64) as i32
            }
            Arith::Exact => {
                let r = (acc as f64 * self.m64).round_ties_even();
                (r + self.zp as f64).clamp(self.lo as f64, self.hi as f64) as i32
            }
        }
    }

    /// Ort mode into an 8-bit type, branch-free so loops over it
    /// vectorize: the product is first clamped to ±2^22 (anything beyond
    /// saturates an 8-bit output anyway), where adding and removing
    /// 1.5·2^23 rounds half to even exactly; the zero point and the
    /// saturation are exact in f32 (small integers).
    #[inline(always)]
    fn ort_8bit(&self, acc: i64) -> i32 {
        self.ort_8bit_f32(acc as f32)
    }

    /// [`Requant::ort_8bit`] of an accumulator already in f32. The last
    /// step reads the integer out of the float's bits (`v + 1.5·2^23` has
    /// the integer `v` in its low mantissa bits, exact for |v| < 2^22):
    /// no saturating float-to-int conversion, so it vectorizes.
    #[inline(always)]
    #[allow(clippy::manual_clamp)] // max/min on purpose: NaN handling, below
    fn ort_8bit_f32(&self, acc: f32) -> i32 {
        const LIM: f32 = 4_194_304.0;
        const MAGIC: f32 = 12_582_912.0;
        // max/min rather than clamp: a NaN product (a zero output scale)
        // becomes -LIM instead of reaching the bit trick.
        let x = (acc * self.m32).max(-LIM).min(LIM);
        let r = (x + MAGIC) - MAGIC;
        let v = (r + self.zp as f32).max(self.lo as f32).min(self.hi as f32);
        ((v + MAGIC).to_bits() as i32) - (MAGIC.to_bits() as i32)
    }

    /// [`Requant::apply`] over a run of accumulators plus `bias`; returns
    /// how many of them lie beyond ±2^24. Compiled with AVX2 when the CPU
    /// has it (the 8-bit ort path then runs eight lanes at a time).
    #[inline]
    pub fn apply_run<T: QOut>(&self, bias: i64, acc: Sums, out: &mut [T]) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above); the
                // body is safe code.
                return unsafe { self.apply_run_avx2(bias, acc, out) };
            }
        }
        self.apply_run_body(bias, acc, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn apply_run_avx2<T: QOut>(&self, bias: i64, acc: Sums, out: &mut [T]) -> u64 {
        self.apply_run_body(bias, acc, out)
    }

    #[inline(always)]
    fn apply_run_body<T: QOut>(&self, bias: i64, acc: Sums, out: &mut [T]) -> u64 {
        let ort8 = self.arith == Arith::Ort && self.hi - self.lo <= 255;
        match acc {
            Sums::I32(acc) => {
                // One pass when no sum plus bias can leave i32 (every real
                // layer): add, count, convert to f32 and requantize, eight
                // lanes at a time. (A fold, not `all`: no early exit, so it
                // vectorizes.)
                let widest = acc.iter().fold(0u32, |m, &a| m.max(a.unsigned_abs()));
                if ort8 && widest as u64 + bias.unsigned_abs() <= i32::MAX as u64 {
                    let b = bias as i32;
                    let mut beyond = 0u32;
                    for (o, &a) in out.iter_mut().zip(acc) {
                        let v = a + b;
                        beyond += (v.unsigned_abs() > F32_EXACT as u32) as u32;
                        *o = T::from_i32(self.ort_8bit_f32(v as f32));
                    }
                    return beyond as u64;
                }
                let mut beyond = 0;
                for (o, &a) in out.iter_mut().zip(acc) {
                    let v = a as i64 + bias;
                    beyond += (v.abs() > F32_EXACT) as u64;
                    *o = T::from_i32(self.apply(v));
                }
                beyond
            }
            Sums::I64(acc) => {
                let mut beyond = 0;
                for (o, &a) in out.iter_mut().zip(acc) {
                    let v = a + bias;
                    beyond += (v.abs() > F32_EXACT) as u64;
                    *o = T::from_i32(if ort8 {
                        self.ort_8bit(v)
                    } else {
                        self.apply(v)
                    });
                }
                beyond
            }
        }
    }
}

/// An output element of a requantizing kernel: `i32`, or the byte of an
/// 8-bit type (an int8 value as its two's-complement byte), so 8-bit
/// outputs are written once, straight into the tensor's bytes.
pub trait QOut: Copy + Default + Send + Sync {
    fn from_i32(v: i32) -> Self;
}

impl QOut for i32 {
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        v
    }
}

impl QOut for u8 {
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        v as u8
    }
}

/// Accumulators beyond 2^24 lose integer precision in float32 (ort mode).
pub const F32_EXACT: i64 = 1 << 24;

/// Broadcast batch shapes of MatMul operands (`[..., m, k]`, `[..., k, n]`).
fn matmul_shapes(
    a: &[usize],
    b: &[usize],
    what: &str,
) -> Result<(Vec<usize>, usize, usize, usize)> {
    let bad = || Error::tensor(what, format!("MatMul shapes {a:?} and {b:?} do not match"));
    if a.len() < 2 || b.len() < 2 {
        return Err(bad());
    }
    let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
    let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
    if k != k2 {
        return Err(bad());
    }
    let (ba, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
    let rank = ba.len().max(bb.len());
    let mut batch = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + ba.len() >= rank {
            ba[i + ba.len() - rank]
        } else {
            1
        };
        let db = if i + bb.len() >= rank {
            bb[i + bb.len() - rank]
        } else {
            1
        };
        if da != db && da != 1 && db != 1 {
            return Err(bad());
        }
        batch.push(da.max(db));
    }
    Ok((batch, m, k, n))
}

/// Index into a (broadcast) batch of shape `own` for flat batch index `i`
/// of the broadcast shape `full`.
fn batch_index(full: &[usize], own: &[usize], mut i: usize) -> usize {
    let off = full.len() - own.len();
    let mut idx = 0;
    let mut stride = 1;
    for d in (0..full.len()).rev() {
        let c = i % full[d];
        i /= full[d];
        if d >= off {
            let od = own[d - off];
            if od != 1 {
                idx += c * stride;
            }
            stride *= od;
        }
    }
    idx
}

/// The B operand of an integer MatMul, centred by its (per-column) zero
/// points and packed for `gemm` once per batch matrix, so a constant
/// weight is prepared once per model, not once per run.
pub struct MatB {
    /// Shape after 1-D promotion (`[..., k, n]`).
    dims: Vec<usize>,
    /// B was 1-D (the `n` axis is dropped from the output).
    vector: bool,
    packed: Vec<PackedB>,
}

impl MatB {
    pub fn new(b: &Ints, b_zp: &[i32]) -> Result<Self> {
        let mut dims = b.dims.clone();
        let vector = dims.len() == 1;
        if vector {
            dims.push(1);
        }
        if dims.len() < 2 {
            return Err(Error::tensor(
                "B",
                format!("MatMul operand of shape {:?}", b.dims),
            ));
        }
        let (k, n) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        if b_zp.len() != 1 && b_zp.len() != n {
            return Err(Error::tensor(
                "b_zero_point",
                format!("{} zero points for {n} columns", b_zp.len()),
            ));
        }
        let nb: usize = dims[..dims.len() - 2].iter().product();
        let packed = (0..nb)
            .map(|bi| {
                let bd = &b.data[bi * k * n..(bi + 1) * k * n];
                if b_zp.len() == 1 {
                    PackedB::from_rows(k, n, bd, |_| b_zp[0])
                } else {
                    PackedB::from_rows(k, n, bd, |j| b_zp[j])
                }
            })
            .collect();
        Ok(MatB {
            dims,
            vector,
            packed,
        })
    }

    /// Columns of B.
    pub fn cols(&self) -> usize {
        self.dims[self.dims.len() - 1]
    }
}

/// Integer matrix product of centred operands: `(a − a_zp) · (b − b_zp[n])`
/// with MatMul broadcasting; returns the accumulators and the output shape.
/// 1-D operands are promoted as MatMul specifies.
pub fn matmul_acc(a: &Ints, a_zp: i32, b: &MatB) -> Result<(Vec<i64>, Vec<usize>)> {
    matmul_map(&a.dims, &centred(a, a_zp), b, |_, acc, out| {
        acc.write_i64(out)
    })
}

/// [`matmul_acc`] of an A already centred by its zero point (`ac`, shape
/// `a_dims`) with an epilogue: `f(col0, acc, out)` turns a run of
/// accumulators of one row, from column `col0` on, into output values.
pub fn matmul_map<T: Copy + Default + Send>(
    a_dims: &[usize],
    ac: &[i16],
    b: &MatB,
    f: impl Fn(usize, Sums, &mut [T]) + Sync,
) -> Result<(Vec<T>, Vec<usize>)> {
    let mut ad = a_dims.to_vec();
    let a1 = ad.len() == 1;
    if a1 {
        ad.insert(0, 1);
    }
    let (batch, m, k, n) = matmul_shapes(&ad, &b.dims, "MatMul")?;
    if ac.len() != ad.iter().product::<usize>() {
        return Err(Error::tensor(
            "A",
            format!("{} values for shape {a_dims:?}", ac.len()),
        ));
    }
    let nb: usize = batch.iter().product();
    let (ab, bb) = (&ad[..ad.len() - 2], &b.dims[..b.dims.len() - 2]);
    let mut out = Vec::with_capacity(nb * m * n);
    for bi in 0..nb {
        let ia = batch_index(&batch, ab, bi) * m * k;
        let ib = batch_index(&batch, bb, bi);
        let pa = PackedA::from_i16_rows(m, k, &ac[ia..ia + m * k]);
        out.extend(gemm_map(&pa, &b.packed[ib], |_, j, acc, o| f(j, acc, o)));
    }
    let mut dims = batch;
    if !a1 {
        dims.push(m);
    }
    if !b.vector {
        dims.push(n);
    }
    Ok((out, dims))
}

/// What a requantizing kernel observed.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccStats {
    /// Accumulators (with bias) beyond ±2^24.
    pub beyond_f32: u64,
}

/// ONNX QLinearMatMul (opset 10/21): int32 accumulation, per-column `b`
/// parameters allowed, requantized per [`Requant`]; returns the output tensor.
#[allow(clippy::too_many_arguments)]
pub fn qlinear_matmul(
    a: &Tensor,
    a_p: &Params,
    b: &MatB,
    b_p: &Params,
    y_p: &Params,
    out: DataType,
    arith: Arith,
    stats: &mut AccStats,
) -> Result<Tensor> {
    let a_p = a_p.clone().scalar("a_scale")?;
    let y_p = y_p.clone().scalar("y_scale")?;
    let n = b.cols();
    let b_p = b_p.clone().for_channels(n, "b_scale")?;
    let rq = Requantizer::new(a_p.scale[0], &b_p, &y_p, out, arith);
    let ac = centred_tensor(a, a_p.zero_point[0], "a")?;
    let y = if matches!(out, DataType::Uint8 | DataType::Int8) {
        // 8-bit outputs written straight as the tensor's bytes.
        let (data, dims) =
            matmul_map::<u8>(a.dims(), &ac, b, |j, acc, o| rq.column_run(j, acc, o))?;
        Tensor::from_raw(out, dims, data.into())?
    } else {
        let (data, dims) =
            matmul_map::<i32>(a.dims(), &ac, b, |j, acc, o| rq.column_run(j, acc, o))?;
        Ints {
            dtype: out,
            dims,
            data,
        }
        .to_tensor()
    };
    stats.beyond_f32 += rq.beyond();
    Ok(y)
}

/// The requantization of a kernel's accumulators, per weight channel
/// (see [`Requant`]); counts accumulators beyond 2^24 as it goes.
pub struct Requantizer {
    rq: Vec<Requant>,
    beyond: AtomicU64,
}

impl Requantizer {
    pub fn new(in_scale: f32, w: &Params, y: &Params, out: DataType, arith: Arith) -> Self {
        let rq = w
            .scale
            .iter()
            .map(|&ws| Requant::new(in_scale, ws, y.scale[0], y.zero_point[0], out, arith))
            .collect();
        Requantizer {
            rq,
            beyond: AtomicU64::new(0),
        }
    }

    /// The output value of accumulator `acc` (bias included) of weight
    /// channel `channel`.
    #[inline]
    pub fn apply(&self, channel: usize, acc: i64) -> i32 {
        if acc.abs() > F32_EXACT {
            self.beyond.fetch_add(1, Ordering::Relaxed);
        }
        let c = if self.rq.len() == 1 { 0 } else { channel };
        self.rq[c].apply(acc)
    }

    /// A run of accumulators of one weight channel, plus `bias`.
    #[inline]
    pub fn channel_run<T: QOut>(&self, channel: usize, bias: i64, acc: Sums, out: &mut [T]) {
        let c = if self.rq.len() == 1 { 0 } else { channel };
        let n = self.rq[c].apply_run(bias, acc, out);
        if n > 0 {
            self.beyond.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A run of accumulators whose weight channel is their column,
    /// starting at column `col0` (MatMul: per-column B scales).
    #[inline]
    pub fn column_run<T: QOut>(&self, col0: usize, acc: Sums, out: &mut [T]) {
        if self.rq.len() == 1 {
            self.channel_run(0, 0, acc, out);
            return;
        }
        let rqs = &self.rq[col0.min(self.rq.len())..(col0 + acc.len()).min(self.rq.len())];
        let ort8 = rqs
            .first()
            .is_some_and(|r| r.arith == Arith::Ort && r.hi - r.lo <= 255);
        let one = |r: &Requant, a: i64| T::from_i32(if ort8 { r.ort_8bit(a) } else { r.apply(a) });
        let mut beyond = 0;
        match acc {
            Sums::I32(v) => {
                for ((o, &a), r) in out.iter_mut().zip(v).zip(rqs) {
                    beyond += (a.unsigned_abs() > F32_EXACT as u32) as u64;
                    *o = one(r, a as i64);
                }
            }
            Sums::I64(v) => {
                for ((o, &a), r) in out.iter_mut().zip(v).zip(rqs) {
                    beyond += (a.abs() > F32_EXACT) as u64;
                    *o = one(r, a);
                }
            }
        }
        if beyond > 0 {
            self.beyond.fetch_add(beyond, Ordering::Relaxed);
        }
    }

    /// Accumulators seen beyond ±2^24.
    pub fn beyond(&self) -> u64 {
        self.beyond.load(Ordering::Relaxed)
    }
}

/// Requantizes accumulators: element `i` uses weight channel
/// `channel(i)`'s scale (see [`Requant`]); counts accumulators beyond 2^24.
#[allow(clippy::too_many_arguments)]
pub fn requantize(
    acc: &[i64],
    in_scale: f32,
    w: &Params,
    y: &Params,
    out: DataType,
    arith: Arith,
    stats: &mut AccStats,
    channel: impl Fn(usize) -> usize + Sync,
) -> Vec<i32> {
    let rq = Requantizer::new(in_scale, w, y, out, arith);
    let data = acc
        .par_iter()
        .enumerate()
        .map(|(i, &v)| rq.apply(channel(i), v))
        .collect();
    stats.beyond_f32 += rq.beyond();
    data
}

/// [`centred`] straight from a tensor's bytes (uint8/int8 only: a centred
/// value must fit i16): one pass, no `i32` copy of the input.
pub fn centred_tensor(t: &Tensor, zp: i32, what: &str) -> Result<Vec<i16>> {
    match (t.dtype(), t.raw()) {
        (DataType::Uint8, Some(b)) if b.len() == t.len() => {
            Ok(centred_bytes(b, |v| (v as i32 - zp) as i16))
        }
        (DataType::Int8, Some(b)) if b.len() == t.len() => {
            Ok(centred_bytes(b, |v| (v as i8 as i32 - zp) as i16))
        }
        (DataType::Uint8 | DataType::Int8, _) => Ok(centred(&Ints::from_tensor(t, what)?, zp)),
        (other, _) => Err(Error::tensor(
            what,
            format!("expected uint8 or int8, got {}", other.name()),
        )),
    }
}

/// `f` over bytes, in parallel chunks of plain loops (they vectorize; an
/// element-wise parallel `collect` does not).
fn centred_bytes(b: &[u8], f: impl Fn(u8) -> i16 + Sync) -> Vec<i16> {
    const CHUNK: usize = 1 << 15;
    let mut out = vec![0i16; b.len()];
    out.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .for_each(|(o, b)| o.iter_mut().zip(b).for_each(|(o, &v)| *o = f(v)));
    out
}

/// The values of an 8-bit integer tensor minus `zp`, as `i16` (|v| ≤ 255).
pub fn centred(x: &Ints, zp: i32) -> Vec<i16> {
    x.data.par_iter().map(|&v| (v - zp) as i16).collect()
}

/// [`quantize_run`] for the quantizer's constants (weights): the levels of
/// `x / s + z` within `bounds`, rounded half to even, bit for bit what
/// `round_ties_even` and a clamp give (the bounds of every
/// [`crate::quantize::QType`] are within the exact range).
pub(crate) fn quantize_levels(x: &[f32], s: f32, z: i32, bounds: (i32, i32), out: &mut Vec<i32>) {
    quantize_run(x, s, z, bounds, out);
}

/// QuantizeLinear of one channel's run into `out`, branch-free so it
/// vectorizes: `x / s` is clamped to `[lo − z, hi − z]` first (integer
/// bounds, so clamping then rounding equals rounding then saturating), a
/// range within ±2^17 where adding and removing 1.5·2^23 rounds half to
/// even exactly; NaN becomes the zero point.
#[inline]
fn quantize_run(x: &[f32], s: f32, z: i32, (lo, hi): (i32, i32), out: &mut Vec<i32>) {
    let (qlo, qhi) = ((lo - z) as f32, (hi - z) as f32);
    out.extend(x.iter().map(|&v| quantize_one(v, s, z, qlo, qhi)));
}

/// One element of [`quantize_run`], `qlo`/`qhi` its bounds less `z`.
#[inline(always)]
fn quantize_one(v: f32, s: f32, z: i32, qlo: f32, qhi: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    let q = v / s;
    let q = if q.is_nan() { 0.0 } else { q.max(qlo).min(qhi) };
    ((q + MAGIC) - MAGIC) as i32 + z
}

/// Round half to even of an f32 without a libm call: adding and removing
/// 1.5·2^23 rounds to an integer in the default IEEE mode (round to
/// nearest, ties to even), exact for |x| < 2^22; larger values are
/// integers already or saturate.
#[inline(always)]
fn round_even_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x.round_ties_even()
    }
}

pub(super) fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut v = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        v[d] = i % dims[d];
        i /= dims[d];
    }
    v
}

/// DynamicQuantizeLinear (ONNX opset 11): uint8; the range is widened to
/// contain 0; `scale = (max − min) / 255`, `zp = saturate(round_half_even(
/// −min / scale))`, `y = saturate(round_half_even(x / scale) + zp)`. An
/// all-zero input (scale 0) uses scale 1.0 and zero point 0, as
/// onnxruntime does (the spec's formula would divide by zero).
pub fn dynamic_quantize_linear(x: &[f32], dims: &[usize]) -> (Ints, f32, i32) {
    let lo = x.iter().fold(0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(0f32, |m, &v| m.max(v));
    let mut scale = (hi - lo) / 255.0;
    if scale == 0.0 || !scale.is_finite() {
        scale = 1.0;
    }
    let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as i32;
    let p = Params {
        scale: vec![scale],
        zero_point: vec![zp],
    };
    let q = quantize_linear(x, dims, &p, 0, DataType::Uint8).unwrap_or(Ints {
        dtype: DataType::Uint8,
        dims: dims.to_vec(),
        data: vec![zp; x.len()],
    });
    (q, scale, zp)
}
