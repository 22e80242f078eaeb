//! The layers whose input Gram matrix GPTQ measures, and how
//! ([`crate::calibrate::gram`] sums them from the layer's input).
//!
//! [`gram_probes`] lists, for the calibration pass, every layer GPTQ may
//! round (a Conv, Gemm or MatMul whose weight is a float initializer it
//! alone reads; the plan, which needs the ranges, is not known yet), up
//! to a budget of entries, so the samples are run once for both; GPTQ then
//! measures only the layers left out (`round_weights`' passes).

use super::{Layout, MAX_COLUMNS};
use crate::calibrate::gram::GramProbe;
use crate::error::Result;
use crate::ir::{Graph, Model, Node, NodeId, Tensor, ValueId};

/// Where a layer's Gram matrix comes from: its input and weight geometry.
#[derive(Clone, Debug)]
pub(super) struct GramShape {
    pub id: NodeId,
    pub input: ValueId,
    pub layout: Layout,
    pub rows: usize,
    /// Per group (Conv `group`; 1 otherwise).
    pub columns: usize,
    pub groups: usize,
    pub dims: Vec<usize>,
}

impl GramShape {
    /// Entries of its `H` (all groups).
    pub fn entries(&self) -> usize {
        self.groups * self.columns * self.columns
    }
}

/// The Gram geometry of Conv/Gemm/MatMul `n` (input `x`, weight `wv` =
/// `wt`): `None` when it has none (another op, a Conv weight of rank < 3),
/// `Err(reason)` when GPTQ leaves it to nearest rounding whatever the plan.
pub(super) fn gram_shape(
    g: &Graph,
    id: NodeId,
    n: &Node,
    x: ValueId,
    wv: ValueId,
    wt: &Tensor,
) -> Result<Option<std::result::Result<GramShape, String>>> {
    if !matches!(n.op_type.as_str(), "Conv" | "Gemm" | "MatMul") {
        return Ok(None);
    }
    if g.value(wv).consumers().len() != 1 || g.has_implicit_uses(wv) {
        return Ok(Some(Err("its weight is shared".into())));
    }
    let dims = wt.dims().to_vec();
    let trans_b = n.is("Gemm") && n.get_int("transB")?.unwrap_or(0) != 0;
    if n.is("Gemm") && n.get_int("transA")?.unwrap_or(0) != 0 {
        return Ok(Some(Err("Gemm with transA".into())));
    }
    let (layout, rows, columns, groups) = match n.op_type.as_str() {
        "Conv" => {
            let groups = n.get_int("group")?.unwrap_or(1).max(1) as usize;
            let per: usize = dims.iter().skip(1).product();
            if dims.len() < 3 || !dims[0].is_multiple_of(groups) {
                return Ok(None);
            }
            (Layout::RowsFirst, dims[0], per, groups)
        }
        _ if dims.len() != 2 => return Ok(Some(Err("its weight is not 2-D".into()))),
        _ if trans_b => (Layout::RowsFirst, dims[0], dims[1], 1),
        _ => (Layout::ColumnsFirst, dims[1], dims[0], 1),
    };
    if columns > MAX_COLUMNS {
        return Ok(Some(Err(format!(
            "{columns} inputs per output channel (more than {MAX_COLUMNS})"
        ))));
    }
    Ok(Some(Ok(GramShape {
        id,
        input: x,
        layout,
        rows,
        columns,
        groups,
        dims,
    })))
}

/// The Gram probe of layer `t` of `g` (`None` when it has none).
pub(super) fn probe_of(g: &Graph, t: &GramShape) -> Result<Option<GramProbe>> {
    let Some(n) = g.node(t.id) else {
        return Ok(None);
    };
    let input = g.value_name(t.input);
    if n.is("Conv") {
        GramProbe::fields(n, input, &t.dims)
    } else {
        Ok(Some(GramProbe::rows(&n.name, input, t.columns)))
    }
}

/// The Gram probes of every layer of `fp32` GPTQ may round: in node order
/// those whose entries fit in `budget` (each summed in f32 per block of
/// samples in calibration), then the others (whose inputs calibration
/// keeps, [`crate::calibrate::gram::KeptInputs`]).
pub fn gram_probes(fp32: &Model, budget: usize) -> Result<(Vec<GramProbe>, Vec<GramProbe>)> {
    let g = &fp32.graph;
    let (mut out, mut rest) = (Vec::new(), Vec::new());
    let mut used = 0;
    for (id, n) in g.nodes() {
        let (Some(x), Some(wv)) = (n.input(0), n.input(1)) else {
            continue;
        };
        let Some(wt) = g.initializer(wv) else {
            continue;
        };
        if !n.domain.is_empty()
            || g.initializer(x).is_some()
            || wt.dtype() != crate::ir::DataType::Float
        {
            continue;
        }
        if let Some(Ok(shape)) = gram_shape(g, id, n, x, wv, wt)? {
            if let Some(p) = probe_of(g, &shape)? {
                if used + shape.entries() > budget {
                    rest.push(p);
                } else {
                    used += shape.entries();
                    out.push(p);
                }
            }
        }
    }
    Ok((out, rest))
}
