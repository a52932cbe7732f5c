"""The table's words per language: one string table, English templates as keys.

Cells are built while ``language(lang)`` is active and call ``tr(template, **values)``; flags that were written in
English before the table was rendered (a record's quality flags, the measures' flags) go through ``translate``,
which recognises the template a text was made from and re-renders it in the current language. A template with no
entry for a language stays English, so a plug-in's own words still show.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Iterator, Optional

LANGS = ("en", "ru")

_LANG: ContextVar[str] = ContextVar("squeezebench_lang", default="en")

# English template -> Russian template (same {placeholders}; formatted values are inserted as they are)
RU: dict[str, str] = {
    # cells
    "— (not run)": "— (не запускался)",
    "— (skipped: {reason})": "— (пропущен: {reason})",
    "— (failed: {error})": "— (ошибка: {error})",
    "— (no GPU run)": "— (без запуска на GPU)",
    "{ratio}× of original": "{ratio}× от оригинала",
    "{value} pt": "{value} п.",
    "{value} pp": "{value} п.п.",
    # flags
    "slower than original on {device}": "медленнее оригинала на {device}",
    "machine busy during {device} timing (others used {cores} cores)":
        "машина была занята во время замера на {device} (другие процессы заняли {cores} ядер)",
    "other hardware than the original on {device}: no Δ": "другое оборудование, чем у оригинала на {device}: без Δ",
    "not compressed: saved weights are not smaller than the original's":
        "не сжата: сохранённые веса не меньше, чем у оригинала",
    "not compressed in memory: weights are held at full precision at inference":
        "не сжата в памяти: при инференсе веса хранятся в полной точности",
    "{n} transcripts reached the {limit}-token limit": "{n} транскрипций достигли предела в {limit} токенов",
    "every generated text is empty": "все сгенерированные тексты пусты",
    "{n} word(s) beyond --seq-len {seq_len} tokens (or without a sub-token) predicted O":
        "{n} слов(а) за пределами --seq-len {seq_len} токенов (или без подтокена) размечены как O",
    "roofline not computed: {why}": "доля пропускной способности не вычислена: {why}",
    "untrained weights: {names} newly initialised by the loader":
        "необученные веса: {names} заново инициализированы загрузчиком",
    "chance-level: accuracy CI {low}-{high} reaches chance {chance}":
        "на уровне случайного: доверительный интервал accuracy {low}-{high} достигает случайного уровня {chance}",
    # metric labels that Russian writes otherwise (the others are the same in both languages)
    "agree": "совпадение top-1",
    "same transcript": "та же транскрипция",
    "same output": "тот же вывод",
    "decoder ms/token": "декодер ms/токен",
    "decode tok/s": "декодирование ток/с",
    "TTFT ms": "TTFT ms",
    "% of memory bandwidth": "% пропускной способности памяти",
    "perplexity": "перплексия",
    # notes under the table
    "{team} · {model} · {device}: {where}; {threads} threads; inputs {shape}; {warmup} warm-up runs, then ≥ "
    "{min_iters} runs and ≥ {min_time} s ({timer}); cells are median ± std (ms); torch {torch}, transformers "
    "{transformers}":
        "{team} · {model} · {device}: {where}; потоков: {threads}; входы {shape}; {warmup} прогревочных запусков, "
        "затем ≥ {min_iters} запусков и ≥ {min_time} с ({timer}); в ячейках медиана ± ст. отклонение (ms); "
        "torch {torch}, transformers {transformers}",
    "{team} · {model} · {device}: {where}; {threads} threads; timed unit: one {unit}, cycling through {scope}; "
    "{warmup} warm-up runs, then ≥ {min_iters} runs and ≥ {min_time} s ({timer}); cells are median ± std (ms); "
    "torch {torch}, transformers {transformers}":
        "{team} · {model} · {device}: {where}; потоков: {threads}; замеряемая единица: {unit}, по кругу из {scope}; "
        "{warmup} прогревочных запусков, затем ≥ {min_iters} запусков и ≥ {min_time} с ({timer}); в ячейках "
        "медиана ± ст. отклонение (ms); torch {torch}, transformers {transformers}",
    # the unit of work a latency cell times (tasks' UnitOfWork; results.schema.WorkUnit.parts)
    "per utterance": "на высказывание",
    "per answer": "на ответ",
    "utterance": "высказывание",
    "answer": "ответ",
    "per {n}-token input": "на вход из {n} токенов",
    "per batch of {b} × {n}-token inputs": "на батч из {b} входов по {n} токенов",
    "per {size} image": "на изображение {size}",
    "per {n}-sample audio input": "на аудиовход из {n} отсчётов",
    "{ms} ms per s audio": "{ms} мс на с аудио",
    "{amount} s audio": "{amount} с аудио",
    "{amount} new tokens": "{amount} новых токенов",
    "{rate} new tokens/s": "{rate} новых токенов/с",
    "{n} fixed utterances ({audio} s audio)": "{n} фиксированных высказываний ({audio} с аудио)",
    "{n} fixed prompts, ≤ {limit} new tokens each": "{n} фиксированных промптов, ≤ {limit} новых токенов в каждом",
    "(n={n} < --min-iters {min_iters}: stopped at --max-time)":
        "(n={n} < --min-iters {min_iters}: остановлено по --max-time)",
    "Weights size: bytes of the saved weight files (10^6 bytes = 1 MB) and bits per parameter; RAM: peak RSS "
    "(VmHWM) during artifact load and timed inference minus RSS after imports; VRAM: peak reserved by PyTorch; "
    "quality: value [95 % bootstrap interval]; Δ vs the model's original measured in the same environment.":
        "Размер весов: байты сохранённых файлов весов (10^6 байт = 1 MB) и бит на параметр; RAM: пиковый RSS "
        "(VmHWM) при загрузке артефакта и замере инференса минус RSS после импортов; VRAM: пик, "
        "зарезервированный PyTorch; качество: значение [95 % бутстреп-интервал]; Δ относительно оригинала модели, "
        "измеренного в том же окружении.",
    "Rows of one model in different groups (G1, G2, ...) were measured under different protocols, data or model "
    "files: Δ only within a group.":
        "Строки одной модели в разных группах (G1, G2, ...) измерены при разных протоколах, данных или файлах "
        "модели: Δ только внутри группы.",
}

TABLES: dict[str, dict[str, str]] = {"en": {}, "ru": RU}


@contextmanager
def language(lang: str) -> Iterator[None]:
    """Render in ``lang`` inside the block (one of LANGS)."""
    token = _LANG.set(lang)
    try:
        yield
    finally:
        _LANG.reset(token)


def current() -> str:
    return _LANG.get()


def tr(template: str, **values) -> str:
    """``template`` in the current language, formatted with ``values``."""
    return TABLES.get(current(), {}).get(template, template).format(**values)


_FIELD = re.compile(r"\{(\w+)(?:[:!][^}]*)?\}")


@lru_cache(maxsize=None)
def _pattern(template: str) -> re.Pattern:
    parts, last = [], 0
    for m in _FIELD.finditer(template):
        parts += [re.escape(template[last:m.start()]), f"(?P<{m.group(1)}>.+?)"]
        last = m.end()
    return re.compile("".join(parts) + re.escape(template[last:]) + r"\Z", re.S)


def translate(text: str) -> str:
    """An English ``text`` made from a known template, in the current language (unchanged when none matches)."""
    table = TABLES.get(current(), {})
    if not table:
        return text
    if text in table:
        return table[text]
    match = _match(text, tuple(table))
    return table[match[0]].format(**match[1]) if match else text


def _match(text: str, templates: tuple[str, ...]) -> Optional[tuple[str, dict[str, str]]]:
    for template in templates:
        if "{" in template:
            m = _pattern(template).match(text)
            if m:
                return template, m.groupdict()
    return None
