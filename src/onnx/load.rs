//! Loading a `ModelProto` from a file or from bytes.
//!
//! The model file is memory-mapped and decoded without copying tensor
//! payloads; external data is resolved relative to the model's folder (see
//! `super::external`). The result is self-contained.

use super::external::{resolve_model, ExternalFile};
use super::proto::ModelProto;
use crate::error::{Error, Result};
use prost::bytes::Bytes;
use prost::Message;
use std::path::{Path, PathBuf};

/// A decoded model and what loading it involved.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// The model, every tensor payload in memory (or mapped).
    pub proto: ModelProto,
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    /// Size of the protobuf itself, in bytes.
    pub file_bytes: u64,
    /// External-data files the model referenced.
    pub external: Vec<ExternalFile>,
}

impl LoadedModel {
    /// The file's path for messages, or `the model` when it came from
    /// bytes.
    pub fn label(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "the model".to_string(),
        }
    }
}

/// Loads the model at `path`, with its external data.
pub fn load_model(path: impl AsRef<Path>) -> Result<LoadedModel> {
    let path = path.as_ref();
    let file = super::open_regular(path)?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    let bytes = if meta.len() == 0 {
        Bytes::new()
    } else {
        // SAFETY: read-only map; the model file must not be truncated while
        // we read it (the same assumption every runtime makes).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Bytes::from_owner(map)
    };
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut loaded = decode(bytes, &path.display().to_string(), Some(&base))?;
    loaded.path = Some(path.to_path_buf());
    Ok(loaded)
}

/// Decodes a model from bytes. External data, if any, is looked up in
/// `base_dir`; without one, a model that uses external data is refused.
pub fn decode_model(bytes: impl Into<Bytes>, base_dir: Option<&Path>) -> Result<LoadedModel> {
    decode(bytes.into(), "model bytes", base_dir)
}

fn decode(bytes: Bytes, what: &str, base: Option<&Path>) -> Result<LoadedModel> {
    let file_bytes = bytes.len() as u64;
    if bytes.is_empty() {
        return Err(Error::Invalid(format!("{what}: the file is empty")));
    }
    let mut proto = ModelProto::decode(bytes).map_err(|source| Error::Decode {
        what: what.to_string(),
        source,
    })?;
    if proto.graph.is_none() {
        return Err(Error::Invalid(format!(
            "{what}: no graph in the model (is this an ONNX model file?)"
        )));
    }
    let external = resolve_model(&mut proto, base).map_err(|e| Error::InModel {
        what: what.to_string(),
        source: Box::new(e),
    })?;
    Ok(LoadedModel {
        proto,
        path: None,
        file_bytes,
        external,
    })
}
