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
use rayon::prelude::*;
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
    /// Each sample's name and graph outputs, in sample order, with
    /// [`CollectOptions::keep_outputs`] (empty past its bytes).
    pub outputs: Vec<(String, Vec<Tensor>)>,
}

/// What a block of samples adds up to, in sample order.
struct Folded {
    /// Per tensor in `[inputs…, targets…, Relu outputs…]` order.
    stats: Vec<Option<TensorStats>>,
    means: means::Means,
    /// Per Gram probe, `[groups, K, K]` upper triangles.
    grams: Vec<Vec<f32>>,
    /// Each sample's name and kept outputs.
    kept: Vec<(String, Vec<Tensor>)>,
    /// Each sample's digest.
    digests: Vec<[u8; 32]>,
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

/// Merges later statistics into `acc`, slot by slot.
fn merge_into(acc: &mut [Option<TensorStats>], later: Vec<Option<TensorStats>>) {
    for (slot, s) in acc.iter_mut().zip(later) {
        match (slot.as_mut(), s) {
            (Some(m), Some(s)) => m.merge(&s),
            (None, Some(s)) => *slot = Some(s),
            _ => {}
        }
    }
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
    /// The graph outputs, by their index in tract's outputs
    /// ([targets…, extra…]), and the extra ones tract runs for them.
    kept: Vec<usize>,
    extra: Vec<String>,
    plans: Mutex<HashMap<Vec<Vec<usize>>, Arc<Runner>>>,
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
            kept: Vec::new(),
            extra: Vec::new(),
            plans: Mutex::new(HashMap::new()),
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
        let runner = Arc::new(Runner::new(&self.proto, &specs, outputs)?);
        plans.insert(shapes, runner.clone());
        Ok(runner)
    }

    /// Runs one sample and adds what it gives to `block`: its statistics
    /// (non-float tensors stay `None`), mean inputs, Gram matrices, kept
    /// outputs and digest.
    fn run_one(
        &self,
        source: &dyn SampleSource,
        i: usize,
        opts: &CollectOptions,
        block: &mut Folded,
    ) -> Result<()> {
        let Folded {
            stats: acc,
            means,
            grams,
            kept,
            digests,
        } = block;
        let name = source.name(i);
        let sample = source.load(i)?;
        check_sample(&name, &sample, &self.inputs)?;
        let mut digest = Sha256::new();
        digest.update(name.as_bytes());
        for (n, t) in &sample {
            digest.update(n.as_bytes());
            digest.update(t.dtype().name().as_bytes());
            for d in t.dims() {
                digest.update((*d as u64).to_le_bytes());
            }
            if let Some(raw) = t.raw() {
                digest.update(raw);
            }
        }
        let runner = self.plan(&sample)?;
        let outputs = runner
            .run_tract(&sample)
            .map_err(|e| Error::Invalid(format!("sample '{name}': {e}")))?;
        let observed = self.inputs.len() + self.targets.len();
        let (observed_slots, relu_slots) = acc.split_at_mut(observed);
        // Statistics of tensor `k` of [inputs…, targets…], and of the Relu
        // outputs derived from it.
        let mut add = |k: usize, v: &[f32], dims: &[usize]| -> Result<()> {
            for (probe, _, relu) in self.means.iter().filter(|(_, s, _)| *s == k) {
                let mean = probe
                    .mean(v, dims, *relu)
                    .map_err(|e| Error::Invalid(format!("sample '{name}': {e}")))?;
                means.add(&probe.node, &mean)?;
            }
            for ((probe, slot, relu), acc) in self.grams.iter().zip(grams.iter_mut()) {
                if *slot == k {
                    probe
                        .add(v, dims, *relu, acc)
                        .map_err(|e| Error::Invalid(format!("sample '{name}': {e}")))?;
                }
            }
            let Some(slot) = observed_slots.get_mut(k) else {
                return Ok(());
            };
            slot.get_or_insert_default()
                .add_sample(v, dims, opts.histograms, opts.per_channel);
            for ((_, x), slot) in self.relu_of.iter().zip(relu_slots.iter_mut()) {
                if *x == k {
                    slot.get_or_insert_default()
                        .add_relu_sample(v, dims, opts.per_channel);
                }
            }
            Ok(())
        };
        for (k, spec) in self.inputs.iter().enumerate() {
            if let Some((_, t)) = sample.iter().find(|(n, _)| *n == spec.name) {
                if t.dtype().is_float() {
                    add(k, &t.to_f32_vec()?, t.dims())?;
                }
            }
        }
        // With no targets, tract ran the model's own outputs: not observed.
        for (k, t) in outputs.iter().take(self.targets.len()).enumerate() {
            let k = self.inputs.len() + k;
            // f32 outputs are read in place; other float types converted.
            let plain = t.try_as_plain_ram().ok();
            match plain.as_ref().and_then(|p| p.as_slice::<f32>().ok()) {
                Some(v) => add(k, v, t.shape())?,
                None => {
                    let t = crate::tract::from_tract(t)?;
                    if t.dtype().is_float() {
                        add(k, &t.to_f32_vec()?, t.dims())?;
                    }
                }
            }
        }
        if opts.keep_outputs > 0 && !self.kept.is_empty() {
            let values = self
                .kept
                .iter()
                .map(|&k| {
                    let t = outputs.get(k).ok_or_else(|| {
                        Error::Invalid(format!("sample '{name}': an output is missing"))
                    })?;
                    crate::tract::from_tract(t)
                })
                .collect::<Result<_>>()?;
            kept.push((name, values));
        }
        digests.push(digest.finalize().into());
        Ok(())
    }

