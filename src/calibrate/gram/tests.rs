//! Gram matrices against direct receptive fields, and every Conv geometry
//! against tract: with no bias, the energy `Σ_o y[m, o]²` of output
//! channel `m` at the positions summed is `w_mᵀ H w_m`.

use super::*;
use crate::calibrate::samples::InMemory;
use crate::ir::node::attr;
use crate::ir::Tensor;
use crate::onnx::proto::AttributeProto;
use crate::passes::testutil::{model, node, uniform};

fn lcg(n: usize, seed: u64) -> Vec<f32> {
    uniform(n, seed)
        .into_iter()
        .map(|u| u as f32 - 0.5)
        .collect()
}

/// `y = Conv(x, w)` with `attrs`, and its probe.
fn conv(input: &[usize], w_dims: &[usize], attrs: Vec<AttributeProto>) -> (Model, GramProbe) {
    let dims: Vec<i64> = input.iter().map(|&d| d as i64).collect();
    let n: usize = w_dims.iter().product();
    let m = model(
        13,
        &[("x", &dims)],
        &["y"],
        vec![node("Conv", "conv", &["x", "w"], &["y"], attrs)],
        vec![("w", Tensor::from_f32(w_dims.to_vec(), &lcg(n, 5)))],
    );
    let (_, c) = m.graph.nodes().next().unwrap();
    let p = GramProbe::fields(c, "x", w_dims).unwrap().unwrap();
    (m, p)
}

/// The (mirrored) Gram matrices of one sample.
fn gram_of(p: &GramProbe, x: &[f32], dims: &[usize], relu: bool) -> Vec<f64> {
    let mut acc = Vec::new();
    p.add(x, dims, relu, &mut acc).unwrap();
    assert_eq!(acc.len(), p.entries());
    let mut h: Vec<f64> = acc.into_iter().map(f64::from).collect();
    p.mirror(&mut h);
    h
}

/// Checks `Σ_o y[m, o]²` (tract, at every `step`-th position of each
/// spatial dimension) against `w_mᵀ H w_m` for every output channel.
fn check_against_tract(input: &[usize], w_dims: &[usize], attrs: Vec<AttributeProto>, step: usize) {
    let (m, p) = conv(input, w_dims, attrs);
    let x = lcg(input.iter().product(), 21);
    let h = gram_of(&p, &x, input, false);
    let sample = vec![("x".to_string(), Tensor::from_f32(input.to_vec(), &x))];
    let y = crate::tract::Runner::new(
        &m.to_proto().unwrap(),
        &[("x".to_string(), crate::ir::DataType::Float, input.to_vec())],
        None,
    )
    .unwrap()
    .run(&sample)
    .unwrap()
    .remove(0);
    let (ydims, y) = (y.dims().to_vec(), y.to_f32_vec().unwrap());
    let w = m
        .graph
        .initializer(m.graph.find_value("w").unwrap())
        .unwrap()
        .to_f32_vec()
        .unwrap();
    let (outs, k, groups) = (w_dims[0], p.columns(), p.groups());
    let spatial = &ydims[2..];
    let plane: usize = spatial.iter().product();
    for o in 0..outs {
        let gi = o / (outs / groups);
        let mut energy = 0f64;
        for b in 0..ydims[0] {
            for pos in 0..plane {
                // Multi-index of `pos`, kept when every index is a multiple of `step`.
                let (mut rest, mut kept) = (pos, true);
                for &d in spatial.iter().rev() {
                    kept &= (rest % d) % step == 0;
                    rest /= d;
                }
                if kept {
                    energy += f64::from(y[(b * outs + o) * plane + pos]).powi(2);
                }
            }
        }
        let wm = &w[o * k..(o + 1) * k];
        let hg = &h[gi * k * k..(gi + 1) * k * k];
        let quad: f64 = (0..k)
            .map(|i| {
                (0..k)
                    .map(|j| f64::from(wm[i]) * hg[i * k + j] * f64::from(wm[j]))
                    .sum::<f64>()
            })
            .sum();
        assert!(
            (quad - energy).abs() <= 1e-4 * energy.max(1.0),
            "channel {o}: wᵀHw {quad} vs Σy² {energy} ({input:?}, {w_dims:?})"
        );
    }
}

