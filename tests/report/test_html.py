"""The HTML report as a person sees it: rendered by headless Chromium, with no console errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from squeezebench.cli import main
from squeezebench.report.html import _ticks, labels, plot_front, quality_axis, render_report
from squeezebench.report.table import collect, json_rows

ROOT = Path(__file__).resolve().parents[2]
MINILM, SMOLLM2 = ROOT / "results" / "minilm", ROOT / "results" / "smollm2"
WHISPER = ROOT / "results" / "whisper"
COLLAPSED = ("cluster-kmeans", "prune-structured")  # WER 160 % and 137 % in results/whisper
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                                    "(apt-get install chromium; .ci/run installs it when it can)")


def dump_dom(path: Path, fragment: str = "") -> tuple[str, str]:
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--dump-dom", path.resolve().as_uri() + fragment],
                          capture_output=True, text=True, timeout=120)
    return proc.stdout, proc.stderr


def body_data(dom: str) -> dict[str, str]:
    tag = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', tag))


def test_self_contained_and_names_the_minilm_front(tmp_path):
    page = render_report(collect([MINILM]))
    assert not re.search(r"(src|href)=\"?https?:", page) and "<script src" not in page  # nothing fetched
    cpu = re.search(r"accuracy vs CPU latency.*?Pareto front: <span class=\"front-names\">(.*?)</span>", page).group(1)
    # the fastest variant at the top quality band and the most accurate one are on the front; fp16 (slow) is not
    assert "prune-structured+distill+openvino-int8" in cpu and "prune-unstructured" in cpu and "fp16" not in cpu
    assert page.count('class="pt dominated') > 10 and page.count("<svg class=\"samples\"") >= 20
    assert "no GPU latency measurements in this group" in page


@needs_chromium
def test_report_renders_in_headless_chromium_without_console_errors(tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(MINILM), str(SMOLLM2), "-o", str(out)]) == 0
    dom, log = dump_dom(out, "#selftest")
    data = body_data(dom)
    assert data.get("rendered") == "ok", log[-2000:]
    assert "errors" not in data and ":CONSOLE" not in log, log[-2000:]
    assert int(data["plots"]) >= 4 and int(data["samples"]) >= 20  # MiniLM and SmolLM2: CPU and size plots each
    assert int(data["rows"]) == len(collect([MINILM, SMOLLM2]))
    # sorting by the CPU column puts the fastest first, then (descending) the slowest; no GPU rows in these results
    timed = [r for r in json_rows(collect([MINILM, SMOLLM2])) if r["cpu_ms"] is not None]
    assert data["sorted-first"] == min(timed, key=lambda r: r["cpu_ms"])["method"]
    assert data["sorted-last"] == max(timed, key=lambda r: r["cpu_ms"])["method"]
    assert data["gpu-rows"] == "0"


def point(label, cost, quality, original=False, collapsed=False, flags=()):
    return {"label": label, "cost": cost, "quality": quality, "original": original, "collapsed": collapsed,
            "flags": list(flags)}


def test_a_collapsed_variant_is_never_a_front_point_and_the_original_is_named():
    # WER in %, lower is better: the collapsed variant is the cheapest and would lead the front
    pts = [point("original", 400.0, 44.0, original=True), point("prune-structured", 100.0, 248.0, collapsed=True,
           flags=["quality collapsed (WER 248 % > 100 %)"]), point("int8", 300.0, 34.0), point("fp16", 500.0, 44.0)]
    on = plot_front(pts, higher_is_better=False)
    assert on == [2]  # without the exclusion prune-structured (cheapest) would be on it too
    assert labels(pts, on) == [(2, "int8", "frontlabel"), (0, "original", "origlabel")]
    pts[0]["cost"] = 200.0  # the original on the front: named once, as a front point
    assert labels(pts, plot_front(pts, False)) == [(0, "original", "frontlabel"), (2, "int8", "frontlabel")]


def test_axes_have_units_and_readable_ticks():
    assert quality_axis("wer", "fraction") == (100.0, "wer, %")
    assert quality_axis("perplexity", "ppl") == (1.0, "perplexity")
    assert quality_axis("bleu", "score 0-100") == (1.0, "bleu, score 0-100")
    assert _ticks(0.06, 0.9, log=True) == [0.1, 0.2, 0.5]  # a WER (fraction) log axis below 1
    assert _ticks(3.1, 3.9, log=True) == [3.2, 3.4, 3.6, 3.8]  # within one decade: still ticks
    assert _ticks(1.3, 8.5, log=True) == [2, 3, 4, 5, 6, 7, 8]
    assert _ticks(0.5, 6e5, log=True) == [1, 10, 100, 1000, 10000, 100000]
    assert _ticks(20.0, 170.0, log=False) == [50.0, 100.0, 150.0]


def test_whisper_report_fades_the_collapsed_variants_and_names_the_original():
    page = render_report(collect([WHISPER]))
    for svg in re.findall(r'<svg class="pareto".*?</svg>', page, re.S):
        assert 'aria-label="wer, % vs' in svg and "wer, % (↓ lower is better)" in svg
        faded = re.findall(r'<g class="pt collapsed[^"]*" data-label="([^"]*)"', svg)
        assert sorted(faded) == sorted(COLLAPSED) and "× quality collapsed: on no front</text>" in svg
        named = re.findall(r'class="frontlabel"[^>]*>([^<]*)<', svg)
        assert named and not any(n.split(" ")[0] in COLLAPSED for n in named)
        assert "original" in named or re.search(r'class="origlabel"[^>]*>original<', svg)
        ticks = [float(t) for t in re.findall(r'class="tick"[^>]*>([^<]*)<', svg)]
        assert any(t < 100 for t in ticks[-3:])  # the WER axis (in %) has ticks below 100 %
    for names in re.findall(r'Pareto front: <span class="front-names">(.*?)</span>', page):
        assert not set(names.split(", ")) & set(COLLAPSED)


@needs_chromium
def test_collapsed_points_render_faded_in_headless_chromium(tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(WHISPER), "-o", str(out)]) == 0
    dom, log = dump_dom(out)
    data = body_data(dom)
    assert data.get("rendered") == "ok" and "errors" not in data, log[-2000:]
    assert int(data["collapsed"]) == 2 * len(COLLAPSED)  # CPU and size plots (no GPU records)
    assert float(data["collapsed-opacity"]) < 0.5
    assert data["front-labels"] and not any(n.split(" ")[0] in COLLAPSED for n in data["front-labels"].split("|"))
    assert int(data["origin-labels"]) >= 1 and int(data["fewest-ticks"]) >= 6  # 3+ ticks on each axis
