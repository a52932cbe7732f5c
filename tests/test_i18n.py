"""The table's string table: every template the code renders has its Russian form, with the same placeholders,
and texts made in English before rendering (stored flags) come back in the table's language."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from squeezebench.i18n import RU, language, tr, translate

SRC = Path(__file__).resolve().parents[1] / "src" / "squeezebench"


def _tr_templates() -> set[str]:
    """The literal first argument of every tr(...) call in the package."""
    found = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "tr" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                found.add(node.args[0].value)
    return found


def test_every_rendered_template_has_a_russian_form_with_the_same_placeholders():
    from squeezebench.measures.quality import DELTAS

    templates = _tr_templates() | {t for t in DELTAS.values() if t}  # the Δ units are rendered through a table
    assert len(templates) >= 8  # cells, notes, status texts
    assert sorted(t for t in templates if t not in RU) == []
    field = re.compile(r"\{(\w+)")
    for en, ru in RU.items():
        assert sorted(field.findall(en)) == sorted(field.findall(ru)), en


def test_tr_formats_in_the_current_language():
    assert tr("slower than original on {device}", device="GPU") == "slower than original on GPU"
    with language("ru"):
        assert tr("slower than original on {device}", device="GPU") == "медленнее оригинала на GPU"
        assert tr("a plug-in's own words {x}", x=1) == "a plug-in's own words 1"  # no entry: English
    assert tr("— (not run)") == "— (not run)"  # the block ended: English again


def test_translate_recognises_flags_written_in_english():
    with language("ru"):
        assert translate("slower than original on CPU") == "медленнее оригинала на CPU"
        assert translate("3 transcripts reached the 128-token limit") == "3 транскрипций достигли предела в 128 токенов"
        assert (translate("chance-level: accuracy CI 0.150-0.400 reaches chance 0.250")
                == "на уровне случайного: доверительный интервал accuracy 0.150-0.400 достигает случайного уровня 0.250")
        assert (translate("2 word(s) beyond --seq-len 16 tokens (or without a sub-token) predicted O")
                == "2 слов(а) за пределами --seq-len 16 токенов (или без подтокена) размечены как O")
        assert translate("something no template made") == "something no template made"
    assert translate("slower than original on CPU") == "slower than original on CPU"
