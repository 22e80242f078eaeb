//! Writing a `ModelProto`, atomically.
//!
//! Everything is written to a temporary file in the target folder and renamed
//! into place, so an error never leaves a partial model behind. Models whose
//! protobuf would pass 2 GiB, or when asked, are written with external data
//! (one `<name>.data` file beside the model).

use super::external::externalize_model;
use super::proto::ModelProto;
use crate::error::{Error, Result};
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where and how to store large tensors outside the protobuf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalDataOptions {
    /// File name of the data file, in the model's folder (`None`: the model's
    /// file name plus `.data`).
    pub location: Option<String>,
    /// Tensors with at least this many payload bytes go to the data file.
    pub threshold: usize,
}

impl Default for ExternalDataOptions {
    fn default() -> Self {
        ExternalDataOptions {
            location: None,
            threshold: 1024,
        }
    }
}

/// Options for [`save_model`].
#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    /// Write large tensors to an external file.
    pub external_data: Option<ExternalDataOptions>,
    /// The model this one was made from: refuse to overwrite it unless `force`.
    pub input: Option<PathBuf>,
    /// Allow overwriting `input`.
    pub force: bool,
}

/// Protobuf cannot encode (or parse) a message of 2 GiB or more.
const PROTOBUF_LIMIT: u64 = i32::MAX as u64;

/// Writes `model` to `out`, atomically.
pub fn save_model(model: &ModelProto, out: &Path, opts: &SaveOptions) -> Result<()> {
    if let Some(input) = &opts.input {
        if same_file(input, out) && !opts.force {
            return Err(Error::WouldOverwriteInput {
                path: out.to_path_buf(),
            });
        }
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = out
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("'{}' is not a file path", out.display())))?
        .to_string_lossy()
        .to_string();

    let too_large = model.encoded_len() as u64 >= PROTOBUF_LIMIT;
    let external = match (&opts.external_data, too_large) {
        (Some(e), _) => Some(e.clone()),
        (None, true) => Some(ExternalDataOptions::default()),
        (None, false) => None,
    };

    let Some(ext) = external else {
        return write_atomic(out, &model.encode_to_vec());
    };
    let location = ext
        .location
        .clone()
        .unwrap_or_else(|| format!("{file_name}.data"));
    check_location(&location)?;
    let mut m = model.clone();
    let blob = externalize_model(&mut m, &location, ext.threshold)?;
    let bytes = m.encode_to_vec();
    if bytes.len() as u64 >= PROTOBUF_LIMIT {
        return Err(Error::TooLarge {
            size: bytes.len() as u64,
        });
    }
    let data_path = dir.join(&location);
    if let Some(input) = &opts.input {
        if same_file(input, &data_path) {
            return Err(Error::WouldOverwriteInput { path: data_path });
        }
    }
    write_atomic(&data_path, &blob)?;
    write_atomic(out, &bytes)
}

/// A data-file name must be a plain file name in the model's folder.
fn check_location(location: &str) -> Result<()> {
    let p = Path::new(location);
    let plain = p.components().count() == 1
        && matches!(p.components().next(), Some(std::path::Component::Normal(_)))
        && !location.contains(['/', '\\']);
    if plain {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "external data location '{location}' must be a plain file name (it is written beside the model)"
        )))
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Writes `target` atomically: `write` fills a temporary file in the same
/// folder, which is synced and renamed over `target` only if it succeeds.
pub fn write_atomic_with(
    target: &Path,
    write: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".onnxq-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| Error::io(&dir, e))?;
    write(tmp.as_file_mut())?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path().to_path_buf(), e))?;
    tmp.persist(target)
        .map_err(|e| Error::io(target, e.error))?;
    Ok(())
}

/// Writes `bytes` to `target` atomically.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(target, |f| {
        f.write_all(bytes).map_err(|e| Error::io(target, e))
    })
}
