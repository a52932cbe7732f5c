""""Within tolerance" by the PAIRED bootstrap interval of the quality difference to the original, never by the
point estimate: a candidate whose drop could exceed the tolerance on a resample of the same examples is refused."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from squeezebench.errors import SqueezebenchError

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20261205


@dataclass(frozen=True)
class Scores:
    """One variant's per-example scores of its primary metric: metric = sum(values) / sum(weights)."""

    values: np.ndarray
    weights: np.ndarray
    higher_is_better: bool

    @classmethod
    def of(cls, values, weights=None, higher_is_better: bool = True) -> "Scores":
        v = np.asarray(values, dtype=float)
        w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float)
        return cls(v, w, higher_is_better)

    @property
    def value(self) -> float:
        return float(self.values.sum() / max(self.weights.sum(), 1e-12))


@dataclass(frozen=True)
class Tolerance:
    """The largest quality drop accepted: ``points`` of a fraction (1pt = 0.01), a relative ``%`` of the original's
    value, or an absolute amount in the metric's unit."""

    amount: float
    kind: str  # "pt", "%" or "abs"
    text: str

    def absolute(self, original: float) -> float:
        if self.kind == "pt":
            return self.amount / 100.0
        if self.kind == "%":
            return abs(original) * self.amount / 100.0
        return self.amount


def parse_tolerance(text: str) -> Tolerance:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(pt|%)?\s*", text or "")
    if not m:
        raise SqueezebenchError(f"--max-drop {text!r}: write e.g. 1pt (one point of accuracy), 2% (relative to the "
                                "original) or 0.005 (in the metric's unit)")
    return Tolerance(float(m.group(1)), m.group(2) or "abs", text.strip())


def drop_interval(candidate: Scores, original: Scores, resamples: int = BOOTSTRAP_RESAMPLES,
                  seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(point, low, high) of the candidate's quality DROP against the original (positive = worse), 95 % percentile
    bootstrap with the same resampled examples for both (paired: their shared difficulty cancels)."""
    n = len(candidate.values)
    if n == 0 or len(original.values) != n:
        raise SqueezebenchError(f"paired interval needs the same examples: the candidate has {n} scores, the "
                                f"original {len(original.values)}")
    sign = 1.0 if original.higher_is_better else -1.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (resamples, n))

    def metric(s: Scores, rows) -> np.ndarray:
        return s.values[rows].sum(-1) / np.maximum(s.weights[rows].sum(-1), 1e-12)

    drops = sign * (metric(original, idx) - metric(candidate, idx))
    point = sign * (original.value - candidate.value)
    return float(point), float(np.percentile(drops, 2.5)), float(np.percentile(drops, 97.5))


@dataclass(frozen=True)
class Verdict:
    drop: float
    low: float
    high: float
    allowed: float

    @property
    def within(self) -> bool:
        """The whole interval of the drop stays below the tolerance (the gain's interval above −tolerance)."""
        return self.high <= self.allowed

    @property
    def plausible(self) -> bool:
        """Not clearly beyond it: the interval reaches below the tolerance (a screening rung promotes on this)."""
        return self.low <= self.allowed

    def describe(self) -> str:
        return f"drop {self.drop:+.4f} [{self.low:+.4f}, {self.high:+.4f}] vs allowed {self.allowed:.4f}"


def judge(candidate: Scores, original: Scores, tolerance: Tolerance) -> Verdict:
    point, low, high = drop_interval(candidate, original)
    return Verdict(point, low, high, tolerance.absolute(original.value))


def scores_of(metric) -> Optional[Scores]:
    """A record's metric (results.schema.MetricValue) as per-example scores, or None when it stores none."""
    if metric is None or metric.per_example is None:
        return None
    return Scores.of(metric.per_example, metric.per_example_weight, bool(metric.higher_is_better))
