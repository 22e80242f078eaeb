#!/usr/bin/env python3
"""How far a model's outputs move when its inputs move by float rounding.

    .venv/bin/python tools/bench/stability.py MODEL SAMPLES [--runtime ort] [--eps 1e-6] [--n 8]

SAMPLES: a folder of .npz files (one sample each, the model's input names).
Runs MODEL on each sample and on the sample with every float input
multiplied by (1 + eps * N(0, 1)), and prints the SQNR of the moved
outputs against the unmoved ones over all samples. A float model moves by
about as much as its inputs (~100 dB at eps 1e-6). A quantized model is a
step function: an input that sits near a rounding tie flips one level,
and a network that amplifies such flips moves far. That is also how much
two runtimes whose float arithmetic differs in the last bit can disagree
on it (tract and onnxruntime on the PaddleOCR recognizer: docs/benchmarks.md,
session 30).
"""

import argparse
import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runtimes  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("samples", help="folder of .npz samples")
    ap.add_argument("--runtime", default="ort", choices=runtimes.RUNTIMES)
    ap.add_argument("--eps", type=float, default=1e-6, help="relative size of the input perturbation")
    ap.add_argument("--n", type=int, default=8, help="samples used")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.samples, "*.npz")))[: args.n]
    if not files:
        sys.exit(f"{args.samples}: no .npz samples")
    sess = runtimes.open_session(args.runtime, args.model)
    rng = np.random.default_rng(0)
    signal = noise = 0.0
    for f in files:
        feed = dict(np.load(f))
        moved = {k: (v * (1 + args.eps * rng.standard_normal(v.shape))).astype(v.dtype)
                 if np.issubdtype(v.dtype, np.floating) else v for k, v in feed.items()}
        for a, b in zip(sess.run(feed), sess.run(moved)):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            if np.issubdtype(np.asarray(a).dtype, np.floating):
                signal += float((a ** 2).sum())
                noise += float(((a - b) ** 2).sum())
    db = float("inf") if noise == 0 else 10 * np.log10(signal / noise)
    print(f"{os.path.basename(args.model)} in {args.runtime}: inputs moved by {args.eps:g} (relative), "
          f"outputs by {db:.1f} dB SQNR over {len(files)} samples")


if __name__ == "__main__":
    main()
