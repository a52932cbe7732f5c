"""Atomic file replacement: a reader sees the old file or the new one, never a half-written one. The one writer
every file squeezebench rewrites goes through (result files, worker results, README tables, reports, references).

The new content goes to a temporary file in the same folder (same file system), is flushed to disk, and
replaces the target with ``os.replace``; on any failure (a full disk, a signal) the temporary file is removed
and the old file is left as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional


def atomic_write(path: Path, write: Callable[[BinaryIO], None], mode: int = 0o644) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, then move it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """``path.write_text`` that keeps the old file (and its permissions) if writing fails midway."""
    path = Path(path)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    atomic_write(path, lambda fh: fh.write(text.encode(encoding)), mode)


def atomic_write_json(path: Path, payload: Any, indent: Optional[int] = 1,
                      default: Optional[Callable[[Any], Any]] = None) -> None:
    """``payload`` as JSON (``json.dumps(payload, indent=indent, default=default)``), written atomically."""
    text = json.dumps(payload, indent=indent, default=default)
    atomic_write(Path(path), lambda fh: fh.write(text.encode("utf-8")))
