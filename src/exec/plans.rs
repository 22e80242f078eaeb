//! Float-region plans shared between executors: the gates of one
//! quantization run each build an executor for another int8 model (GPTQ's,
//! nearest rounding's, the automatic mode's variants), yet most of their
//! float regions are the same small model: the same nodes, the same
//! float weights, the same input signature. Planning one in tract (parse,
//! type, optimize) can cost more than running it: MiniLM's embedding
//! region, planned per sentence length, was 41% of its whole `quantize`
//! (session 27).
//!
//! A region plan is found again by what decides it, compared exactly: the
//! region model without its weights, encoded (nodes and attributes, input
//! types and shapes, baked integer inputs, output names, opsets), and its
//! weights (names, types, shapes and bytes, compared byte for byte: a
//! memcmp, far cheaper than a plan). Nothing is found by a hash alone, so
//! a plan is reused only for the very same region model.

use crate::ir::Tensor;
use crate::tract::{Planner, Runner};
use std::sync::{Arc, Mutex};

/// What decides a region's plan.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RegionKey {
    /// The region model without its weights, encoded.
    pub skeleton: Vec<u8>,
    /// Its weights by name.
    pub weights: Vec<(String, Tensor)>,
}

impl RegionKey {
    /// What its plan is counted for: its weights and [`PLAN_OVERHEAD`].
    fn bytes(&self) -> usize {
        PLAN_OVERHEAD
            + self
                .weights
                .iter()
                .map(|(_, t)| t.byte_len())
                .sum::<usize>()
    }
}

/// What a plan is counted for besides its weights (tract's graph and
/// scratch of a small region).
const PLAN_OVERHEAD: usize = 64 << 10;

/// Most bytes the kept plans are counted for together: MiniLM's
/// embedding region (47 MiB of word vectors) keeps its plans for 5
/// sentence lengths; a gate of it plans ~20 regions per length.
pub const REGION_PLAN_BYTES: usize = 256 << 20;

/// Entries kept up to a number of bytes, the least recently used going
/// first (not the oldest: a gate reads its regions in the order the last
/// one did, so dropping the oldest would drop each just before its next
/// use), and of those the least recently used at least as large as the
/// newcomer, so that one large region (one plan per sentence length) does
/// not push out the many small ones.
struct Lru<T> {
    kept: Mutex<Vec<(RegionKey, usize, T)>>,
}

impl<T: Clone> Lru<T> {
    fn new() -> Self {
        Lru {
            kept: Mutex::new(Vec::new()),
        }
    }

    fn get(&self, key: &RegionKey) -> Option<T> {
        let mut kept = self.kept.lock().ok()?;
        let i = kept.iter().position(|(k, ..)| k == key)?;
        let entry = kept.remove(i);
        let value = entry.2.clone();
        kept.push(entry);
        Some(value)
    }

    fn put(&self, key: RegionKey, value: T) {
        let bytes = key.bytes();
        if bytes > REGION_PLAN_BYTES {
            return;
        }
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        if kept.iter().any(|(k, ..)| *k == key) {
            return;
        }
        let mut total: usize = kept.iter().map(|(_, b, _)| b).sum();
        while !kept.is_empty() && total + bytes > REGION_PLAN_BYTES {
            let i = kept.iter().position(|e| e.1 >= bytes).unwrap_or(0);
            total -= kept.remove(i).1;
        }
        kept.push((key, bytes, value));
    }

    fn len(&self) -> usize {
        self.kept.lock().map(|k| k.len()).unwrap_or(0)
    }
}

/// Region plans kept for every executor given them
/// ([`super::Executor::sharing`]), up to [`REGION_PLAN_BYTES`]: the plans
/// by region model and input shapes, and the planners by region model
/// whatever the shapes of its unbaked inputs (a plan for a new sentence
/// length starts from the region model tract read once, for every
/// executor).
pub struct RegionPlans {
    plans: Lru<Arc<Runner>>,
    planners: Lru<Arc<Planner>>,
}

impl Default for RegionPlans {
    fn default() -> Self {
        RegionPlans {
            plans: Lru::new(),
            planners: Lru::new(),
        }
    }
}

impl RegionPlans {
    pub fn new() -> Self {
        Self::default()
    }

    /// The plan kept for `key`, if any.
    pub(super) fn get(&self, key: &RegionKey) -> Option<Arc<Runner>> {
        self.plans.get(key)
    }

    /// Keeps `runner` as the plan of `key` (not when it alone passes the
    /// limit).
    pub(super) fn put(&self, key: RegionKey, runner: Arc<Runner>) {
        self.plans.put(key, runner);
    }

    /// The planner of the region model `key` (its unbaked inputs'
    /// shapes left out), made when none is kept.
    pub(super) fn planner(&self, key: RegionKey) -> Arc<Planner> {
        if let Some(p) = self.planners.get(&key) {
            return p;
        }
        let p = Arc::new(Planner::new());
        self.planners.put(key, p.clone());
        p
    }

    /// Plans kept.
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
