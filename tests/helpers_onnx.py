"""Hostile ONNX files for tests: a valid tiny graph whose initializer points at external data of our choosing."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def onnx_with_external(path: Path, location: str, length: int = 64) -> Path:
    """Y = X @ W, with W (4x4 float32) stored as external data at ``location`` (relative to ``path``'s folder
    or absolute), so loading it reads ``length`` bytes from there."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))  # saved as is: the external reference is not followed here
    return path
