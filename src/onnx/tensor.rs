//! `TensorProto` ⇄ [`Tensor`].
//!
//! Reads every payload form the IR spec allows (`raw_data`, and the typed
//! fields `float_data`, `int32_data`, `int64_data`, `double_data`,
//! `uint64_data`, `string_data`), checking the declared shape against the
//! data before anything is allocated. Writes `raw_data` (strings:
//! `string_data`), which is what onnx's own tools write.
//! External payloads must already have been resolved by `super::external`.

use super::proto::{tensor_proto::DataLocation, TensorProto};
use crate::error::{Error, Result};
use crate::ir::tensor::{numel, DataType, Tensor};
use prost::bytes::Bytes;

/// Shape of a `TensorProto`, refusing negative dimensions.
pub fn proto_dims(t: &TensorProto) -> Result<Vec<usize>> {
    t.dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                Error::tensor(t.name(), format!("negative dimension {d} in {:?}", t.dims))
            })
        })
        .collect()
}

/// The payload size `t` declares (dims × element size), checked for overflow.
pub fn declared_byte_len(t: &TensorProto) -> Result<(DataType, Vec<usize>, Option<usize>)> {
    let dtype = DataType::from_code(t.data_type()).ok_or_else(|| Error::UnsupportedDtype {
        tensor: t.name().to_string(),
        code: t.data_type(),
        reason: "unknown data type code",
    })?;
    let dims = proto_dims(t)?;
    let n = numel(&dims)
        .ok_or_else(|| Error::tensor(t.name(), format!("shape {:?} overflows", t.dims)))?;
    if dtype == DataType::String {
        return Ok((dtype, dims, None));
    }
    let len = dtype
        .raw_len(n)
        .ok_or_else(|| Error::tensor(t.name(), format!("shape {:?} overflows", t.dims)))?;
    Ok((dtype, dims, Some(len)))
}

