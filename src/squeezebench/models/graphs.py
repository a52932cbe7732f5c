"""The graphs of a model that an export writes, when a task needs more than ``task.wrap(bundle)``.

Most tasks run one forward (``wrap(bundle)``: forward(**inputs) -> one tensor) and the exports write that one
graph as before. A task whose model runs as several graphs (an encoder-decoder generating text: the encoder once,
the decoder once per token) defines ``export_graphs(bundle) -> Optional[ExportGraphs]``; the ONNX and OpenVINO
exports then write one file per graph, quantise each, and the runtimes load them all and generate with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch


@dataclass
class GraphSpec:
    """One graph to export.

    module: forward(*tensors in ``input_names`` order) -> a tensor or a tuple in ``output_names`` order.
    dynamic_axes: {input or output name: {axis: label}}, as torch.onnx.export takes them.
    examples: task input dicts (what ``task.calibration_inputs`` gives) -> this graph's input dicts; used as the
        export's example, for the check against PyTorch and as calibration data for static int8 quantisation.
    """

    module: torch.nn.Module
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    examples: Callable[[list[dict[str, torch.Tensor]]], list[dict[str, torch.Tensor]]]


@dataclass
class ExportGraphs:
    """The graphs in export order, plus what the runtimes need to generate with them (JSON, in the manifest)."""

    graphs: dict[str, GraphSpec]
    generation: Optional[dict[str, Any]] = None
    notes: list[str] = field(default_factory=list)


def export_graphs_of(task: Any, bundle: Any) -> Optional[ExportGraphs]:
    """The task's graphs for ``bundle``, or None: one graph, ``task.wrap(bundle)`` (every task without the hook)."""
    return task.export_graphs(bundle)
