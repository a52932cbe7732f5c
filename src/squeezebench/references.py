"""The original's outputs (``references/*.npz``) that later variants are compared with (agreement metrics).

Written atomically, so a killed run leaves the previous file or none; read defensively, so a truncated or
otherwise unreadable file costs the agreement metrics of the variants measured against it (flagged) instead
of failing each of them, and makes the next run measure the original again (:func:`readable`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from squeezebench.atomic import atomic_write


def save(path: Path, arrays: dict[str, Any]) -> None:
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    atomic_write(Path(path), lambda fh: np.savez(fh, **payload))


def load(path: Path) -> tuple[Optional[dict[str, np.ndarray]], Optional[str]]:
    """(arrays, None), or (None, why) when the file is missing or cannot be read whole."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}, None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        return None, (f"agreement with the original not computed: its reference {path.name} is unreadable "
                      f"({type(exc).__name__}; truncated?); it is rewritten when the original is measured again")


def readable(path: Path) -> bool:
    arrays, problem = load(path)
    return arrays is not None and problem is None
