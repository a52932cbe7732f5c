"""ModelBundle: a loaded model plus what is needed to feed it and to rebuild it from an artifact."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch


@dataclass
class ImagePreprocessing:
    """Resize the short side, centre-crop, normalise (the usual ImageNet evaluation)."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class ModelBundle:
    """A model ready for a task.

    module: the torch model (a transformers PreTrainedModel or a user's nn.Module).
    source: how it was obtained ({"kind": "hf"|"gguf"|"python", ...}), recorded and used to rebuild it.
    tokenizer: for text tasks. image: preprocessing for image tasks. processor: a feature extractor or processor
    (audio, multimodal), whatever object the task's preprocessing loads and saves.
    newly_initialized: parameter names the loader created at random (e.g. an untrained classifier head).
    label_names: the model's output classes when it has named ones.
    """

    module: torch.nn.Module
    source: dict[str, Any]
    tokenizer: Any = None
    image: Optional[ImagePreprocessing] = None
    processor: Any = None
    newly_initialized: list[str] = field(default_factory=list)
    label_names: Optional[list[str]] = None
    processor: Any = None  # speech: the model's feature extractor + tokenizer (transformers processor)

    @property
    def is_transformers(self) -> bool:
        return hasattr(self.module, "config") and hasattr(self.module.config, "to_dict")

    def parameter_count(self) -> int:
        return count_parameters(self.module)


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameter elements, each shared tensor counted once."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())
