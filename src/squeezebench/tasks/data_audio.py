"""Audio: decoding and resampling, and the speech datasets (``audio-dir:PATH`` in the LibriSpeech layout; csv/jsonl/hf
rows whose ``--audio-column`` names an audio file become examples in ``audio_rows``, the speech task's adapter).

Examples are dicts ``{"audio": path, "text": transcript, "id": utterance id}``.
"""

from __future__ import annotations

import logging
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from squeezebench.errors import SqueezebenchError
from squeezebench.tasks.data import DATASETS, Dataset, DatasetOptions, Rows, _existing, _read_text, require_columns

AUDIO_SUFFIXES = (".flac", ".wav")
log = logging.getLogger(__name__)


def load_audio(path: Any, rate: int) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``rate`` Hz (FLAC/WAV via soundfile; polyphase resampling).
    ``path`` may also be already decoded samples: {"array": ..., "sampling_rate": ...}."""
    if isinstance(path, dict):
        return _resample(np.asarray(path["array"], dtype=np.float32).reshape(-1), int(path["sampling_rate"]), rate)
    try:
        import soundfile
    except ImportError:
        raise SqueezebenchError("reading audio needs soundfile: pip install 'squeezebench[speech]'") from None
    try:
        samples, source_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SqueezebenchError(f"cannot decode audio file {path!r} ({why}); use FLAC or WAV") from None
    if samples.shape[0] == 0:
        raise SqueezebenchError(f"audio file {path!r} holds no samples")
    return _resample(samples.mean(axis=1), int(source_rate), rate)


def _resample(mono: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    if source_rate != rate:
        from scipy.signal import resample_poly

        g = gcd(source_rate, int(rate))
        mono = resample_poly(mono, rate // g, source_rate // g)
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_duration_s(path: Any) -> float:
    if isinstance(path, dict):
        return len(path["array"]) / int(path["sampling_rate"])
    import soundfile

    try:
        info = soundfile.info(path)
    except (RuntimeError, OSError) as exc:
        raise SqueezebenchError(f"cannot decode audio file {path!r} ({str(exc).splitlines()[0]}); use FLAC or WAV") from None
    return info.frames / info.samplerate


def _audio_dir(arg: str, options: DatasetOptions) -> Dataset:
    """LibriSpeech layout: ``*.trans.txt`` files of ``UTT-ID TEXT`` lines, each utterance's ``UTT-ID.flac|.wav``
    beside its transcript file."""
    root = _existing(arg, "audio folder")
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        audio = next((p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES), None)
        hint = f" (it has audio, e.g. {audio.name}, but no transcript file)" if audio else ""
        raise SqueezebenchError(f"audio folder {arg!r} has no *.trans.txt transcript file{hint}; "
                                "use the LibriSpeech layout: UTT-ID TEXT lines beside UTT-ID.flac files")
    examples: list[dict[str, Any]] = []
    for tr in transcripts:
        for n, line in enumerate(_read_text(tr, "transcript file").splitlines(), 1):
            if not line.strip():
                continue
            utt, _, text = line.strip().partition(" ")
            if not text.strip():
                raise SqueezebenchError(f"{tr}:{n} has no transcript after the utterance id {utt!r}")
            audio = next((tr.parent / f"{utt}{s}" for s in AUDIO_SUFFIXES if (tr.parent / f"{utt}{s}").is_file()), None)
            if audio is None:
                raise SqueezebenchError(f"{tr}:{n}: audio file {utt}.flac (or .wav) is missing in {tr.parent}")
            examples.append({"audio": str(audio), "text": text.strip(), "id": utt})
    used = {ex["audio"] for ex in examples}
    untranscribed = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and str(p) not in used)
    if untranscribed:  # counted and said, never dropped silently
        log.warning("audio folder %r: %d audio file(s) have no transcript line and are not evaluated (first: %s)",
                    arg, len(untranscribed), untranscribed[0])
    return Dataset(f"audio-dir:{arg}", examples, None, {"transcript_files": len(transcripts), "layout": "librispeech",
                                                        "audio_without_transcript": len(untranscribed)})


def audio_rows(table: Rows, options: DatasetOptions) -> Dataset:
    """csv/jsonl rows with an audio path column (relative paths are relative to the file) and a transcript;
    a Hugging Face ``Audio`` column (dicts with ``array`` and ``sampling_rate``) is kept as decoded samples."""
    rows, spec, columns = table.rows, table.spec, table.columns
    kind, _, arg = spec.partition(":")
    base = Path(arg).expanduser().parent if kind in ("csv", "jsonl") else Path.cwd()
    require_columns(table, [(options.audio_column, "--audio-column"), (options.text_column, "--text-column")])
    examples = []
    for i, r in enumerate(rows, 1):
        value = r[options.audio_column]
        if isinstance(value, dict) and "array" in value and "sampling_rate" in value:
            examples.append({"audio": {"array": np.asarray(value["array"], dtype=np.float32),
                                       "sampling_rate": int(value["sampling_rate"])},
                             "text": str(r[options.text_column]), "id": str(value.get("path") or i)})
            continue
        path = Path(str(r[options.audio_column])).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise SqueezebenchError(f"dataset {spec!r} row {i}: audio file {str(path)!r} does not exist")
        examples.append({"audio": str(path), "text": str(r[options.text_column]), "id": path.stem})
    return Dataset(spec, examples, None, {"columns": columns, "audio_column": options.audio_column})


DATASETS.register("audio-dir", _audio_dir)
