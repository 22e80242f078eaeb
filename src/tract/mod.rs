//! The bridge to tract, our FP32 reference engine.
//!
//! tract runs the float model for calibration, for constant folding of ops we
//! do not evaluate ourselves, for shape inference, and as the FP32 side of
//! every parity check. We always hand it our own encoded bytes
//! (`encode_to_vec` → `model_for_read`): external data is already resolved in
//! memory, and tract's older proto types never become our representation.
//!
//! [`Runner`] is a built, optimized plan with named inputs and outputs; it is
//! `Send + Sync`, so one plan serves many rayon workers.
//!
//! tract trusts its input and panics on some malformed graphs. Nodes are
//! checked against the ONNX schemas first (`ir::schema`); whatever still
//! panics inside tract comes back from [`guarded`] as an error naming the
//! stage, with the panic's message and place, instead of ending the process.

mod fold;
mod lrn;
mod planner;

use planner::Extent;
pub use planner::Planner;

use crate::error::{Error, Result};
use crate::ir::tensor::{DataType, Tensor};
use crate::onnx::proto::ModelProto;
use prost::bytes::Bytes;
use prost::Message;
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once};
use tract_onnx::prelude::{
    tvec, DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable,
    IntoTValue, Symbol, SymbolValues, TDim, TValue, Tensor as TTensor, TypedRunnableModel,
};

thread_local! {
    /// How many [`guarded`] calls this thread is inside.
    static GUARDED: Cell<usize> = const { Cell::new(0) };
    /// The message and place of the last panic caught on this thread.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that, inside [`guarded`],
/// records the panic instead of printing it; elsewhere the previous hook
/// runs as before.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) == 0 {
                return previous(info);
            }
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            // anyhow errors unwrapped inside tract carry a backtrace after
            // a blank line: the first line is the message.
            let message = message.lines().next().unwrap_or("").to_string();
            let place = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            CAUGHT.with(|c| *c.borrow_mut() = Some(format!("{message}{place}")));
        }));
    });
}

/// Runs `f`, a call into tract; a panic inside it becomes
/// [`Error::TractPanic`] with `context` and the panic's message and place.
pub fn guarded<T>(context: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_hook();
    GUARDED.with(|g| g.set(g.get() + 1));
    let out = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    out.unwrap_or_else(|_| {
        let caught = CAUGHT.with(|c| c.borrow_mut().take());
        Err(Error::TractPanic {
            context: context.to_string(),
            node: None,
            message: caught.unwrap_or_else(|| "(no message)".into()),
        })
    })
}

