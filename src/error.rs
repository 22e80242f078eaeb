//! Typed errors of the onnxq library.
//!
//! Every variant names what it is about (file, tensor, node, attribute) and,
//! where there is one, the expected and the actual value, so that the CLI can
//! print a one-line cause a user can act on. Nothing in the library panics on
//! user input: a malformed model, sample or flag ends up here.

use std::borrow::Cow;
use std::path::PathBuf;

/// `text` with control characters escaped (`\n`, `\u{1b}`, …): names
/// from a model or a file may hold any bytes, and a message that quotes
/// them must stay one terminal-safe line.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in onnxq.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{what}: not a valid ONNX protobuf: {source}")]
    Decode {
        what: String,
        #[source]
        source: prost::DecodeError,
    },

    #[error("model has no graph")]
    NoGraph,

    #[error("tensor '{tensor}': {reason}")]
    BadTensor { tensor: String, reason: String },

    #[error("tensor '{tensor}': data type {code} is not supported here ({reason})")]
    UnsupportedDtype {
        tensor: String,
        code: i32,
        reason: &'static str,
    },

    #[error("tensor '{tensor}': external data {reason}")]
    ExternalData { tensor: String, reason: String },

    #[error(
        "node '{node}' ({op}): input '{input}' is produced by no node, initializer or graph input"
    )]
    UndefinedInput {
        node: String,
        op: String,
        input: String,
    },

    #[error("value '{value}' is defined twice (by {first} and by {second})")]
    DuplicateDefinition {
        value: String,
        first: String,
        second: String,
    },

    #[error("graph output '{output}' is produced by no node, initializer or graph input")]
    UndefinedOutput { output: String },

    #[error("the graph has a cycle through node '{node}' ({op})")]
    Cycle { node: String, op: String },

    #[error("node '{node}' ({op}): attribute '{attr}': {reason}")]
    BadAttribute {
        node: String,
        op: String,
        attr: String,
        reason: String,
    },

    #[error("node '{node}' ({op}): attribute '{attr}': expected {expected}, found {actual}")]
    AttributeValue {
        node: String,
        op: String,
        attr: String,
        expected: String,
        actual: String,
    },

    #[error("node '{node}' ({op}): input {slot}: expected {expected}, found {actual}")]
    InputValue {
        node: String,
        op: String,
        slot: usize,
        expected: String,
        actual: String,
    },

    #[error("node '{node}' ({op}): {reason}")]
    BadNode {
        node: String,
        op: String,
        reason: String,
    },

    #[error("node '{node}' ({op}): expected {expected} inputs, found {actual}")]
    InputCount {
        node: String,
        op: String,
        expected: String,
        actual: usize,
    },

    #[error("model imports no version of the default ONNX domain")]
    NoDefaultOpset,

    #[error("output '{path}' exists and is the input model; pass --force to overwrite it")]
    WouldOverwriteInput { path: PathBuf },

    #[error("the model is {size} bytes, over protobuf's 2 GiB limit; write it with external data")]
    TooLarge { size: u64 },

    #[error("tract: {context}: {message}")]
    Tract { context: String, message: String },

    #[error(
        "tract panicked while {context}{}: {message}",
        node.as_ref().map(|n| format!(", on node {n}")).unwrap_or_default()
    )]
    TractPanic {
        context: String,
        /// The first node whose prefix of the graph makes tract panic
        /// (`'name' (Op)`), when it could be found.
        node: Option<String>,
        message: String,
    },

    #[error("pass '{pass}': {source}")]
    Pass {
        pass: &'static str,
        #[source]
        source: Box<Error>,
    },

    #[error("{what}: {source}")]
    InModel {
        what: String,
        #[source]
        source: Box<Error>,
    },

    #[error("{runtime}: {message}")]
    Runtime {
        runtime: &'static str,
        message: String,
    },

    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A tract error, flattened to text with its whole cause chain.
    pub fn tract(
        context: impl Into<String>,
        err: impl Into<tract_onnx::prelude::TractError>,
    ) -> Self {
        let err: tract_onnx::prelude::TractError = err.into();
        Error::Tract {
            context: context.into(),
            message: format!("{err:#}"),
        }
    }

    /// A tensor-level error.
    pub fn tensor(tensor: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BadTensor {
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }
}
