//! What a comparison keeps for the next on the same samples: the FP32
//! model's outputs per sample, its tract plans, and the INT8 executors'
//! float-region plans.

use super::Signature;
use crate::error::Result;
use crate::ir::Tensor;
use crate::tract::Runner;
use std::collections::HashMap;
use std::sync::Arc;

/// Most bytes of FP32 outputs [`References`] holds by default.
pub const REFERENCE_BYTES: usize = 256 << 20;

/// The FP32 model's outputs per validation sample, kept from one
/// comparison (or from calibration, which ran the same samples) to the
/// next, so later gates on the same samples run only the INT8 model. Each
/// entry is checked against the sample's name; past `limit` bytes nothing
/// more is kept (those samples run FP32 again). Also the FP32 model's
/// tract plans, built once per input shape and set of exposed tensors
/// and reused by every later comparison that needs no others (a plan of
/// ResNet-50 with its intermediates exposed takes 0.8 s to build, as long
/// as 6 samples' runs).
pub struct References {
    inner: std::sync::Mutex<RefInner>,
    limit: usize,
    plans: std::sync::Mutex<Vec<Plan>>,
    /// Builds the plans (the model read once when planned for several
    /// input shapes).
    pub(super) planner: crate::tract::Planner,
    /// The INT8 executors' float-region plans, shared by the comparisons
    /// (the gates of one run share most of their regions).
    pub(super) regions: Arc<crate::exec::RegionPlans>,
}

/// A tract plan of the FP32 model: its input signature and the tensors it
/// exposes, in its output order.
struct Plan {
    sig: Signature,
    names: Vec<String>,
    runner: Arc<Runner>,
}

/// Most plans [`References`] keeps (the oldest goes first).
const PLANS_KEPT: usize = 8;

/// Most bytes of weights the kept plans hold together (each holds the
/// model's): a model of more than this keeps none (its plans are built
/// per comparison), ResNet-50 (98 MiB) keeps 2, MiniLM (66 MiB, a plan per
/// sentence length) 3, a 5 MiB detector 8.
pub const PLAN_BYTES: usize = 256 << 20;

/// How many plans of a model with `weight_bytes` of weights are kept.
pub fn plans_kept(weight_bytes: usize) -> usize {
    (PLAN_BYTES / weight_bytes.max(1)).min(PLANS_KEPT)
}

struct RefInner {
    slots: HashMap<usize, (String, Arc<Vec<Tensor>>)>,
    bytes: usize,
}

impl References {
    pub fn new(limit: usize) -> Self {
        References {
            inner: std::sync::Mutex::new(RefInner {
                slots: HashMap::new(),
                bytes: 0,
            }),
            limit,
            plans: std::sync::Mutex::new(Vec::new()),
            planner: crate::tract::Planner::new(),
            regions: Arc::new(crate::exec::RegionPlans::new()),
        }
    }

    /// A plan for inputs of `sig` exposing `names`, and where each of
    /// `names` is among its outputs: a kept plan when one exposes them all
    /// (`exact`: exactly them, in order, so a plan of the outputs alone
    /// keeps tract's fusions), else one built by `build` and kept, the
    /// oldest let go past `room` plans (none kept when 0).
    pub(super) fn plan(
        &self,
        sig: &Signature,
        names: &[String],
        (exact, room): (bool, usize),
        build: impl FnOnce() -> Result<Runner>,
    ) -> Result<(Arc<Runner>, Vec<usize>)> {
        let positions = |p: &Plan| -> Option<Vec<usize>> {
            if exact {
                return (p.names == names).then(|| (0..names.len()).collect());
            }
            let at: HashMap<&str, usize> = p
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), i))
                .collect();
            names.iter().map(|n| at.get(n.as_str()).copied()).collect()
        };
        if let Ok(plans) = self.plans.lock() {
            let found = plans
                .iter()
                .filter(|p| &p.sig == sig)
                .filter_map(|p| Some((p, positions(p)?)))
                .min_by_key(|(p, _)| p.names.len());
            if let Some((p, at)) = found {
                return Ok((p.runner.clone(), at));
            }
        }
        let runner = Arc::new(build()?);
        if let Ok(mut plans) = self.plans.lock() {
            while !plans.is_empty() && plans.len() >= room {
                plans.remove(0);
            }
            if room == 0 {
                return Ok((runner, (0..names.len()).collect()));
            }
            plans.push(Plan {
                sig: sig.clone(),
                names: names.to_vec(),
                runner: runner.clone(),
            });
        }
        Ok((runner, (0..names.len()).collect()))
    }

    /// The outputs of sample `i` named `name`, if kept.
    pub fn get(&self, i: usize, name: &str) -> Option<Arc<Vec<Tensor>>> {
        let inner = self.inner.lock().ok()?;
        inner
            .slots
            .get(&i)
            .filter(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
    }

    /// Keeps the outputs of sample `i` (`name`), unless they would pass the
    /// limit.
    pub fn put(&self, i: usize, name: &str, outputs: Arc<Vec<Tensor>>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let bytes: usize = outputs.iter().map(Tensor::byte_len).sum();
        if inner.slots.contains_key(&i) || inner.bytes + bytes > self.limit {
            return;
        }
        inner.bytes += bytes;
        inner.slots.insert(i, (name.to_string(), outputs));
    }
}