/// Like [`guarded`] for a call that reads a whole model (`attempt`): when
/// tract panics, the node at fault is found by bisection over prefixes of
/// the graph (nodes in file order, which `ir` writes topologically; each
/// prefix exposes its last node's outputs), and named in the error. Only
/// the error path pays for the search: about log2(nodes) more attempts.
pub fn guarded_model<T>(
    context: &str,
    model: &ModelProto,
    attempt: impl Fn(&ModelProto) -> Result<T>,
) -> Result<T> {
    match guarded(context, || attempt(model)) {
        Err(Error::TractPanic {
            context, message, ..
        }) => {
            let panics = |k: usize| {
                let prefix = graph_prefix(model, k);
                matches!(
                    guarded("", || attempt(&prefix).map(|_| ())),
                    Err(Error::TractPanic { .. })
                )
            };
            let n = model.graph.as_ref().map_or(0, |g| g.node.len());
            // The smallest prefix that panics, if the whole graph's panic
            // is one a prefix reproduces.
            let (mut lo, mut hi) = (1, n);
            let node = (n > 0 && panics(n)).then(|| {
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if panics(mid) {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                let g = model.graph.as_ref().map(|g| &g.node[lo - 1]);
                g.map(|p| {
                    let name = if p.name().is_empty() {
                        format!("#{}", lo - 1)
                    } else {
                        crate::error::printable(p.name()).into_owned()
                    };
                    format!("'{name}' ({})", p.op_type())
                })
            });
            Err(Error::TractPanic {
                context,
                node: node.flatten(),
                message,
            })
        }
        other => other,
    }
}

/// The model cut after its first `k` nodes, whose outputs are the outputs
/// of node `k - 1`.
fn graph_prefix(model: &ModelProto, k: usize) -> ModelProto {
    use crate::onnx::proto::ValueInfoProto;
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        g.node.truncate(k);
        g.output = g
            .node
            .last()
            .map(|n| {
                n.output
                    .iter()
                    .filter(|o| !o.is_empty())
                    .map(|o| ValueInfoProto {
                        name: Some(o.clone()),
                        ..Default::default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        g.value_info.clear();
    }
    m
}

/// tract's datum type for an ONNX element type.
pub fn datum_type(dt: DataType) -> Option<DatumType> {
    Some(match dt {
        DataType::Float => DatumType::F32,
        DataType::Double => DatumType::F64,
        DataType::Float16 => DatumType::F16,
        DataType::Int8 => DatumType::I8,
        DataType::Int16 => DatumType::I16,
        DataType::Int32 => DatumType::I32,
        DataType::Int64 => DatumType::I64,
        DataType::Uint8 => DatumType::U8,
        DataType::Uint16 => DatumType::U16,
        DataType::Uint32 => DatumType::U32,
        DataType::Uint64 => DatumType::U64,
        DataType::Bool => DatumType::Bool,
        _ => return None,
    })
}

/// The ONNX element type of a tract datum type.
pub fn data_type(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::F32 => DataType::Float,
        DatumType::F64 => DataType::Double,
        DatumType::F16 => DataType::Float16,
        DatumType::I8 | DatumType::QI8(_) => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 | DatumType::QI32(_) => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::U8 | DatumType::QU8(_) => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::Bool => DataType::Bool,
        _ => return None,
    })
}

/// Our tensor as a tract tensor (copies the payload).
pub fn to_tract(t: &Tensor) -> Result<TTensor> {
    let raw = t
        .raw()
        .ok_or_else(|| Error::tensor("", "string tensors are not passed to tract"))?;
    let shape = t.dims();
    if cfg!(target_endian = "big") {
        return Err(Error::Invalid("big-endian hosts are not supported".into()));
    }
    if t.dtype() == DataType::Bool {
        // tract's bool must be 0 or 1; ours may hold any non-zero byte.
        let bits: Vec<bool> = raw.iter().map(|&b| b != 0).collect();
        return TTensor::from_shape(shape, &bits)
            .map_err(|e| Error::tract("building an input tensor", e));
    }
    let dt = datum_type(t.dtype()).ok_or_else(|| {
        Error::tensor(
            "",
            format!("{} tensors are not supported by tract", t.dtype().name()),
        )
    })?;
    // SAFETY: our payload is the little-endian (= native, checked above)
    // layout of exactly `numel(shape)` elements of `dt` (`Tensor::from_raw`
    // checks the length), and every bit pattern is a valid number of these
    // types; tract copies it into an aligned buffer.
    let r = unsafe { TTensor::from_raw_dt(dt, shape, raw) };
    r.map_err(|e| Error::tract("building an input tensor", e))
}

/// A tract tensor as ours (copies the payload).
pub fn from_tract(t: &TTensor) -> Result<Tensor> {
    if t.datum_type() == DatumType::TDim {
        // Shape-like results: tract keeps them symbolic; they are concrete here.
        let cast = t
            .cast_to_dt(DatumType::I64)
            .map_err(|e| Error::tract("converting a shape tensor", e))?;
        return from_tract(&cast);
    }
    let dtype = data_type(t.datum_type()).ok_or_else(|| {
        Error::tensor(
            "",
            format!("tract produced an unsupported type {:?}", t.datum_type()),
        )
    })?;
    let raw = if cfg!(target_endian = "little") {
        Bytes::copy_from_slice(t.as_bytes())
    } else {
        return Err(Error::Invalid("big-endian hosts are not supported".into()));
    };
    Tensor::from_raw(dtype, t.shape().to_vec(), raw)
}

/// The elements of an f32 tensor of tract's, in place (`None` for any
/// other type or storage: [`from_tract`] converts those).
pub fn f32_view(t: &TTensor) -> Option<&[f32]> {
    if t.datum_type() == DatumType::F32 {
        t.as_plain_ram()?.as_slice::<f32>().ok()
    } else {
        None
    }
}

/// tract's ONNX front end, told to derive every shape from the inputs we
/// feed: declared `value_info` and output shapes (often symbolic, `N`) are
/// hints that would otherwise conflict with concrete input shapes.
pub fn framework() -> tract_onnx::Onnx {
    tract_onnx::onnx()
        .with_ignore_value_info(true)
        .with_ignore_output_shapes(true)
}

/// A concrete input: its name and the tensor to feed.
pub type NamedTensor = (String, Tensor);

/// How much tract optimizes a plan before running it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Decluttered and optimized: the fastest runs, the slowest build (tens
    /// of seconds for graphs of thousands of nodes).
    Optimized,
    /// Typed only: builds in a fraction of the time, runs slower; for large
    /// graphs run on a few samples (the range choice's augmented model).
    Typed,
}

impl Level {
    /// What [`Runner::new`] uses for `model`: optimized, unless the graph
    /// is past [`OPTIMIZE_MAX_NODES`].
    pub fn for_model(model: &ModelProto) -> Level {
        let nodes = model.graph.as_ref().map_or(0, |g| g.node.len());
        if nodes > OPTIMIZE_MAX_NODES {
            Level::Typed
        } else {
            Level::Optimized
        }
    }
}

/// The largest graph (in nodes) [`Runner::new`] hands to tract's optimizer.
/// Its passes grow faster than the node count (a chain of 1,000 MatMuls:
/// ~1.8 s a plan, of 2,000: ~10 s, of 10,000: hours); past this size plans
/// are typed only (10,000 MatMuls: 23.7 s for the whole quantize command).
pub const OPTIMIZE_MAX_NODES: usize = 2000;

/// A model as tract read it, before any input shape is set: what every
/// plan of it starts from. Reading encodes our proto and has tract decode
/// it and load its tensors, each a copy of the weights; a model planned
/// for many input shapes (a text model's sentence lengths: 11 shapes in
/// 32 sentences) is read once ([`Planner`]).
pub struct Parsed(InferenceModel);

impl Parsed {
    /// Reads `model` (a panic in tract becomes an error).
    pub fn new(model: &ModelProto) -> Result<Self> {
        guarded("loading the model", || Self::read(model))
    }

    fn read(model: &ModelProto) -> Result<Self> {
        // tract's LRN is slow: written out in elementwise ops (`lrn`);
        // constant weights' DequantizeLinear evaluated here (`fold`).
        let expanded = lrn::expand(model);
        let model = expanded.as_ref().unwrap_or(model);
        let folded = fold::dequantized_weights(model);
        let bytes = folded.as_ref().unwrap_or(model).encode_to_vec();
        let m = framework()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| Error::tract("loading the model", e))?;
        Ok(Parsed(m))
    }
}

