//! Constant tensors: element types and little-endian payloads.
//!
//! A [`Tensor`] is what an initializer or a folded constant holds: a data
//! type, a shape, and the elements as little-endian bytes (`raw_data` layout),
//! shared rather than copied ([`Bytes`] may point into a memory-mapped model or
//! external-data file). Strings are the one type kept as a list. Conversion
//! from and to `TensorProto` lives in `crate::onnx::tensor`.

use crate::error::{Error, Result};
use half::{bf16, f16};
use prost::bytes::Bytes;

/// ONNX element types (`TensorProto.DataType`), with their wire codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Float,
    Uint8,
    Int8,
    Uint16,
    Int16,
    Int32,
    Int64,
    String,
    Bool,
    Float16,
    Double,
    Uint32,
    Uint64,
    Complex64,
    Complex128,
    Bfloat16,
    Float8e4m3fn,
    Float8e4m3fnuz,
    Float8e5m2,
    Float8e5m2fnuz,
    Uint4,
    Int4,
    Float4e2m1,
    Float8e8m0,
}

impl DataType {
    /// The type for an ONNX wire code, if the code is one we know.
    pub fn from_code(code: i32) -> Option<Self> {
        use DataType::*;
        Some(match code {
            1 => Float,
            2 => Uint8,
            3 => Int8,
            4 => Uint16,
            5 => Int16,
            6 => Int32,
            7 => Int64,
            8 => String,
            9 => Bool,
            10 => Float16,
            11 => Double,
            12 => Uint32,
            13 => Uint64,
            14 => Complex64,
            15 => Complex128,
            16 => Bfloat16,
            17 => Float8e4m3fn,
            18 => Float8e4m3fnuz,
            19 => Float8e5m2,
            20 => Float8e5m2fnuz,
            21 => Uint4,
            22 => Int4,
            23 => Float4e2m1,
            24 => Float8e8m0,
            _ => return None,
        })
    }

    /// The ONNX wire code.
    pub fn code(self) -> i32 {
        use DataType::*;
        match self {
            Float => 1,
            Uint8 => 2,
            Int8 => 3,
            Uint16 => 4,
            Int16 => 5,
            Int32 => 6,
            Int64 => 7,
            String => 8,
            Bool => 9,
            Float16 => 10,
            Double => 11,
            Uint32 => 12,
            Uint64 => 13,
            Complex64 => 14,
            Complex128 => 15,
            Bfloat16 => 16,
            Float8e4m3fn => 17,
            Float8e4m3fnuz => 18,
            Float8e5m2 => 19,
            Float8e5m2fnuz => 20,
            Uint4 => 21,
            Int4 => 22,
            Float4e2m1 => 23,
            Float8e8m0 => 24,
        }
    }

    /// Lower-case name as ONNX tools print it (`float`, `int8`, …).
    pub fn name(self) -> &'static str {
        use DataType::*;
        match self {
            Float => "float",
            Uint8 => "uint8",
            Int8 => "int8",
            Uint16 => "uint16",
            Int16 => "int16",
            Int32 => "int32",
            Int64 => "int64",
            String => "string",
            Bool => "bool",
            Float16 => "float16",
            Double => "double",
            Uint32 => "uint32",
            Uint64 => "uint64",
            Complex64 => "complex64",
            Complex128 => "complex128",
            Bfloat16 => "bfloat16",
            Float8e4m3fn => "float8e4m3fn",
            Float8e4m3fnuz => "float8e4m3fnuz",
            Float8e5m2 => "float8e5m2",
            Float8e5m2fnuz => "float8e5m2fnuz",
            Uint4 => "uint4",
            Int4 => "int4",
            Float4e2m1 => "float4e2m1",
            Float8e8m0 => "float8e8m0",
        }
    }

    /// Name for a wire code, or `type<code>` for an unknown one.
    pub fn name_of_code(code: i32) -> String {
        match Self::from_code(code) {
            Some(t) => t.name().to_string(),
            None => format!("type{code}"),
        }
    }

    /// Bits per element in `raw_data` (4 for the packed 4-bit types), `None`
    /// for strings.
    pub fn bits(self) -> Option<usize> {
        use DataType::*;
        Some(match self {
            Uint4 | Int4 | Float4e2m1 => 4,
            Uint8 | Int8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz
            | Float8e8m0 => 8,
            Uint16 | Int16 | Float16 | Bfloat16 => 16,
            Float | Int32 | Uint32 => 32,
            Double | Int64 | Uint64 | Complex64 => 64,
            Complex128 => 128,
            String => return None,
        })
    }

    /// Bytes that `n` elements take in `raw_data`, `None` for strings or on
    /// overflow.
    pub fn raw_len(self, n: usize) -> Option<usize> {
        let bits = self.bits()?;
        n.checked_mul(bits).map(|b| b.div_ceil(8))
    }

    /// Floating-point types that carry real values (weights, activations).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DataType::Float | DataType::Float16 | DataType::Bfloat16 | DataType::Double
        )
    }
}