impl Default for References {
    fn default() -> Self {
        References::new(REFERENCE_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::DataType;
    use crate::passes::testutil::{model, node};

    /// A plan is built once per input signature: a later comparison that
    /// needs some of the tensors a kept plan exposes takes it (and where
    /// they are among its outputs); one that wants exactly the outputs gets
    /// a plan of its own.
    #[test]
    fn plans_are_kept_and_reused_for_any_subset_of_their_tensors() {
        let m = model(
            13,
            &[("x", &[1, 4])],
            &["z"],
            vec![
                node("Relu", "r", &["x"], &["y"], vec![]),
                node("Neg", "n", &["y"], &["z"], vec![]),
            ],
            vec![],
        );
        let proto = m.to_proto().unwrap();
        let refs = References::new(0);
        let sig: Signature = vec![(DataType::Float, vec![1, 4])];
        let inputs = [("x".to_string(), DataType::Float, vec![1, 4])];
        let builds = std::cell::Cell::new(0);
        let build = |names: &[String]| {
            builds.set(builds.get() + 1);
            Runner::new(&proto, &inputs, Some(names))
        };
        let both = ["z".to_string(), "y".to_string()];
        let (first, at) = refs.plan(&sig, &both, (false, 8), || build(&both)).unwrap();
        assert_eq!(at, [0, 1]);
        let y = ["y".to_string()];
        let (again, at) = refs.plan(&sig, &y, (false, 8), || build(&y)).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(at, [1]);
        assert_eq!(builds.get(), 1);
        let z = ["z".to_string()];
        let (own, at) = refs.plan(&sig, &z, (true, 8), || build(&z)).unwrap();
        assert!(!Arc::ptr_eq(&first, &own));
        assert_eq!((at, builds.get()), (vec![0], 2));
        let (same, _) = refs.plan(&sig, &z, (true, 8), || build(&z)).unwrap();
        assert!(Arc::ptr_eq(&own, &same));
        // Another input shape: another plan.
        let other: Signature = vec![(DataType::Float, vec![2, 4])];
        let wide = [("x".to_string(), DataType::Float, vec![2, 4])];
        refs.plan(&other, &y, (false, 8), || {
            builds.set(builds.get() + 1);
            Runner::new(&proto, &wide, Some(&y))
        })
        .unwrap();
        assert_eq!(builds.get(), 3);
        // With room for one plan, a new one lets the others go; with none,
        // nothing is kept.
        let (one, _) = refs.plan(&sig, &y, (true, 1), || build(&y)).unwrap();
        assert_eq!(builds.get(), 4);
        let (kept, _) = refs.plan(&sig, &y, (true, 1), || build(&y)).unwrap();
        assert!(Arc::ptr_eq(&one, &kept));
        refs.plan(&sig, &z, (true, 1), || build(&z)).unwrap();
        assert_eq!(builds.get(), 5);
        let none = References::new(0);
        none.plan(&sig, &z, (true, 0), || build(&z)).unwrap();
        none.plan(&sig, &z, (true, 0), || build(&z)).unwrap();
        assert_eq!(builds.get(), 7);
        assert_eq!((plans_kept(98 << 20), plans_kept(66 << 20)), (2, 3));
        assert_eq!((plans_kept(5 << 20), plans_kept(548 << 20)), (8, 0));
        // The reused plan's picked outputs are the tensors asked for.
        let x = Tensor::from_f32(vec![1, 4], &[-1.0, 2.0, -3.0, 4.0]);
        let out = again.run(&[("x".to_string(), x)]).unwrap();
        assert_eq!(out[1].to_f32_vec().unwrap(), [0.0, 2.0, 0.0, 4.0]);
    }
}
