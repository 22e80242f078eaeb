//! External data: tensors whose payload lives in a file beside the model.
//!
//! Reading ([`resolve_model`]) visits every tensor a model can hold (graph
//! initializers, sparse initializers, attribute tensors, subgraphs, functions,
//! training graphs) and replaces each external reference by the payload
//! itself, a slice of a memory map of the data file, so the rest of onnxq only
//! ever sees self-contained tensors. Writing ([`externalize_model`]) does the
//! reverse for large tensors.
//!
//! Security: a `location` that is absolute, contains `..`, or resolves (after
//! symlinks) outside the model's folder is refused; so is an offset or length
//! past the end of the file, and a length that does not match the tensor's
//! declared shape. All of this is checked before any payload is touched.

use super::proto::{
    tensor_proto::DataLocation, AttributeProto, GraphProto, ModelProto, NodeProto,
    StringStringEntryProto, TensorProto,
};
use super::tensor::{declared_byte_len, tensor_from_proto};
use crate::error::{Error, Result};
use prost::bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// One external-data file a model referenced.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExternalFile {
    /// The `location` as written in the model.
    pub location: String,
    /// Tensors stored in it.
    pub tensors: usize,
    /// Payload bytes read from it.
    pub bytes: u64,
}

/// Visits every `TensorProto` in a model, mutably.
pub fn for_each_tensor_mut(
    model: &mut ModelProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    if let Some(g) = model.graph.as_mut() {
        graph_tensors_mut(g, f)?;
    }
    for func in &mut model.functions {
        nodes_tensors_mut(&mut func.node, f)?;
        for a in &mut func.attribute_proto {
            attr_tensors_mut(a, f)?;
        }
    }
    for ti in &mut model.training_info {
        for g in [ti.initialization.as_mut(), ti.algorithm.as_mut()]
            .into_iter()
            .flatten()
        {
            graph_tensors_mut(g, f)?;
        }
    }
    Ok(())
}

fn graph_tensors_mut(
    g: &mut GraphProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    for t in &mut g.initializer {
        f(t)?;
    }
    for s in &mut g.sparse_initializer {
        for t in [s.values.as_mut(), s.indices.as_mut()]
            .into_iter()
            .flatten()
        {
            f(t)?;
        }
    }
    nodes_tensors_mut(&mut g.node, f)
}

fn nodes_tensors_mut(
    nodes: &mut [NodeProto],
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    for n in nodes {
        for a in &mut n.attribute {
            attr_tensors_mut(a, f)?;
        }
    }
    Ok(())
}

fn attr_tensors_mut(
    a: &mut AttributeProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    if let Some(t) = a.t.as_mut() {
        f(t)?;
    }
    for t in &mut a.tensors {
        f(t)?;
    }
    for s in a
        .sparse_tensor
        .iter_mut()
        .chain(a.sparse_tensors.iter_mut())
    {
        for t in [s.values.as_mut(), s.indices.as_mut()]
            .into_iter()
            .flatten()
        {
            f(t)?;
        }
    }
    if let Some(g) = a.g.as_mut() {
        graph_tensors_mut(g, f)?;
    }
    for g in &mut a.graphs {
        graph_tensors_mut(g, f)?;
    }
    Ok(())
}

fn entry<'a>(t: &'a TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|e| e.key() == key)
        .map(|e| e.value())
}

/// Resolves external references against the folder `base`, with memory maps
/// shared per file.
struct Resolver {
    base: Option<PathBuf>,
    canonical_base: Option<PathBuf>,
    maps: BTreeMap<PathBuf, Bytes>,
    files: BTreeMap<String, ExternalFile>,
}

impl Resolver {
    fn err(t: &TensorProto, reason: impl Into<String>) -> Error {
        Error::ExternalData {
            tensor: t.name().to_string(),
            reason: reason.into(),
        }
    }

    /// Checks `location` and returns the file it names, inside the base folder.
    fn checked_path(&mut self, t: &TensorProto, location: &str) -> Result<PathBuf> {
        let Some(base) = &self.base else {
            return Err(Self::err(
                t,
                format!("'{location}' cannot be read: the model was not loaded from a file"),
            ));
        };
        let rel = Path::new(location);
        if location.is_empty() {
            return Err(Self::err(t, "has an empty location"));
        }
        for c in rel.components() {
            match c {
                Component::Prefix(_) | Component::RootDir => {
                    return Err(Self::err(
                        t,
                        format!("location '{location}' is absolute; only paths inside the model's folder are allowed"),
                    ))
                }
                Component::ParentDir => {
                    return Err(Self::err(
                        t,
                        format!("location '{location}' contains '..'; only paths inside the model's folder are allowed"),
                    ))
                }
                Component::CurDir | Component::Normal(_) => {}
            }
        }
        if location.contains('\\') && location.split('\\').any(|p| p == "..") {
            return Err(Self::err(t, format!("location '{location}' contains '..'")));
        }
        let joined = base.join(rel);
        let canonical = joined.canonicalize().map_err(|e| {
            Self::err(
                t,
                format!("file '{}' cannot be opened: {e}", joined.display()),
            )
        })?;
        let canonical_base = match &self.canonical_base {
            Some(b) => b.clone(),
            None => {
                let b = base
                    .canonicalize()
                    .map_err(|e| Error::io(base.clone(), e))?;
                self.canonical_base = Some(b.clone());
                b
            }
        };
        if !canonical.starts_with(&canonical_base) {
            return Err(Self::err(
                t,
                format!(
                    "location '{location}' resolves to '{}', outside the model's folder '{}'",
                    canonical.display(),
                    canonical_base.display()
                ),
            ));
        }
        Ok(canonical)
    }

