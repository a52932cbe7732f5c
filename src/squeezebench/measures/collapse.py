"""Quality collapse: names a variant whose quality broke (not merely dropped), so that no reader, plot or front
mistakes it for a usable trade-off. Nothing is measured: the verdict is read from the row's record and its original's.

A variant has collapsed when any of these holds:

- its task flagged it chance-level and the original was not (accuracy whose interval reaches chance);
- an error rate (a ``fraction`` metric where lower is better: WER, CER) is above 100 %: more errors than words;
- it (almost) never agrees with the original (top-1 / transcript / output agreement ≤ ``AGREEMENT_FLOOR``) AND its
  primary metric's interval lies wholly on the worse side of the original's interval. Agreement alone is not
  enough: a quantised text generator rarely reproduces a whole answer word for word (agreement 0) yet its BLEU stays
  within the original's interval.
"""

from __future__ import annotations

from typing import Optional

from squeezebench.measures.base import Measure, Row, ok, register_measure
from squeezebench.results.schema import MetricValue

FLAG = "quality collapsed"
AGREEMENT_FLOOR = 0.05
AGREEMENTS = ("top1_agreement", "transcript_agreement", "output_agreement")  # share identical to the original's
CHANCE_PREFIX = "chance-level"  # how tasks/metrics.chance_flag starts its flag


def _bounds(m: MetricValue) -> tuple[float, float]:
    return (m.ci95[0], m.ci95[1]) if m.ci95 else (m.value, m.value)


def worse_beyond_interval(mine: MetricValue, ref: MetricValue) -> bool:
    """``mine``'s whole interval is worse than ``ref``'s whole interval, in the metric's direction."""
    lo, hi = _bounds(mine)
    ref_lo, ref_hi = _bounds(ref)
    return hi < ref_lo if ref.higher_is_better else lo > ref_hi


def collapse_reason(row: Row) -> Optional[str]:
    """Why the row's variant collapsed, in a few words, or None. The original is the reference: never collapsed."""
    rec = row.any
    if row.is_original or not ok(rec) or rec.quality is None:
        return None
    q = rec.quality
    orig = row.original.get("cpu") or row.original.get("gpu")
    orig_q = orig.quality if orig is not None and orig.quality is not None else None
    if any(f.startswith(CHANCE_PREFIX) for f in q.flags) and not (
            orig_q is not None and any(f.startswith(CHANCE_PREFIX) for f in orig_q.flags)):
        return "chance level"
    for name, m in q.metrics.items():
        if m.unit == "fraction" and not m.higher_is_better and m.value > 1.0:
            return f"{name.upper()} {m.value * 100:.0f} % > 100 %"
    primary = q.primary_value
    ref = orig_q.metrics.get(q.primary) if orig_q is not None else None
    if primary is None or ref is None or not worse_beyond_interval(primary, ref):
        return None
    for name in AGREEMENTS:
        agree = q.metrics.get(name)
        if agree is not None and agree.value <= AGREEMENT_FLOOR:
            return (f"{name.replace('_', ' ')} {agree.value * 100:.0f} %, {q.primary} beyond the original's "
                    "interval")
    return None


def collapsed(row: Row) -> bool:
    return collapse_reason(row) is not None


@register_measure
class CollapseMeasure(Measure):
    """The "quality collapsed" flag (first among a row's flags); no section, no hooks: it only reads the row."""

    name = "collapse"
    order = 1000
    flag_order = 5

    def flags(self, row: Row) -> list[str]:
        reason = collapse_reason(row)
        return [f"{FLAG} ({reason})"] if reason else []
