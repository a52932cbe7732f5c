"""Names that reach a table are escaped here, once per output format.

A model name comes from a folder name, a model card or a hand-edited record, a team from ``--team`` or an old
record: either may hold a newline (which splits a Markdown row), a pipe (an extra cell), HTML (``<img onerror=>``),
a Markdown link (``[x](http://...)``) or a spreadsheet formula (``=HYPERLINK(...)``). Every renderer (markdown,
CSV, HTML, ``table --update``) passes names and cells through the functions below, so a name shows as text in each
format and can never change a table's shape.
"""

from __future__ import annotations

import html
import re

_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")  # newlines, other control characters, Unicode breaks
_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # "<" that could open an HTML tag or comment ("< 0.9" stays as written)
_MD_NAME = re.compile(r"([\\`\[\]])")  # Markdown punctuation that could form a link or a code span
_PIPE = re.compile(r"(?<!\\)((?:\\\\)*)\|")  # a pipe not already escaped (after an even run of backslashes)
_FORMULA = ("=", "+", "-", "@")


def one_line(text: object) -> str:
    """The text with every line break and control character turned into one space."""
    return _BREAKS.sub(" ", str(text))


def md_name(text: object) -> str:
    """A name as literal Markdown text: no link, code span or HTML; pipes are left to ``md_cell``. (``_`` and ``*``
    are kept: emphasis is cosmetic, and names use ``_``.)"""
    text = _MD_NAME.sub(r"\\\1", one_line(text))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_cell(text: object) -> str:
    """A Markdown table cell on one line: pipes escaped (``\\|``; one a hand-written cell escaped already is kept),
    an HTML tag's ``<`` as ``&lt;``."""
    return md_line(_PIPE.sub(lambda m: m.group(1) + "\\|", str(text)))


def md_line(text: object) -> str:
    """A Markdown line of prose (a note below a table): one line, an HTML tag's ``<`` as ``&lt;``."""
    return _TAG.sub("&lt;", one_line(text))


def csv_cell(text: object) -> str:
    """A CSV cell a spreadsheet shows as text: one line, and a leading formula character quoted with ``'``."""
    text = one_line(text)
    return "'" + text if text.startswith(_FORMULA) and not _is_number(text) else text


def html_text(text: object) -> str:
    """Text for HTML content or a quoted attribute."""
    return html.escape(str(text), quote=True)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
