"""What one variant is (model source, parsed method chain, device) and the job a worker receives for it.

The chain is parsed once, from the user's string, into method configs; jobs carry it as (name, params) links that
the worker turns back into the same configs without parsing text again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass(frozen=True)
class Variant:
    """One (model, method chain) to build; measured on each device of the run."""

    source: dict[str, Any]  # the model source record (models.sources.source_of)
    chain: tuple[Any, ...]  # MethodConfig instances, in order
    label: str  # the chain as shown in tables: names plus non-default parameters

    @property
    def is_original(self) -> bool:
        return self.label == "original"

    def links(self) -> list[dict[str, Any]]:
        return [c.link() for c in self.chain]

    @property
    def model_id(self) -> str:
        return str(self.source.get("id") or self.source.get("path") or self.source.get("target"))


@dataclass
class Job:
    """Everything one worker phase needs, written as JSON beside it (the worker runs in a fresh interpreter)."""

    source: dict[str, Any]
    task: str
    dataset: str
    dataset_options: dict[str, Any]
    protocol: dict[str, Any]
    method: str  # the variant's label
    chain: list[dict[str, Any]]  # (name, params) links
    device: str
    artifact_dir: str
    reference_path: str
    is_original: bool
    build_device: str = "cpu"
    plugins: list[str] = field(default_factory=list)  # modules the worker imports first (squeezebench.plugins)

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> "Job":
        return cls(**json.loads(Path(path).read_text()))

    @property
    def threads(self) -> Optional[int]:
        return self.protocol.get("threads")
