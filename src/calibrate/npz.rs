//! Numpy's `.npy` arrays and `.npz` archives as tensors: read with every
//! header checked against the bytes the file holds before anything is
//! allocated (a lying header or a zip bomb is an error naming the file and
//! array), and written (`onnxq run`'s outputs, tests' fixtures).
//! Little-endian payloads are read in one piece; numpy's plain headers are
//! parsed here, others by npyz.

use crate::error::{Error, Result};
use crate::ir::tensor::{numel, DataType, Tensor};
use npyz::WriterBuilder;
use prost::bytes::Bytes;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The tensor type of a numpy type string, `None` when unsupported.
fn npy_dtype(ts: &npyz::TypeStr) -> Option<DataType> {
    use npyz::TypeChar;
    Some(match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => DataType::Float,
        (TypeChar::Float, 2) => DataType::Float16,
        (TypeChar::Float, 8) => DataType::Double,
        (TypeChar::Int, 8) => DataType::Int64,
        (TypeChar::Int, 4) => DataType::Int32,
        (TypeChar::Int, 2) => DataType::Int16,
        (TypeChar::Int, 1) => DataType::Int8,
        (TypeChar::Uint, 1) => DataType::Uint8,
        (TypeChar::Bool, 1) => DataType::Bool,
        _ => return None,
    })
}

/// Whether the payload of `ts` already is the tensor's raw bytes
/// (little-endian or byte-sized numbers; booleans need npyz's check).
fn npy_payload_is_raw(ts: &npyz::TypeStr, dtype: DataType) -> bool {
    let little = matches!(
        ts.endianness(),
        npyz::Endianness::Little | npyz::Endianness::Irrelevant
    );
    little && dtype != DataType::Bool
}

/// What a reader is told of an array before its payload is read: its
/// element type and dims. An error refuses the array unread.
pub type ArrayCheck<'a> = &'a dyn Fn(DataType, &[usize]) -> Result<()>;

/// The payload size `dims` of `dtype` declare, refused past `limit` (the
/// bytes the archive entry holds) or when `check` refuses it: nothing is
/// allocated for a header that promises more than the file has.
fn payload_len(
    dtype: DataType,
    dims: &[usize],
    limit: u64,
    what: &str,
    check: ArrayCheck,
) -> Result<usize> {
    let len = numel(dims)
        .and_then(|n| dtype.raw_len(n))
        .ok_or_else(|| Error::Invalid(format!("{what}: shape {dims:?} overflows")))?;
    if len as u64 > limit {
        return Err(Error::Invalid(format!(
            "{what}: the header declares {} {dims:?} ({len} bytes), the file holds {limit} bytes",
            dtype.name()
        )));
    }
    check(dtype, dims).map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
    Ok(len)
}

/// A raw payload of `dims` elements of `dtype`, in one read.
fn read_raw_payload(
    mut r: impl Read,
    dtype: DataType,
    dims: Vec<usize>,
    limit: u64,
    what: &str,
    check: ArrayCheck,
) -> Result<Tensor> {
    let len = payload_len(dtype, &dims, limit, what, check)?;
    let mut raw = vec![0u8; len];
    r.read_exact(&mut raw)
        .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
    Tensor::from_raw(dtype, dims, Bytes::from(raw))
}

fn npy_to_tensor<R: Read>(
    npy: npyz::NpyFile<R>,
    limit: u64,
    what: &str,
    check: ArrayCheck,
) -> Result<Tensor> {
    use npyz::DType;
    let dims: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == npyz::Order::Fortran && dims.len() > 1 {
        return Err(Error::Invalid(format!(
            "{what}: Fortran-ordered arrays are not supported"
        )));
    }
    let n = numel(&dims).ok_or_else(|| Error::Invalid(format!("{what}: shape overflows")))?;
    let DType::Plain(ts) = npy.dtype() else {
        return Err(Error::Invalid(format!(
            "{what}: structured arrays are not supported"
        )));
    };
    let bad = |e: std::io::Error| Error::Invalid(format!("{what}: {e}"));
    let Some(dtype) = npy_dtype(&ts) else {
        return Err(Error::Invalid(format!(
            "{what}: numpy dtype {ts} is not supported"
        )));
    };
    if npy_payload_is_raw(&ts, dtype) {
        return read_raw_payload(npy.into_inner(), dtype, dims, limit, what, check);
    }
    payload_len(dtype, &dims, limit, what, check)?;
    // Otherwise through npyz (it swaps byte order, checks booleans), then
    // stored little-endian.
    macro_rules! read {
        ($t:ty) => {{
            let v: Vec<$t> = npy.into_vec().map_err(bad)?;
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()
        }};
    }
    let raw: Vec<u8> = match dtype {
        DataType::Float => read!(f32),
        DataType::Float16 => read!(half::f16),
        DataType::Double => read!(f64),
        DataType::Int64 => read!(i64),
        DataType::Int32 => read!(i32),
        DataType::Int16 => read!(i16),
        DataType::Int8 => read!(i8),
        DataType::Uint8 => read!(u8),
        DataType::Bool => {
            let v: Vec<bool> = npy.into_vec().map_err(bad)?;
            v.into_iter().map(u8::from).collect()
        }
        _ => Vec::new(),
    };
    if dtype.raw_len(n) != Some(raw.len()) {
        return Err(Error::Invalid(format!(
            "{what}: {} bytes for shape {dims:?}",
            raw.len()
        )));
    }
    Tensor::from_raw(dtype, dims, Bytes::from(raw))
}

