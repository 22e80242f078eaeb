//! onnxq: quantize FP32 ONNX models to INT8, and prove the result still
//! computes what the original did.
//!
//! The pipeline, one module a stage:
//!
//! ```text
//! onnx::load_model ─▶ ir::Model ─▶ passes (prepare) ─▶ calibrate ─▶ quantize ─▶ ir::Model::to_proto ─▶ onnx::save_model
//! ```
//!
//! - [`onnx`]: protobuf I/O, external data, atomic writes.
//! - [`ir`]: the graph (nodes in an arena, value ids, producer/consumer maps).
//! - [`tract`]: the FP32 reference engine (tract) behind calibration, folding
//!   and parity checks.
//! - [`passes`]: graph preparation (Constant→initializer, folding, BatchNorm
//!   folding, cleanup, shape inference, opset upgrade).
//! - [`calibrate`]: sample sources, activation statistics through tract,
//!   ranges (MinMax, Percentile, Entropy, MSE), calibration tables.
//! - [`quantize`]: op handlers plan, one place builds QuantizeLinear /
//!   DequantizeLinear; int8 weights per channel, int32 biases; YAML recipes.
//! - [`tune`]: accuracy search: per-node sensitivity, automatic mixed
//!   precision, the range-gap guard.
//! - [`pipeline`]: all of the above in the default order, one call
//!   ([`pipeline::quantize`], [`pipeline::quantize_file`]): what
//!   `onnxq quantize` runs.
//! - [`inspect`]: what a model holds, for `onnxq inspect`.
//! - [`runtime`]: deployment runtimes (onnxruntime, OpenVINO) opened at
//!   run time, for checking what they compute.
//! - [`error`]: the typed errors everything returns.
//! - `cli` (feature `cli`, on by default): the `onnxq` command line, which
//!   only parses arguments, calls the modules above and prints.

pub mod allocator;
pub mod calibrate;
#[cfg(feature = "cli")]
pub mod cli;
pub mod error;
pub mod exec;
pub mod inspect;
pub mod ir;
pub mod lower;
pub mod onnx;
pub mod passes;
pub mod pipeline;
pub mod quantize;
pub mod runtime;
pub mod tract;
pub mod tune;
pub mod verify;

pub use error::{Error, Result};

/// onnxq's version, recorded in the models it writes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
