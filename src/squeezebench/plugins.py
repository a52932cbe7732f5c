"""Plug-ins: modules that register their own tasks, measures, methods or runtimes when imported.

A run names them (``--plugin MODULE``, repeatable, or ``SQUEEZEBENCH_PLUGINS=mod1,mod2``); the runner passes them
to every worker, which imports them before it looks anything up, so a task or measure defined outside squeezebench
is built and measured exactly like a built-in one.
"""

from __future__ import annotations

import importlib
import os

from squeezebench.errors import SqueezebenchError

ENV = "SQUEEZEBENCH_PLUGINS"


def plugin_names(names: list[str] | None = None) -> list[str]:
    """The given modules plus those in $SQUEEZEBENCH_PLUGINS, in order, each once."""
    listed = list(names or []) + [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    return list(dict.fromkeys(listed))


def load_plugins(names: list[str] | None = None) -> list[str]:
    loaded = plugin_names(names)
    for name in loaded:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise SqueezebenchError(f"cannot import plug-in {name!r}: {exc}; check --plugin / ${ENV}") from None
    return loaded