    /// Runs every sample of `source` and merges the statistics.
    pub fn collect(&self, source: &dyn SampleSource, opts: &CollectOptions) -> Result<Collected> {
        let n = source.len();
        if n == 0 {
            return Err(Error::Invalid("no calibration samples".into()));
        }
        let (pool, jobs) = worker_pool(opts.jobs)?;
        let bar = if opts.progress {
            let b = indicatif::ProgressBar::with_draw_target(
                Some(n as u64),
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "calibrating {bar:30} {pos}/{len} samples  {per_sec}  eta {eta}",
            ) {
                b.set_style(style);
            }
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let names: Vec<String> = self
            .inputs
            .iter()
            .map(|i| i.name.clone())
            .chain(self.targets.iter().cloned())
            .chain(self.relu_of.iter().map(|(n, _)| n.clone()))
            .collect();
        // Samples in contiguous blocks whose size depends only on `n`: a
        // worker folds a block in sample order, blocks merge in block order,
        // so the float sums (averaged MinMax) come out the same for any
        // `jobs`, and the main thread merges once per block, not per sample.
        // Memory: a wave is two blocks per worker, so at most 2·jobs sets
        // of statistics (each one per-tensor histogram pair) are alive.
        // With Gram matrices, blocks of up to 8 samples: each block's f32
        // sums (tens of MiB) are added to the f64 ones once.
        let block = if self.grams.is_empty() {
            (n / 64).clamp(1, 16)
        } else {
            (n / 4).clamp(1, 8)
        };
        let blocks: Vec<std::ops::Range<usize>> = (0..n)
            .step_by(block)
            .map(|s| s..(s + block).min(n))
            .collect();
        let fold_block = |range: &std::ops::Range<usize>| -> Result<Folded> {
            let mut b = Folded {
                stats: vec![None; names.len()],
                means: means::Means::default(),
                grams: vec![Vec::new(); self.grams.len()],
                kept: Vec::new(),
                digests: Vec::with_capacity(range.len()),
            };
            for i in range.clone() {
                self.run_one(source, i, opts, &mut b)?;
                bar.inc(1);
            }
            Ok(b)
        };
        let mut merged: Vec<Option<TensorStats>> = vec![None; names.len()];
        let mut means = means::Means::default();
        let mut grams: Vec<Vec<f64>> = vec![Vec::new(); self.grams.len()];
        let mut digest = Sha256::new();
        let (mut outputs, mut output_bytes) = (Vec::new(), 0usize);
        let mut keep = opts.keep_outputs > 0 && !self.kept.is_empty();
        // With Gram matrices to sum (up to tens of MiB a block), one block
        // per worker at a time.
        let wave = if self.grams.is_empty() {
            jobs * 2
        } else {
            jobs
        };
        for wave in blocks.chunks(wave) {
            let results: Vec<Result<Folded>> =
                pool.install(|| wave.par_iter().map(fold_block).collect());
            for r in results {
                let b = r?;
                b.digests.iter().for_each(|d| digest.update(d));
                merge_into(&mut merged, b.stats);
                if keep {
                    output_bytes += b
                        .kept
                        .iter()
                        .flat_map(|(_, ts)| ts.iter().map(Tensor::byte_len))
                        .sum::<usize>();
                    keep = output_bytes <= opts.keep_outputs;
                    if keep {
                        outputs.extend(b.kept);
                    } else {
                        outputs = Vec::new();
                    }
                }
                means.merge(b.means)?;
                for (acc, v) in grams.iter_mut().zip(b.grams) {
                    if v.is_empty() {
                        continue;
                    }
                    if acc.is_empty() {
                        *acc = vec![0.0; v.len()];
                    }
                    if acc.len() != v.len() {
                        return Err(Error::Invalid(format!(
                            "an input Gram matrix of {} entries on some samples, {} on others",
                            v.len(),
                            acc.len()
                        )));
                    }
                    acc.iter_mut().zip(v).for_each(|(a, x)| *a += f64::from(x));
                }
            }
        }
        bar.finish_and_clear();
        if opts.histograms {
            let observed = self.inputs.len() + self.targets.len();
            for (k, (_, x)) in self.relu_of.iter().enumerate() {
                let input = merged.get(*x).cloned().flatten();
                if let (Some(Some(y)), Some(x)) = (merged.get_mut(observed + k), input) {
                    y.set_relu_histograms(&x);
                }
            }
        }
        let plans = self.plans.lock().map(|p| p.len()).unwrap_or(0);
        Ok(Collected {
            stats: names
                .into_iter()
                .zip(merged)
                .filter_map(|(n, s)| s.map(|s| (n, s)))
                .collect(),
            samples: n,
            samples_sha256: hex(&digest.finalize()),
            plans,
            means,
            grams: self
                .grams
                .iter()
                .zip(grams)
                .filter(|(_, g)| !g.is_empty())
                .map(|((p, _, _), mut g)| {
                    p.mirror(&mut g);
                    (p.node.clone(), g)
                })
                .collect(),
            outputs,
        })
    }
}
