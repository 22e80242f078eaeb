//! Deployment runtimes: a quantized model run in the runtime a user ships
//! it on (onnxruntime, OpenVINO) instead of onnxq's int8 executor, so the
//! parity check (`onnxq check --runtime`) judges what that runtime
//! computes.
//!
//! Neither runtime is linked at build time. Each one's shared library is
//! opened when a session is first asked for, from (in order):
//!
//! 1. the path given (`--runtime-lib`): the library file or its folder;
//! 2. the runtime's own environment variable: `ORT_DYLIB_PATH` (the `ort`
//!    crate's convention) for onnxruntime; for OpenVINO, the folders the
//!    `openvino-finder` crate searches (`OPENVINO_INSTALL_DIR`,
//!    `INTEL_OPENVINO_DIR`, `LD_LIBRARY_PATH`);
//! 3. the active Python environment (`VIRTUAL_ENV`, then `.venv` in the
//!    working folder): the library the `onnxruntime` or `openvino` wheel
//!    installed there ships.
//!
//! A runtime that cannot be found or loaded is an [`Error::Runtime`]
//! naming what was searched; a model it refuses is one too, with the
//! runtime's own message. One process loads one library per runtime (the
//! first found).

mod openvino;
mod ort;

use crate::error::{Error, Result};
use crate::ir::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A runtime a model can be checked in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// onnxruntime's CPU execution provider.
    Ort,
    /// OpenVINO's CPU plugin, through its ONNX frontend.
    Openvino,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Ort => "onnxruntime",
            Runtime::Openvino => "OpenVINO",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ort" | "onnxruntime" => Some(Runtime::Ort),
            "openvino" => Some(Runtime::Openvino),
            _ => None,
        }
    }
}

/// A model loaded in a runtime, ready to run samples one at a time
/// (callers serialize; the runtime uses its own threads within a run).
pub trait Session: Send {
    /// The runtime and the library it was loaded from.
    fn describe(&self) -> String;
    /// The model's outputs for one sample (graph input name → tensor).
    fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<BTreeMap<String, Tensor>>;
}

/// `model` (an ONNX file, external data beside it) loaded in `runtime`,
/// its library from `library` or found as the module doc says; `threads`
/// for the runtime's own pool (0: its default).
pub fn open(
    runtime: Runtime,
    model: &Path,
    library: Option<&Path>,
    threads: usize,
) -> Result<Box<dyn Session>> {
    match runtime {
        Runtime::Ort => Ok(Box::new(ort::OrtSession::open(model, library, threads)?)),
        Runtime::Openvino => Ok(Box::new(openvino::OvSession::open(
            model, library, threads,
        )?)),
    }
}

/// The error of `runtime` with `message`.
fn error(runtime: Runtime, message: impl Into<String>) -> Error {
    Error::Runtime {
        runtime: runtime.name(),
        message: message.into(),
    }
}

/// The library file of `runtime`: `given` (a file, or a folder holding
/// `stem.so*`, `stem.*.dylib` or `stem.dll`), else `env` (same), else the
/// library a Python wheel installed in the active virtual environment
/// (`wheel_dir` inside site-packages). `None` when none is found; the
/// second value lists where it looked.
fn find_library(
    given: Option<&Path>,
    env: &[&str],
    stem: &str,
    wheel_dir: &str,
) -> (Option<PathBuf>, Vec<String>) {
    let mut looked = Vec::new();
    let in_dir = |dir: &Path| -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix(stem))
                    .is_some_and(|rest| {
                        rest.starts_with('.')
                            && (rest.contains(".so") || rest.ends_with(".dylib") || rest == ".dll")
                    })
            })
            .collect();
        // The unversioned name first, then the shortest (libx.so.1 before
        // libx.so.1.2.3): one deterministic pick.
        found.sort_by_key(|p| (p.as_os_str().len(), p.clone()));
        found.into_iter().next()
    };
    let resolve = |p: &Path| -> Option<PathBuf> {
        if p.is_dir() {
            in_dir(p)
        } else if p.is_file() {
            Some(p.to_path_buf())
        } else {
            None
        }
    };
    if let Some(p) = given {
        looked.push(format!("--runtime-lib {}", p.display()));
        return (resolve(p), looked);
    }
    for var in env {
        if let Some(v) = std::env::var_os(var) {
            for p in std::env::split_paths(&v) {
                looked.push(format!("${var} ({})", p.display()));
                if let Some(found) = resolve(&p) {
                    return (Some(found), looked);
                }
            }
        }
    }
    let mut venvs: Vec<PathBuf> = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    venvs.push(PathBuf::from(".venv"));
    for venv in venvs {
        let lib = venv.join("lib");
        let Ok(pythons) = std::fs::read_dir(&lib) else {
            looked.push(format!("{} (no lib folder)", venv.display()));
            continue;
        };
        let mut pythons: Vec<PathBuf> = pythons.filter_map(|e| e.ok().map(|e| e.path())).collect();
        pythons.sort();
        for py in pythons {
            let dir = py.join("site-packages").join(wheel_dir);
            looked.push(dir.display().to_string());
            if let Some(found) = in_dir(&dir) {
                return (Some(found), looked);
            }
        }
    }
    (None, looked)
}

/// A tensor's little-endian bytes, for the runtimes' buffers (no copy).
fn bytes_of(t: &Tensor) -> Result<&[u8]> {
    t.raw().map(|b| &b[..]).ok_or_else(|| {
        Error::Invalid(format!(
            "an input of type {} cannot be handed to a runtime",
            t.dtype().name()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_found_in_a_folder_or_given_as_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in [
            "libonnxruntime.so.1.31.1",
            "libonnxruntime.so.1",
            "libonnxruntime_providers_shared.so",
            "other.so",
        ] {
            std::fs::write(d.join(name), b"").unwrap();
        }
        // A folder: the shortest matching name.
        let (found, looked) = find_library(Some(d), &[], "libonnxruntime", "x");
        assert_eq!(found, Some(d.join("libonnxruntime.so.1")), "{looked:?}");
        // A file: itself.
        let file = d.join("libonnxruntime.so.1.31.1");
        let (found, _) = find_library(Some(&file), &[], "libonnxruntime", "x");
        assert_eq!(found, Some(file));
        // A path given but missing: nothing, and it says where it looked
        // (the environment is not consulted).
        let missing = d.join("missing");
        let (found, looked) = find_library(Some(&missing), &["PATH"], "libonnxruntime", "x");
        assert_eq!(found, None);
        assert_eq!(looked.len(), 1, "{looked:?}");
        assert!(looked[0].contains("missing"));
    }

    #[test]
    fn runtimes_parse_by_their_flag_names() {
        assert_eq!(Runtime::parse("ort"), Some(Runtime::Ort));
        assert_eq!(Runtime::parse("openvino"), Some(Runtime::Openvino));
        assert_eq!(Runtime::parse("tensorrt"), None);
    }
}
