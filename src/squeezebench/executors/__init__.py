"""Executors: where the worker phases of a run are carried out (``local`` by default, ``ray`` on a cluster).

Importing this package registers the built-in executors; ``ray`` is imported only when used (optional extra).
"""

from squeezebench.executors.base import EXECUTORS, Executor, Sink, Slot, Unit, make_executor, register_executor  # noqa: F401
from squeezebench.executors import local, ray  # noqa: F401  (registration; ray's module imports Ray lazily)
