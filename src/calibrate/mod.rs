//! Calibration: run the prepared FP32 model through tract on the user's
//! samples and record, for every float activation, the statistics its
//! quantization range comes from.
//!
//! The lifecycle: [`Calibrator::new`] picks the tensors to observe (graph
//! inputs and every node output; non-float ones are skipped when seen; a
//! `Relu` output whose input is observed is derived from the input's
//! values, exactly, instead of being handed over by tract and binned) →
//! [`Calibrator::collect`] runs samples in parallel (one tract plan per
//! distinct set of input shapes, shared by all workers; samples in
//! contiguous blocks sized by the sample count alone, each folded in sample
//! order by one worker, blocks merged in order, so results do not depend on
//! `jobs`) →
//! [`RangeTable::compute`] turns statistics into ranges with a [`Method`].
//!
//! Memory: one sample's activations per worker plus fixed-size statistics
//! per tensor (`stats`) for at most two blocks per worker, independent of
//! the number of samples.

pub mod choose;
mod collect;
pub mod gram;
pub mod images;
pub mod means;
pub mod methods;
pub mod npz;
pub mod pool;
pub mod samples;
pub mod stats;
pub mod table;
pub mod text;
mod window;

pub use methods::{Method, RangeOptions, Target};
pub use pool::{run_on_samples, worker_pool};
pub use samples::{check_sample, open_source, Sample, SampleSource};
pub use stats::TensorStats;
pub use table::{RangeTable, TensorRange};

use crate::error::{Error, Result};
use crate::ir::types::{input_specs, InputSpec};
use crate::ir::{DataType, Model, Tensor};
use crate::onnx::proto::ModelProto;
use crate::tract::Runner;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// How to collect.
#[derive(Clone, Debug)]
pub struct CollectOptions {
    /// Keep histograms (needed by percentile, entropy, mse).
    pub histograms: bool,
    /// Keep per-channel (axis 1) extremes of every activation.
    pub per_channel: bool,
    /// Worker threads (0: all cores).
    pub jobs: usize,
    /// Show a progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Also take the mean input of every layer bias correction may correct
    /// ([`means`]), from the tensors observed anyway.
    pub input_means: bool,
    /// Also sum the input Gram matrices of these layers ([`gram`]; GPTQ's),
    /// from the tensors observed (their inputs are observed for them).
    pub grams: Vec<gram::GramProbe>,
    /// Also keep the inputs of these layers (GPTQ's other ones), for their
    /// Gram matrices to be summed later ([`gram::KeptInputs`]), while they
    /// total at most `gram_input_bytes`: past it, the last kept tensors
    /// are let go (their layers are measured in passes of their own).
    pub gram_inputs: Vec<gram::GramProbe>,
    pub gram_input_bytes: usize,
    /// Also keep each sample's graph outputs (the FP32 references the
    /// parity gate compares with, when it runs on the same samples) while
    /// they total at most this many bytes; past it, none (0: none).
    pub keep_outputs: usize,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            histograms: true,
            per_channel: false,
            jobs: 0,
            progress: false,
            input_means: false,
            grams: Vec::new(),
            gram_inputs: Vec::new(),
            gram_input_bytes: 0,
            keep_outputs: 0,
        }
    }
}

/// What collection produced.
#[derive(Clone, Debug)]
pub struct Collected {
    /// Statistics per tensor name (float tensors only).
    pub stats: BTreeMap<String, TensorStats>,
    pub samples: usize,
    /// Fingerprint of the samples' names and contents.
    pub samples_sha256: String,
    /// Distinct input shapes seen (one tract plan each).
    pub plans: usize,
    /// Mean layer inputs, for the probes given to [`Calibrator::measuring`].
    pub means: means::Means,
    /// The Gram matrices of [`Calibrator::summing_grams`] by layer (node
    /// name), summed over the samples.
    pub grams: BTreeMap<String, Vec<f64>>,
    /// The inputs of [`Calibrator::keeping_gram_inputs`]' layers (within
    /// [`CollectOptions::gram_input_bytes`]).
    pub gram_inputs: gram::KeptInputs,
    /// Each sample's name and graph outputs, in sample order, with
    /// [`CollectOptions::keep_outputs`] (empty past its bytes).
    pub outputs: Vec<(String, Vec<Tensor>)>,
}