/// Decodes the payload of `t` into a [`Tensor`].
pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor> {
    let name = t.name();
    if t.data_location() == DataLocation::External {
        return Err(Error::ExternalData {
            tensor: name.to_string(),
            reason: "was not resolved (the model was decoded without its folder)".into(),
        });
    }
    if t.segment.is_some() {
        return Err(Error::tensor(name, "segmented tensors are not supported"));
    }
    let (dtype, dims, expected) = declared_byte_len(t)?;
    let n = numel(&dims).unwrap_or(0);
    let mismatch = |found: usize, field: &str| {
        Error::tensor(
            name,
            format!(
                "shape {:?} of {} needs {n} elements, {field} holds {found}",
                dims,
                dtype.name()
            ),
        )
    };

    let Some(expected) = expected else {
        // Strings.
        if t.string_data.len() != n {
            return Err(mismatch(t.string_data.len(), "string_data"));
        }
        return Tensor::from_strings(dims, t.string_data.clone()).map_err(|e| rename(e, name));
    };

    if let Some(raw) = &t.raw_data {
        if raw.len() != expected {
            return Err(Error::tensor(
                name,
                format!(
                    "raw_data has {} bytes, shape {:?} of {} needs {expected}",
                    raw.len(),
                    dims,
                    dtype.name()
                ),
            ));
        }
        return Tensor::from_raw(dtype, dims, raw.clone()).map_err(|e| rename(e, name));
    }

    use DataType::*;
    let raw: Vec<u8> = match dtype {
        Float | Complex64 => {
            let want = if dtype == Complex64 { 2 * n } else { n };
            if t.float_data.len() != want {
                return Err(mismatch(t.float_data.len(), "float_data"));
            }
            t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        Double | Complex128 => {
            let want = if dtype == Complex128 { 2 * n } else { n };
            if t.double_data.len() != want {
                return Err(mismatch(t.double_data.len(), "double_data"));
            }
            t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        Int64 => {
            if t.int64_data.len() != n {
                return Err(mismatch(t.int64_data.len(), "int64_data"));
            }
            t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        Uint32 | Uint64 => {
            if t.uint64_data.len() != n {
                return Err(mismatch(t.uint64_data.len(), "uint64_data"));
            }
            if dtype == Uint32 {
                t.uint64_data
                    .iter()
                    .flat_map(|&v| (v as u32).to_le_bytes())
                    .collect()
            } else {
                t.uint64_data.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
        }
        Int32 => {
            if t.int32_data.len() != n {
                return Err(mismatch(t.int32_data.len(), "int32_data"));
            }
            t.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        Int16 | Uint16 | Float16 | Bfloat16 => {
            if t.int32_data.len() != n {
                return Err(mismatch(t.int32_data.len(), "int32_data"));
            }
            t.int32_data
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes())
                .collect()
        }
        Int8 | Uint8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz
        | Float8e8m0 => {
            if t.int32_data.len() != n {
                return Err(mismatch(t.int32_data.len(), "int32_data"));
            }
            t.int32_data.iter().map(|&v| v as u8).collect()
        }
        Int4 | Uint4 | Float4e2m1 => {
            // Two elements per entry, low nibble first, as onnx packs them.
            if t.int32_data.len() != expected {
                return Err(mismatch(t.int32_data.len() * 2, "int32_data"));
            }
            t.int32_data.iter().map(|&v| v as u8).collect()
        }
        String => return Err(Error::tensor(name, "string tensor without string_data")),
    };
    Tensor::from_raw(dtype, dims, Bytes::from(raw)).map_err(|e| rename(e, name))
}

fn rename(e: Error, name: &str) -> Error {
    match e {
        Error::BadTensor { reason, .. } => Error::tensor(name, reason),
        other => other,
    }
}

/// Encodes `tensor` as a `TensorProto` named `name`, payload in `raw_data`
/// (or `string_data`).
pub fn tensor_to_proto(name: &str, tensor: &Tensor) -> TensorProto {
    let mut t = TensorProto {
        name: Some(name.to_string()),
        data_type: Some(tensor.dtype().code()),
        dims: tensor.dims().iter().map(|&d| d as i64).collect(),
        ..Default::default()
    };
    match tensor.data() {
        crate::ir::tensor::TensorData::Raw(b) => t.raw_data = Some(b.clone()),
        crate::ir::tensor::TensorData::Strings(s) => t.string_data = s.clone(),
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dtype: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            name: Some("w".into()),
            data_type: Some(dtype.code()),
            dims: dims.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn typed_fields_decode() {
        let mut t = proto(DataType::Float, &[2]);
        t.float_data = vec![1.5, -2.0];
        assert_eq!(
            tensor_from_proto(&t).unwrap().to_f32_vec().unwrap(),
            vec![1.5, -2.0]
        );

        let mut t = proto(DataType::Int8, &[3]);
        t.int32_data = vec![-1, 127, -128];
        assert_eq!(
            tensor_from_proto(&t).unwrap().to_i64_vec().unwrap(),
            vec![-1, 127, -128]
        );

        let mut t = proto(DataType::Float16, &[1]);
        t.int32_data = vec![half::f16::from_f32(0.5).to_bits() as i32];
        assert_eq!(
            tensor_from_proto(&t).unwrap().to_f32_vec().unwrap(),
            vec![0.5]
        );

        let mut t = proto(DataType::Bfloat16, &[1]);
        t.raw_data = Some(Bytes::from(
            half::bf16::from_f32(-3.0).to_le_bytes().to_vec(),
        ));
        assert_eq!(
            tensor_from_proto(&t).unwrap().to_f32_vec().unwrap(),
            vec![-3.0]
        );
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let mut t = proto(DataType::Float, &[4]);
        t.raw_data = Some(Bytes::from(vec![0u8; 12]));
        let e = tensor_from_proto(&t).unwrap_err().to_string();
        assert!(
            e.contains("'w'") && e.contains("12 bytes") && e.contains("16"),
            "{e}"
        );

        let mut t = proto(DataType::Float, &[1 << 40, 1 << 40]);
        t.float_data = vec![1.0];
        assert!(tensor_from_proto(&t).is_err());

        let t = proto(DataType::Float, &[-1]);
        assert!(tensor_from_proto(&t)
            .unwrap_err()
            .to_string()
            .contains("negative"));
    }

    #[test]
    fn round_trip_raw() {
        let x = Tensor::from_f32(vec![2, 1], &[0.25, 8.0]);
        let p = tensor_to_proto("x", &x);
        assert_eq!(tensor_from_proto(&p).unwrap(), x);
    }
}
