//! The quantization plan: what handlers decided, before any node is built.
//!
//! Handlers ([`super::handlers`]) look at one node and return a
//! [`Decision`]; the planner ([`super::plan_model`]) records the decisions
//! here, in topological order. Nothing in the graph changes until
//! [`super::materialize`] reads the finished plan.

use crate::ir::{NodeId, ValueId};
use std::collections::BTreeMap;

/// Where an activation's range comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ActSpec {
    /// Its own calibrated range.
    Calibrated,
    /// The calibrated range of another tensor: a Conv output whose only
    /// consumer is a Relu/Clip takes the Relu's (narrower) output range,
    /// so the quantization itself clips.
    RangeOf(ValueId),
    /// A range known from the op (Softmax, Sigmoid: [0, 1]).
    Fixed(f32, f32),
    /// Its own calibrated range, clamped to `[lo, hi]`: every reader of the
    /// tensor computes a constant outside it (a hard-swish below −3,
    /// [`crate::ir::analysis::flat_outside`]), so the clamp loses nothing
    /// and the range keeps its resolution for the values that matter.
    Within(f32, f32),
    /// Exactly the parameters of another tensor (data-movement ops): same
    /// scale and zero-point initializers, so the op can run on int8.
    Share(ValueId),
}

/// The role of one node input in a quantized node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InputRole {
    /// A float activation, quantized with its own parameters (in the plan's
    /// activation table).
    Activation,
    /// A float constant stored quantized, per channel along `axis` or per
    /// tensor. `act_type`: quantized like an activation (type, symmetry)
    /// rather than like a weight (constant inputs of Add, Mul).
    Weight { axis: Option<usize>, act_type: bool },
    /// A float constant bias stored as int32 at scale `x_scale * w_scale`:
    /// `x` and `w` are the input slots of the activation and weight, `axis`
    /// the bias axis carrying channels.
    Bias { x: usize, w: usize, axis: usize },
}

/// What a handler decided for one node.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Quantize: roles of inputs (by slot) and specs of outputs (by slot).
    Quantize {
        inputs: Vec<(usize, InputRole)>,
        outputs: Vec<(usize, ActSpec)>,
    },
    /// Stay float, and why (shown in the report).
    Float(String),
}

impl ActSpec {
    /// `(lo, hi)` clamped to a [`ActSpec::Within`] interval (unchanged for
    /// every other spec).
    pub fn clamp(&self, (lo, hi): (f32, f32)) -> (f32, f32) {
        match *self {
            ActSpec::Within(a, b) => {
                use crate::ir::analysis::clamp_to;
                (clamp_to(lo, (a, b)), clamp_to(hi, (a, b)))
            }
            _ => (lo, hi),
        }
    }
}

impl Decision {
    pub fn float(reason: impl Into<String>) -> Self {
        Decision::Float(reason.into())
    }
}

/// Everything decided for the graph.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Activations to quantize, each with where its parameters come from.
    pub activations: BTreeMap<ValueId, ActSpec>,
    /// Activations in the order they were first planned (materialization
    /// order, so shared parameters are resolved after their source).
    pub order: Vec<ValueId>,
    /// Per node: the decision (quantized nodes and float ones with reasons).
    pub nodes: BTreeMap<NodeId, Decision>,
}

impl Plan {
    /// Records an activation unless it already has a spec (the first
    /// decision wins: a producer's narrowing or sharing outranks a
    /// consumer's request).
    pub fn mark(&mut self, v: ValueId, spec: ActSpec) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.activations.entry(v) {
            e.insert(spec);
            self.order.push(v);
        }
    }

    pub fn is_quantized(&self, v: ValueId) -> bool {
        self.activations.contains_key(&v)
    }

    /// The tensor whose parameters `v` ends up with, following shares.
    pub fn root(&self, v: ValueId) -> Option<ValueId> {
        let mut cur = v;
        for _ in 0..=self.activations.len() {
            match self.activations.get(&cur)? {
                ActSpec::Share(src) => cur = *src,
                _ => return Some(cur),
            }
        }
        None
    }
}