/// Element count of a shape, `None` on overflow.
pub fn numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Elements of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Little-endian packed elements, `raw_data` layout.
    Raw(Bytes),
    /// UTF-8 (or arbitrary) byte strings.
    Strings(Vec<Bytes>),
}

/// A constant tensor: type, shape, elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dtype: DataType,
    dims: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// A tensor from raw little-endian bytes; the length must match.
    pub fn from_raw(dtype: DataType, dims: Vec<usize>, raw: Bytes) -> Result<Self> {
        let n = numel(&dims).ok_or_else(|| Error::tensor("", "shape overflows"))?;
        let expected = dtype
            .raw_len(n)
            .ok_or_else(|| Error::tensor("", "string tensors have no raw payload"))?;
        if raw.len() != expected {
            return Err(Error::tensor(
                "",
                format!(
                    "{} elements of {} need {expected} bytes, payload has {}",
                    n,
                    dtype.name(),
                    raw.len()
                ),
            ));
        }
        Ok(Tensor {
            dtype,
            dims,
            data: TensorData::Raw(raw),
        })
    }

    /// A string tensor; the count must match the shape.
    pub fn from_strings(dims: Vec<usize>, strings: Vec<Bytes>) -> Result<Self> {
        let n = numel(&dims).ok_or_else(|| Error::tensor("", "shape overflows"))?;
        if strings.len() != n {
            return Err(Error::tensor(
                "",
                format!("shape needs {n} strings, found {}", strings.len()),
            ));
        }
        Ok(Tensor {
            dtype: DataType::String,
            dims,
            data: TensorData::Strings(strings),
        })
    }

    /// A float32 tensor. `data.len()` must match `dims` (checked in debug
    /// builds; callers build both from the same shape).
    pub fn from_f32(dims: Vec<usize>, data: &[f32]) -> Self {
        #[cfg(target_endian = "little")]
        return Self::from_le_slice(DataType::Float, dims, data);
        #[cfg(not(target_endian = "little"))]
        Self::from_pod(
            DataType::Float,
            dims,
            data.iter().flat_map(|v| v.to_le_bytes()),
        )
    }

    /// A tensor whose elements are `data` as they lie in memory (on a
    /// little-endian machine, the `raw_data` layout): one copy.
    #[cfg(target_endian = "little")]
    fn from_le_slice<T: bytemuck::Pod>(dtype: DataType, dims: Vec<usize>, data: &[T]) -> Self {
        let raw = Bytes::copy_from_slice(bytemuck::cast_slice(data));
        debug_assert_eq!(Some(raw.len()), numel(&dims).and_then(|n| dtype.raw_len(n)));
        Tensor {
            dtype,
            dims,
            data: TensorData::Raw(raw),
        }
    }

    /// An int64 tensor (shapes, axes, indices).
    pub fn from_i64(dims: Vec<usize>, data: &[i64]) -> Self {
        Self::from_pod(
            DataType::Int64,
            dims,
            data.iter().flat_map(|v| v.to_le_bytes()),
        )
    }

    /// An int32 tensor (quantized biases).
    pub fn from_i32(dims: Vec<usize>, data: &[i32]) -> Self {
        #[cfg(target_endian = "little")]
        return Self::from_le_slice(DataType::Int32, dims, data);
        #[cfg(not(target_endian = "little"))]
        Self::from_pod(
            DataType::Int32,
            dims,
            data.iter().flat_map(|v| v.to_le_bytes()),
        )
    }

    /// An int8 tensor.
    pub fn from_i8(dims: Vec<usize>, data: &[i8]) -> Self {
        Self::from_pod(
            DataType::Int8,
            dims,
            data.iter().flat_map(|v| v.to_le_bytes()),
        )
    }

    /// A uint8 tensor.
    pub fn from_u8(dims: Vec<usize>, data: &[u8]) -> Self {
        Self::from_bytes(DataType::Uint8, dims, data.to_vec())
    }

    /// A tensor of `dtype` whose `raw_data` is `raw` (no copy); the length
    /// must match (checked in debug builds).
    pub fn from_bytes(dtype: DataType, dims: Vec<usize>, raw: Vec<u8>) -> Self {
        debug_assert_eq!(Some(raw.len()), numel(&dims).and_then(|n| dtype.raw_len(n)));
        Tensor {
            dtype,
            dims,
            data: TensorData::Raw(Bytes::from(raw)),
        }
    }

    /// An integer tensor of `dtype` (uint8, int8, uint16, int16 or int32)
    /// from values that fit it (each is cast, wrapping outside the range);
    /// `None` for any other type.
    pub fn from_ints(dtype: DataType, dims: Vec<usize>, data: &[i32]) -> Option<Self> {
        Some(match dtype {
            DataType::Uint8 => Self::from_pod(dtype, dims, data.iter().map(|&v| v as u8)),
            DataType::Int8 => Self::from_pod(dtype, dims, data.iter().map(|&v| v as i8 as u8)),
            DataType::Uint16 => Self::from_pod(
                dtype,
                dims,
                data.iter().flat_map(|&v| (v as u16).to_le_bytes()),
            ),
            DataType::Int16 => Self::from_pod(
                dtype,
                dims,
                data.iter().flat_map(|&v| (v as i16).to_le_bytes()),
            ),
            DataType::Int32 => Self::from_i32(dims, data),
            _ => return None,
        })
    }

    fn from_pod(dtype: DataType, dims: Vec<usize>, bytes: impl Iterator<Item = u8>) -> Self {
        let raw: Vec<u8> = bytes.collect();
        debug_assert_eq!(Some(raw.len()), numel(&dims).and_then(|n| dtype.raw_len(n)));
        Tensor {
            dtype,
            dims,
            data: TensorData::Raw(Bytes::from(raw)),
        }
    }

    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        numel(&self.dims).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The raw little-endian payload (`None` for strings).
    pub fn raw(&self) -> Option<&Bytes> {
        match &self.data {
            TensorData::Raw(b) => Some(b),
            TensorData::Strings(_) => None,
        }
    }

    /// Bytes the payload takes.
    pub fn byte_len(&self) -> usize {
        match &self.data {
            TensorData::Raw(b) => b.len(),
            TensorData::Strings(s) => s.iter().map(|b| b.len()).sum(),
        }
    }

    /// Same data, another shape with the same element count.
    pub fn reshaped(&self, dims: Vec<usize>) -> Option<Self> {
        (numel(&dims)? == self.len()).then(|| Tensor {
            dtype: self.dtype,
            dims,
            data: self.data.clone(),
        })
    }

    fn raw_chunks<const N: usize>(
        &self,
        want: DataType,
    ) -> Result<impl Iterator<Item = [u8; N]> + '_> {
        match &self.data {
            TensorData::Raw(b) if self.dtype == want => Ok(b
                .chunks_exact(N)
                .map(|c| <[u8; N]>::try_from(c).unwrap_or([0; N]))),
            _ => Err(Error::tensor(
                "",
                format!("expected {}, found {}", want.name(), self.dtype.name()),
            )),
        }
    }

    /// The elements of a float32 tensor in place, when its payload lies
    /// aligned in memory on a little-endian machine (`None` otherwise: use
    /// [`Tensor::to_f32_vec`]).
    pub fn as_f32_slice(&self) -> Option<&[f32]> {
        #[cfg(target_endian = "little")]
        if let (DataType::Float, TensorData::Raw(b)) = (self.dtype, &self.data) {
            return bytemuck::try_cast_slice(b).ok();
        }
        None
    }

    /// Elements as f32, converting from any real floating type.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(match self.dtype {
            #[cfg(target_endian = "little")]
            DataType::Float => match &self.data {
                TensorData::Raw(b) if b.len() % 4 == 0 => bytemuck::pod_collect_to_vec(b),
                _ => return Err(Error::tensor("", "float payload of the wrong length")),
            },
            #[cfg(not(target_endian = "little"))]
            DataType::Float => self
                .raw_chunks::<4>(DataType::Float)?
                .map(f32::from_le_bytes)
                .collect(),
            DataType::Float16 => self
                .raw_chunks::<2>(DataType::Float16)?
                .map(|b| f16::from_le_bytes(b).to_f32())
                .collect(),
            DataType::Bfloat16 => self
                .raw_chunks::<2>(DataType::Bfloat16)?
                .map(|b| bf16::from_le_bytes(b).to_f32())
                .collect(),
            DataType::Double => self
                .raw_chunks::<8>(DataType::Double)?
                .map(|b| f64::from_le_bytes(b) as f32)
                .collect(),
            other => {
                return Err(Error::tensor(
                    "",
                    format!("expected a floating-point tensor, found {}", other.name()),
                ))
            }
        })
    }

    /// Elements as i64, converting from any integer type.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        Ok(match self.dtype {
            DataType::Int64 => self
                .raw_chunks::<8>(DataType::Int64)?
                .map(i64::from_le_bytes)
                .collect(),
            DataType::Int32 => self
                .raw_chunks::<4>(DataType::Int32)?
                .map(|b| i32::from_le_bytes(b) as i64)
                .collect(),
            DataType::Int16 => self
                .raw_chunks::<2>(DataType::Int16)?
                .map(|b| i16::from_le_bytes(b) as i64)
                .collect(),
            DataType::Int8 => self
                .raw_chunks::<1>(DataType::Int8)?
                .map(|b| b[0] as i8 as i64)
                .collect(),
            DataType::Uint8 | DataType::Bool => match &self.data {
                TensorData::Raw(b) => b.iter().map(|&v| v as i64).collect(),
                TensorData::Strings(_) => Vec::new(),
            },
            DataType::Uint16 => self
                .raw_chunks::<2>(DataType::Uint16)?
                .map(|b| u16::from_le_bytes(b) as i64)
                .collect(),
            DataType::Uint32 => self
                .raw_chunks::<4>(DataType::Uint32)?
                .map(|b| u32::from_le_bytes(b) as i64)
                .collect(),
            DataType::Uint64 => self
                .raw_chunks::<8>(DataType::Uint64)?
                .map(|b| u64::from_le_bytes(b) as i64)
                .collect(),
            other => {
                return Err(Error::tensor(
                    "",
                    format!("expected an integer tensor, found {}", other.name()),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 1..=24 {
            let t = DataType::from_code(code).unwrap();
            assert_eq!(t.code(), code);
        }
        assert_eq!(DataType::from_code(0), None);
        assert_eq!(DataType::from_code(99), None);
    }

    #[test]
    fn raw_len_checks_payload() {
        assert_eq!(DataType::Int4.raw_len(3), Some(2));
        assert_eq!(DataType::Float.raw_len(usize::MAX), None);
        let err = Tensor::from_raw(DataType::Float, vec![2, 2], Bytes::from(vec![0u8; 15]));
        assert!(err.is_err());
        let t = Tensor::from_raw(DataType::Float, vec![2, 2], Bytes::from(vec![0u8; 16])).unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![0.0; 4]);
    }

    #[test]
    fn conversions() {
        let t = Tensor::from_f32(vec![3], &[1.0, -2.5, 3.25]);
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, -2.5, 3.25]);
        assert!(t.to_i64_vec().is_err());
        let i = Tensor::from_i64(vec![2], &[-7, 9]);
        assert_eq!(i.to_i64_vec().unwrap(), vec![-7, 9]);
        assert_eq!(
            Tensor::from_i8(vec![2], &[-1, 5]).to_i64_vec().unwrap(),
            vec![-1, 5]
        );
    }
}
