//! The default pipeline in one call: what `onnxq quantize` runs, for a
//! Rust (or Python) caller.
//!
//! ```text
//! prepare ─▶ equalize ─▶ plan ─▶ ranges ─▶ range guard ─▶ GPTQ ─▶ bias correction
//!        ─▶ quantize ─▶ lower ─▶ gate ─▶ whole-model check ─▶ automatic mixed precision
//! ```
//!
//! - [`Options`]: the recipe (every YAML/flag option, `None` meaning the
//!   default) plus what a recipe cannot hold: sample sources in memory,
//!   threads, arithmetic, `force`.
//! - [`quantize`]: a loaded model in, the quantized model and its
//!   [`Report`] out; nothing written. [`quantize_file`] reads, runs and
//!   writes (only a model that passed the gate, unless `force`).
//! - A model that fails the gate is not an error: the [`Report`]'s
//!   `parity.passed` says so, and the caller decides (the CLI exits 3, the
//!   Python package raises).
//! - [`calibrate`] is `onnxq calibrate`: a range table for a model;
//!   [`check`] is `onnxq check --reference`: any quantized model against
//!   its FP32 model.
//!
//! The stages' own modules do the work ([`crate::passes`],
//! [`crate::calibrate`], [`crate::tune`], [`crate::quantize`],
//! [`crate::lower`], [`crate::verify`]); `stages` runs them in order
//! (`steps`: the clock, one build, the gate; `auto`: automatic mixed
//! precision), `report` and `summary` say what happened.
//!
//! ```
//! use onnxq::pipeline::{quantize, Options, Samples};
//!
//! // A small digit classifier and 32 of its training images.
//! let model = onnxq::onnx::load_model("testdata/digits/cnn.onnx")?;
//! let options = Options {
//!     calibration: Some(Samples::from("testdata/digits/cnn_calib")),
//!     ..Options::default()
//! };
//! let done = quantize(&model, &options)?;
//! assert!(done.report.passed());
//! assert_eq!(done.report.quantization.quantized["Conv"], 2);
//! println!("{}", done.report.timings.line());
//! # Ok::<(), onnxq::Error>(())
//! ```

mod auto;
mod check;
mod ranges;
mod report;
mod settings;
mod stages;
mod steps;
mod summary;

pub use check::{check, check_in, InRuntime};
pub use ranges::{guard_ranges, range_options, GuardedNode, Ranges, RANDOM_RANGES_WARNING};
pub use report::{Calibration, GptqOutcome, ModelCheck, Report, Timings};
pub use summary::{by_op, summary};

use crate::calibrate::samples::SampleSource;
use crate::calibrate::{open_source, CollectOptions, RangeOptions, RangeTable};
use crate::error::{Error, Result};
use crate::exec::kernels::Arith;
use crate::ir::types::InputSpec;
use crate::ir::Model;
use crate::onnx::proto::ModelProto;
use crate::onnx::{LoadedModel, SaveOptions};
use crate::passes::PassOptions;
use crate::quantize::Recipe;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Samples for calibration or the gate.
#[derive(Clone)]
pub enum Samples {
    /// What `--calib` takes: a directory of `.npz` files, a directory of
    /// `test_data_set_*` folders, one `.npz` with a leading sample axis, or
    /// `random:N[:SEED]`.
    Spec(String),
    /// Samples already in memory (the Python package's readers), with a
    /// label for the report.
    Source {
        label: String,
        source: Arc<dyn SampleSource>,
    },
    /// A folder of images (or a text file listing them), turned into the
    /// model's input by a preprocessing spec
    /// ([`crate::calibrate::images`]).
    Images { path: String, preprocess: String },
    /// A text file of sentences (a line each), tokenized by a Hugging Face
    /// tokenizer.json ([`crate::calibrate::text`]).
    Text {
        path: String,
        tokenizer: String,
        max_length: Option<usize>,
    },
}

impl From<&str> for Samples {
    fn from(spec: &str) -> Self {
        Samples::Spec(spec.to_string())
    }
}

impl From<String> for Samples {
    fn from(spec: String) -> Self {
        Samples::Spec(spec)
    }
}

