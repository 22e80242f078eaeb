//! Plans of one model for several input shapes.
//!
//! A plan for the first input shapes a [`Planner`] sees is built as
//! [`Runner::new`] builds it (nothing more is kept: a model of one input
//! shape pays nothing, in time or memory). From the second shapes on, plans
//! start from the model read once and kept ([`Parsed`]), and the extents
//! that differ between the first and the second shapes become symbols: one
//! plan then serves every shape that differs from the first only there (a
//! text model's sentence lengths), where each length was a plan of its own,
//! built by tract's optimizer on one thread. Extents that changed together
//! (the ids' and the mask's length) are one symbol, so tract still knows
//! they are equal. Shapes that do not fit the symbolic plan, and models
//! tract cannot plan with symbols (an error or a panic there), get a plan
//! of their concrete shapes, as before; so does a run the symbolic plan
//! fails ([`Concrete`]).

use super::{guarded, Level, Parsed, Runner};
use crate::error::{Error, Result};
use crate::ir::tensor::DataType;
use crate::onnx::proto::ModelProto;
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::{DatumType, IntoTValue, SymbolValues, TDim, TValue, Tensor as TTensor};

/// Input types and shapes, in order.
type Shapes = Vec<(DataType, Vec<usize>)>;

/// One extent of an input in a plan: a size, or the `k`-th symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Extent {
    Fixed(usize),
    Sym(usize),
}

/// What a symbolic plan takes: per input, its type and extents.
type Pattern = Vec<(DataType, Vec<Extent>)>;

/// A symbolic plan exposing `outputs`, or `None` when tract could not make
/// one (shapes that fit `pattern` then get concrete plans).
struct Symbolic {
    outputs: Option<Vec<String>>,
    pattern: Pattern,
    runner: Option<Runner>,
}

/// Concrete plans for the runs a symbolic plan fails (tract may plan a
/// model with symbols and still find, running it, a size it cannot take):
/// built from the model read once, one per shape, kept.
pub(super) struct Concrete {
    parsed: Arc<(Parsed, Level)>,
    outputs: Option<Vec<String>>,
    plans: Mutex<Vec<(Shapes, Runner)>>,
}

impl std::fmt::Debug for Concrete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Concrete({:?}, {} plans)",
            self.outputs,
            self.plans.lock().map_or(0, |p| p.len())
        )
    }
}

impl Concrete {
    /// The plan for inputs of these types and shapes.
    pub(super) fn plan(&self, inputs: &[(String, DataType, Vec<usize>)]) -> Result<Runner> {
        let shapes: Shapes = inputs.iter().map(|(_, t, d)| (*t, d.clone())).collect();
        let mut plans = self
            .plans
            .lock()
            .map_err(|_| Error::Invalid("the concrete plans' lock is poisoned".into()))?;
        if let Some((_, r)) = plans.iter().find(|(s, _)| *s == shapes) {
            return Ok(r.clone());
        }
        let (model, level) = &*self.parsed;
        let r = guarded("building a plan", || {
            Runner::plan(model.0.clone(), inputs, self.outputs.as_deref(), *level)
        })?;
        plans.push((shapes, r.clone()));
        Ok(r)
    }
}

/// A plan output of sizes (a Shape's) with the run's symbols put in: a
/// symbolic plan folds such a value to expressions of its symbols.
pub(super) fn concrete(t: TValue, values: &SymbolValues) -> Result<TValue> {
    if t.datum_type() != DatumType::TDim {
        return Ok(t);
    }
    let plain = t
        .try_as_plain_ram()
        .map_err(|e| Error::tract("reading a shape tensor", e))?;
    let dims = plain
        .as_slice::<TDim>()
        .map_err(|e| Error::tract("reading a shape tensor", e))?;
    let v: Vec<i64> = dims
        .iter()
        .map(|d| d.eval(values).to_i64())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::tract("a shape tensor with a symbol left", e))?;
    TTensor::from_shape(t.shape(), &v)
        .map(IntoTValue::into_tvalue)
        .map_err(|e| Error::tract("building a shape tensor", e))
}

/// Plans of one model for several input shapes (see the module doc).
#[derive(Default)]
pub struct Planner {
    parsed: Mutex<Option<Arc<(Parsed, Level)>>>,
    first: Mutex<Option<Shapes>>,
    symbolic: Mutex<Vec<Symbolic>>,
}

