//! The graph: nodes in an arena, values addressed by [`ValueId`], producer and
//! consumer maps kept in step by the mutation methods.
//!
//! Names are labels (what Netron and runtimes show); edges are ids. A
//! [`Graph`] is built from a `GraphProto` ([`Graph::from_proto`]), which
//! checks that every input is defined, nothing is defined twice, and the graph
//! has no cycle; it is written back by [`Graph::to_proto`] in a stable
//! topological order (the original order when it was already sorted), keeping
//! every field the IR does not model. Subgraphs (If/Loop/Scan bodies) stay
//! `GraphProto`s inside their attributes; the outer values they read are
//! recorded as the node's implicit inputs, so no pass can delete them.

use super::node::Node;
use super::tensor::Tensor;
use crate::error::{Error, Result};
use crate::onnx::proto::{
    AttributeProto, GraphProto, NodeProto, SparseTensorProto, TensorProto, ValueInfoProto,
};
use crate::onnx::tensor::{tensor_from_proto, tensor_to_proto};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};

/// Id of a value (an edge) in a [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub(crate) u32);

/// Id of a node in a [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A use of a value: node and input slot (`usize::MAX` for an implicit use
/// by a subgraph of that node).
pub type Use = (NodeId, usize);

/// Slot number recorded for implicit (subgraph) uses.
pub const IMPLICIT_SLOT: usize = usize::MAX;

/// A constant value stored in the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Initializer {
    pub tensor: Tensor,
    /// doc_string and metadata_props of the original `TensorProto`, kept for
    /// the round trip (payload fields empty).
    pub extra: Option<Box<TensorProto>>,
}

/// A value: a graph input, an initializer, or a node output.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    /// Declared type and shape (from input/output/value_info), if any.
    pub info: Option<ValueInfoProto>,
    producer: Option<(NodeId, usize)>,
    consumers: Vec<Use>,
    init: Option<Initializer>,
    sparse: bool,
}

impl Value {
    pub fn producer(&self) -> Option<(NodeId, usize)> {
        self.producer
    }
    pub fn consumers(&self) -> &[Use] {
        &self.consumers
    }
    pub fn initializer(&self) -> Option<&Initializer> {
        self.init.as_ref()
    }
}

/// A computation graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    nodes: Vec<Option<Node>>,
    values: Vec<Value>,
    by_name: HashMap<String, ValueId>,
    inputs: Vec<ValueId>,
    outputs: Vec<(ValueId, ValueInfoProto)>,
    initializer_order: Vec<ValueId>,
    value_info_order: Vec<ValueId>,
    sparse_initializers: Vec<SparseTensorProto>,
    /// Fields of the `GraphProto` the IR does not model (name, doc_string,
    /// quantization_annotation, metadata_props).
    rest: GraphProto,
}

impl Graph {
    // ----- reading -------------------------------------------------------

    pub fn value(&self, v: ValueId) -> &Value {
        &self.values[v.index()]
    }

    pub fn node(&self, n: NodeId) -> Option<&Node> {
        self.nodes.get(n.index()).and_then(Option::as_ref)
    }

    pub fn node_mut(&mut self, n: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(n.index()).and_then(Option::as_mut)
    }

