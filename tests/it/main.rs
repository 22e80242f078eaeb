//! onnxq's one integration-test binary. Modules:
//!
//! - `calibrate`: sample sources, every method on variable-length inputs,
//!   tables identical for any --jobs, bad samples named.
//! - `images`: calibration from image files (`--preprocess`) on the digits
//!   CNN and from sentences (`--tokenizer`) on the text encoders; specs,
//!   files and models that do not fit refused by name.
//! - `roundtrip`: load → IR → save of every testdata model keeps the graph,
//!   initializers, metadata and opsets, and computes the same in tract;
//!   external data in and out.
//! - `malformed`: every malformed testdata file fails with exit code 1, a
//!   one-line cause naming the tensor/node/file, and writes nothing.
//! - `hostile`: models and samples that crashed, aborted or hung tract or
//!   the sample readers (bad attributes, huge sizes, lying .npz headers, zip
//!   bombs, FIFOs, control bytes in names, long chains) refused cleanly by
//!   every command.
//! - `fuzz`: seeded mutation fuzzing of every command, and the cases it
//!   found replayed.
//! - `optimize`: the preparation passes keep every model's outputs, reach a
//!   fixed point, and do what they promise on real-export quirks.
//! - `quantize`: QDQ output (Q/DQ per op type, per-channel and bias
//!   parameters against a direct computation), runs in tract close to FP32,
//!   digits accuracy kept, deterministic bytes, recipes, errors.
//! - `gate`: the parity gate in quantize, check, run.
//! - `pipeline`: the library call (`onnxq::pipeline`) writes what the CLI
//!   writes; samples from memory; a failed gate is a report; errors.
//! - `tune`: sensitivity ranking, automatic mixed precision, the
//!   range-gap guard on a detector head.
//! - `runtimes`: `--target openvino` writes QDQ and refuses QOperator;
//!   `check --runtime` without a loadable library is a clear error.
//! - `cli`: inspect output (snapshots), help text, usage errors, overwrite
//!   protection.

mod calibrate;
mod cli;
mod common;
mod fuzz;
mod gate;
mod hostile;
mod images;
mod lower;
mod malformed;
mod optimize;
mod pipeline;
mod quantize;
mod roundtrip;
mod runtimes;
mod tune;
