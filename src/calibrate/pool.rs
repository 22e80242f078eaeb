//! Running a model over samples in parallel: the process-wide worker
//! pools every stage shares, and the pass that runs a model on every
//! sample and hands back its outputs (the range choice's).

use super::samples::SampleSource;
use crate::error::{Error, Result};
use crate::ir::DataType;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The rayon pool of `jobs` workers (0: one per core), and that number.
/// One pool per worker count for the whole process, started on first use:
/// every stage of a run (calibration, GPTQ, bias correction, the gate)
/// works on the same threads, so the memory a stage frees stays in those
/// threads' allocator heaps for the next stage. A pool per stage started
/// new threads with empty heaps each time, whose pages were faulted in
/// again (the PaddleOCR detector at 640 px, default `quantize`: 9.3 / 8.6 s
/// with a pool per stage, 8.3 / 7.9 s with this; outputs byte-identical).
pub fn worker_pool(jobs: usize) -> Result<(Arc<rayon::ThreadPool>, usize)> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let jobs = if jobs == 0 {
        std::thread::available_parallelism().map_or(1, |p| p.get())
    } else {
        jobs
    };
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut pools = pools
        .lock()
        .map_err(|_| Error::Invalid("the worker pools' lock is poisoned".into()))?;
    if let Some(p) = pools.get(&jobs) {
        return Ok((p.clone(), jobs));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start {jobs} workers: {e}")))?;
    let pool = Arc::new(pool);
    pools.insert(jobs, pool.clone());
    Ok((pool, jobs))
}

/// Runs `model` on every sample of `source` in parallel (`jobs` workers;
/// one tract plan per distinct input signature, built at `level` and
/// shared), returning `outputs` of each sample as f32 values, in sample
/// order. For the passes that need one extra look at the data (the range
/// choice).
pub fn run_on_samples(
    model: &crate::onnx::proto::ModelProto,
    outputs: &[String],
    level: crate::tract::Level,
    source: &dyn SampleSource,
    jobs: usize,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let one = sample_runner(model, outputs, level, source);
    let (pool, _) = worker_pool(jobs)?;
    pool.install(|| (0..source.len()).into_par_iter().map(one).collect())
}

/// Runs one sample of `source` through `model` (plans cached per input
/// signature and shared between workers), returning `outputs` as f32.
fn sample_runner<'a>(
    model: &'a crate::onnx::proto::ModelProto,
    outputs: &'a [String],
    level: crate::tract::Level,
    source: &'a dyn SampleSource,
) -> impl Fn(usize) -> Result<Vec<Vec<f32>>> + Sync + 'a {
    type Signature = Vec<(DataType, Vec<usize>)>;
    let plans: Mutex<HashMap<Signature, crate::tract::Runner>> = Mutex::new(HashMap::new());
    move |i| {
        let sample = source.load(i)?;
        let sig: Signature = sample
            .iter()
            .map(|(_, t)| (t.dtype(), t.dims().to_vec()))
            .collect();
        let cached = plans.lock().ok().and_then(|p| p.get(&sig).cloned());
        let runner = match cached {
            Some(r) => r,
            None => {
                let s: Vec<_> = sample
                    .iter()
                    .map(|(n, t)| (n.clone(), t.dtype(), t.dims().to_vec()))
                    .collect();
                let r = crate::tract::Runner::with_level(model, &s, Some(outputs), level)?;
                if let Ok(mut p) = plans.lock() {
                    p.insert(sig, r.clone());
                }
                r
            }
        };
        runner
            .run(&sample)?
            .iter()
            .map(|t| t.to_f32_vec())
            .collect()
    }
}