/// Lower-case hex of a SHA-256 digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fingerprint of a model: SHA-256 of its protobuf encoding.
pub fn model_sha256(proto: &ModelProto) -> String {
    use prost::Message;
    hex(&Sha256::digest(proto.encode_to_vec()))
}

/// Runs a model on samples and collects activation statistics.
pub struct Calibrator {
    proto: ModelProto,
    inputs: Vec<InputSpec>,
    /// Node outputs observed through tract.
    targets: Vec<String>,
    /// `Relu` outputs whose input is observed: `(output name, slot of the
    /// input in [inputs…, targets…])`. Their statistics are derived from
    /// the input's values (`TensorStats::add_relu_sample`), so tract does
    /// not hand them over and they are neither scanned nor binned.
    relu_of: Vec<(String, usize)>,
    /// Where each observed tensor's values come from: its slot in
    /// [inputs…, targets…], and whether it is a Relu of that slot.
    slot_of: HashMap<String, (usize, bool)>,
    /// Layers whose mean input is taken: `(probe, slot, relu)`.
    means: Vec<(means::Probe, usize, bool)>,
    /// Layers whose input Gram matrix is summed: `(probe, slot, relu)`.
    grams: Vec<(gram::GramProbe, usize, bool)>,
    /// Layers whose inputs are kept: `(probe, index in input_slots,
    /// relu)`, and the slots kept (each once).
    gram_inputs: Vec<(gram::GramProbe, usize, bool)>,
    input_slots: Vec<usize>,
    /// The graph outputs, by their index in tract's outputs
    /// ([targets…, extra…]), and the extra ones tract runs for them.
    kept: Vec<usize>,
    extra: Vec<String>,
    plans: Mutex<HashMap<Vec<Vec<usize>>, Arc<Runner>>>,
    /// Builds them (a model read once when there are several shapes).
    planner: crate::tract::Planner,
}

impl Calibrator {
    /// Observes every graph input and node output of `model` (which should
    /// be prepared: constants folded, so only activations are node outputs).
    pub fn new(model: &Model) -> Result<Self> {
        Self::observing(model, None)
    }

    /// Observes the graph inputs and, of the node outputs, only those named
    /// in `wanted` (all when `None`): what the quantizer's plan needs. Fewer
    /// observed tensors let tract fuse more (a Conv whose output is not
    /// observed fuses with its Relu).
    pub fn observing(model: &Model, wanted: Option<&BTreeSet<String>>) -> Result<Self> {
        let g = &model.graph;
        let consts = crate::ir::analysis::constant_values(g, false);
        let inputs = input_specs(g);
        // Slot of every tensor observed through tract (or given as input).
        let mut slot: HashMap<String, usize> = inputs
            .iter()
            .enumerate()
            .map(|(k, i)| (i.name.clone(), k))
            .collect();
        let mut targets = Vec::new();
        let mut relu_of = Vec::new();
        let mut relu_slot = HashMap::new();
        for id in g.topo_order()? {
            let Some(node) = g.node(id) else { continue };
            let relu_input = match (node.op_type.as_str(), node.inputs.as_slice()) {
                ("Relu", [Some(x)]) if node.domain.is_empty() => {
                    slot.get(g.value_name(*x)).copied()
                }
                _ => None,
            };
            for v in node.outputs.iter().flatten() {
                let dt = crate::ir::types::dtype_of(g, *v);
                let float_or_unknown = dt.is_none_or(DataType::is_float);
                let name = g.value_name(*v);
                let is_wanted = wanted.is_none_or(|w| w.contains(name));
                if consts.contains(v) || !float_or_unknown || !is_wanted {
                    continue;
                }
                if let Some(x) = relu_input {
                    relu_of.push((name.to_string(), x));
                    relu_slot.insert(name.to_string(), x);
                } else {
                    slot.insert(name.to_string(), inputs.len() + targets.len());
                    targets.push(name.to_string());
                }
            }
        }
        let slot_of = slot
            .into_iter()
            .map(|(k, v)| (k, (v, false)))
            .chain(relu_slot.into_iter().map(|(k, v)| (k, (v, true))))
            .collect();
        Ok(Calibrator {
            proto: model.to_proto()?,
            inputs,
            targets,
            relu_of,
            slot_of,
            means: Vec::new(),
            grams: Vec::new(),
            gram_inputs: Vec::new(),
            input_slots: Vec::new(),
            kept: Vec::new(),
            extra: Vec::new(),
            plans: Mutex::new(HashMap::new()),
            planner: crate::tract::Planner::new(),
        })
    }