impl fmt::Debug for Samples {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Samples::Spec(s) => write!(f, "Samples::Spec({s:?})"),
            Samples::Source { label, source } => {
                write!(f, "Samples::Source({label:?}, {} samples)", source.len())
            }
            Samples::Images { path, preprocess } => {
                write!(f, "Samples::Images({path:?}, {preprocess:?})")
            }
            Samples::Text {
                path, tokenizer, ..
            } => write!(f, "Samples::Text({path:?}, {tokenizer:?})"),
        }
    }
}

impl Samples {
    /// The label reports use.
    pub fn label(&self) -> &str {
        match self {
            Samples::Spec(s) => s,
            Samples::Source { label, .. } => label,
            Samples::Images { path, .. } | Samples::Text { path, .. } => path,
        }
    }

    /// A folder or file spec read as images when the recipe has
    /// `preprocess`, as sentences when it has `tokenizer`; anything else as
    /// it is.
    pub fn decoded(self, recipe: &Recipe) -> Result<Samples> {
        let Samples::Spec(path) = self else {
            return Ok(self);
        };
        if path.starts_with("random:") {
            return Ok(Samples::Spec(path));
        }
        match (&recipe.preprocess, &recipe.tokenizer) {
            (Some(_), Some(_)) => Err(Error::Invalid(format!(
                "{path}: give a preprocessing spec (images) or a tokenizer (sentences), not both"
            ))),
            (Some(p), None) => Ok(Samples::Images {
                path,
                preprocess: p.clone(),
            }),
            (None, Some(t)) => Ok(Samples::Text {
                path,
                tokenizer: t.clone(),
                max_length: recipe.max_length,
            }),
            (None, None) => Ok(Samples::Spec(path)),
        }
    }

    /// Whether these are random inputs (`random:…`).
    pub fn is_random(&self) -> bool {
        matches!(self, Samples::Spec(s) if s.starts_with("random:"))
    }

    /// The source, opened for a model with `inputs` (`dims` sizes
    /// symbolic dimensions of random samples); `what` names the samples'
    /// role in errors.
    pub fn open(
        &self,
        inputs: &[InputSpec],
        dims: &BTreeMap<String, usize>,
        what: &str,
    ) -> Result<Arc<dyn SampleSource>> {
        match self {
            Samples::Spec(spec) => {
                open_source(spec, inputs, dims)
                    .map(Arc::from)
                    .map_err(|e| Error::InModel {
                        what: format!("{what} {spec}"),
                        source: Box::new(e),
                    })
            }
            Samples::Source { source, .. } => Ok(source.clone()),
            Samples::Images { path, preprocess } => {
                let prep = crate::calibrate::images::Preprocess::parse(preprocess)?;
                crate::calibrate::images::ImageSource::open(Path::new(path), &prep, inputs)
                    .map(|s| Arc::new(s) as Arc<dyn SampleSource>)
                    .map_err(|e| Error::InModel {
                        what: format!("{what} {path}"),
                        source: Box::new(e),
                    })
            }
            Samples::Text {
                path,
                tokenizer,
                max_length,
            } => crate::calibrate::text::TextSource::open(
                Path::new(path),
                Path::new(tokenizer),
                *max_length,
                inputs,
            )
            .map(|s| Arc::new(s) as Arc<dyn SampleSource>)
            .map_err(|e| Error::InModel {
                what: format!("{what} {path}"),
                source: Box::new(e),
            }),
        }
    }
}

/// Everything a pipeline run can be told.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The options of the YAML recipe and the CLI flags (format, mode,
    /// calibration method, types, op types, exclusions, gate thresholds,
    /// accuracy steps, per-node overrides); `None` fields take onnxq's
    /// defaults.
    pub recipe: Recipe,
    /// Calibration samples; when `None`, the recipe's `calib` (or its
    /// `ranges` table).
    pub calibration: Option<Samples>,
    /// The gate's samples; when `None`, the recipe's `validate`, else the
    /// calibration samples, else 8 random inputs (with a warning).
    pub validation: Option<Samples>,
    /// Requantization arithmetic of the gate's int8 executor.
    pub arith: Arith,
    /// Worker threads (0: one per core).
    pub jobs: usize,
    /// Progress bars on stderr while calibrating (drawn only on a
    /// terminal).
    pub progress: bool,
    /// [`quantize_file`]: write a model that failed the gate, and allow the
    /// output to be the input.
    pub force: bool,
}