/// A tract plan for input types and shapes, fixed or with symbolic sizes
/// ([`Planner`]).
#[derive(Debug, Clone)]
pub struct Runner {
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// A symbolic plan's symbols, each with the input and axis whose size
    /// it takes (empty for plans of fixed shapes).
    symbols: Arc<Vec<(Symbol, usize, usize)>>,
    /// A symbolic plan's way back: where a run fails, a plan of that run's
    /// own shapes ([`planner::Concrete`]).
    concrete: Option<Arc<planner::Concrete>>,
}

impl Runner {
    /// Builds an optimized plan for `model` (typed only past
    /// [`OPTIMIZE_MAX_NODES`]) with inputs of the given types and shapes,
    /// exposing `outputs` (tensor names; `None`: the graph's outputs).
    pub fn new(
        model: &ModelProto,
        inputs: &[(String, DataType, Vec<usize>)],
        outputs: Option<&[String]>,
    ) -> Result<Self> {
        Self::with_level(model, inputs, outputs, Level::for_model(model))
    }

    /// Like [`Runner::new`], at a chosen optimization level.
    pub fn with_level(
        model: &ModelProto,
        inputs: &[(String, DataType, Vec<usize>)],
        outputs: Option<&[String]>,
        level: Level,
    ) -> Result<Self> {
        let exposed = outputs;
        guarded_model("building a plan", model, |m| {
            // A prefix (see guarded_model) exposes its own outputs.
            let outputs = if std::ptr::eq(m, model) {
                exposed
            } else {
                None
            };
            Self::build(m, inputs, outputs, level)
        })
    }

