//! OpenVINO through the `openvino` crate, its C library opened at run time
//! (`runtime-linking`): the ONNX file read by OpenVINO's ONNX frontend and
//! compiled for the CPU plugin with the plugin's defaults (its inference
//! precision included), as `Core().compile_model(path, "CPU")` runs it.

use super::{bytes_of, error, find_library, Runtime, Session};
use crate::error::Result;
use crate::ir::{DataType, Tensor};
use openvino::{CompiledModel, Core, DeviceType, ElementType, InferRequest, Shape};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The library loaded by this process, or why none was.
static LOADED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();

pub(super) struct OvSession {
    // The request borrows nothing from these, but they must outlive it.
    request: InferRequest,
    _compiled: CompiledModel,
    _core: Core,
    outputs: Vec<String>,
    library: PathBuf,
}

// SAFETY: OpenVINO's C API objects may be used from any thread, one
// thread at a time; `Session` users serialize calls (`&mut self`).
unsafe impl Send for OvSession {}

/// OpenVINO's message on one line (errors are one line): its line breaks,
/// real or escaped (`\n` as two characters in the C API's text), become
/// "; ", blank lines dropped.
fn fail(message: impl std::fmt::Display) -> crate::Error {
    let text = message.to_string().replace("\\n", "\n");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    error(Runtime::Openvino, lines.join("; "))
}

impl OvSession {
    pub(super) fn open(model: &Path, library: Option<&Path>, threads: usize) -> Result<Self> {
        let loaded = LOADED.get_or_init(|| {
            let (found, looked) = find_library(
                library,
                &[
                    "OPENVINO_INSTALL_DIR",
                    "INTEL_OPENVINO_DIR",
                    "LD_LIBRARY_PATH",
                ],
                "libopenvino_c",
                "openvino/libs",
            );
            let Some(path) = found else {
                return Err(format!(
                    "libopenvino_c not found (looked in: {}); give --runtime-lib PATH \
                     (pip install openvino ships it in site-packages/openvino/libs)",
                    looked.join(", ")
                ));
            };
            openvino_sys::library::load_from(path.clone())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(path)
        });
        let path = loaded.as_ref().map_err(fail)?;
        let mut core = Core::new().map_err(fail)?;
        if threads > 0 {
            let n = threads.to_string();
            core.set_property(
                &DeviceType::CPU,
                &openvino::RwPropertyKey::InferenceNumThreads,
                &n,
            )
            .map_err(fail)?;
        }
        let file = model
            .to_str()
            .ok_or_else(|| fail(format!("{}: not a UTF-8 path", model.display())))?;
        let read = core.read_model_from_file(file, "").map_err(|e| {
            let e = e.to_string();
            // Its ONNX frontend dequantizes QLinearConv / QLinearMatMul
            // weights along axis 1 (per-channel scales run along axis 0).
            let hint = if e.contains("QLinear") && e.contains("axis") {
                "; OpenVINO reads per-channel QLinearConv / QLinearMatMul weights along the wrong axis: \
                 quantize with --target openvino, which writes QDQ"
            } else {
                ""
            };
            fail(format!("{}: {}{hint}", model.display(), e.trim_end()))
        })?;
        let mut compiled = core
            .compile_model(&read, DeviceType::CPU)
            .map_err(|e| fail(format!("{}: {e}", model.display())))?;
        // The outputs' names as the ONNX file gives them: the model as
        // read has one name per output; compiling may fuse an output into
        // its producer, whose port then carries both names and answers
        // with either (PaddleOCR's classifier: "Softmax@0/normalized").
        // Results keep their order, so each is fetched by index.
        let n = read.get_outputs_len().map_err(fail)?;
        let outputs = (0..n)
            .map(|i| read.get_output_by_index(i)?.get_name())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(fail)?;
        let request = compiled.create_infer_request().map_err(fail)?;
        Ok(OvSession {
            request,
            _compiled: compiled,
            _core: core,
            outputs,
            library: path.clone(),
        })
    }
}

fn element_type(dt: DataType) -> Option<ElementType> {
    Some(match dt {
        DataType::Float => ElementType::F32,
        DataType::Double => ElementType::F64,
        DataType::Float16 => ElementType::F16,
        DataType::Bfloat16 => ElementType::Bf16,
        DataType::Int64 => ElementType::I64,
        DataType::Int32 => ElementType::I32,
        DataType::Int16 => ElementType::I16,
        DataType::Uint16 => ElementType::U16,
        DataType::Int8 => ElementType::I8,
        DataType::Uint8 => ElementType::U8,
        DataType::Bool => ElementType::Boolean,
        _ => return None,
    })
}

fn data_type(et: ElementType) -> Option<DataType> {
    Some(match et {
        ElementType::F32 => DataType::Float,
        ElementType::F64 => DataType::Double,
        ElementType::F16 => DataType::Float16,
        ElementType::Bf16 => DataType::Bfloat16,
        ElementType::I64 => DataType::Int64,
        ElementType::I32 => DataType::Int32,
        ElementType::I16 => DataType::Int16,
        ElementType::U16 => DataType::Uint16,
        ElementType::I8 => DataType::Int8,
        ElementType::U8 => DataType::Uint8,
        ElementType::Boolean => DataType::Bool,
        _ => return None,
    })
}

impl Session for OvSession {
    fn describe(&self) -> String {
        format!("OpenVINO ({})", self.library.display())
    }

    fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<BTreeMap<String, Tensor>> {
        for (name, t) in inputs {
            let et = element_type(t.dtype()).ok_or_else(|| {
                fail(format!(
                    "input '{name}': type {} is not handed to OpenVINO",
                    t.dtype().name()
                ))
            })?;
            let dims: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
            let shape = Shape::new(&dims).map_err(fail)?;
            let mut tensor = openvino::Tensor::new(et, &shape).map_err(fail)?;
            let raw = bytes_of(t)?;
            let dst = tensor.get_raw_data_mut().map_err(fail)?;
            if dst.len() != raw.len() {
                return Err(fail(format!(
                    "input '{name}': expected {} bytes, found {}",
                    dst.len(),
                    raw.len()
                )));
            }
            dst.copy_from_slice(raw);
            self.request
                .set_tensor(name, &tensor)
                .map_err(|e| fail(format!("input '{name}': {e}")))?;
        }
        self.request.infer().map_err(fail)?;
        let mut out = BTreeMap::new();
        for (i, name) in self.outputs.iter().enumerate() {
            let t = self
                .request
                .get_output_tensor_by_index(i)
                .map_err(|e| fail(format!("output '{name}': {e}")))?;
            let et = t.get_element_type().map_err(fail)?;
            let dt = data_type(et).ok_or_else(|| {
                fail(format!(
                    "output '{name}': type {et:?} is not read back from OpenVINO"
                ))
            })?;
            let dims: Vec<usize> = t
                .get_shape()
                .map_err(fail)?
                .get_dimensions()
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            let raw = t.get_raw_data().map_err(fail)?.to_vec();
            out.insert(name.clone(), Tensor::from_raw(dt, dims, raw.into())?);
        }
        Ok(out)
    }
}
