//! `onnxq._onnxq`: the Python extension under `python/onnxq/__init__.py`.
//!
//! Each function is one library call ([`onnxq::pipeline::quantize_file`],
//! [`onnxq::pipeline::check`], [`onnxq::pipeline::calibrate`],
//! [`onnxq::cli::run`]) made with the interpreter detached, so onnxq's
//! worker threads run while other Python threads do too. Options cross as
//! JSON in the recipe's own keys (the Python layer turns keyword arguments
//! into them), reports come back as JSON text; samples cross as numpy
//! arrays whose memory the tensors share (no copy; the Python layer makes
//! an array C-contiguous and native-endian first, copying only then).
//! Library errors raise `onnxq.Error` with the whole cause chain on one
//! line.

use bytes::Bytes;
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use onnxq::calibrate::samples::{Sample, SampleSource};
use onnxq::calibrate::{CollectOptions, Method, RangeOptions, Target};
use onnxq::exec::kernels::Arith;
use onnxq::ir::{DataType, Tensor};
use onnxq::pipeline::{Options, Samples};
use onnxq::quantize::Recipe;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The same allocator as the `onnxq` binary (freed pages kept for reuse:
/// see src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pyo3::create_exception!(
    _onnxq,
    Error,
    PyException,
    "An onnxq error: a bad model, bad samples, bad options or I/O. The message names the node, tensor or file."
);

/// A library error as `onnxq.Error`: every cause, outermost first.
fn py_err(e: onnxq::Error) -> PyErr {
    let mut parts: Vec<String> = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = Some(&e);
    while let Some(c) = cause {
        let s = c.to_string();
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
        cause = c.source();
    }
    Error::new_err(onnxq::error::printable(&parts.join(": ")).into_owned())
}

/// A recipe from the Python layer: `file` (a YAML recipe) or `base` (the
/// recipe as JSON), with `overrides` (JSON, the keyword options) laid over
/// it. Unknown keys raise TypeError naming them as Python spells them.
fn recipe(file: Option<&str>, base: Option<&str>, overrides: &str) -> PyResult<Recipe> {
    let parse = |json: &str, what: &str| -> PyResult<Recipe> {
        serde_json::from_str(json).map_err(|e| {
            // serde's message in Python's spelling, without the JSON
            // position (the user wrote keywords, not JSON).
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg);
            PyTypeError::new_err(format!("{what}: {}", msg.replace('-', "_")))
        })
    };
    let base = match (file, base) {
        (Some(f), _) => Recipe::load(Path::new(f)).map_err(py_err)?,
        (None, Some(b)) => parse(b, "recipe")?,
        (None, None) => Recipe::default(),
    };
    Ok(base.overlay(parse(overrides, "options")?))
}

fn arith(name: &str) -> PyResult<Arith> {
    match name {
        "ort" => Ok(Arith::Ort),
        "exact" => Ok(Arith::Exact),
        _ => Err(PyValueError::new_err(format!(
            "arith: expected 'ort' or 'exact', got '{name}'"
        ))),
    }
}

/// The tensor type of a numpy dtype, `None` when onnxq has no such type.
fn dtype_of(d: &Bound<'_, numpy::PyArrayDescr>) -> Option<DataType> {
    Some(match (d.kind(), d.itemsize()) {
        (b'f', 4) => DataType::Float,
        (b'f', 2) => DataType::Float16,
        (b'f', 8) => DataType::Double,
        (b'i', 1) => DataType::Int8,
        (b'i', 2) => DataType::Int16,
        (b'i', 4) => DataType::Int32,
        (b'i', 8) => DataType::Int64,
        (b'u', 1) => DataType::Uint8,
        (b'u', 2) => DataType::Uint16,
        (b'u', 4) => DataType::Uint32,
        (b'u', 8) => DataType::Uint64,
        (b'b', 1) => DataType::Bool,
        _ => return None,
    })
}

/// A numpy array's memory as a tensor payload: keeps the array alive and
/// reads its buffer in place.
struct ArrayBytes {
    _array: Py<PyUntypedArray>,
    /// The array's data pointer (an address: the buffer is the array's,
    /// alive as long as `_array` is held).
    addr: usize,
    len: usize,
}

impl AsRef<[u8]> for ArrayBytes {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `addr` is the data pointer of the C-contiguous array held
        // in `_array`, `len` its size in bytes; numpy frees the buffer only
        // with the array. The Python layer passes arrays nothing else
        // writes to during the call (as onnxruntime's readers do).
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }
}

