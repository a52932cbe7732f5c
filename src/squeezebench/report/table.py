"""The comparison table: one row per (team, model, method), CPU and GPU side by side, Δ % vs the original."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from squeezebench.errors import SqueezebenchError
from squeezebench.measures.environment import environment_key
from squeezebench.results import iter_records

HEADERS = {
    "en": ["Model", "Method", "Weights size", "CPU inference (ms)", "GPU inference (ms)", "RAM (MB)", "VRAM (MB)",
           "Quality"],
    "ru": ["Модель", "Метод", "Размер весов", "Время инференса (CPU, ms)", "Время инференса (GPU, ms)",
           "Использование RAM (MB)", "Использование VRAM (MB)", "Качество (PPL, BLEU, Accuracy)"],
}
JSON_KEYS = ["team", "model", "method", "weights_size_mb", "cpu_ms", "gpu_ms", "ram_mb", "vram_mb",
             "quality_metric", "quality_value", "flags"]
SLOWER_THRESHOLD = 1.05  # a variant is flagged slower when its median exceeds the original's by > 5 %
BEGIN, END = "<!-- squeezebench:table -->", "<!-- /squeezebench:table -->"


@dataclass
class Row:
    team: str
    model: str
    task: str
    method: str
    cpu: Optional[dict] = None
    gpu: Optional[dict] = None
    original: dict = field(default_factory=dict)  # device -> original record
    flags: list[str] = field(default_factory=list)

    @property
    def any(self) -> Optional[dict]:
        for r in (self.cpu, self.gpu):
            if r and r.get("status") == "ok":
                return r
        return self.cpu or self.gpu


def _ok(rec: Optional[dict]) -> bool:
    return bool(rec) and rec.get("status") == "ok"


def collect(directories: list[Path]) -> list[Row]:
    """Latest record per (team, model, task, method, device), grouped into rows."""
    latest: dict[tuple, dict] = {}
    for rec in iter_records([Path(d) for d in directories]):
        key = (rec.get("team"), rec["model"]["name"], rec["task"]["name"], rec["method"], rec["device"].split(":")[0])
        if key not in latest or str(rec.get("finished", "")) >= str(latest[key].get("finished", "")):
            latest[key] = rec
    rows: dict[tuple, Row] = {}
    for (team, model, task, method, device), rec in latest.items():
        row = rows.setdefault((team, model, task, method), Row(team, model, task, method))
        setattr(row, "gpu" if device == "cuda" else "cpu", rec)
    for row in rows.values():
        orig = rows.get((row.team, row.model, row.task, "original"))
        if orig is not None:
            for dev in ("cpu", "gpu"):
                mine, ref = getattr(row, dev), getattr(orig, dev)
                if _ok(mine) and _ok(ref) and environment_key(mine["environment"]) == environment_key(ref["environment"]):
                    row.original[dev] = ref
            if orig.any and orig.any.get("build", {}).get("size"):
                row.original.setdefault("size", orig.any)
        row.flags = flags_of(row)
    order = {"original": 0}
    return sorted(rows.values(), key=lambda r: (r.team, r.model, r.task, order.get(r.method, 1), r.method))


def _size(rec: Optional[dict]) -> Optional[dict]:
    return (rec or {}).get("build", {}).get("size") if rec and rec.get("build", {}).get("status") == "ok" else None


def flags_of(row: Row) -> list[str]:
    flags: list[str] = []
    rec = row.any
    if _ok(rec):
        flags.extend(rec["quality"].get("flags", []))
    size = _size(rec)
    if row.method != "original" and size:
        ref = _size(row.original.get("size"))
        if ref and size["weights_bytes"] >= ref["weights_bytes"]:
            flags.append("not compressed: saved weights are not smaller than the original's")
        if size.get("in_memory_compressed") is False:
            flags.append("not compressed in memory: weights are held at full precision at inference")
    for dev, name in (("cpu", "CPU"), ("gpu", "GPU")):
        mine, ref = getattr(row, dev), row.original.get(dev)
        if row.method != "original" and _ok(mine) and ref:
            if mine["latency"]["median"] > ref["latency"]["median"] * SLOWER_THRESHOLD:
                flags.append(f"slower than original on {name}")
    return flags


def _pct(new: float, old: float) -> str:
    if not old:
        return ""
    d = (new - old) / old * 100
    return f"{'+' if d >= 0 else '−'}{abs(d):.0f} %"


def _status_text(rec: Optional[dict], dev_name: str) -> str:
    if rec is None:
        return "— (not run)"
    if rec.get("status") == "skipped":
        return f"— (skipped: {rec.get('reason')})"
    return f"— (failed: {str(rec.get('error'))[:160]})"


def weights_cell(row: Row) -> str:
    size = _size(row.any)
    if not size:
        return "—"
    text = f"{size['weights_mb']:.1f} MB"
    bits = size.get("bits_per_weight")
    extra = [f"{bits:.1f} bit/w"] if bits else []
    ref = _size(row.original.get("size"))
    if ref and row.method != "original":
        extra.insert(0, _pct(size["weights_bytes"], ref["weights_bytes"]))
    return text + (f" ({', '.join(extra)})" if extra else "")


def latency_cell(row: Row, dev: str) -> str:
    rec = getattr(row, dev)
    if not _ok(rec):
        return _status_text(rec, dev)
    lat = rec["latency"]
    text = f"{lat['median']:.2f} ± {lat['std']:.2f}"
    ref = row.original.get(dev)
    if ref and row.method != "original":
        speed = ref["latency"]["median"] / lat["median"]
        text += f" ({speed:.2f}× of original)"
    return text


def ram_cell(row: Row) -> str:
    rec = row.cpu if _ok(row.cpu) else row.gpu
    if not _ok(rec):
        return "—"
    ram = rec["memory"]["ram_mb"]
    text = f"{ram:.0f}"
    ref = row.original.get("cpu" if rec is row.cpu else "gpu")
    if ref and row.method != "original":
        text += f" ({_pct(ram, ref['memory']['ram_mb'])})"
    return text


def vram_cell(row: Row) -> str:
    if not _ok(row.gpu):
        return "—" if row.gpu is None else "— (no GPU run)"
    vram = row.gpu["memory"]["vram"]["peak_reserved_mb"]
    text = f"{vram:.0f}"
    ref = row.original.get("gpu")
    if ref and row.method != "original":
        text += f" ({_pct(vram, ref['memory']['vram']['peak_reserved_mb'])})"
    return text


def _fmt(value: float, unit: str) -> str:
    return f"{value:.4f}" if unit == "fraction" or unit == "cosine" else f"{value:.3f}"


def quality(row: Row) -> tuple[Optional[str], Optional[float], Optional[dict]]:
    rec = row.any
    if not _ok(rec):
        return None, None, None
    name = rec["quality"]["primary"]
    m = rec["quality"]["metrics"].get(name)
    return name, (m or {}).get("value"), m


def quality_cell(row: Row) -> str:
    name, value, m = quality(row)
    if m is None:
        rec = row.any
        return _status_text(rec, "") if rec and rec.get("status") != "ok" else "—"
    text = f"{name} {_fmt(value, m['unit'])}"
    if m.get("ci95"):
        text += f" [{_fmt(m['ci95'][0], m['unit'])}–{_fmt(m['ci95'][1], m['unit'])}]"
    ref_rec = row.original.get("cpu") or row.original.get("gpu")
    if ref_rec and row.method != "original":
        ref = ref_rec["quality"]["metrics"].get(name)
        if ref:
            if m["unit"] == "fraction":
                text += f" ({(value - ref['value']) * 100:+.1f} pt)"
            else:
                text += f" ({_pct(value, ref['value'])})"
    others = row.any["quality"]["metrics"]
    for extra, label in (("cosine_to_original", "cos"), ("top1_agreement", "agree"), ("top5_accuracy", "top5"),
                         ("chrf", "chrF"), ("rouge_l", "ROUGE-L"), ("output_agreement", "same output"),
                         ("decode_tokens_per_s", "decode tok/s"), ("time_to_first_token", "TTFT ms")):
        if extra in others:
            v = others[extra]["value"]
            text += f"; {label} {v:.4f}" if others[extra]["unit"] in ("fraction", "cosine") else f"; {label} {v:.1f}"
    if row.flags:
        text += " " + " ".join(f"⚠ {f}" for f in row.flags)
    return text


def protocol_notes(rows: list[Row], lang: str = "en") -> list[str]:
    notes = []
    seen = set()
    for row in rows:
        for dev in ("cpu", "gpu"):
            rec = getattr(row, dev)
            if not _ok(rec):
                continue
            env, p, lat = rec["environment"], rec["protocol"], rec["latency"]
            shape = ", ".join(f"{k} {'×'.join(map(str, v))}" for k, v in rec.get("input_shapes", {}).items())
            where = env.get("gpu") if dev == "gpu" else env.get("cpu")
            line = (f"{row.team} · {row.model} · {dev.upper()}: {where}; {rec['runtime'].get('threads')} threads; "
                    f"inputs {shape}; {p['warmup_iters']} warm-up runs, then ≥ {p['min_iters']} runs and ≥ "
                    f"{p['min_time_s']:g} s ({lat['timer']}); cells are median ± std (ms); "
                    f"torch {env.get('torch')}, transformers {env.get('transformers')}")
            if line not in seen:
                seen.add(line)
                notes.append(line)
    notes.append("Weights size: bytes of the saved weight files (10^6 bytes = 1 MB) and bits per parameter; "
                 "RAM: peak RSS (VmHWM) during artifact load and timed inference minus RSS after imports; "
                 "VRAM: peak reserved by PyTorch; quality: value [95 % bootstrap interval]; Δ vs the model's "
                 "original measured in the same environment.")
    return notes


def render(rows: list[Row], fmt: str = "markdown", lang: str = "en") -> str:
    if lang not in HEADERS:
        raise SqueezebenchError(f"unknown language {lang!r}; use en or ru")
    multi_team = len({r.team for r in rows}) > 1
    if fmt == "json":
        out = []
        for r in rows:
            name, value, _ = quality(r)
            size = _size(r.any)
            out.append(dict(zip(JSON_KEYS, [
                r.team, r.model, r.method, size["weights_mb"] if size else None,
                r.cpu["latency"]["median"] if _ok(r.cpu) else None,
                r.gpu["latency"]["median"] if _ok(r.gpu) else None,
                (r.cpu if _ok(r.cpu) else r.gpu)["memory"]["ram_mb"] if (_ok(r.cpu) or _ok(r.gpu)) else None,
                r.gpu["memory"]["vram"]["peak_reserved_mb"] if _ok(r.gpu) else None,
                name, value, r.flags])))
        return json.dumps(out, indent=1, ensure_ascii=False)
    cells = [[(f"{r.model} [{r.team}]" if multi_team else r.model), r.method, weights_cell(r), latency_cell(r, "cpu"),
              latency_cell(r, "gpu"), ram_cell(r), vram_cell(r), quality_cell(r)] for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(HEADERS[lang])
        writer.writerows(cells)
        return buf.getvalue()
    if fmt != "markdown":
        raise SqueezebenchError(f"unknown table format {fmt!r}; use markdown, csv or json")
    lines = ["| " + " | ".join(HEADERS[lang]) + " |", "|" + "---|" * len(HEADERS[lang])]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    lines += [""] + [f"- {n}" for n in protocol_notes(rows, lang)]
    return "\n".join(lines) + "\n"


def table(directories: list[Path], fmt: str = "markdown", lang: str = "en") -> str:
    rows = collect(directories)
    if not rows:
        raise SqueezebenchError(f"no results found in {', '.join(map(str, directories))}; run `squeezebench run` first")
    return render(rows, fmt, lang)


def update_readme(path: Path, text: str, block: str = "") -> None:
    """Replace the block between ``<!-- squeezebench:table[ NAME] -->`` and its end marker in ``path``."""
    if not path.is_file():
        raise SqueezebenchError(f"{path} does not exist; pass the README to update")
    begin = BEGIN if not block else BEGIN.replace(" -->", f" {block} -->")
    end = END if not block else END.replace(" -->", f" {block} -->")
    content = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(content):
        raise SqueezebenchError(f"{path} has no {begin} ... {end} block; add the two markers where the table goes")
    path.write_text(pattern.sub(lambda _: f"{begin}\n{text.rstrip()}\n{end}", content, count=1), encoding="utf-8")
