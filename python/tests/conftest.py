"""Fixtures of the Python package's tests: the repository's testdata, and
the digit images (scikit-learn's bundled digits, split as
tools/make_testdata.py splits them) written as PNG files."""

import glob
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "testdata" / "digits"
# The `onnxq` command the wheel installed beside this interpreter.
ONNXQ = str(Path(sys.executable).parent / "onnxq")
sys.path.insert(0, str(Path(__file__).parent / "ort_example"))


@pytest.fixture(scope="session")
def cnn():
    return str(DIGITS / "cnn.onnx")


@pytest.fixture(scope="session")
def calib_dicts():
    """The 32 calibration samples of testdata/digits/cnn_calib as dicts."""
    files = sorted(glob.glob(str(DIGITS / "cnn_calib" / "*.npz")))
    assert len(files) == 32
    return [dict(np.load(f)) for f in files]


@pytest.fixture(scope="session")
def digit_images(tmp_path_factory):
    """(calibration folder, held-out folder, held-out labels): 64 training
    images and the 300 held-out ones as 8-bit grayscale PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.images))
    hold, train = order[:300], order[300:]
    base = tmp_path_factory.mktemp("digits")
    folders = []
    for name, idx in (("calibration", train[:64]), ("holdout", hold)):
        folder = base / name
        folder.mkdir()
        for k, i in enumerate(idx):
            pixels = np.round(d.images[i] * 255.0 / 16.0).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{k:04d}.png")
        folders.append(str(folder))
    return folders[0], folders[1], d.target[hold]


def outputs(model, inputs):
    """The model's first output on each input, in onnxruntime."""
    import onnxruntime

    s = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x})[0] for x in inputs])


@pytest.fixture
def out(tmp_path):
    return str(tmp_path / "model.int8.onnx")


def exists(path):
    return os.path.exists(path)