/// One numpy array as a tensor, sharing its memory.
fn tensor(array: &Bound<'_, PyAny>, what: &str) -> PyResult<Tensor> {
    let array = array.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what}: expected a numpy.ndarray, got {}",
            array
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let descr = array.dtype();
    let dtype = dtype_of(&descr).ok_or_else(|| {
        PyTypeError::new_err(format!(
            "{what}: numpy dtype {descr} has no ONNX tensor type"
        ))
    })?;
    if !array.is_c_contiguous() || descr.is_native_byteorder() == Some(false) {
        return Err(PyValueError::new_err(format!(
            "{what}: the array is not C-contiguous and native-endian"
        )));
    }
    let dims = array.shape().to_vec();
    let len = dims.iter().product::<usize>() * descr.itemsize();
    // SAFETY: a valid array object, the thread attached; `data` is its
    // buffer's first byte.
    let addr =
        unsafe { (*numpy::npyffi::objects::_PyArray_GET_ITEM_DATA(array.as_array_ptr())).data }
            as usize;
    let owner = ArrayBytes {
        _array: array.clone().unbind(),
        addr,
        len,
    };
    Tensor::from_raw(dtype, dims, Bytes::from_owner(owner)).map_err(py_err)
}

/// Samples handed over by the Python layer (a reader's dicts).
struct Reader {
    label: String,
    samples: Vec<Sample>,
}

impl SampleSource for Reader {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn name(&self, i: usize) -> String {
        format!("{} sample {i}", self.label)
    }
    fn load(&self, i: usize) -> onnxq::Result<Sample> {
        self.samples.get(i).cloned().ok_or_else(|| {
            onnxq::Error::Invalid(format!("no sample {i} of {}", self.samples.len()))
        })
    }
    fn describe(&self) -> String {
        format!("{}:{}", self.label, self.samples.len())
    }
}

/// Samples from the Python layer: a string (what `--calib` takes) or a
/// list of dicts of numpy arrays (`what` labels them in errors and the
/// report).
fn samples(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<Samples>> {
    let Some(obj) = obj else { return Ok(None) };
    if obj.is_none() {
        return Ok(None);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Some(Samples::Spec(s.to_cow()?.into_owned())));
    }
    let list = obj.cast::<PyList>().map_err(|_| {
        PyTypeError::new_err(format!("{what}: expected a string or a list of dicts"))
    })?;
    let mut all = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let dict = item.cast::<PyDict>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{what} sample {i}: expected dict[str, numpy.ndarray]"
            ))
        })?;
        let mut sample = Sample::new();
        for (k, v) in dict.iter() {
            let name: String = k.extract().map_err(|_| {
                PyTypeError::new_err(format!("{what} sample {i}: input names must be strings"))
            })?;
            let t = tensor(&v, &format!("{what} sample {i} input '{name}'"))?;
            sample.push((name, t));
        }
        all.push(sample);
    }
    let label = format!("{what} reader");
    Ok(Some(Samples::Source {
        label: label.clone(),
        source: Arc::new(Reader {
            label,
            samples: all,
        }),
    }))
}

/// quantize(model, output, calibration, validation, recipe_file,
/// recipe_json, options_json, force, jobs, arith, progress) ->
/// (report JSON, summary text)
#[pyfunction]
#[pyo3(signature = (model, output, calibration, validation, recipe_file, recipe_json, options_json, force, jobs, arith_name, progress))]
#[allow(clippy::too_many_arguments)]
fn quantize(
    py: Python<'_>,
    model: PathBuf,
    output: PathBuf,
    calibration: Option<Bound<'_, PyAny>>,
    validation: Option<Bound<'_, PyAny>>,
    recipe_file: Option<String>,
    recipe_json: Option<String>,
    options_json: String,
    force: bool,
    jobs: usize,
    arith_name: &str,
    progress: bool,
) -> PyResult<(String, String)> {
    let options = Options {
        recipe: recipe(
            recipe_file.as_deref(),
            recipe_json.as_deref(),
            &options_json,
        )?,
        calibration: samples(calibration.as_ref(), "calibration")?,
        validation: samples(validation.as_ref(), "validation")?,
        arith: arith(arith_name)?,
        jobs,
        progress,
        force,
    };
    let done = py
        .detach(|| onnxq::pipeline::quantize_file(&model, &output, &options))
        .map_err(py_err)?;
    let json =
        serde_json::to_string(&done.report).map_err(|e| Error::new_err(format!("report: {e}")))?;
    Ok((json, onnxq::pipeline::summary(&done.report)))
}

