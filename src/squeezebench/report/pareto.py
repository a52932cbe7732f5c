"""The Pareto front of quality against a cost (latency, size): the variants no other variant beats on both."""

from __future__ import annotations

from typing import Collection, Optional, Sequence


def dominates(a: tuple[float, float], b: tuple[float, float], higher_is_better: bool = True) -> bool:
    """``a`` = (cost, quality) dominates ``b``: it costs no more, is no worse, and is strictly better in one."""
    qa, qb = (a[1], b[1]) if higher_is_better else (-a[1], -b[1])
    return a[0] <= b[0] and qa >= qb and (a[0] < b[0] or qa > qb)


def front(points: Sequence[tuple[Optional[float], Optional[float]]], higher_is_better: bool = True,
          exclude: Collection[int] = ()) -> list[int]:
    """Indices of the points on the front, cheapest first. Lower cost is better; quality is better when higher
    (``higher_is_better``, from the metric) or lower (e.g. perplexity). Points with a missing value and the indices
    in ``exclude`` (variants whose quality collapsed: never a trade-off, however cheap) take no part; equal points
    are all on the front (neither beats the other)."""
    valid = [i for i, (c, q) in enumerate(points) if c is not None and q is not None and i not in exclude]
    on = [i for i in valid if not any(dominates(points[j], points[i], higher_is_better) for j in valid if j != i)]
    return sorted(on, key=lambda i: (points[i][0], -points[i][1] if higher_is_better else points[i][1]))
