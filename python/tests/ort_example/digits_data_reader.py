"""The calibration reader of onnxruntime's static-quantization example
(quantization/image_classification/cpu: a CalibrationDataReader over a
folder of images, preprocessed with Pillow to the model's input shape),
for the digit classifier in testdata/digits instead of ResNet-50: the same
class shape, the same protocol (get_next until None, rewind)."""

import os

import numpy
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader
from PIL import Image


def _preprocess_images(images_folder: str, height: int, width: int, size_limit=0):
    """Each image file of the folder (sorted; the first size_limit when
    given) as a float32 [1, 1, H, W] array in [0, 1]."""
    names = sorted(os.listdir(images_folder))
    if size_limit > 0:
        names = names[:size_limit]
    arrays = []
    for name in names:
        img = Image.open(os.path.join(images_folder, name)).convert("L").resize((width, height))
        pixels = numpy.asarray(img, dtype=numpy.float32) / 255.0
        arrays.append(pixels[numpy.newaxis, numpy.newaxis])
    return arrays


class DigitsDataReader(CalibrationDataReader):
    def __init__(self, calibration_image_folder: str, model_path: str):
        self.enum_data = None
        # The input's name and shape, from an inference session.
        session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        (_, _, height, width) = session.get_inputs()[0].shape
        self.data_list = _preprocess_images(calibration_image_folder, height, width)
        self.input_name = session.get_inputs()[0].name
        self.datasize = len(self.data_list)

    def get_next(self):
        if self.enum_data is None:
            self.enum_data = iter([{self.input_name: data} for data in self.data_list])
        return next(self.enum_data, None)

    def rewind(self):
        self.enum_data = None