/// The extents of `now` that differ from `first`'s as symbols, one per
/// distinct pair of sizes; `None` when the types or ranks differ, or
/// nothing does.
fn pattern(first: &Shapes, now: &Shapes) -> Option<Pattern> {
    if first.len() != now.len() {
        return None;
    }
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let mut out = Vec::with_capacity(now.len());
    for ((t0, d0), (t1, d1)) in first.iter().zip(now) {
        if t0 != t1 || d0.len() != d1.len() {
            return None;
        }
        let mut extents = Vec::with_capacity(d0.len());
        for (&a, &b) in d0.iter().zip(d1) {
            extents.push(if a == b {
                Extent::Fixed(a)
            } else {
                let k = match pairs.iter().position(|&p| p == (a, b)) {
                    Some(k) => k,
                    None => {
                        pairs.push((a, b));
                        pairs.len() - 1
                    }
                };
                Extent::Sym(k)
            });
        }
        out.push((*t0, extents));
    }
    (!pairs.is_empty()).then_some(out)
}

/// Whether `shapes` fit `pattern`: the same types and fixed sizes, one
/// size for each symbol.
fn fits(pattern: &Pattern, shapes: &Shapes) -> bool {
    if pattern.len() != shapes.len() {
        return false;
    }
    let mut sizes: Vec<Option<usize>> = Vec::new();
    for ((t, extents), (t2, dims)) in pattern.iter().zip(shapes) {
        if t != t2 || extents.len() != dims.len() {
            return false;
        }
        for (e, &v) in extents.iter().zip(dims) {
            match *e {
                Extent::Fixed(f) if f != v => return false,
                Extent::Fixed(_) => {}
                Extent::Sym(k) => {
                    if sizes.len() <= k {
                        sizes.resize(k + 1, None);
                    }
                    match sizes[k] {
                        Some(s) if s != v => return false,
                        Some(_) => {}
                        None => sizes[k] = Some(v),
                    }
                }
            }
        }
    }
    true
}

impl Planner {
    pub fn new() -> Self {
        Self::default()
    }

    /// A plan of the model `proto` gives (asked for only when needed)
    /// with inputs of these types and shapes, exposing `outputs`. A panic
    /// in tract on a kept model builds again from the proto, which names
    /// the node at fault.
    pub fn plan<'a>(
        &self,
        proto: impl Fn() -> Result<std::borrow::Cow<'a, ModelProto>>,
        inputs: &[(String, DataType, Vec<usize>)],
        outputs: Option<&[String]>,
    ) -> Result<Runner> {
        let shapes: Shapes = inputs.iter().map(|(_, t, d)| (*t, d.clone())).collect();
        let first = match self.first.lock() {
            Ok(mut f) => f.get_or_insert_with(|| shapes.clone()).clone(),
            Err(_) => shapes.clone(),
        };
        if first == shapes {
            return Runner::new(&*proto()?, inputs, outputs);
        }
        let parsed = match self.parsed(&proto, inputs, outputs)? {
            Ok(p) => p,
            Err(runner) => return Ok(runner),
        };
        if let Some(r) = self.symbolic(&parsed, (&first, &shapes), inputs, outputs) {
            return Ok(r);
        }
        let (model, level) = &*parsed;
        match guarded("building a plan", || {
            Runner::plan(model.0.clone(), inputs, outputs, *level)
        }) {
            Err(Error::TractPanic { .. }) => Runner::new(&*proto()?, inputs, outputs),
            other => other,
        }
    }

    /// The model read once, or (for a model tract cannot read) the plan
    /// [`Runner::new`] makes, which fails naming the node at fault.
    #[allow(clippy::type_complexity)]
    fn parsed<'a>(
        &self,
        proto: &impl Fn() -> Result<std::borrow::Cow<'a, ModelProto>>,
        inputs: &[(String, DataType, Vec<usize>)],
        outputs: Option<&[String]>,
    ) -> Result<std::result::Result<Arc<(Parsed, Level)>, Runner>> {
        if let Some(p) = self.parsed.lock().ok().and_then(|p| p.clone()) {
            return Ok(Ok(p));
        }
        let model = proto()?;
        let Ok(read) = Parsed::new(&model) else {
            return Runner::new(&model, inputs, outputs).map(Err);
        };
        let p = Arc::new((read, Level::for_model(&model)));
        if let Ok(mut slot) = self.parsed.lock() {
            *slot = Some(p.clone());
        }
        Ok(Ok(p))
    }

    /// The symbolic plan `shapes` fit (built from the first and these
    /// shapes when there is none yet for `outputs`), if tract made one.
    fn symbolic(
        &self,
        parsed: &Arc<(Parsed, Level)>,
        (first, shapes): (&Shapes, &Shapes),
        inputs: &[(String, DataType, Vec<usize>)],
        outputs: Option<&[String]>,
    ) -> Option<Runner> {
        let wanted = outputs.map(<[String]>::to_vec);
        // Held while a plan is built: the other workers wait for it rather
        // than build plans of their own shapes.
        let mut kept = self.symbolic.lock().ok()?;
        if let Some(s) = kept.iter().find(|s| s.outputs == wanted) {
            return s.runner.clone().filter(|_| fits(&s.pattern, shapes));
        }
        let pattern = pattern(first, shapes)?;
        let named: Vec<(String, DataType, Vec<Extent>)> = inputs
            .iter()
            .zip(&pattern)
            .map(|((n, _, _), (t, e))| (n.clone(), *t, e.clone()))
            .collect();
        let (model, level) = &**parsed;
        let concrete = Arc::new(Concrete {
            parsed: parsed.clone(),
            outputs: wanted.clone(),
            plans: Mutex::new(Vec::new()),
        });
        let runner = guarded("building a plan with symbolic input sizes", || {
            Runner::plan_extents(model.0.clone(), &named, outputs, *level)
        })
        .ok()
        .map(|r| r.with_concrete(concrete));
        kept.push(Symbolic {
            outputs: wanted,
            pattern,
            runner: runner.clone(),
        });
        runner
    }
}

