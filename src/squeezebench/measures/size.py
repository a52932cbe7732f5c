"""Weights size: the bytes of the files a variant was saved to, and bits per weight."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def files_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def size_record(weight_files: list[Path], all_files: list[Path], parameters: int, root: Path) -> dict[str, Any]:
    weights = files_bytes(weight_files)
    return {
        "weights_bytes": weights,
        "weights_mb": weights / 1e6,
        "artifact_bytes": files_bytes(all_files),
        "weight_files": [str(p.relative_to(root)) for p in weight_files],
        "parameters": parameters,
        "bits_per_weight": (weights * 8 / parameters) if parameters else None,
        "unit": "MB (10^6 bytes)",
    }