/// check(model, reference, data, options_json, arith, dims, worst,
/// runtime, runtime_lib) -> (verdict JSON, description text)
#[pyfunction]
#[pyo3(signature = (model, reference, data, options_json, arith_name, dims, worst, runtime=None, runtime_lib=None))]
#[allow(clippy::too_many_arguments)]
fn check(
    py: Python<'_>,
    model: PathBuf,
    reference: PathBuf,
    data: Bound<'_, PyAny>,
    options_json: String,
    arith_name: &str,
    dims: BTreeMap<String, usize>,
    worst: usize,
    runtime: Option<String>,
    runtime_lib: Option<PathBuf>,
) -> PyResult<(String, String)> {
    let runtime = runtime
        .map(|name| {
            onnxq::runtime::Runtime::parse(&name).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "runtime {name:?}: expected \"ort\" or \"openvino\""
                ))
            })
        })
        .transpose()?;
    let r = recipe(None, None, &options_json)?;
    let thresholds = r.thresholds();
    // Image folders and sentence files as the command's --preprocess and
    // --tokenizer read them.
    let data = samples(Some(&data), "data")?
        .ok_or_else(|| PyValueError::new_err("data: give samples"))?
        .decoded(&r)
        .map_err(py_err)?;
    let arith = arith(arith_name)?;
    let verdict = py
        .detach(|| -> onnxq::Result<_> {
            let q = onnxq::onnx::load_model(&model)?;
            let r = onnxq::onnx::load_model(&reference)?;
            let in_runtime = runtime.map(|runtime| onnxq::pipeline::InRuntime {
                runtime,
                model: &model,
                library: runtime_lib.as_deref(),
                threads: 0,
            });
            onnxq::pipeline::check_in(&q, &r, &data, &thresholds, arith, &dims, in_runtime)
        })
        .map_err(py_err)?;
    let json =
        serde_json::to_string(&verdict).map_err(|e| Error::new_err(format!("verdict: {e}")))?;
    Ok((json, onnxq::verify::describe(&verdict, worst)))
}

/// calibrate(model, calibration, output, method, percentile, activations,
/// per_channel, jobs, dims, progress) -> table JSON
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn calibrate(
    py: Python<'_>,
    model: PathBuf,
    calibration: Bound<'_, PyAny>,
    output: Option<PathBuf>,
    method: &str,
    percentile: f64,
    activations: &str,
    per_channel: bool,
    jobs: usize,
    dims: BTreeMap<String, usize>,
    progress: bool,
) -> PyResult<String> {
    let method: Method =
        serde_json::from_value(serde_json::Value::String(method.replace('_', "-")))
            .map_err(|e| PyValueError::new_err(format!("method: {e}")))?;
    let target = match activations {
        "uint8" => Target::Uint8,
        "int8" => Target::Int8,
        _ => {
            return Err(PyValueError::new_err(format!(
                "activations: expected 'uint8' or 'int8', got '{activations}'"
            )))
        }
    };
    let samples = samples(Some(&calibration), "calibration")?
        .ok_or_else(|| PyValueError::new_err("calibration: give samples"))?;
    let ropts = RangeOptions {
        method,
        percentile,
        target,
    };
    let collect = CollectOptions {
        histograms: false,
        per_channel,
        jobs,
        progress,
        ..CollectOptions::default()
    };
    let done = py
        .detach(|| -> onnxq::Result<_> {
            let loaded = onnxq::onnx::load_model(&model)?;
            let done = onnxq::pipeline::calibrate(&loaded, &samples, &ropts, &collect, &dims)?;
            if let Some(out) = &output {
                done.table.save(out)?;
            }
            Ok(done)
        })
        .map_err(py_err)?;
    serde_json::to_string(&done.table).map_err(|e| Error::new_err(format!("table: {e}")))
}

/// The `onnxq` command line on `argv` (the program name first); returns
/// its exit code.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| onnxq::cli::run(argv))
}

#[pymodule]
fn _onnxq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // mimalloc set up as in the binary (onnxq::allocator says why).
    onnxq::allocator::configure_mimalloc();
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("__version__", onnxq::VERSION)?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(calibrate, m)?)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    Ok(())
}
