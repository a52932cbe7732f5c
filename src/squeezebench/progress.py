"""Progress of a run: a tqdm bar with the current phase and an ETA on a terminal, plain lines otherwise.

The runner calls ``progress(message)`` with a ``Step`` (a ``str`` that also carries the step number, the total and the
phase), so a plain callback still gets readable lines. On a terminal the bar counts finished (variant, device) steps;
its ETA is the mean time of the steps so far times the steps left, and the bar's text names the phase running now
(build: load, compress, save; measure: latency, memory, quality) with its own elapsed time.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Step(str):
    """A progress line that says where the run is: step ``index`` of ``total`` (1-based), in ``phase``
    ("build", "measure" or "done")."""

    index: int
    total: int
    phase: str

    def __new__(cls, text: str, index: int = 0, total: int = 0, phase: str = "") -> "Step":
        self = super().__new__(cls, text)
        self.index, self.total, self.phase = index, total, phase
        return self


class Progress:
    """Callable for ``Runner(progress=...)``; a context manager that closes the bar."""

    def __init__(self, stream: Optional[TextIO] = None, bar: Optional[bool] = None):
        self.stream = stream or sys.stderr
        self.bar_enabled = bar if bar is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = None
        self.phase_started = time.monotonic()

    def __call__(self, message: str) -> None:
        step = message if isinstance(message, Step) else None
        if not self.bar_enabled or step is None or not step.total:
            self._line(str(message))
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=step.total, file=self.stream, unit="variant", dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")
        self.phase_started = time.monotonic()
        if step.phase == "done":
            self.bar.write(str(message), file=self.stream)
            self.bar.update(max(0, step.index - self.bar.n))
        else:
            self.bar.set_description_str(f"{step.phase}", refresh=False)
            self.bar.set_postfix_str(str(message).split(": ", 1)[0], refresh=True)

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
