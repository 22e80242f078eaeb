//! onnxruntime through the `ort` crate, its library opened at run time
//! (`load-dynamic`): the CPU execution provider with the session's default
//! graph optimizations, as `onnxruntime.InferenceSession(path)` runs a
//! model.

use super::{bytes_of, error, find_library, Runtime, Session};
use crate::error::Result;
use crate::ir::{DataType, Tensor};
use ort::session::Session as OrtInner;
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The library loaded by this process (the first one found), or why none
/// was.
static LOADED: OnceLock<std::result::Result<(PathBuf, ::ort::environment::Environment), String>> =
    OnceLock::new();

pub(super) struct OrtSession {
    session: OrtInner,
    library: PathBuf,
}

fn fail(message: impl std::fmt::Display) -> crate::Error {
    error(Runtime::Ort, message.to_string())
}

impl OrtSession {
    pub(super) fn open(model: &Path, library: Option<&Path>, threads: usize) -> Result<Self> {
        let loaded = LOADED.get_or_init(|| {
            let (found, looked) =
                find_library(library, &["ORT_DYLIB_PATH"], "libonnxruntime", "onnxruntime/capi");
            let Some(path) = found else {
                return Err(format!(
                    "libonnxruntime not found (looked in: {}); give --runtime-lib PATH or set ORT_DYLIB_PATH \
                     (pip install onnxruntime ships it in site-packages/onnxruntime/capi)",
                    looked.join(", ")
                ));
            };
            let env = ::ort::init_from(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .with_name("onnxq")
                .build()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((path, env))
        });
        let (path, env) = loaded.as_ref().map_err(fail)?;
        if let Some(want) = library {
            if !same_library(want, path) {
                return Err(fail(format!(
                    "this process already loaded {}; {} cannot be loaded beside it",
                    path.display(),
                    want.display()
                )));
            }
        }
        let mut builder = OrtInner::builder(env).map_err(fail)?;
        if threads > 0 {
            builder = builder.with_intra_threads(threads).map_err(fail)?;
        }
        let session = builder
            .commit_from_file(model)
            .map_err(|e| fail(format!("{}: {e}", model.display())))?;
        Ok(OrtSession {
            session,
            library: path.clone(),
        })
    }
}

/// Whether `want` (a file or folder, as given) names the library `loaded`.
fn same_library(want: &Path, loaded: &Path) -> bool {
    want == loaded || loaded.parent() == Some(want) || loaded.starts_with(want)
}

/// One input as an onnxruntime tensor (copied).
fn to_ort(name: &str, t: &Tensor) -> Result<DynValue> {
    let dims: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
    let raw = bytes_of(t)?;
    macro_rules! typed {
        ($ty:ty) => {{
            let v: Vec<$ty> = bytemuck::pod_collect_to_vec(raw);
            OrtTensor::from_array((dims, v))
                .map_err(|e| fail(format!("input '{name}': {e}")))?
                .into_dyn()
        }};
    }
    Ok(match t.dtype() {
        DataType::Float => typed!(f32),
        DataType::Float16 => typed!(half::f16),
        DataType::Bfloat16 => typed!(half::bf16),
        DataType::Double => typed!(f64),
        DataType::Int64 => typed!(i64),
        DataType::Int32 => typed!(i32),
        DataType::Int16 => typed!(i16),
        DataType::Uint16 => typed!(u16),
        DataType::Int8 => typed!(i8),
        DataType::Uint8 => typed!(u8),
        DataType::Bool => {
            let v: Vec<bool> = raw.iter().map(|&b| b != 0).collect();
            OrtTensor::from_array((dims, v))
                .map_err(|e| fail(format!("input '{name}': {e}")))?
                .into_dyn()
        }
        other => {
            return Err(fail(format!(
                "input '{name}': type {} is not handed to onnxruntime",
                other.name()
            )))
        }
    })
}

/// One output as a tensor of ours.
fn from_ort(name: &str, v: &DynValue) -> Result<Tensor> {
    let ValueType::Tensor { ty, .. } = v.dtype() else {
        return Err(fail(format!("output '{name}' is not a tensor")));
    };
    macro_rules! typed {
        ($ty:ty, $dt:expr) => {{
            let (shape, data) = v
                .try_extract_tensor::<$ty>()
                .map_err(|e| fail(format!("output '{name}': {e}")))?;
            let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            Tensor::from_bytes($dt, dims, bytemuck::cast_slice(data).to_vec())
        }};
    }
    Ok(match ty {
        TensorElementType::Float32 => typed!(f32, DataType::Float),
        TensorElementType::Float16 => typed!(half::f16, DataType::Float16),
        TensorElementType::Bfloat16 => typed!(half::bf16, DataType::Bfloat16),
        TensorElementType::Float64 => typed!(f64, DataType::Double),
        TensorElementType::Int64 => typed!(i64, DataType::Int64),
        TensorElementType::Int32 => typed!(i32, DataType::Int32),
        TensorElementType::Int16 => typed!(i16, DataType::Int16),
        TensorElementType::Uint16 => typed!(u16, DataType::Uint16),
        TensorElementType::Int8 => typed!(i8, DataType::Int8),
        TensorElementType::Uint8 => typed!(u8, DataType::Uint8),
        TensorElementType::Bool => {
            let (shape, data) = v
                .try_extract_tensor::<bool>()
                .map_err(|e| fail(format!("output '{name}': {e}")))?;
            let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            Tensor::from_bytes(
                DataType::Bool,
                dims,
                data.iter().map(|&b| b as u8).collect(),
            )
        }
        other => {
            return Err(fail(format!(
                "output '{name}': type {other:?} is not read back from onnxruntime"
            )))
        }
    })
}

impl Session for OrtSession {
    fn describe(&self) -> String {
        format!("onnxruntime ({})", self.library.display())
    }

    fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<BTreeMap<String, Tensor>> {
        let feeds: Vec<(String, DynValue)> = inputs
            .iter()
            .map(|(n, t)| Ok((n.clone(), to_ort(n, t)?)))
            .collect::<Result<_>>()?;
        let outputs = self.session.run(feeds).map_err(fail)?;
        let mut out = BTreeMap::new();
        for (name, value) in outputs.iter() {
            out.insert(name.to_string(), from_ort(name, &value)?);
        }
        Ok(out)
    }
}