#[cfg(test)]
mod tests {
    use super::super::Runner;
    use super::{fits, pattern, Extent, Planner};
    use crate::ir::tensor::{DataType, Tensor};
    use crate::passes::testutil::{model, node, uniform};
    use std::borrow::Cow;

    /// A plan the planner builds for each shape of a variable-length input
    /// (the model read once from the second shape on) gives what a plan
    /// built from the proto gives, and the read model is kept only then.
    #[test]
    fn planned_shapes_run_as_plans_built_from_the_proto() {
        let w: Vec<f32> = uniform(4 * 3, 5).iter().map(|&v| v as f32).collect();
        let m = model(
            13,
            &[("x", &[1, 2, 4])],
            &["y"],
            vec![
                node("MatMul", "mm", &["x", "w"], &["h"], vec![]),
                node("Tanh", "t", &["h"], &["y"], vec![]),
            ],
            vec![("w", Tensor::from_f32(vec![4, 3], &w))],
        );
        let proto = m.to_proto().unwrap();
        let planner = Planner::new();
        for (k, n) in [2usize, 5, 2, 9].into_iter().enumerate() {
            let inputs = [("x".to_string(), DataType::Float, vec![1, n, 4])];
            let planned = planner
                .plan(|| Ok(Cow::Borrowed(&proto)), &inputs, None)
                .unwrap();
            let fresh = Runner::new(&proto, &inputs, None).unwrap();
            let xs: Vec<f32> = uniform(n * 4, k as u64).iter().map(|&v| v as f32).collect();
            let x = [("x".to_string(), Tensor::from_f32(vec![1, n, 4], &xs))];
            let (a, b) = (planned.run(&x).unwrap(), fresh.run(&x).unwrap());
            assert_eq!(a[0].dims(), [1, n, 3]);
            assert_eq!(a[0].raw(), b[0].raw(), "length {n}");
            let kept = planner.parsed.lock().unwrap().is_some();
            assert_eq!(kept, k > 0, "after length {n}");
        }
    }