    /// Live nodes, in arena order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (NodeId(i as u32), n)))
    }

    pub fn node_count(&self) -> usize {
        self.nodes.iter().flatten().count()
    }

    pub fn name(&self) -> &str {
        self.rest.name()
    }

    pub fn value_name(&self, v: ValueId) -> &str {
        &self.values[v.index()].name
    }

    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.by_name.get(name).copied()
    }

    /// Graph inputs in declared order, initializers included when the model
    /// lists them as inputs (IR < 4 style).
    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    /// Inputs that are not also initializers: what a caller must feed.
    pub fn runtime_inputs(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs
            .iter()
            .copied()
            .filter(|&v| self.values[v.index()].init.is_none())
    }

    pub fn outputs(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.outputs.iter().map(|(v, _)| *v)
    }

    pub fn output_info(&self, i: usize) -> Option<&ValueInfoProto> {
        self.outputs.get(i).map(|(_, info)| info)
    }

    pub fn is_graph_output(&self, v: ValueId) -> bool {
        self.outputs.iter().any(|(o, _)| *o == v)
    }

    pub fn is_graph_input(&self, v: ValueId) -> bool {
        self.inputs.contains(&v)
    }

    /// Initializers in stored order.
    pub fn initializers(&self) -> impl Iterator<Item = (ValueId, &Initializer)> {
        self.initializer_order
            .iter()
            .filter_map(|&v| self.values[v.index()].init.as_ref().map(|i| (v, i)))
    }

    pub fn initializer(&self, v: ValueId) -> Option<&Tensor> {
        self.values[v.index()].init.as_ref().map(|i| &i.tensor)
    }

    pub fn sparse_initializers(&self) -> &[SparseTensorProto] {
        &self.sparse_initializers
    }

    /// Whether a subgraph reads `v` by name.
    pub fn has_implicit_uses(&self, v: ValueId) -> bool {
        self.values[v.index()]
            .consumers
            .iter()
            .any(|&(_, s)| s == IMPLICIT_SLOT)
    }

    /// Producer node of `v`, if a node produces it.
    pub fn producer_node(&self, v: ValueId) -> Option<(NodeId, &Node)> {
        let (n, _) = self.values[v.index()].producer?;
        self.node(n).map(|node| (n, node))
    }

    // ----- building from a GraphProto ------------------------------------

    /// Builds the IR of a top-level graph, validating it.
    pub fn from_proto(g: &GraphProto) -> Result<Self> {
        let mut graph = Graph {
            rest: GraphProto {
                node: Vec::new(),
                initializer: Vec::new(),
                sparse_initializer: Vec::new(),
                input: Vec::new(),
                output: Vec::new(),
                value_info: Vec::new(),
                ..g.clone()
            },
            sparse_initializers: g.sparse_initializer.clone(),
            ..Default::default()
        };
        let mut defined_by: HashMap<String, String> = HashMap::new();
        let mut define = |name: &str, by: String| -> Result<()> {
            if let Some(first) = defined_by.get(name) {
                return Err(Error::DuplicateDefinition {
                    value: name.to_string(),
                    first: first.clone(),
                    second: by,
                });
            }
            defined_by.insert(name.to_string(), by);
            Ok(())
        };

        for info in &g.input {
            define(info.name(), "a graph input".into())?;
            let v = graph.intern(info.name());
            graph.values[v.index()].info = Some(info.clone());
            graph.inputs.push(v);
        }
        for t in &g.initializer {
            let name = t.name();
            if name.is_empty() {
                return Err(Error::tensor("", "an initializer has no name"));
            }
            // IR < 4: initializers may also be listed as graph inputs.
            let listed_as_input = g.input.iter().any(|i| i.name() == name);
            if !listed_as_input {
                define(name, "an initializer".into())?;
            } else if graph
                .find_value(name)
                .is_some_and(|v| graph.values[v.index()].init.is_some())
            {
                return Err(Error::DuplicateDefinition {
                    value: name.to_string(),
                    first: "an initializer".into(),
                    second: "an initializer".into(),
                });
            }
            let tensor = tensor_from_proto(t)?;
            let v = graph.intern(name);
            graph.values[v.index()].init = Some(Initializer {
                tensor,
                extra: extra_of(t),
            });
            graph.initializer_order.push(v);
        }
        for s in &g.sparse_initializer {
            let name = s.values.as_ref().map(|t| t.name()).unwrap_or_default();
            define(name, "a sparse initializer".into())?;
            let v = graph.intern(name);
            graph.values[v.index()].sparse = true;
        }
        for (i, n) in g.node.iter().enumerate() {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                define(o, format!("node '{}' ({})", node_label(n, i), n.op_type()))?;
            }
        }

        // Nodes: resolve inputs now that every definition is known.
        for (i, np) in g.node.iter().enumerate() {
            let label = node_label(np, i);
            let resolve = |graph: &mut Graph, name: &str| -> Result<ValueId> {
                if !defined_by.contains_key(name) {
                    return Err(Error::UndefinedInput {
                        node: label.clone(),
                        op: np.op_type().to_string(),
                        input: name.to_string(),
                    });
                }
                Ok(graph.intern(name))
            };
            let mut inputs = Vec::with_capacity(np.input.len());
            for name in &np.input {
                inputs.push(if name.is_empty() {
                    None
                } else {
                    Some(resolve(&mut graph, name)?)
                });
            }
            let mut implicit = Vec::new();
            for name in subgraph_free_names(&np.attribute) {
                implicit.push(resolve(&mut graph, &name)?);
            }
            let outputs: Vec<Option<ValueId>> = np
                .output
                .iter()
                .map(|o| (!o.is_empty()).then(|| graph.intern(o)))
                .collect();
            let node = Node::from_proto(np, label, inputs, outputs, implicit);
            graph.insert_node(node);
        }

        for info in &g.output {
            if !defined_by.contains_key(info.name()) {
                return Err(Error::UndefinedOutput {
                    output: info.name().to_string(),
                });
            }
            let v = graph.intern(info.name());
            graph.outputs.push((v, info.clone()));
        }
        for info in &g.value_info {
            if let Some(v) = graph.find_value(info.name()) {
                if graph.values[v.index()].info.is_none() {
                    graph.values[v.index()].info = Some(info.clone());
                }
                if !graph.value_info_order.contains(&v) {
                    graph.value_info_order.push(v);
                }
            }
        }
        graph.topo_order()?;
        Ok(graph)
    }

    fn intern(&mut self, name: &str) -> ValueId {
        if let Some(&v) = self.by_name.get(name) {
            return v;
        }
        let v = ValueId(self.values.len() as u32);
        self.values.push(Value {
            name: name.to_string(),
            info: None,
            producer: None,
            consumers: Vec::new(),
            init: None,
            sparse: false,
        });
        self.by_name.insert(name.to_string(), v);
        v
    }

    // ----- mutation ------------------------------------------------------

    /// A fresh value named `base` (or `base_1`, `base_2`, … if taken).
    pub fn new_value(&mut self, base: &str) -> ValueId {
        let name = super::unique_name(base, |n| self.by_name.contains_key(n));
        self.intern(&name)
    }

    /// A new initializer value holding `tensor`.
    pub fn add_initializer(&mut self, base: &str, tensor: Tensor) -> ValueId {
        let v = self.new_value(base);
        self.values[v.index()].init = Some(Initializer {
            tensor,
            extra: None,
        });
        self.initializer_order.push(v);
        v
    }

    /// Replaces the constant held by initializer `v`.
    pub fn set_initializer(&mut self, v: ValueId, tensor: Tensor) {
        let value = &mut self.values[v.index()];
        match &mut value.init {
            Some(init) => init.tensor = tensor,
            None => {
                value.init = Some(Initializer {
                    tensor,
                    extra: None,
                });
                self.initializer_order.push(v);
            }
        }
    }

    /// Drops the initializer of `v` (the value must have no consumers).
    pub fn remove_initializer(&mut self, v: ValueId) {
        self.values[v.index()].init = None;
        self.initializer_order.retain(|&x| x != v);
        self.inputs.retain(|&x| x != v);
    }

    /// Stops listing initializers as graph inputs (IR < 4 required the
    /// listing; from IR 4 an initializer in the inputs is an overridable
    /// default). Returns how many inputs were dropped.
    pub fn unlist_initializer_inputs(&mut self) -> usize {
        let before = self.inputs.len();
        let values = &self.values;
        self.inputs.retain(|v| values[v.index()].init.is_none());
        before - self.inputs.len()
    }

    /// Adds `node`, wiring its producer/consumer entries.
    pub fn insert_node(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        for (slot, v) in node.inputs.iter().enumerate() {
            if let Some(v) = v {
                self.values[v.index()].consumers.push((id, slot));
            }
        }
        for v in &node.implicit_inputs {
            self.values[v.index()].consumers.push((id, IMPLICIT_SLOT));
        }
        for (slot, v) in node.outputs.iter().enumerate() {
            if let Some(v) = v {
                self.values[v.index()].producer = Some((id, slot));
            }
        }
        self.nodes.push(Some(node));
        id
    }

    /// Removes node `n`; its outputs become undefined.
    pub fn remove_node(&mut self, n: NodeId) -> Option<Node> {
        let node = self.nodes.get_mut(n.index())?.take()?;
        for v in node
            .inputs
            .iter()
            .flatten()
            .chain(node.implicit_inputs.iter())
        {
            self.values[v.index()].consumers.retain(|&(c, _)| c != n);
        }
        for v in node.outputs.iter().flatten() {
            if self.values[v.index()].producer.map(|p| p.0) == Some(n) {
                self.values[v.index()].producer = None;
            }
        }
        Some(node)
    }

    /// Points input `slot` of node `n` at `v` (or at nothing).
    pub fn set_input(&mut self, n: NodeId, slot: usize, v: Option<ValueId>) {
        let Some(node) = self.nodes.get_mut(n.index()).and_then(Option::as_mut) else {
            return;
        };
        if slot >= node.inputs.len() {
            node.inputs.resize(slot + 1, None);
        }
        let old = std::mem::replace(&mut node.inputs[slot], v);
        if let Some(old) = old {
            self.values[old.index()]
                .consumers
                .retain(|&u| u != (n, slot));
        }
        if let Some(v) = v {
            self.values[v.index()].consumers.push((n, slot));
        }
    }

    /// Makes output `slot` of node `n` produce `v` (the old value loses its
    /// producer).
    pub fn set_output(&mut self, n: NodeId, slot: usize, v: Option<ValueId>) {
        let Some(node) = self.nodes.get_mut(n.index()).and_then(Option::as_mut) else {
            return;
        };
        if slot >= node.outputs.len() {
            node.outputs.resize(slot + 1, None);
        }
        let old = std::mem::replace(&mut node.outputs[slot], v);
        if let Some(old) = old {
            if self.values[old.index()].producer == Some((n, slot)) {
                self.values[old.index()].producer = None;
            }
        }
        if let Some(v) = v {
            self.values[v.index()].producer = Some((n, slot));
        }
    }

    /// Removes node `n`, whose output 0 equals its input `input_slot`, and
    /// reconnects the graph around it. Names that users see are kept: when
    /// the input is produced by a node and used only here, that node takes
    /// over the output value (and its name); otherwise the output's uses
    /// move to the input, which needs an output that is neither a graph
    /// output nor read by a subgraph. Other outputs of `n` must be unused.
    /// Returns whether the node was removed.
    pub fn splice_out(&mut self, n: NodeId, input_slot: usize) -> bool {
        let Some(node) = self.node(n) else {
            return false;
        };
        let (Some(x), Some(y)) = (node.input(input_slot), node.output(0)) else {
            return false;
        };
        let extra_outputs_used = node
            .outputs
            .iter()
            .skip(1)
            .flatten()
            .any(|&o| !self.values[o.index()].consumers.is_empty() || self.is_graph_output(o));
        if extra_outputs_used || x == y {
            return false;
        }
        let xv = &self.values[x.index()];
        let only_here = xv.consumers.iter().all(|&(c, _)| c == n) && !self.is_graph_output(x);
        if let (Some((p, k)), true) = (xv.producer, only_here) {
            if self.node(p).is_some() {
                self.remove_node(n);
                self.set_output(p, k, Some(y));
                return true;
            }
        }
        if self.is_graph_output(y) || self.has_implicit_uses(y) {
            return false;
        }
        self.remove_node(n);
        self.replace_uses(y, x);
        true
    }

    /// Redirects every explicit use of `old` (node inputs, graph outputs) to
    /// `new`. Implicit uses by subgraphs refer to `old` by name and cannot be
    /// redirected: callers check [`Graph::has_implicit_uses`] first.
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) {
        let uses: Vec<Use> = self.values[old.index()]
            .consumers
            .iter()
            .copied()
            .filter(|&(_, s)| s != IMPLICIT_SLOT)
            .collect();
        for (n, slot) in uses {
            self.set_input(n, slot, Some(new));
        }
        for (o, _) in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Sets the declared type/shape of `v` (written to value_info).
    pub fn set_value_info(&mut self, v: ValueId, info: ValueInfoProto) {
        self.values[v.index()].info = Some(info);
        if !self.value_info_order.contains(&v) {
            self.value_info_order.push(v);
        }
    }

    /// Renames value `v` (keeping graph-output names stable is the caller's
    /// business). Fails if the name is taken.
    pub fn rename_value(&mut self, v: ValueId, name: &str) -> Result<()> {
        if let Some(&other) = self.by_name.get(name) {
            if other != v && self.is_defined(other) {
                return Err(Error::DuplicateDefinition {
                    value: name.to_string(),
                    first: "an existing value".into(),
                    second: "a rename".into(),
                });
            }
        }
        let old = std::mem::replace(&mut self.values[v.index()].name, name.to_string());
        self.by_name.remove(&old);
        self.by_name.insert(name.to_string(), v);
        Ok(())
    }

    /// Whether `v` has a definition (producer, initializer, input, sparse).
    pub fn is_defined(&self, v: ValueId) -> bool {
        let val = &self.values[v.index()];
        val.producer.is_some() || val.init.is_some() || val.sparse || self.inputs.contains(&v)
    }

    // ----- order and checks ----------------------------------------------

    /// Live nodes in a stable topological order (lowest arena index first
    /// among ready nodes). A cycle is an error naming a node on it.
    pub fn topo_order(&self) -> Result<Vec<NodeId>> {
        let n = self.nodes.len();
        let mut indegree = vec![0usize; n];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (id, node) in self.nodes() {
            let mut deps = BTreeSet::new();
            for v in node
                .inputs
                .iter()
                .flatten()
                .chain(node.implicit_inputs.iter())
            {
                if let Some((p, _)) = self.values[v.index()].producer {
                    if self.node(p).is_some() {
                        deps.insert(p.index());
                    }
                }
            }
            indegree[id.index()] = deps.len();
            for d in deps {
                dependents[d].push(id.index());
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> = self
            .nodes()
            .filter(|(id, _)| indegree[id.index()] == 0)
            .map(|(id, _)| Reverse(id.index()))
            .collect();
        let mut order = Vec::with_capacity(n);
        while let Some(Reverse(i)) = ready.pop() {
            order.push(NodeId(i as u32));
            for &d in &dependents[i] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.push(Reverse(d));
                }
            }
        }
        if order.len() != self.node_count() {
            let done: HashSet<NodeId> = order.iter().copied().collect();
            let stuck = self
                .nodes()
                .find(|(id, _)| !done.contains(id) && self.on_cycle(*id, &done));
            let (_, node) = stuck
                .or_else(|| self.nodes().find(|(id, _)| !done.contains(id)))
                .ok_or_else(|| Error::Invalid("topological sort lost a node".into()))?;
            return Err(Error::Cycle {
                node: node.name.clone(),
                op: node.op_type.clone(),
            });
        }
        Ok(order)
    }

    /// Whether `start` can reach itself through unsorted nodes.
    fn on_cycle(&self, start: NodeId, done: &HashSet<NodeId>) -> bool {
        let mut stack = vec![start];
        let mut seen = HashSet::new();
        while let Some(n) = stack.pop() {
            let Some(node) = self.node(n) else { continue };
            for v in node.outputs.iter().flatten() {
                for &(c, _) in &self.values[v.index()].consumers {
                    if c == start {
                        return true;
                    }
                    if !done.contains(&c) && seen.insert(c) {
                        stack.push(c);
                    }
                }
            }
        }
        false
    }

    /// Checks the invariants passes must keep: every input defined, producer
    /// maps consistent, graph outputs defined, no cycle.
    pub fn validate(&self) -> Result<()> {
        for (id, node) in self.nodes() {
            for (slot, v) in node.inputs.iter().enumerate() {
                let Some(v) = v else { continue };
                if !self.is_defined(*v) {
                    return Err(Error::UndefinedInput {
                        node: node.name.clone(),
                        op: node.op_type.clone(),
                        input: self.value_name(*v).to_string(),
                    });
                }
                if !self.values[v.index()].consumers.contains(&(id, slot)) {
                    return Err(Error::Invalid(format!(
                        "internal: consumer map lost node '{}' input {slot}",
                        node.name
                    )));
                }
            }
            for v in node.outputs.iter().flatten() {
                if self.values[v.index()].producer.map(|p| p.0) != Some(id) {
                    return Err(Error::Invalid(format!(
                        "internal: value '{}' of node '{}' has another producer",
                        self.value_name(*v),
                        node.name
                    )));
                }
            }
        }
        for (v, _) in &self.outputs {
            if !self.is_defined(*v) {
                return Err(Error::UndefinedOutput {
                    output: self.value_name(*v).to_string(),
                });
            }
        }
        self.topo_order().map(|_| ())
    }

    // ----- writing back ----------------------------------------------------

    /// The `GraphProto` of this graph: nodes in topological order, every
    /// field the IR does not model kept as loaded.
    pub fn to_proto(&self) -> Result<GraphProto> {
        let order = self.topo_order()?;
        let name_of = |v: &Option<ValueId>| {
            v.map(|v| self.value_name(v).to_string())
                .unwrap_or_default()
        };
        let node = order
            .iter()
            .filter_map(|&id| self.node(id))
            .map(|n| {
                n.to_proto(
                    n.inputs.iter().map(name_of).collect(),
                    n.outputs.iter().map(name_of).collect(),
                )
            })
            .collect();
        let initializer = self
            .initializers()
            .map(|(v, init)| {
                let mut t = tensor_to_proto(self.value_name(v), &init.tensor);
                if let Some(extra) = &init.extra {
                    t.doc_string = extra.doc_string.clone();
                    t.metadata_props = extra.metadata_props.clone();
                }
                t
            })
            .collect();
        let with_name = |v: ValueId, info: &ValueInfoProto| ValueInfoProto {
            name: Some(self.value_name(v).to_string()),
            ..info.clone()
        };
        let input = self
            .inputs
            .iter()
            .map(|&v| {
                let info = self.values[v.index()].info.clone().unwrap_or_default();
                with_name(v, &info)
            })
            .collect();
        let output = self
            .outputs
            .iter()
            .map(|(v, info)| with_name(*v, info))
            .collect();
        let io: HashSet<ValueId> = self
            .inputs
            .iter()
            .copied()
            .chain(self.outputs.iter().map(|(v, _)| *v))
            .collect();
        let value_info = self
            .value_info_order
            .iter()
            .filter(|&&v| !io.contains(&v) && self.is_defined(v))
            .filter_map(|&v| {
                self.values[v.index()]
                    .info
                    .as_ref()
                    .map(|i| with_name(v, i))
            })
            .collect();
        Ok(GraphProto {
            node,
            initializer,
            sparse_initializer: self.sparse_initializers.clone(),
            input,
            output,
            value_info,
            ..self.rest.clone()
        })
    }
}

