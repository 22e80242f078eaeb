#!/usr/bin/env python3
"""Graded damage on one real export: how the gate's metric of its
output moves with the task, to choose the gate's minimums
(docs/defaults.md, "The gate per output kind").

    .venv/bin/python tools/bench/gate_sweep.py rec p2o.Add.19 2,5,10,20 [--onnxq target/release/onnxq]

Quantizes the model (`rec`, `det`, `cls` or `orient` of
tools/crosscheck_gate.py) on 32 calibration samples of its kind with
`--no-auto --force`: the default settings, calibrated on 32 Gaussian noise
samples instead (validated on the calibration samples), per-tensor weights, without GPTQ / equalization / bias
correction (and both), and with TENSOR's range clamped to +-R for each R
given; prints per variant the task held or not (crosscheck_gate.task) and
the output's gate metrics from the report.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
import crosscheck_gate as cg  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=sorted(cg.SHAPES))
    ap.add_argument("tensor", help="activation whose range is clamped")
    ap.add_argument("ranges", help="comma-separated half-widths R")
    ap.add_argument("--onnxq", default=os.path.join(ROOT, "target", "release", "onnxq"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "gate-sweep"))
    ap.add_argument("--holdout", type=int, default=48, help="held-out samples the task is measured on")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    path = cg.all_models()[args.kind]
    chars = None
    if args.kind == "rec":
        meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        chars = meta["character"].splitlines() + [" "]
    hold = cg.samples(args.kind, args.holdout, seed=2)
    fp = cg.run(path, hold)
    calib = os.path.join(args.work, f"{args.kind}_calib")
    cg.save(calib, cg.samples(args.kind, 32, seed=1))
    plain = ["--gptq", "false", "--bias-correction", "false", "--equalize", "false"]
    noise = os.path.join(args.work, f"{args.kind}_noise")
    rng = np.random.default_rng(3)
    cg.save(noise, [({"x": rng.standard_normal(cg.SHAPES[args.kind]).astype(np.float32)}, None) for _ in range(32)])
    variants = [("default", []), ("noise-calibrated", ["--calib", noise, "--validate", calib]),
                ("per-tensor", ["--per-tensor"]), ("plain", plain),
                ("plain-per-tensor", ["--per-tensor"] + plain)]
    for r in (float(x) for x in args.ranges.split(",")):
        recipe = os.path.join(args.work, f"{args.kind}_clamp_{r}.yaml")
        with open(recipe, "w") as f:
            f.write(f"tensors:\n  {json.dumps(args.tensor)}: {{range: [{-r}, {r}]}}\n")
        variants.append((f"clamp +-{r}", ["--config", recipe]))
    for name, extra in variants:
        out = os.path.join(args.work, f"{args.kind}.{name.replace(' ', '_')}.onnx")
        cmd = [args.onnxq, "quantize", path, "-o", out, "--force", "--no-auto",
               "--report", out + ".json"] + (["--calib", calib] if "--calib" not in extra else []) + extra
        subprocess.run(cmd, capture_output=True)
        with open(out + ".json") as f:
            o = json.load(f)["parity"]["outputs"][0]
        held, text, border = cg.task(args.kind, out, fp, hold, chars)
        gates = ", ".join(f"{c['metric']} {c['value']:.3f}" for c in o["gate"])
        seq = (o.get("positions") or {}).get("sequences")
        if seq:
            gates += f" (sequences: agreement {seq['agreement']:.3f}, equal {seq['equal']:.3f})"
        print(f"{name}: task {'held' if held else 'broken'}{' (borderline)' if border else ''} ({text}); {gates}; SQNR {o['sqnr_db']:.1f} dB", flush=True)


if __name__ == "__main__":
    sys.exit(main())