#[test]
fn conv_fields_agree_with_tract_on_every_geometry() {
    // Explicit pads, strides, dilations, groups.
    check_against_tract(
        &[2, 4, 9, 9],
        &[6, 2, 3, 3],
        vec![
            attr::int("group", 2),
            attr::ints("pads", &[1, 2, 1, 0]),
            attr::ints("strides", &[2, 1]),
            attr::ints("dilations", &[1, 2]),
        ],
        1,
    );
    for pad in ["SAME_UPPER", "SAME_LOWER", "VALID"] {
        check_against_tract(
            &[1, 3, 8, 7],
            &[4, 3, 2, 3],
            vec![
                attr::string("auto_pad", pad),
                attr::ints("strides", &[2, 2]),
            ],
            1,
        );
    }
    // Depthwise, 1-D and 3-D.
    check_against_tract(
        &[1, 5, 10, 10],
        &[5, 1, 3, 3],
        vec![attr::int("group", 5), attr::ints("pads", &[1, 1, 1, 1])],
        1,
    );
    check_against_tract(
        &[2, 3, 17],
        &[4, 3, 5],
        vec![attr::ints("pads", &[2, 1])],
        1,
    );
    check_against_tract(
        &[1, 2, 5, 6, 4],
        &[3, 2, 3, 3, 2],
        vec![attr::ints("pads", &[1, 0, 1, 1, 1, 0])],
        1,
    );
}

/// Past MAX_POSITIONS positions per image, every `step`-th position of
/// each dimension: 64×64 outputs are summed at the 32×32 even ones, SAME
/// padding included.
#[test]
fn large_outputs_are_summed_at_a_step() {
    check_against_tract(
        &[1, 3, 64, 64],
        &[4, 3, 3, 3],
        vec![attr::ints("pads", &[1, 1, 1, 1])],
        2,
    );
    check_against_tract(
        &[2, 2, 65, 66],
        &[3, 2, 3, 3],
        vec![attr::string("auto_pad", "SAME_UPPER")],
        3,
    );
}

#[test]
fn rows_sum_every_row_and_read_a_relu_through_its_input() {
    let p = GramProbe::rows("fc", "x", 2);
    let x = [1.0, -2.0, 3.0, 4.0, -1.0, 0.5];
    assert_eq!(
        gram_of(&p, &x, &[1, 3, 2], false),
        vec![11.0, 9.5, 9.5, 20.25]
    );
    assert_eq!(
        gram_of(&p, &x, &[3, 2], true),
        vec![10.0, 12.0, 12.0, 16.25]
    );
    // Upper triangles, added to what is there.
    let mut acc = Vec::new();
    p.add(&x, &[3, 2], false, &mut acc).unwrap();
    p.add(&x, &[3, 2], false, &mut acc).unwrap();
    assert_eq!(acc, vec![22.0, 19.0, 0.0, 40.5]);
    let err = p.add(&x, &[2, 3], false, &mut acc).unwrap_err().to_string();
    assert!(err.contains("'fc'") && err.contains("rows of 2"), "{err}");
}

/// The Gram matrices summed in a calibration pass equal the per-sample
/// sums, whatever the number of workers.
#[test]
fn measured_over_samples_in_any_number_of_workers() {
    let (m, p) = conv(
        &[1, 2, 6, 6],
        &[3, 2, 3, 3],
        vec![attr::ints("pads", &[1, 1, 1, 1])],
    );
    let samples: Vec<_> = (0..5)
        .map(|i| {
            let x = lcg(72, 40 + i);
            vec![("x".to_string(), Tensor::from_f32(vec![1, 2, 6, 6], &x))]
        })
        .collect();
    let mut want = vec![0f64; p.entries()];
    for s in &samples {
        let g = gram_of(&p, &s[0].1.to_f32_vec().unwrap(), &[1, 2, 6, 6], false);
        want.iter_mut().zip(g).for_each(|(w, g)| *w += g);
    }
    let source = InMemory(samples);
    for jobs in [1, 2, 3] {
        let got = measure(&m, vec![p.clone()], &source, jobs).unwrap();
        let got = &got["conv"];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4 * w.abs().max(1.0), "{g} vs {w}");
        }
    }
}
