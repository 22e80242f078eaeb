//! Running the samples: each through tract, what it gives (statistics,
//! mean layer inputs, Gram matrices, kept layer inputs and outputs) folded
//! per block of samples in sample order, blocks merged in block order, so
//! the result is the same for any number of workers.

use super::samples::{check_sample, SampleSource};
use super::{gram, hex, means, worker_pool, Calibrator, CollectOptions, Collected, TensorStats};
use crate::error::{Error, Result};
use crate::ir::Tensor;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};

/// What a block of samples adds up to, in sample order.
struct Folded {
    /// Per tensor in `[inputs…, targets…, Relu outputs…]` order.
    stats: Vec<Option<TensorStats>>,
    means: means::Means,
    /// Per Gram probe, `[groups, K, K]` upper triangles.
    grams: Vec<Vec<f32>>,
    /// Per tensor of [`Calibrator::keeping_gram_inputs`], its values
    /// (`None`: let go before the block started).
    inputs: Vec<Option<gram::SampleValues>>,
    /// Each sample's name and kept outputs.
    kept: Vec<(String, Vec<Tensor>)>,
    /// Each sample's digest.
    digests: Vec<[u8; 32]>,
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

impl Calibrator {
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
            inputs,
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
            if opts.gram_input_bytes > 0 {
                if let Some(j) = self.input_slots.iter().position(|&s| s == k) {
                    if let Some(Some(t)) = inputs.get_mut(j) {
                        t.push((v.to_vec(), dims.to_vec()));
                    }
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
        let keep_inputs = opts.gram_input_bytes > 0 && !self.input_slots.is_empty();
        let block = if self.grams.is_empty() && !keep_inputs {
            (n / 64).clamp(1, 16)
        } else {
            gram::block_of(n)
        };
        let blocks: Vec<std::ops::Range<usize>> = (0..n)
            .step_by(block)
            .map(|s| s..(s + block).min(n))
            .collect();
        // Tensors whose inputs were let go past the budget: the blocks
        // started after that no longer copy them.
        let let_go: Vec<AtomicBool> = (0..if keep_inputs {
            self.input_slots.len()
        } else {
            0
        })
            .map(|_| AtomicBool::new(false))
            .collect();
        let fold_block = |range: &std::ops::Range<usize>| -> Result<Folded> {
            let mut b = Folded {
                stats: vec![None; names.len()],
                means: means::Means::default(),
                grams: vec![Vec::new(); self.grams.len()],
                inputs: let_go
                    .iter()
                    .map(|gone| (!gone.load(Ordering::Relaxed)).then(Vec::new))
                    .collect(),
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
        // Kept layer inputs by tensor (`None`: let go past the budget).
        let mut inputs: Vec<Option<gram::SampleValues>> = if keep_inputs {
            vec![Some(Vec::new()); self.input_slots.len()]
        } else {
            Vec::new()
        };
        let mut input_bytes = 0usize;
        // With Gram matrices to sum (up to tens of MiB a block) or inputs
        // to keep, one block per worker at a time.
        let wave = if self.grams.is_empty() && !keep_inputs {
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
                for (kept, got) in inputs.iter_mut().zip(b.inputs) {
                    if let (Some(k), Some(got)) = (kept, got) {
                        input_bytes += got.iter().map(|(v, _)| v.len() * 4).sum::<usize>();
                        k.extend(got);
                    }
                }
                // Past the budget, the last tensors still kept are let go
                // (in sample order, so the same ones for any `jobs`).
                while input_bytes > opts.gram_input_bytes {
                    let Some((j, last)) = inputs
                        .iter_mut()
                        .enumerate()
                        .rev()
                        .find(|(_, k)| k.is_some())
                    else {
                        break;
                    };
                    if let Some(flag) = let_go.get(j) {
                        flag.store(true, Ordering::Relaxed);
                    }
                    let gone = last.take().unwrap_or_default();
                    input_bytes -= gone.iter().map(|(v, _)| v.len() * 4).sum::<usize>();
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
            gram_inputs: gram::KeptInputs::new(
                inputs.into_iter().map(Option::unwrap_or_default).collect(),
                self.gram_inputs.clone(),
            ),
            outputs,
        })
    }
}