    /// A symbolic plan serves every length after the first, and a Shape
    /// it folds to an expression of its symbol comes out as the run's
    /// sizes; a shape of another rank gets a concrete plan.
    #[test]
    fn one_symbolic_plan_serves_every_length() {
        let m = model(
            13,
            &[("x", &[1, 2, 4])],
            &["s", "y"],
            vec![
                node("Shape", "sh", &["x"], &["s"], vec![]),
                node("Relu", "r", &["x"], &["y"], vec![]),
            ],
            vec![],
        );
        let proto = m.to_proto().unwrap();
        let planner = Planner::new();
        for n in [2usize, 5, 9, 5] {
            let inputs = [("x".to_string(), DataType::Float, vec![1, n, 4])];
            let runner = planner
                .plan(|| Ok(Cow::Borrowed(&proto)), &inputs, None)
                .unwrap();
            let xs: Vec<f32> = (0..n * 4).map(|i| i as f32 - 3.0).collect();
            let x = [("x".to_string(), Tensor::from_f32(vec![1, n, 4], &xs))];
            let out = runner.run(&x).unwrap();
            assert_eq!(out[0].to_i64_vec().unwrap(), [1, n as i64, 4], "length {n}");
            let relu: Vec<f32> = xs.iter().map(|v| v.max(0.0)).collect();
            assert_eq!(out[1].to_f32_vec().unwrap(), relu);
        }
        let kept = planner.symbolic.lock().unwrap();
        assert_eq!(kept.len(), 1);
        assert!(kept[0].runner.is_some());
        assert_eq!(
            kept[0].pattern[0].1,
            [Extent::Fixed(1), Extent::Sym(0), Extent::Fixed(4)]
        );
    }

    /// A run a symbolic plan fails runs a plan of its own shapes instead
    /// (here the symbolic plan is swapped for one that cannot take the
    /// length), with the outputs a fresh plan gives.
    #[test]
    fn a_run_the_symbolic_plan_fails_gets_a_concrete_plan() {
        let w: Vec<f32> = uniform(4 * 3, 5).iter().map(|&v| v as f32).collect();
        let m = model(
            13,
            &[("x", &[1, 2, 4])],
            &["y"],
            vec![node("MatMul", "mm", &["x", "w"], &["y"], vec![])],
            vec![("w", Tensor::from_f32(vec![4, 3], &w))],
        );
        let proto = m.to_proto().unwrap();
        let planner = Planner::new();
        let shape = |n: usize| [("x".to_string(), DataType::Float, vec![1, n, 4])];
        let plan = |n: usize| {
            planner
                .plan(|| Ok(Cow::Borrowed(&proto)), &shape(n), None)
                .unwrap()
        };
        let narrow = plan(2);
        let symbolic = plan(5);
        assert!(!symbolic.symbols.is_empty() && symbolic.concrete.is_some());
        let broken = Runner {
            plan: narrow.plan.clone(),
            ..symbolic.clone()
        };
        let xs: Vec<f32> = uniform(7 * 4, 3).iter().map(|&v| v as f32).collect();
        let x = [("x".to_string(), Tensor::from_f32(vec![1, 7, 4], &xs))];
        assert!(narrow.run(&x).is_err());
        let fresh = Runner::new(&proto, &shape(7), None)
            .unwrap()
            .run(&x)
            .unwrap();
        assert_eq!(broken.run(&x).unwrap()[0].raw(), fresh[0].raw());
        assert_eq!(symbolic.run(&x).unwrap()[0].raw(), fresh[0].raw());
    }

    /// Extents that change together are one symbol; a shape fits when its
    /// fixed sizes match and each symbol takes one size.
    #[test]
    fn extents_that_differ_become_symbols() {
        let i64s = |d: &[usize]| (DataType::Int64, d.to_vec());
        let first = vec![i64s(&[1, 17]), i64s(&[1, 17]), i64s(&[1, 3])];
        let now = vec![i64s(&[1, 9]), i64s(&[1, 9]), i64s(&[1, 3])];
        let p = pattern(&first, &now).unwrap();
        assert_eq!(p[0].1, [Extent::Fixed(1), Extent::Sym(0)]);
        assert_eq!(p[1].1, [Extent::Fixed(1), Extent::Sym(0)]);
        assert_eq!(p[2].1, [Extent::Fixed(1), Extent::Fixed(3)]);
        assert!(fits(
            &p,
            &vec![i64s(&[1, 30]), i64s(&[1, 30]), i64s(&[1, 3])]
        ));
        assert!(!fits(
            &p,
            &vec![i64s(&[1, 30]), i64s(&[1, 29]), i64s(&[1, 3])]
        ));
        assert!(!fits(
            &p,
            &vec![i64s(&[2, 30]), i64s(&[2, 30]), i64s(&[1, 3])]
        ));
        assert!(!fits(&p, &vec![i64s(&[1, 30]), i64s(&[1, 30])]));
        // Another type or rank, or nothing that differs: no pattern.
        let f32s = vec![(DataType::Float, vec![1, 9]), i64s(&[1, 9]), i64s(&[1, 3])];
        assert!(pattern(&first, &f32s).is_none());
        assert!(pattern(&first, &first).is_none());
    }
}