    fn build(
        model: &ModelProto,
        inputs: &[(String, DataType, Vec<usize>)],
        outputs: Option<&[String]>,
        level: Level,
    ) -> Result<Self> {
        Self::plan(Parsed::read(model)?.0, inputs, outputs, level)
    }

    fn plan(
        m: InferenceModel,
        inputs: &[(String, DataType, Vec<usize>)],
        outputs: Option<&[String]>,
        level: Level,
    ) -> Result<Self> {
        let fixed: Vec<(String, DataType, Vec<Extent>)> = inputs
            .iter()
            .map(|(n, t, d)| (n.clone(), *t, d.iter().map(|&v| Extent::Fixed(v)).collect()))
            .collect();
        Self::plan_extents(m, &fixed, outputs, level)
    }

    /// [`Runner::plan`] with input extents that may be symbols (one plan
    /// for every size they take: [`Planner`]).
    fn plan_extents(
        mut m: InferenceModel,
        inputs: &[(String, DataType, Vec<Extent>)],
        outputs: Option<&[String]>,
        level: Level,
    ) -> Result<Self> {
        let mut names = Vec::new();
        let mut symbols: Vec<(Symbol, usize, usize)> = Vec::new();
        for (ix, outlet) in m
            .input_outlets()
            .map_err(|e| Error::tract("inputs", e))?
            .to_vec()
            .into_iter()
            .enumerate()
        {
            let name = m.node(outlet.node).name.clone();
            let (_, dt, shape) = inputs.iter().find(|(n, _, _)| *n == name).ok_or_else(|| {
                Error::Invalid(format!("no type and shape given for model input '{name}'"))
            })?;
            let datum = datum_type(*dt).ok_or_else(|| Error::UnsupportedDtype {
                tensor: name.clone(),
                code: dt.code(),
                reason: "tract cannot take this input type",
            })?;
            let mut dims: Vec<TDim> = Vec::with_capacity(shape.len());
            for (axis, e) in shape.iter().enumerate() {
                dims.push(match *e {
                    Extent::Fixed(v) => TDim::from(v),
                    Extent::Sym(k) => {
                        let sym = m.symbols.sym(&format!("onnxq_extent_{k}"));
                        if !symbols.iter().any(|(s, _, _)| *s == sym) {
                            symbols.push((sym.clone(), names.len(), axis));
                        }
                        TDim::from(sym)
                    }
                });
            }
            m.set_input_fact(ix, InferenceFact::dt_shape(datum, dims))
                .map_err(|e| Error::tract(format!("input '{name}'"), e))?;
            names.push(name);
        }
        if let Some(outs) = outputs {
            m.select_outputs_by_name(outs)
                .map_err(|e| Error::tract("selecting outputs", e))?;
        }
        let out_names: Vec<String> = match outputs {
            Some(o) => o.to_vec(),
            None => m
                .output_outlets()
                .map_err(|e| Error::tract("outputs", e))?
                .iter()
                .map(|o| {
                    m.outlet_label(*o)
                        .map(str::to_string)
                        .unwrap_or_else(|| m.node(o.node).name.clone())
                })
                .collect(),
        };
        let typed = m
            .into_typed()
            .map_err(|e| Error::tract("typing the model", e))?;
        let plan = match level {
            Level::Optimized => typed
                .into_optimized()
                .map_err(|e| Error::tract("optimizing the model", e))?,
            Level::Typed => typed,
        }
        .into_runnable()
        .map_err(|e| Error::tract("building the plan", e))?;
        Ok(Runner {
            plan,
            inputs: names,
            outputs: out_names,
            symbols: Arc::new(symbols),
            concrete: None,
        })
    }