impl Options {
    /// Options from a recipe, defaults for the rest.
    pub fn from_recipe(recipe: Recipe) -> Self {
        Options {
            recipe,
            ..Options::default()
        }
    }

    /// The calibration samples, given here or named by the recipe.
    fn calibration(&self) -> Result<Option<Samples>> {
        self.calibration
            .clone()
            .or_else(|| self.recipe.calib.clone().map(Samples::Spec))
            .map(|s| s.decoded(&self.recipe))
            .transpose()
    }
}

/// A quantized model and what was done to it.
#[derive(Debug)]
pub struct Quantized {
    /// The model, with onnxq's metadata (version, format, recipe,
    /// calibration, parity).
    pub model: ModelProto,
    pub report: Report,
}

/// Runs the default pipeline on a loaded model. The model is not written:
/// see [`quantize_file`]. A failed gate is in `report.parity`, not an
/// error.
pub fn quantize(loaded: &LoadedModel, options: &Options) -> Result<Quantized> {
    let start = Instant::now();
    let mut q = stages::run(loaded, options)?;
    q.report.timings.total = start.elapsed().as_secs_f64();
    Ok(q)
}

/// Reads `input`, quantizes it and writes the result to `output` when it
/// passed the gate (or `options.force`); the report says whether it was
/// written. Refuses to overwrite `input` unless `options.force`; a write
/// is atomic, so no partial file is ever left.
pub fn quantize_file(input: &Path, output: &Path, options: &Options) -> Result<Quantized> {
    let start = Instant::now();
    let loaded = crate::onnx::load_model(input)?;
    let load = start.elapsed().as_secs_f64();
    let mut q = stages::run(&loaded, options)?;
    q.report.model = input.display().to_string();
    q.report.output = output.display().to_string();
    q.report.timings.load = load;
    if q.report.passed() || options.force {
        let t = Instant::now();
        let save = SaveOptions {
            input: Some(input.to_path_buf()),
            force: options.force,
            ..Default::default()
        };
        crate::onnx::save_model(&q.model, output, &save)?;
        q.report.written = true;
        q.report.timings.write = t.elapsed().as_secs_f64();
    }
    q.report.timings.total = start.elapsed().as_secs_f64();
    Ok(q)
}

/// What [`calibrate`] did besides the table.
#[derive(Clone, Debug)]
pub struct Calibrated {
    pub table: RangeTable,
    /// Distinct input shapes the samples had (one tract plan each).
    pub plans: usize,
    pub secs: f64,
}

/// `onnxq calibrate`: the model prepared as `quantize` prepares it (no
/// opset upgrade), every activation observed on `samples`, ranges by
/// `ropts`. `per_channel` also records per-channel (axis 1) extremes.
pub fn calibrate(
    loaded: &LoadedModel,
    samples: &Samples,
    ropts: &RangeOptions,
    collect: &CollectOptions,
    dims: &BTreeMap<String, usize>,
) -> Result<Calibrated> {
    ranges::check_percentile(ropts.percentile)?;
    let fingerprint = crate::calibrate::model_sha256(&loaded.proto);
    let what = loaded.label();
    let mut model = Model::from_proto(&loaded.proto).map_err(|e| in_model(&what, e))?;
    crate::passes::prepare(&mut model, &PassOptions::default()).map_err(|e| in_model(&what, e))?;
    let inputs = crate::ir::types::input_specs(&model.graph);
    let source = samples.open(&inputs, dims, "calibration samples")?;
    let start = Instant::now();
    let (table, c) =
        RangeTable::calibrate(&model, None, source.as_ref(), ropts, collect, &fingerprint)?;
    Ok(Calibrated {
        table,
        plans: c.plans,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// `e` with the model's name in front.
pub(crate) fn in_model(what: &str, e: Error) -> Error {
    Error::InModel {
        what: what.to_string(),
        source: Box::new(e),
    }
}
