"""``squeezebench report DIR... -o report.html``: one self-contained static HTML file.

The page holds the table (sort by clicking a header; filter by model, team, device), per comparability group the
protocol and three Pareto plots (quality vs CPU ms, vs GPU ms, vs weights size: front drawn and its variants named,
the original named, dominated variants faded, flagged variants ringed, variants whose quality collapsed faded red and
on no front; fractions such as WER in %), and each record's raw latency samples as a small histogram.

Plots are hand-written inline SVG: no dependency to install or keep current, nothing fetched (no CDN, no server), a
file of tens of kilobytes instead of plotly's 3.5 MB bundle, deterministic output that diffs and tests well, and it
renders without JavaScript (the script only sorts and filters). Scatter plots with a step line and histograms are all
this report needs, which is little code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Optional

from squeezebench.errors import SqueezebenchError
from squeezebench.measures import Row
from squeezebench.measures.base import ok
from squeezebench.atomic import atomic_write_text
from squeezebench.measures.collapse import collapsed
from squeezebench.measures.serving import serving_of
from squeezebench.report.escape import html_text
from squeezebench.report.pareto import front
from squeezebench.report.table import _columns, collect, headers, imported, json_rows, protocol_notes, row_cells

COSTS = (("cpu_ms", "CPU latency (ms, median)"), ("gpu_ms", "GPU latency (ms, median)"),
         ("weights_size_mb", "weights size (MB)"))
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 420, 300, 56, 16, 14, 40


esc = html_text


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    """Round values inside [lo, hi]: 1-2-5 steps on a linear axis; on a log axis 1, 2, 5 per decade (powers of ten
    alone over many decades, every 1..9 multiple within about one decade), linear steps when even those miss."""
    if log:
        first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        for mantissas in ((1, 2, 5), tuple(range(1, 10))):
            ticks = [m * 10 ** e for e in range(first, last + 1) for m in mantissas if lo <= m * 10 ** e <= hi]
            if len(ticks) > 8:  # many decades: powers of ten only
                ticks = [t for t in ticks if math.log10(t).is_integer()] or ticks
            if len(ticks) >= 3:
                return ticks
    span = (hi - lo) or abs(hi) or 1.0
    step = 10 ** math.floor(math.log10(span / 4))
    step *= next(m for m in (1, 2, 5, 10) if span / (step * m) <= 5)
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 12) for i in range(int((hi - start) / step + 1e-9) + 1)]


def quality_axis(metric: str, unit: str) -> tuple[float, str]:
    """(factor, axis title) of a quality metric: fractions (accuracy, WER, F1) in %, another unit named unless the
    metric's name says it (perplexity)."""
    if unit == "fraction":
        return 100.0, f"{metric}, %"
    return 1.0, f"{metric}, {unit}" if unit and unit != "ppl" else metric


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def _scale(values: list[float], lo_px: float, hi_px: float, log: bool) -> tuple[Callable[[float], float], float, float]:
    lo, hi = min(values), max(values)
    if log:
        lo, hi = lo / 1.15, hi * 1.15
        f = math.log10
    else:
        pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
        f = float  # type: ignore[assignment]
    a, b = f(lo), f(hi)
    return (lambda v: lo_px + (f(v) - a) / (b - a) * (hi_px - lo_px)), lo, hi


def plot_front(points: list[dict], higher_is_better: bool) -> list[int]:
    """The Pareto front of ``points`` (cheapest first); a collapsed variant takes no part."""
    return front([(p["cost"], p["quality"]) for p in points], higher_is_better,
                 exclude={i for i, p in enumerate(points) if p.get("collapsed")})


def labels(points: list[dict], on: list[int]) -> list[tuple[int, str, str]]:
    """(point index, text, css class) of the names written on a plot: the front's variants, then the original
    (named even when it is off the front, so every other point reads against it). A collapsed variant is never
    named: it is on no front."""
    out = [(i, points[i]["label"] + (" ⚠" if points[i]["flags"] else ""), "frontlabel") for i in on]
    out += [(i, "original", "origlabel") for i, p in enumerate(points) if p["original"] and i not in on]
    return out


