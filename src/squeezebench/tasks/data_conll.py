"""Token-classification datasets: ``conll:PATH`` files and rows with a ``tokens`` column (Hugging Face, jsonl).

CoNLL layout: one token per line, its tag in the LAST column (the first column is the token; CoNLL-2003's POS
and chunk columns in between are ignored), a blank line between sentences, ``-DOCSTART-`` lines skipped.
Examples are ``{"text": tokens joined by spaces, "tokens": [...], "tags": [indices into label_names]}``.
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any

from squeezebench.errors import SqueezebenchError
from squeezebench.tasks.data import DATASETS, Dataset, DatasetOptions, Rows, _existing, _read_text, text_rows

TAG = re.compile(r"^(O|[BIESLU]-\S+)$")  # IOB1/IOB2/IOBES/BILOU tags
DEFAULT_TAG_COLUMN = "ner_tags"
log = logging.getLogger(__name__)


def read_conll(path: str) -> list[tuple[list[str], list[str]]]:
    """Sentences as (tokens, tags); a line that is not ``TOKEN ... TAG`` raises one line naming file:line."""
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []

    def close() -> None:
        if tokens:
            sentences.append((list(tokens), list(tags)))
        tokens.clear()
        tags.clear()

    text = _read_text(_existing(path, "CoNLL file"), "CoNLL file")
    for n, line in enumerate(io.StringIO(text, newline=None), 1):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            close()
            continue
        if len(cols) < 2 or not TAG.match(cols[-1]):
            raise SqueezebenchError(
                f"{path}:{n}: {line.strip()[:60]!r} is not 'TOKEN TAG' (the tag last, as O, B-X or I-X); "
                "fix the line or separate sentences with a blank line")
        tokens.append(cols[0])
        tags.append(cols[-1])
    close()
    return sentences


def tag_order(tags: set[str]) -> list[str]:
    """'O' first, then by entity type and prefix: a stable order independent of the file."""
    return sorted(tags, key=lambda t: (t != "O", t[2:], t[:1]))


def token_dataset(spec: str, sentences: list[tuple[list[str], list[str]]], names: list[str],
                  meta: dict[str, Any]) -> Dataset:
    index = {name: i for i, name in enumerate(names)}
    examples = [{"text": " ".join(tokens), "tokens": tokens, "tags": [index[t] for t in tags]}
                for tokens, tags in sentences]
    return Dataset(spec, examples, names, meta)


def _conll(arg: str, options: DatasetOptions) -> Dataset:
    sentences = read_conll(arg)
    names = tag_order({t for _, tags in sentences for t in tags})
    if names == ["O"]:
        log.warning("CoNLL file %r has no entity tags (every tag is O): entity F1 is undefined on it", arg)
    return token_dataset(f"conll:{arg}", sentences, names,
                         {"format": "CoNLL (first column token, last column tag)", "sentences": len(sentences)})


def from_hf(ds: Any, spec: str, options: DatasetOptions) -> Dataset:
    """A Hugging Face dataset with ``tokens`` and a tag column (see ``token_rows``)."""
    return token_rows(Rows(spec, list(ds), list(ds.column_names), ds.features), options)


def token_rows(table: Rows, options: DatasetOptions) -> Dataset:
    """The token-classification task's examples: rows with ``tokens`` and a tag column (``--label-column``, else
    ``ner_tags``) whose feature is a sequence of class labels (their names become the tag names) or of tag strings.
    Rows without ``tokens`` are read as text rows (and refused by the task's check, which says what it needs)."""
    if "tokens" not in table.columns:
        return text_rows(table, options)
    columns, spec, rows = table.columns, table.spec, table.rows
    column = options.label_column if options.label_column in columns else DEFAULT_TAG_COLUMN
    if column not in columns:
        raise SqueezebenchError(f"dataset {spec!r} has tokens but no tag column {column!r} (columns: "
                                f"{', '.join(columns)}); pass --label-column")
    feature = getattr(table.features[column], "feature", None) if table.features is not None else None
    class_names = list(getattr(feature, "names", None) or [])
    sentences = []
    for row in rows:
        tags = [class_names[t] if class_names else str(t) for t in row[column]]
        if row["tokens"]:
            sentences.append(([str(t) for t in row["tokens"]], tags))
    names = class_names or tag_order({t for _, tags in sentences for t in tags})
    return token_dataset(spec, sentences, names, {"format": "Hugging Face tokens + tags", "tag_column": column})


DATASETS.register("conll", _conll)
