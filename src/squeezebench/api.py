"""The notebook API: ``import squeezebench as sb``; ``sb.run(...)``, ``sb.load(...)``, ``sb.pareto(...)``.

``run`` is the CLI's ``run`` (the same RunConfig and Runner, every variant built and measured in fresh subprocesses);
``load`` is ``table --format json`` as a pandas DataFrame (same keys, same numbers: both come from
report.table.json_rows) plus one column per recorded metric with its interval bounds (``wer``, ``wer_ci_low``,
``wer_ci_high``, ``cer``, ``real_time_factor``, ...) and ``quality_collapsed``; ``pareto`` is report.pareto.front on
two of its columns (collapsed variants take no part). pandas is the ``notebook`` extra.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from squeezebench.errors import SqueezebenchError

PathLike = Union[str, Path]
NUMERIC = ("weights_size_mb", "cpu_ms", "gpu_ms", "ram_mb", "vram_mb", "quality_value")
TEXT = ("team", "model", "task", "method", "quality_metric")
BOOLEAN = ("quality_higher_is_better", "quality_collapsed")


def run(model: Union[str, list[str]], task: str, methods: Iterable[str] = ("original",), *,
        devices: Optional[list[str]] = None, dataset: Optional[str] = None, text_column: str = "text",
        label_column: Optional[str] = "label", out: PathLike = "results", team: str = "local", force: bool = False,
        trust_remote_code: bool = False, tokenizer: Optional[str] = None, timeout: float = 3600.0,
        plugins: Iterable[str] = (), progress: bool = True, **protocol: Any) -> list:
    """Measure ``model`` and its variants like ``squeezebench run``; returns the records (results.schema.Record).

    Protocol settings are the CLI's, by field name (``threads=1, limit=300, seq_len=128, min_iters=30, ...``)."""
    from squeezebench.progress import Progress
    from squeezebench.protocol import Protocol
    from squeezebench.registry import Registry
    from squeezebench.runner import RunConfig, Runner
    from squeezebench.tasks.data import DatasetOptions

    known = Registry("protocol setting")
    for f in dataclasses.fields(Protocol):
        known.register(f.name, f)
    for name in protocol:
        known.get(name)  # one-line error with "did you mean" for a misspelt setting
    proto = Protocol.from_dict(protocol)
    proto.validate()
    if devices is None:
        import torch

        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    config = RunConfig(models=[model] if isinstance(model, str) else list(model), task=task, methods=list(methods),
                       devices=list(devices), dataset=dataset, dataset_options=DatasetOptions(text_column, label_column),
                       protocol=proto, out=Path(out), team=team, force=force, trust_remote_code=trust_remote_code,
                       tokenizer=tokenizer, timeout_s=timeout, command=f"squeezebench.run(model={model!r}, ...)",
                       plugins=list(plugins))
    if not progress:
        return Runner(config).run()
    with Progress() as bar:
        return Runner(config, progress=bar).run()


def load(dirs: Union[PathLike, Iterable[PathLike]]):
    """The rows of ``table --format json`` over ``dirs`` as a DataFrame, then every metric the records hold (value
    and 95 % interval bounds ``NAME_ci_low``/``NAME_ci_high``, e.g. CER, RTF, decode tok/s next to the primary
    metric) and ``quality_collapsed``: numbers as float64 (NaN where absent), names as strings, ``flags`` as lists."""
    try:
        import pandas as pd
    except ImportError:
        raise SqueezebenchError("sb.load needs pandas: pip install 'squeezebench[notebook]'") from None
    from squeezebench.report.table import collect, json_rows

    folders = [Path(dirs)] if isinstance(dirs, (str, Path)) else [Path(d) for d in dirs]
    table_rows = collect(folders)
    rows = json_rows(table_rows)
    if not rows:
        raise SqueezebenchError(f"no results found in {', '.join(map(str, folders))}; run sb.run(...) first")
    columns = list(rows[0])
    taken = set(columns)
    for item, row in zip(rows, table_rows):
        for key, value in _metric_columns(row, taken).items():
            item[key] = value
            if key not in columns:
                columns.append(key)
    df = pd.DataFrame(rows, columns=columns)
    for col in df.columns:
        if col in TEXT:
            df[col] = df[col].astype("string")
        elif col in BOOLEAN:
            df[col] = df[col].astype("boolean")
        elif col != "flags" and (col in NUMERIC or pd.api.types.is_numeric_dtype(df[col]) or df[col].isna().all()):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def _metric_columns(row, taken: set[str]) -> dict[str, Any]:
    """One value per metric of the row's record (a metric named like a table key gets a ``metric_`` prefix), its
    interval bounds, and whether the variant's quality collapsed."""
    from squeezebench.measures.collapse import collapsed

    out: dict[str, Any] = {"quality_collapsed": collapsed(row)}
    rec = row.any
    if rec is None or not rec.ok or rec.quality is None:
        return out
    for name, m in rec.quality.metrics.items():
        key = f"metric_{name}" if name in taken else name
        out[key] = m.value
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = m.ci95 if m.ci95 else (None, None)
    return out


def pareto(df, quality: str = "quality_value", cost: str = "cpu_ms", higher_is_better: Optional[bool] = None):
    """The rows of ``df`` on the Pareto front of ``quality`` against ``cost`` (lower cost better), cheapest first.

    The direction comes from the metric (``quality_higher_is_better``) unless given; rows without both values and
    rows whose quality collapsed (``quality_collapsed``) take no part. Compare rows of one model and one comparability group: filter ``df`` first (e.g. by model)."""
    from squeezebench.report.pareto import front

    for col in (quality, cost):
        if col not in df.columns:
            raise SqueezebenchError(f"no column {col!r}; columns are {', '.join(map(str, df.columns))}")
    if higher_is_better is None:
        known = df["quality_higher_is_better"].dropna().unique() if "quality_higher_is_better" in df else []
        if len(known) > 1:
            raise SqueezebenchError("the rows mix metrics where higher and lower is better; filter to one model/task "
                                    "or pass higher_is_better")
        higher_is_better = bool(known[0]) if len(known) else True
    points = [(None if _missing(c) else float(c), None if _missing(q) else float(q))
              for c, q in zip(df[cost], df[quality])]
    broken = ({i for i, c in enumerate(df["quality_collapsed"]) if not _missing(c) and bool(c)}
              if "quality_collapsed" in df else set())
    return df.iloc[front(points, higher_is_better, exclude=broken)]


def _missing(value: Any) -> bool:
    return value is None or value != value or str(value) == "<NA>"