/// The header of an `.npy` stream as numpy writes it for a plain
/// little-endian (or byte-sized) C-ordered array, `{'descr': '<f4',
/// 'fortran_order': False, 'shape': (1, 3, 64, 64), }`: its type and dims.
/// `None` for anything else (other key orders, big-endian, booleans,
/// Fortran order, structured types), which goes through npyz's full
/// Python-literal parser instead (a tenth of the time of a small sample
/// went to that parser).
fn plain_npy_header(text: &str) -> Option<(DataType, Vec<usize>)> {
    let rest = text.trim_end().strip_prefix("{'descr': '")?;
    let (descr, rest) = rest.split_once('\'')?;
    let ts: npyz::TypeStr = descr.parse().ok()?;
    let dtype = npy_dtype(&ts).filter(|&d| npy_payload_is_raw(&ts, d))?;
    let rest = rest.strip_prefix(", 'fortran_order': False, 'shape': (")?;
    let (shape, rest) = rest.split_once(')')?;
    if !matches!(rest.trim(), ", }" | "}" | ",}") {
        return None;
    }
    let dims = shape
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().ok())
        .collect::<Option<Vec<usize>>>()?;
    Some((dtype, dims))
}

/// Reads one `.npy` stream: a plain header (see [`plain_npy_header`]) is
/// parsed here and the payload read in one go; any other goes to npyz
/// (header bytes replayed in front of the rest of the stream).
fn read_npy(mut r: impl Read, limit: u64, what: &str, check: ArrayCheck) -> Result<Tensor> {
    let bad = |e: std::io::Error| Error::Invalid(format!("{what}: {e}"));
    let mut lead = [0u8; 10];
    r.read_exact(&mut lead).map_err(bad)?;
    // Magic, version, header length (u16 in version 1, u32 from 2 on).
    let mut head = lead.to_vec();
    let len = match (&lead[..6], lead[6]) {
        (b"\x93NUMPY", 1) => u16::from_le_bytes([lead[8], lead[9]]) as usize,
        (b"\x93NUMPY", 2 | 3) => {
            let mut more = [0u8; 2];
            r.read_exact(&mut more).map_err(bad)?;
            head.extend_from_slice(&more);
            u32::from_le_bytes([lead[8], lead[9], more[0], more[1]]) as usize
        }
        _ => 0,
    };
    if len as u64 > limit {
        return Err(Error::Invalid(format!(
            "{what}: a header of {len} bytes, the file holds {limit} bytes"
        )));
    }
    let start = head.len();
    head.resize(start + len, 0);
    r.read_exact(&mut head[start..]).map_err(bad)?;
    let plain = std::str::from_utf8(&head[start..])
        .ok()
        .and_then(plain_npy_header);
    match plain {
        Some((dtype, dims)) => read_raw_payload(r, dtype, dims, limit, what, check),
        None => {
            let npy = npyz::NpyFile::new(std::io::Cursor::new(head).chain(r)).map_err(bad)?;
            npy_to_tensor(npy, limit, what, check)
        }
    }
}

/// An [`ArrayCheck`] that is also told the array's name.
pub type NamedArrayCheck<'a> = &'a dyn Fn(&str, DataType, &[usize]) -> Result<()>;

/// Reads every array of an `.npz` file, in name order.
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    read_npz_checked(path, &|_, _, _| Ok(()))
}