    /// Input names, in the order [`Runner::run`] wants them.
    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }

    /// Output names, in the order [`Runner::run`] returns them.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Runs the plan on named inputs (any order), returning the outputs.
    pub fn run(&self, inputs: &[NamedTensor]) -> Result<Vec<Tensor>> {
        self.run_tract(inputs)?
            .iter()
            .map(|t| from_tract(t))
            .collect()
    }

    /// Like [`Runner::run`], but hands back tract's own tensors, for callers
    /// that only read them (calibration statistics) and need no copy.
    pub fn run_tract(&self, inputs: &[NamedTensor]) -> Result<Vec<TValue>> {
        self.run_with(|name| inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t))
    }

    /// Like [`Runner::run_tract`], each input found by name with `find`
    /// (for callers whose tensors are not in a list of their own).
    pub fn run_with<'a>(&self, find: impl Fn(&str) -> Option<&'a Tensor>) -> Result<Vec<TValue>> {
        let mut tv = tvec![];
        for name in &self.inputs {
            let t = find(name).ok_or_else(|| Error::Invalid(format!("missing input '{name}'")))?;
            let tt: TValue = to_tract(t)
                .map_err(|e| Error::tensor(name.clone(), e.to_string()))?
                .into_tvalue();
            tv.push(tt);
        }
        let Some(values) = self.symbol_values(&tv) else {
            let out = guarded("running the plan", || {
                self.plan.run(tv).map_err(|e| Error::tract("running", e))
            })?;
            return Ok(out.into_iter().collect());
        };
        let ran = guarded("running the plan", || {
            self.plan.run(tv).map_err(|e| Error::tract("running", e))
        })
        .and_then(|out| {
            out.into_iter()
                .map(|t| planner::concrete(t, &values))
                .collect()
        });
        match (ran, &self.concrete) {
            (Ok(out), _) => Ok(out),
            // tract planned the symbols but cannot run these sizes: a plan
            // of this run's shapes, as before symbolic plans.
            (Err(_), Some(c)) => {
                let mut shapes = Vec::with_capacity(self.inputs.len());
                for name in &self.inputs {
                    let t = find(name)
                        .ok_or_else(|| Error::Invalid(format!("missing input '{name}'")))?;
                    shapes.push((name.clone(), t.dtype(), t.dims().to_vec()));
                }
                c.plan(&shapes)?.run_with(find)
            }
            (Err(e), _) => Err(e),
        }
    }

    /// This symbolic plan with its way back to concrete plans.
    fn with_concrete(mut self, concrete: Arc<planner::Concrete>) -> Self {
        self.concrete = Some(concrete);
        self
    }

    /// What a symbolic plan's symbols are on these inputs.
    fn symbol_values(&self, inputs: &[TValue]) -> Option<SymbolValues> {
        if self.symbols.is_empty() {
            return None;
        }
        let mut values = SymbolValues::default();
        for (sym, input, axis) in self.symbols.iter() {
            if let Some(&d) = inputs.get(*input).and_then(|t| t.shape().get(*axis)) {
                values.set(sym, d as i64);
            }
        }
        Some(values)
    }
}

/// Evaluates one node on constant inputs with tract (a one-node model whose
/// inputs are initializers). Returns the node's outputs, in slot order, for
/// the slots that have a name.
pub fn eval_node(
    node: &crate::onnx::proto::NodeProto,
    inputs: &[NamedTensor],
    opset_import: &[crate::onnx::proto::OperatorSetIdProto],
) -> Result<Vec<Tensor>> {
    use crate::onnx::proto::{GraphProto, ValueInfoProto};
    let outputs: Vec<ValueInfoProto> = node
        .output
        .iter()
        .filter(|o| !o.is_empty())
        .map(|o| ValueInfoProto {
            name: Some(o.clone()),
            ..Default::default()
        })
        .collect();
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: opset_import.to_vec(),
        graph: Some(GraphProto {
            name: Some("fold".into()),
            node: vec![node.clone()],
            initializer: inputs
                .iter()
                .map(|(n, t)| crate::onnx::tensor::tensor_to_proto(n, t))
                .collect(),
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    };
    let runner = Runner::new(&model, &[], None)?;
    runner.run(&[])
}