    fn map(&mut self, t: &TensorProto, path: &Path) -> Result<Bytes> {
        if let Some(b) = self.maps.get(path) {
            return Ok(b.clone());
        }
        if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            return Err(Self::err(
                t,
                format!(
                    "'{}' is not a regular file (a FIFO, device or folder)",
                    path.display()
                ),
            ));
        }
        let file = super::open_regular(path).map_err(|e| Self::err(t, e.to_string()))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let bytes = if meta.len() == 0 {
            Bytes::new()
        } else {
            // SAFETY: the map is read-only; like every tool that maps model
            // files (onnxruntime, tract), we rely on nobody truncating the
            // weights file while the model is being converted.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            Bytes::from_owner(map)
        };
        self.maps.insert(path.to_path_buf(), bytes.clone());
        Ok(bytes)
    }

    fn resolve(&mut self, t: &mut TensorProto) -> Result<()> {
        if t.data_location() != DataLocation::External {
            return Ok(());
        }
        let location = entry(t, "location")
            .ok_or_else(|| Self::err(t, "has no 'location' key"))?
            .to_string();
        let parse = |key: &str| -> Result<Option<u64>> {
            entry(t, key)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        Self::err(t, format!("key '{key}' is not a byte count: '{v}'"))
                    })
                })
                .transpose()
        };
        let offset = parse("offset")?.unwrap_or(0);
        let length = parse("length")?;
        let (_, _, expected) = declared_byte_len(t)?;
        let expected = expected.ok_or_else(|| Self::err(t, "cannot hold strings"))? as u64;
        if let Some(len) = length {
            if len != expected {
                return Err(Self::err(
                    t,
                    format!("'{location}': length {len} does not match the tensor's shape {:?}, which needs {expected} bytes", t.dims),
                ));
            }
        }
        let path = self.checked_path(t, &location)?;
        let data = self.map(t, &path)?;
        let size = data.len() as u64;
        let end = offset.saturating_add(expected);
        if offset > size || end > size {
            return Err(Self::err(
                t,
                format!("'{location}': bytes {offset}..{end} are past the end of the file ({size} bytes)"),
            ));
        }
        t.raw_data = Some(data.slice(offset as usize..end as usize));
        t.external_data.clear();
        t.data_location = None;
        let f = self.files.entry(location.clone()).or_insert(ExternalFile {
            location,
            tensors: 0,
            bytes: 0,
        });
        f.tensors += 1;
        f.bytes += expected;
        Ok(())
    }
}

/// Replaces every external reference in `model` by its payload, read from
/// files below `base` (the model's folder). Returns the files used.
pub fn resolve_model(model: &mut ModelProto, base: Option<&Path>) -> Result<Vec<ExternalFile>> {
    let mut r = Resolver {
        base: base.map(Path::to_path_buf),
        canonical_base: None,
        maps: BTreeMap::new(),
        files: BTreeMap::new(),
    };
    for_each_tensor_mut(model, &mut |t| r.resolve(t))?;
    Ok(r.files.into_values().collect())
}

/// Moves every tensor payload of at least `threshold` bytes out of `model`
/// into one data blob, each tensor starting at a 4096-byte boundary (so
/// runtimes can map it). Returns the blob; the model then refers to it as
/// `location`.
pub fn externalize_model(
    model: &mut ModelProto,
    location: &str,
    threshold: usize,
) -> Result<Vec<u8>> {
    const ALIGN: usize = 4096;
    let mut blob: Vec<u8> = Vec::new();
    for_each_tensor_mut(model, &mut |t| {
        if t.data_location() == DataLocation::External || t.data_type() == 8 {
            return Ok(());
        }
        let raw = match &t.raw_data {
            Some(r) => r.clone(),
            None => match declared_byte_len(t)?.2 {
                Some(len) if len >= threshold => {
                    tensor_from_proto(t)?.raw().cloned().unwrap_or_default()
                }
                _ => return Ok(()),
            },
        };
        if raw.len() < threshold {
            return Ok(());
        }
        let offset = blob.len().div_ceil(ALIGN) * ALIGN;
        blob.resize(offset, 0);
        blob.extend_from_slice(&raw);
        t.raw_data = None;
        t.float_data.clear();
        t.int32_data.clear();
        t.int64_data.clear();
        t.double_data.clear();
        t.uint64_data.clear();
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = vec![
            kv("location", location),
            kv("offset", &offset.to_string()),
            kv("length", &raw.len().to_string()),
        ];
        Ok(())
    })?;
    Ok(blob)
}

fn kv(k: &str, v: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(k.to_string()),
        value: Some(v.to_string()),
    }
}