/// Like [`read_npz`], but `check` sees each array's name, type and dims
/// before its payload is read, and may refuse it (a sample that cannot fit
/// the model is refused without decompressing it). A header that declares
/// more bytes than its archive entry holds is refused unread.
pub fn read_npz_checked(path: &Path, check: NamedArrayCheck) -> Result<BTreeMap<String, Tensor>> {
    let file = crate::onnx::open_regular(path)?;
    let mut archive = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        Error::Invalid(format!("{}: not a readable .npz file: {e}", path.display()))
    })?;
    let names: Vec<String> = archive.array_names().map(str::to_string).collect();
    let mut out = BTreeMap::new();
    for name in names {
        let what = format!("{}: array '{name}'", path.display());
        let file = archive
            .zip_archive()
            .by_name(&npyz::npz::file_name_from_array_name(&name))
            .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
        // The entry's declared size bounds every read (a lying header or a
        // lying zip cannot make us allocate or read more).
        let limit = file.size();
        let t = read_npy(file.take(limit), limit, &what, &|dt, dims| {
            check(&name, dt, dims)
        })?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Writes named tensors as an `.npz` file (uncompressed, like `np.savez`),
/// atomically.
pub fn write_npz(path: &Path, arrays: &[(String, Tensor)]) -> Result<()> {
    crate::onnx::save::write_atomic_with(path, |file| {
        let mut npz = npyz::npz::NpzWriter::new(&*file);
        for (name, t) in arrays {
            let shape: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
            let io = |e: std::io::Error| Error::io(path, e);
            macro_rules! put {
                ($t:ty, $v:expr) => {{
                    let v: Vec<$t> = $v;
                    let mut w = npz
                        .array::<$t>(name, Default::default())
                        .map_err(io)?
                        .default_dtype()
                        .shape(&shape)
                        .begin_nd()
                        .map_err(io)?;
                    w.extend(v).map_err(io)?;
                    w.finish().map_err(io)?;
                }};
            }
            match t.dtype() {
                DataType::Float | DataType::Float16 | DataType::Bfloat16 | DataType::Double => {
                    put!(f32, t.to_f32_vec()?)
                }
                DataType::Int64 | DataType::Int32 | DataType::Int16 => put!(i64, t.to_i64_vec()?),
                DataType::Int8 => put!(i8, t.to_i64_vec()?.into_iter().map(|v| v as i8).collect()),
                DataType::Uint8 => put!(u8, t.to_i64_vec()?.into_iter().map(|v| v as u8).collect()),
                DataType::Bool => put!(bool, t.to_i64_vec()?.into_iter().map(|v| v != 0).collect()),
                other => {
                    return Err(Error::Invalid(format!(
                        "output '{name}': {} cannot be written to .npz",
                        other.name()
                    )))
                }
            }
        }
        npz.zip_writer()
            .finish()
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Little-endian payloads are read in one piece, big-endian ones
    /// numpy's own headers take the plain path; what it reads equals what
    /// npyz's full parser reads, on the testdata samples numpy wrote.
    #[test]
    fn numpy_headers_take_the_plain_path_and_read_as_npyz_does() {
        assert_eq!(
            plain_npy_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 64, 64), }          \n"
            ),
            Some((DataType::Float, vec![1, 3, 64, 64]))
        );
        assert_eq!(
            plain_npy_header("{'descr': '<i8', 'fortran_order': False, 'shape': (7,), }\n"),
            Some((DataType::Int64, vec![7]))
        );
        assert_eq!(
            plain_npy_header("{'descr': '|u1', 'fortran_order': False, 'shape': (), }\n"),
            Some((DataType::Uint8, vec![]))
        );
        for other in [
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
            "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }",
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
            "{'fortran_order': False, 'descr': '<f4', 'shape': (2,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }",
        ] {
            assert_eq!(plain_npy_header(other), None, "{other}");
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/digits/cnn_calib");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("testdata")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for path in files.iter().take(4) {
            let fast = read_npz(path).expect("reads");
            let mut archive = npyz::npz::NpzArchive::open(path).expect("opens");
            for (name, t) in &fast {
                let npy = archive.by_name(name).expect("array").expect("present");
                assert_eq!(
                    &npy_to_tensor(npy, u64::MAX, "npyz", &|_, _| Ok(())).expect("npyz"),
                    t,
                    "{path:?} {name}"
                );
            }
        }
    }

    /// through npyz's byte swapping: both give the same tensor.
    #[test]
    fn npz_arrays_of_either_byte_order_read_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.npz");
        let values: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 3.0).collect();
        let ints: Vec<i64> = (0..6).map(|i| i * 1_000_000_007 - 5).collect();
        {
            let file = std::fs::File::create(&path).expect("create");
            let mut npz = npyz::npz::NpzWriter::new(file);
            for (name, order) in [("big", ">f4"), ("little", "<f4")] {
                let dtype = npyz::DType::Plain(order.parse().expect("type string"));
                let mut w = npz
                    .array::<f32>(name, Default::default())
                    .expect("array")
                    .dtype(dtype)
                    .shape(&[37])
                    .begin_nd()
                    .expect("begin");
                w.extend(values.iter().copied()).expect("values");
                w.finish().expect("finish");
            }
            let mut w = npz
                .array::<i64>("ints", Default::default())
                .expect("array")
                .dtype(npyz::DType::Plain(">i8".parse().expect("type string")))
                .shape(&[2, 3])
                .begin_nd()
                .expect("begin");
            w.extend(ints.iter().copied()).expect("values");
            w.finish().expect("finish");
            npz.zip_writer().finish().expect("zip");
        }
        let arrays = read_npz(&path).expect("reads");
        for name in ["big", "little"] {
            let t = &arrays[name];
            assert_eq!(t.dtype(), DataType::Float);
            assert_eq!(t.dims(), &[37]);
            assert_eq!(t.to_f32_vec().expect("f32"), values, "{name}");
        }
        assert_eq!(arrays["ints"].dims(), &[2, 3]);
        assert_eq!(arrays["ints"].to_i64_vec().expect("i64"), ints);
    }
}
