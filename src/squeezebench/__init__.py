"""squeezebench: what did each compression method really buy, and what did it cost?

``import squeezebench as sb`` is cheap (no torch): ``sb.run``, ``sb.load`` and ``sb.pareto`` (squeezebench.api) are
imported on first use; ``__all__`` and ``dir(sb)`` list them so that completion and ``help`` find them.
"""

__version__ = "0.1.0"

_API = ("run", "load", "pareto")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from squeezebench import api

        return getattr(api, name)
    raise AttributeError(f"module 'squeezebench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