fn extra_of(t: &TensorProto) -> Option<Box<TensorProto>> {
    (t.doc_string.is_some() || !t.metadata_props.is_empty()).then(|| {
        Box::new(TensorProto {
            doc_string: t.doc_string.clone(),
            metadata_props: t.metadata_props.clone(),
            ..Default::default()
        })
    })
}

/// The label used for a node in messages: its name, or `#index` when unnamed.
fn node_label(n: &NodeProto, index: usize) -> String {
    if n.name().is_empty() {
        format!("#{index}")
    } else {
        n.name().to_string()
    }
}

/// Names that subgraphs in `attrs` read from the enclosing scope.
pub fn subgraph_free_names(attrs: &[AttributeProto]) -> BTreeSet<String> {
    let mut free = BTreeSet::new();
    for a in attrs {
        for g in a.g.iter().chain(a.graphs.iter()) {
            free.extend(graph_free_names(g));
        }
    }
    free
}

fn graph_free_names(g: &GraphProto) -> BTreeSet<String> {
    let mut defined: HashSet<&str> = HashSet::new();
    defined.extend(g.input.iter().map(|i| i.name()));
    defined.extend(g.initializer.iter().map(|t| t.name()));
    defined.extend(
        g.sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref().map(|t| t.name())),
    );
    for n in &g.node {
        defined.extend(n.output.iter().map(String::as_str));
    }
    let mut free = BTreeSet::new();
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(i.as_str()) {
                free.insert(i.clone());
            }
        }
        for inner in subgraph_free_names(&n.attribute) {
            if !defined.contains(inner.as_str()) {
                free.insert(inner);
            }
        }
    }
    for o in &g.output {
        if !defined.contains(o.name()) {
            free.insert(o.name().to_string());
        }
    }
    free
}