    /// Also sums the input Gram matrices of the layers of `probes` whose
    /// input is observed ([`Collected::grams`]); the others are left out.
    pub fn summing_grams(mut self, probes: Vec<gram::GramProbe>) -> Self {
        self.grams = probes
            .into_iter()
            .filter_map(|p| {
                let (slot, relu) = *self.slot_of.get(&p.input)?;
                Some((p, slot, relu))
            })
            .collect();
        self
    }

    /// Also keeps the inputs of the layers of `probes` whose input is
    /// observed ([`Collected::gram_inputs`], within
    /// [`CollectOptions::gram_input_bytes`]); the others are left out.
    pub fn keeping_gram_inputs(mut self, probes: Vec<gram::GramProbe>) -> Self {
        let (mut kept, mut slots) = (Vec::new(), Vec::new());
        for p in probes {
            let Some(&(slot, relu)) = self.slot_of.get(&p.input) else {
                continue;
            };
            let k = match slots.iter().position(|&s| s == slot) {
                Some(k) => k,
                None => {
                    slots.push(slot);
                    slots.len() - 1
                }
            };
            kept.push((p, k, relu));
        }
        self.gram_inputs = kept;
        self.input_slots = slots;
        self
    }

    /// Also takes the mean input of the layers of `probes` whose input is
    /// observed ([`Collected::means`]); the others are left out.
    pub fn measuring(mut self, probes: Vec<means::Probe>) -> Self {
        self.means = probes
            .into_iter()
            .filter_map(|p| {
                let (slot, relu) = *self.slot_of.get(&p.input)?;
                Some((p, slot, relu))
            })
            .collect();
        self
    }

    /// Also has tract hand over the graph outputs of `model` (the model it
    /// was made from), for [`CollectOptions::keep_outputs`]; not when one
    /// is a graph input.
    pub fn keeping_outputs(mut self, model: &Model) -> Self {
        let g = &model.graph;
        let (mut kept, mut extra) = (Vec::new(), Vec::new());
        for v in g.outputs() {
            if g.producer_node(v).is_none() {
                return self;
            }
            let name = g.value_name(v);
            match self.targets.iter().position(|t| t == name) {
                Some(k) => kept.push(k),
                None => {
                    kept.push(self.targets.len() + extra.len());
                    extra.push(name.to_string());
                }
            }
        }
        self.kept = kept;
        self.extra = extra;
        self
    }

    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    /// Node outputs observed (graph inputs are observed too).
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    fn plan(&self, sample: &Sample) -> Result<Arc<Runner>> {
        let shapes: Vec<Vec<usize>> = self
            .inputs
            .iter()
            .filter_map(|i| {
                sample
                    .iter()
                    .find(|(n, _)| *n == i.name)
                    .map(|(_, t)| t.dims().to_vec())
            })
            .collect();
        let mut plans = self
            .plans
            .lock()
            .map_err(|_| Error::Invalid("a calibration worker panicked".into()))?;
        if let Some(p) = plans.get(&shapes) {
            return Ok(p.clone());
        }
        let specs: Vec<(String, DataType, Vec<usize>)> = sample
            .iter()
            .map(|(n, t)| (n.clone(), t.dtype(), t.dims().to_vec()))
            .collect();
        // With nothing to observe but inputs, run the model's own outputs
        // (tract needs one); their statistics are ignored.
        let run: Vec<String> = self.targets.iter().chain(&self.extra).cloned().collect();
        let outputs = (!run.is_empty()).then_some(run.as_slice());
        let proto = || Ok(std::borrow::Cow::Borrowed(&self.proto));
        let runner = Arc::new(self.planner.plan(proto, &specs, outputs)?);
        plans.insert(shapes, runner.clone());
        Ok(runner)
    }
}