def pareto_svg(points: list[dict], cost_label: str, quality_label: str, higher_is_better: bool) -> str:
    """One scatter plot: ``points`` are {"cost", "quality", "label", "flags", "original", "collapsed"}."""
    costs, quals = [p["cost"] for p in points], [p["quality"] for p in points]
    log = min(costs) > 0 and max(costs) / min(costs) > 10
    x, x0, x1 = _scale(costs, PAD_L, W - PAD_R, log)
    ylog = min(quals) > 0 and max(quals) / min(quals) > 10  # e.g. a perplexity that exploded
    y, y0, y1 = _scale(quals, H - PAD_B, PAD_T, ylog)
    on = plot_front(points, higher_is_better)
    out = [f'<svg class="pareto" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
           f'aria-label="{esc(quality_label)} vs {esc(cost_label)}">',
           f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" height="{H - PAD_T - PAD_B}" class="frame"/>']
    for t in _ticks(x0, x1, log):
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{PAD_T}" y2="{H - PAD_B}" class="grid"/>'
                   f'<text x="{x(t):.1f}" y="{H - PAD_B + 14}" class="tick" text-anchor="middle">{_fmt(t)}</text>')
    for t in _ticks(y0, y1, ylog):
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="grid"/>'
                   f'<text x="{PAD_L - 4}" y="{y(t) + 3:.1f}" class="tick" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<text x="{(PAD_L + W - PAD_R) / 2}" y="{H - 6}" class="axis" text-anchor="middle">'
               f'{esc(cost_label)}{" (log scale)" if log else ""} →</text>')
    arrow = "↑ higher is better" if higher_is_better else "↓ lower is better"
    out.append(f'<text x="12" y="{(PAD_T + H - PAD_B) / 2}" class="axis" text-anchor="middle" '
               f'transform="rotate(-90 12 {(PAD_T + H - PAD_B) / 2})">{esc(quality_label)}{", log" if ylog else ""} '
               f'({arrow})</text>')
    if len(on) > 1:
        xy = [(x(points[i]["cost"]), y(points[i]["quality"])) for i in on]
        path = [f"M{xy[0][0]:.1f} {xy[0][1]:.1f}"] + [f"H{px:.1f} V{py:.1f}" for px, py in xy[1:]]
        out.append(f'<path d="{" ".join(path)}" class="front"/>')
    for i, p in enumerate(points):
        dominated = i not in on
        tip = f"{p['label']}: {quality_label} {_fmt(p['quality'])}, {cost_label} {_fmt(p['cost'])}"
        tip += "".join(f"\n⚠ {f}" for f in p["flags"])
        tip += ("\n(quality collapsed: on no front)" if p.get("collapsed") else
                "\n(dominated)" if dominated else "\n(on the Pareto front)")
        cls = "pt collapsed" if p.get("collapsed") else "pt dominated" if dominated else "pt onfront"
        cls += " flagged" if p["flags"] else ""
        px, py = x(p["cost"]), y(p["quality"])
        shape = (f'<rect x="{px - 4.5:.1f}" y="{py - 4.5:.1f}" width="9" height="9"' if p["original"] else
                 f'<path d="M{px - 4:.1f} {py - 4:.1f}l8 8m0 -8l-8 8"' if p.get("collapsed") else
                 f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4.5"')
        out.append(f'<g class="{cls}" data-label="{esc(p["label"])}">{shape}><title>{esc(tip)}</title></g>')
    for rank, (i, text, cls) in enumerate(labels(points, on)):
        p = points[i]
        px, py = x(p["cost"]), y(p["quality"])
        anchor = "end" if px > W * 0.65 else "start"
        dx = -7 if anchor == "end" else 7
        out.append(f'<text x="{px + dx:.1f}" y="{py - 6 + (rank % 2) * 16:.1f}" class="{cls}" '
                   f'text-anchor="{anchor}">{esc(text)}</text>')
    if any(p.get("collapsed") for p in points):
        out.append(f'<text x="{W - PAD_R - 4}" y="{PAD_T + 12}" class="legend" text-anchor="end">'
                   '× quality collapsed: on no front</text>')
    out.append("</svg>")
    return "".join(out)


def samples_svg(samples: list[float], median: float) -> str:
    """A small histogram of one record's timed samples (ms), with the median marked."""
    w, h, bins = 220, 56, 24
    lo, hi = min(samples), max(samples)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for s in samples:
        counts[min(bins - 1, int((s - lo) / width))] += 1
    top = max(counts)
    bw = (w - 8) / bins
    bars = "".join(f'<rect x="{4 + k * bw:.1f}" y="{h - 14 - c / top * (h - 20):.1f}" width="{bw - 1:.1f}" '
                   f'height="{c / top * (h - 20):.1f}" class="bar"/>' for k, c in enumerate(counts) if c)
    mx = 4 + (median - lo) / (width * bins) * (w - 8) if hi > lo else w / 2
    return (f'<svg class="samples" viewBox="0 0 {w} {h}" width="{w}" height="{h}">{bars}'
            f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="2" y2="{h - 14}" class="median"/>'
            f'<text x="4" y="{h - 2}" class="tick">{_fmt(lo)}</text>'
            f'<text x="{w - 4}" y="{h - 2}" class="tick" text-anchor="end">{_fmt(hi)} ms</text>'
            f'<title>{len(samples)} samples, median {_fmt(median)} ms, min {_fmt(lo)}, max {_fmt(hi)}</title></svg>')


def load_svg(points: list[tuple[float, float, bool]], bound_ms: float) -> str:
    """Latency under load: p99 (ms) against the offered rate (queries/s) of each Server test, the bound dashed;
    ``points`` are (rate, p99, met the bound)."""
    w, h, pl, pb = 260, 150, 40, 26
    rates, p99s = [p[0] for p in points], [p[1] for p in points] + [bound_ms]
    x, x0, x1 = _scale(rates, pl, w - 8, False)
    y, y0, y1 = _scale(p99s, h - pb, 8, min(p99s) > 0 and max(p99s) / min(p99s) > 10)
    out = [f'<svg class="load" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           f'aria-label="p99 latency vs offered load">',
           f'<rect x="{pl}" y="8" width="{w - 8 - pl}" height="{h - pb - 8}" class="frame"/>',
           f'<line x1="{pl}" x2="{w - 8}" y1="{y(bound_ms):.1f}" y2="{y(bound_ms):.1f}" class="front"/>']
    for t in _ticks(x0, x1, False):
        out.append(f'<text x="{x(t):.1f}" y="{h - pb + 12}" class="tick" text-anchor="middle">{_fmt(t)}</text>')
    out.append(f'<text x="{pl - 4}" y="{y(bound_ms) + 3:.1f}" class="tick" text-anchor="end">{_fmt(bound_ms)}</text>')
    out.append(f'<text x="{(pl + w) / 2}" y="{h - 2}" class="axis" text-anchor="middle">offered QPS → '
               f'(p99 ms ↑)</text>')
    for rate, p99, met in sorted(points):
        out.append(f'<g class="pt{"" if met else " dominated"}"><circle cx="{x(rate):.1f}" cy="{y(p99):.1f}" r="4"/>'
                   f'<title>{_fmt(rate)} QPS: p99 {_fmt(p99)} ms{"" if met else " (over the bound)"}</title></g>')
    out.append("</svg>")
    return "".join(out)


def _load_plots(rows: list[Row]) -> list[str]:
    """One latency-vs-load plot per load-tested variant and device (its Server tests)."""
    parts = []
    for r in rows:
        for dev in ("cpu", "gpu"):
            s = serving_of(r.on(dev))
            if s is None:
                continue
            steps = [(t.target_qps, t.p99_ms, t.meets_bound) for t in s.search if t.p99_ms is not None]
            if not steps and s.scenario == "server" and s.target_qps and s.p99_ms is not None:
                steps = [(s.target_qps, s.p99_ms, s.meets_bound)]
            if steps:
                parts.append(f'<div class="dist"><div class="cap">{esc(r.method)} · {dev.upper()} · '
                             f'{esc(s.key().replace("|", ", "))}</div>{load_svg(steps, s.p99_bound_ms)}</div>')
    return parts


def _groups(rows: list[Row]) -> dict[tuple, list[Row]]:
    out: dict[tuple, list[Row]] = {}
    for r in rows:
        if imported(r) is None:
            out.setdefault((r.team, r.model, r.task, r.group_index), []).append(r)
    return out


def _group_section(key: tuple, rows: list[Row], values: dict[int, dict]) -> str:
    team, model, task, gi = key
    title = f"{model} · {team} · {task}" + (f" · G{gi + 1}" if rows[0].groups_of_model > 1 else "")
    rec = rows[0].any
    parts = [f'<section class="group" data-model="{esc(model)}" data-team="{esc(team)}"><h2>{esc(title)}</h2>',
             f'<p class="protocol"><b>Protocol:</b> {esc(rec.protocol_summary())}</p><ul class="protocol">',
             *(f"<li>{esc(n)}</li>" for n in protocol_notes(rows)[:-1]), "</ul>"]
    vals = [values[id(r)] for r in rows]
    hib = next((v["quality_higher_is_better"] for v in vals if v["quality_higher_is_better"] is not None), True)
    metric = next((v["quality_metric"] for v in vals if v["quality_metric"]), "quality")
    scale, axis = quality_axis(metric, next((r.any.quality.primary_value.unit for r in rows
                                             if ok(r.any) and r.any.quality.primary_value is not None), ""))
    parts.append('<div class="plots">')
    for cost, label in COSTS:
        pts = [{"cost": v[cost], "quality": v["quality_value"] * scale, "label": r.method, "flags": r.flags,
                "original": r.is_original, "collapsed": collapsed(r)} for r, v in zip(rows, vals)
               if v[cost] is not None and v["quality_value"] is not None]
        parts.append('<figure>')
        if pts:
            parts.append(pareto_svg(pts, label, axis, hib))
            names = [pts[i]["label"] for i in plot_front(pts, hib)]
            parts.append(f'<figcaption>{esc(metric)} vs {esc(label)}. Pareto front: '
                         f'<span class="front-names">{esc(", ".join(names))}</span></figcaption>')
        else:
            parts.append(f'<p class="empty">no {esc(label.split(" (")[0])} measurements in this group</p>')
        parts.append('</figure>')
    parts.append('</div><h3>Latency samples (each record\'s timed runs)</h3><div class="dists">')
    for r in rows:
        for dev in ("cpu", "gpu"):
            rec = r.on(dev)
            if ok(rec) and rec.latency.samples:
                parts.append(f'<div class="dist"><div class="cap">{esc(r.method)} · {dev.upper()} '
                             f'(n={len(rec.latency.samples)})</div>'
                             f'{samples_svg(rec.latency.samples, rec.latency.median)}</div>')
    parts.append("</div>")
    load = _load_plots(rows)
    if load:
        parts += ['<h3>Latency under load (squeezebench loadtest: p99 vs offered QPS, the bound dashed)</h3>'
                  '<div class="dists">', *load, "</div>"]
    parts.append("</section>")
    return "".join(parts)


def _table(rows: list[Row], values: dict[int, dict]) -> str:
    cols = _columns(False)
    head = ["Team"] + headers("en") + ["Flags"]
    keys = ["team", "model", "method"] + [c.key if c.key != "quality" else "quality_value" for c in cols] + ["flags"]
    out = ['<table id="results"><thead><tr>']
    out += [f'<th data-col="{i}" title="click to sort">{esc(h)}</th>' for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for r in rows:
        v = values[id(r)]
        devices = " ".join(d for d in ("cpu", "gpu") if ok(r.on(d)) or (imported(r) and v[f"{d}_ms"] is not None))
        cells = row_cells(r, cols, multi_team=False)
        texts = [r.team] + cells + ["; ".join(r.flags)]
        cls = "imported" if imported(r) is not None else ""
        out.append(f'<tr class="{cls}" data-model="{esc(r.model)}" data-team="{esc(r.team)}" '
                   f'data-devices="{devices}">')
        for key, text in zip(keys, texts):
            raw = v.get(key) if key not in ("flags",) else len(r.flags)
            sort = raw if isinstance(raw, (int, float)) and raw is not None else str(text)
            out.append(f'<td data-v="{esc(sort)}">{esc(text)}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _options(values: list[str]) -> str:
    return "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in sorted(set(values)))


def render_report(rows: list[Row], title: str = "squeezebench report", preface: str = "") -> str:
    """``preface``: an HTML fragment (already escaped) shown before the table, e.g. a search's recommendation."""
    if not rows:
        raise SqueezebenchError("no results to report; run `squeezebench run` first")
    values = {id(r): v for r, v in zip(rows, json_rows(rows))}
    groups = _groups(rows)
    body = [f"<h1>{esc(title)}</h1>",
            f'<p class="lead">{len(rows)} rows; {len(groups)} comparability group(s): rows of different groups were '
            "measured under different protocols, data, model files or hardware, and no Δ or Pareto front pairs "
            "across them. Imported rows (typed by hand elsewhere) are shown in the table only.</p>",
            '<div class="filters">Model <select id="f-model"><option value="">all</option>'
            f'{_options([r.model for r in rows])}</select> Team <select id="f-team"><option value="">all</option>'
            f'{_options([r.team for r in rows])}</select> Device <select id="f-device"><option value="">all</option>'
            '<option value="cpu">CPU</option><option value="gpu">GPU</option></select> '
            '<span id="shown"></span></div>',
            preface, _table(rows, values)]
    body += [_group_section(k, g, values) for k, g in groups.items()]
    return PAGE.replace("{title}", esc(title)).replace("{body}", "\n".join(body)).replace("{script}", SCRIPT)


def write_report(directories: list[Path], output: Path, preface: str = "") -> Path:
    rows = collect([Path(d) for d in directories])
    if not rows:
        raise SqueezebenchError(f"no results found in {', '.join(map(str, directories))}; run `squeezebench run` first")
    names = ", ".join(str(d) for d in directories)
    output = Path(output)
    check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, render_report(rows, f"squeezebench report: {names}", preface))
    return output


def check_output(output: Path) -> None:
    """``-o`` may name a new file or a previous report, nothing else: pointed at a results JSON (or any other file)
    by a slip, the report would replace it and the record would be lost."""
    if output.is_dir():
        raise SqueezebenchError(f"-o {str(output)!r} is a folder; pass a file name such as report.html")
    if output.suffix.lower() == ".json":  # results are JSON: a report named so would sit among them
        raise SqueezebenchError(f"-o {str(output)!r} names a JSON file; the report is HTML: pass e.g. report.html")
    if not output.exists():
        return
    try:
        with open(output, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise SqueezebenchError(f"cannot read -o {str(output)!r} ({exc.strerror or exc})") from None
    if not (head.startswith(b"<!DOCTYPE html>") and b"<title>squeezebench report" in head):
        raise SqueezebenchError(f"-o {str(output)!r} exists and is not a squeezebench report; it is left as it is: "
                                "pass a new file name")


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 6px;border-top:1px solid #d0d7de;padding-top:14px}
h3{font-size:14px;margin:12px 0 4px}.lead{color:#57606a;max-width:70em}
.filters{margin:10px 0}.filters select{margin-right:12px}#shown{color:#57606a}
table{border-collapse:collapse;font-size:12px;width:100%}th,td{border:1px solid #d0d7de;padding:3px 6px;vertical-align:top}
th{background:#f6f8fa;cursor:pointer;position:sticky;top:0;text-align:left}th.asc:after{content:" ▲"}th.desc:after{content:" ▼"}
tr.imported td{background:#fff8e6;font-style:italic}tr:hover td{background:#f0f6ff}
.protocol{color:#57606a;font-size:12px;margin:2px 0}ul.protocol{padding-left:18px}
.plots{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0}figcaption{font-size:12px;color:#57606a;max-width:420px}
.front-names{color:#0b5cad;font-weight:600}.empty{color:#8c959f;width:420px}
svg .frame{fill:#fff;stroke:#d0d7de}svg .grid{stroke:#eef1f4}svg .tick{font-size:10px;fill:#57606a}
svg .axis{font-size:11px;fill:#24292f}svg .front{fill:none;stroke:#0b5cad;stroke-width:1.5;stroke-dasharray:4 2}
svg .pt circle,svg .pt rect{fill:#0b5cad;stroke:#fff;stroke-width:1}svg .pt.dominated{opacity:.3}
svg .pt.dominated circle,svg .pt.dominated rect{fill:#57606a}svg .pt.flagged circle,svg .pt.flagged rect{stroke:#d4770c;stroke-width:2.2}
svg .frontlabel{font-size:10.5px;fill:#0b5cad;font-weight:600}svg .origlabel{font-size:10.5px;fill:#24292f;font-style:italic}
svg .pt.collapsed{opacity:.45}svg .pt.collapsed path{stroke:#cf222e;stroke-width:2;fill:none}
svg .legend{font-size:10px;fill:#cf222e}
.dists{display:flex;flex-wrap:wrap;gap:8px}.dist{border:1px solid #eef1f4;padding:3px}.dist .cap{font-size:11px;color:#57606a}
svg .bar{fill:#8fb8e0}svg .median{stroke:#d4770c;stroke-width:1.5}
</style></head>
<body>
{body}
<script>{script}</script>
</body></html>
"""

SCRIPT = r"""
(function () {
  var errors = [];
  window.addEventListener('error', function (e) { errors.push(String(e.message)); document.body.dataset.errors = errors.join('; '); });
  var table = document.getElementById('results');
  var tbody = table.tBodies[0];
  var rows = Array.prototype.slice.call(tbody.rows);
  function key(tr, col) { var v = tr.cells[col].dataset.v, n = Number(v); return v !== '' && !isNaN(n) ? n : v.toLowerCase(); }
  function sortBy(th) {
    var col = +th.dataset.col, asc = !th.classList.contains('asc');
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.classList.remove('asc', 'desc'); });
    th.classList.add(asc ? 'asc' : 'desc');
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      if (typeof x !== typeof y) { return typeof x === 'number' ? -1 : 1; }  // empty cells last either way
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    });
    rows.forEach(function (tr) { tbody.appendChild(tr); });
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.addEventListener('click', function () { sortBy(th); }); });
  var fm = document.getElementById('f-model'), ft = document.getElementById('f-team'), fd = document.getElementById('f-device');
  function filter() {
    var shown = 0;
    rows.forEach(function (tr) {
      var ok = (!fm.value || tr.dataset.model === fm.value) && (!ft.value || tr.dataset.team === ft.value) &&
               (!fd.value || tr.dataset.devices.split(' ').indexOf(fd.value) >= 0);
      tr.style.display = ok ? '' : 'none'; if (ok) { shown++; }
    });
    document.querySelectorAll('section.group').forEach(function (s) {
      s.style.display = (!fm.value || s.dataset.model === fm.value) && (!ft.value || s.dataset.team === ft.value) ? '' : 'none';
    });
    document.getElementById('shown').textContent = shown + ' of ' + rows.length + ' rows shown';
    document.body.dataset.visible = shown;
  }
  [fm, ft, fd].forEach(function (s) { s.addEventListener('change', filter); });
  filter();
  if (location.hash === '#selftest') {  // used by the test in a headless browser: sort and filter as a person would
    var th = table.tHead.rows[0].cells[4];
    th.click();
    document.body.dataset.sortedFirst = tbody.rows[0].cells[2].textContent;
    th.click();
    document.body.dataset.sortedLast = tbody.rows[0].cells[2].textContent;
    fd.value = 'gpu'; filter(); document.body.dataset.gpuRows = document.body.dataset.visible;
    fd.value = ''; filter();
  }
  var faded = document.querySelector('svg .pt.collapsed');
  document.body.dataset.collapsed = document.querySelectorAll('svg .pt.collapsed').length;
  document.body.dataset.collapsedOpacity = faded ? getComputedStyle(faded).opacity : '';
  document.body.dataset.frontLabels = Array.prototype.map.call(document.querySelectorAll('svg text.frontlabel'),
    function (t) { return t.textContent; }).join('|');
  document.body.dataset.originLabels = document.querySelectorAll('svg text.origlabel').length;
  document.body.dataset.fewestTicks = Math.min.apply(null, Array.prototype.map.call(document.querySelectorAll('svg.pareto'),
    function (s) { return s.querySelectorAll('text.tick').length; }));
  document.body.dataset.plots = document.querySelectorAll('svg.pareto').length;
  document.body.dataset.samples = document.querySelectorAll('svg.samples').length;
  document.body.dataset.rows = rows.length;
  document.body.dataset.rendered = 'ok';
})();
"""
