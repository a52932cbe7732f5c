"""The search state, ``--out/search.json``: the settings, the original's results per rung, every trial (its
parameters and their distributions, i.e. the sampler's history, its chain, status and results per rung) and the time
spent. Written atomically after every step, so a killed search resumes where it stopped."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from squeezebench.atomic import atomic_write_json
from squeezebench.errors import SqueezebenchError

STATE_VERSION = 1
# trial statuses: running (started, not finished: run again on resume), failed, screened (measured on the screening
# rung only), full (measured on the full protocol too)
STATUSES = ("running", "failed", "screened", "full")


@dataclass
class RungResult:
    status: str
    objectives: dict[str, float] = field(default_factory=dict)
    quality: Optional[float] = None
    drop: Optional[float] = None
    low: Optional[float] = None
    high: Optional[float] = None
    allowed: Optional[float] = None
    within: bool = False
    plausible: bool = False
    record_keys: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Trial:
    number: int
    chain: str
    params: dict[str, Any]
    distributions: dict[str, str]  # optuna.distributions.distribution_to_json per parameter
    status: str = "running"
    screen: Optional[RungResult] = None
    full: Optional[RungResult] = None
    note: str = ""


@dataclass
class State:
    settings: dict[str, Any]
    trials: list[Trial] = field(default_factory=list)
    baseline: dict[str, RungResult] = field(default_factory=dict)
    elapsed_s: float = 0.0
    version: int = STATE_VERSION

    def save(self, path: Path) -> None:
        atomic_write_json(Path(path), asdict(self))

    @classmethod
    def load(cls, path: Path, settings: dict[str, Any]) -> "State":
        """The state in ``path`` (its settings must be these), or a new one when there is none."""
        path = Path(path)
        settings = json.loads(json.dumps(settings, default=str))  # compared as they read back (tuples -> lists)
        if not path.is_file():
            return cls(settings)
        try:
            raw = json.loads(path.read_text())
            state = cls(settings=raw["settings"], elapsed_s=float(raw.get("elapsed_s", 0.0)),
                        version=int(raw.get("version", STATE_VERSION)),
                        baseline={k: RungResult(**v) for k, v in raw.get("baseline", {}).items()},
                        trials=[_trial(t) for t in raw.get("trials", [])])
        except (ValueError, KeyError, TypeError) as exc:
            raise SqueezebenchError(f"{path} is not a search state squeezebench can read ({type(exc).__name__}); "
                                    "move it away to start a new search") from None
        if state.version > STATE_VERSION:
            raise SqueezebenchError(f"{path} was written by a newer squeezebench (state v{state.version}); upgrade")
        if _comparable(state.settings) != _comparable(settings):
            a, b = _comparable(settings), _comparable(state.settings)
            changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise SqueezebenchError(f"{path} holds a search with other settings ({', '.join(changed)}); resume it "
                                    "with the same options, or use another --out")
        return state


def _trial(raw: dict[str, Any]) -> Trial:
    raw = dict(raw)
    for rung in ("screen", "full"):
        if raw.get(rung) is not None:
            raw[rung] = RungResult(**raw[rung])
    if raw.get("status") not in STATUSES:
        raise ValueError(f"unknown trial status {raw.get('status')!r}")
    return Trial(**raw)


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as compared on resume: protocol fields left at None are dropped, so a state written before a new
    optional protocol field existed (e.g. --calibration-dataset) resumes as long as the new field is not given."""
    protocol = settings.get("protocol")
    if not isinstance(protocol, dict):
        return settings
    return {**settings, "protocol": {k: v for k, v in protocol.items() if v is not None}}
