"""speech-recognition: WER/CER of greedy transcripts, for encoder-decoder (Whisper) and CTC (wav2vec2, HuBERT) models.

Protocol (recorded): audio decoded and resampled to the feature extractor's rate; features by the model's own
feature extractor; one utterance at a time; Whisper decodes greedily up to MAX_NEW_TOKENS new tokens (English
transcription for multilingual checkpoints), CTC takes the argmax per frame. Transcripts and references are
normalised (Whisper's English normaliser for Whisper, upper-case without punctuation otherwise) before scoring.
The inference time (``unit_of_work``) is transcribing one utterance end to end (features, encoder, greedy decoding),
over a fixed set of the evaluated utterances; ``wrap`` (what exports and calibration see) is Whisper's encoder on a
fixed 30-s input, or the CTC model on CTC_SECONDS of audio.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.tasks.base import EvalResult, Task, UnitOfWork, register_task
from squeezebench.tasks.data_audio import audio_duration_s, audio_rows, load_audio
from squeezebench.tasks.metrics import (CER, DECODER_MS, RTF, TRANSCRIPT_AGREEMENT, WER, bootstrap_ci, metric_value)

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 128  # greedy decoding limit per utterance (Whisper)
CTC_SECONDS = 10.0  # fixed audio length of the CTC latency input
CALIBRATION_TOKENS = 64  # teacher-forced decoder tokens per Whisper calibration input
PROMPT_TOKENS = 4  # Whisper's longest forced prompt (start of transcript, language, task, no timestamps)
ENCODER_TIMING_REPEATS = 3
PROGRESS_EVERY_S = 10.0  # a progress line at least this often while pseudo-labelling
WORK_UTTERANCES = 8  # utterances the per-utterance inference time cycles through (--work-examples)


def is_seq2seq(config) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


def auto_class_for(config) -> str:
    """AutoModelForSpeechSeq2Seq for encoder-decoder speech models, AutoModelForCTC for CTC ones."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CTC_MAPPING_NAMES,
                                                        MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES)

    kind = getattr(config, "model_type", "?")
    if is_seq2seq(config) and kind in MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES:
        return "AutoModelForSpeechSeq2Seq"
    if kind in MODEL_FOR_CTC_MAPPING_NAMES:
        return "AutoModelForCTC"
    raise SqueezebenchError(f"model type {kind!r} is not a speech-recognition model; speech-recognition needs an "
                            "encoder-decoder speech model (e.g. Whisper) or a CTC model (e.g. wav2vec2, HuBERT)")


# --- text normalisation and scoring -----------------------------------------------------------------------
def plain_normalise(text: str) -> str:
    """Upper case, punctuation other than the apostrophe removed, whitespace collapsed (LibriSpeech style)."""
    text = re.sub(r"[^\w\s']|_", " ", text.upper())
    return " ".join(text.split())


def normaliser_for(bundle) -> tuple[Callable[[str], str], str]:
    """(normalise, description): Whisper's English normaliser for Whisper models, the plain one otherwise."""
    if "Whisper" in type(bundle.tokenizer).__name__:
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        from squeezebench.models.whisper_ct2 import spelling_map

        mapping, origin = spelling_map()
        return EnglishTextNormalizer(mapping), f"transformers EnglishTextNormalizer (spelling map: {origin}, " \
                                               f"{len(mapping)} entries)"
    return plain_normalise, "upper-case, punctuation except apostrophes removed, whitespace collapsed"


def edit_counts(refs: list[str], hyps: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-utterance (word errors, reference words, char errors, reference chars) of normalised texts."""
    import jiwer

    w_err, w_n, c_err, c_n = [], [], [], []
    for ref, hyp in zip(refs, hyps):
        if not ref.strip():
            raise SqueezebenchError("a reference transcript is empty after normalisation; WER needs words in "
                                    "every reference (remove empty transcripts from the dataset)")
        words, chars = len(ref.split()), len(ref)
        if hyp.strip():
            w = jiwer.process_words(ref, hyp)
            c = jiwer.process_characters(ref, hyp)
            w_err.append(w.substitutions + w.deletions + w.insertions)
            c_err.append(c.substitutions + c.deletions + c.insertions)
        else:
            w_err.append(words)
            c_err.append(chars)
        w_n.append(words)
        c_n.append(chars)
    return tuple(np.array(a, dtype=np.int64) for a in (w_err, w_n, c_err, c_n))


def error_rates(refs: list[str], hyps: list[str]) -> dict[str, dict]:
    """Corpus WER and CER (errors / reference units) with bootstrap intervals over utterances."""
    w_err, w_n, c_err, c_n = edit_counts(refs, hyps)
    n = len(refs)

    def rate(err, den):
        return lambda i: float(err[i].sum() / max(den[i].sum(), 1))

    return {"wer": metric_value(WER, rate(w_err, w_n)(slice(None)), n, bootstrap_ci(rate(w_err, w_n), n),
                                words=int(w_n.sum()), errors=int(w_err.sum()),
                                per_example=w_err.tolist(), per_example_weight=w_n.tolist()),
            "cer": metric_value(CER, rate(c_err, c_n)(slice(None)), n, bootstrap_ci(rate(c_err, c_n), n),
                                chars=int(c_n.sum()), errors=int(c_err.sum()))}


# --- wrapped modules (what latency times) --------------------------------------------------------------------
class WhisperEncoder(torch.nn.Module):
    """forward(input_features) -> encoder states; with decoder_input_ids (calibration, distillation) -> the
    teacher-forced decoder logits, so that methods that look at the task's forward see the decoder too."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor, decoder_input_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if decoder_input_ids is not None:
            return self.model(input_features=input_features, decoder_input_ids=decoder_input_ids,
                              use_cache=False).logits
        return self.model.get_encoder()(input_features=input_features).last_hidden_state


class CTCLogits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=input_values).logits


@register_task
class SpeechRecognition(Task):
    name = "speech-recognition"
    version = 2  # 2: the inference time is transcribing an utterance (was: the encoder on a 30-s input)
    auto_class = "AutoModelForSpeechSeq2Seq"  # or AutoModelForCTC: auto_class_for(config) picks per model
    primary_metric = "wer"
    metrics = ("wer", "cer", "transcript_agreement", "real_time_factor", "decoder_ms_per_token")
    default_dataset = "audio-dir:../shared/data/librispeech-sample"
    input_kind = "audio"
    needs_labels = False
    labels_from_model = False
    calibration_held_out = True

    def auto_class_for(self, config) -> str:
        return auto_class_for(config)

    def examples_from_rows(self, rows, options):
        return audio_rows(rows, options)  # an audio column (path or decoded samples) and a transcript

    def describe(self) -> dict[str, Any]:
        """The spelling map Whisper's transcripts are normalised with is part of the protocol (in the record's
        comparability key): another map scores the same transcripts to another WER."""
        from squeezebench.models.whisper_ct2 import spelling_map_identity

        return {**super().describe(), "spelling_map": spelling_map_identity()}

    # --- model side -------------------------------------------------------------------------------
    def attach_preprocessing(self, bundle, where, kwargs):
        from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer, GenerationConfig

        kw = {k: v for k, v in kwargs.items() if k == "trust_remote_code"}
        try:
            processor = AutoProcessor.from_pretrained(where, **kw)
            if not hasattr(processor, "feature_extractor"):
                raise ValueError("no feature extractor")
        except (OSError, ValueError, TypeError, KeyError):
            try:
                processor = _Processor(AutoFeatureExtractor.from_pretrained(where, **kw),
                                       AutoTokenizer.from_pretrained(where, **kw))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise SqueezebenchError(f"cannot load a speech feature extractor and tokenizer from {where!r}: "
                                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        bundle.processor = processor
        bundle.tokenizer = processor.tokenizer
        gen_file = Path(where) / "generation_config.json"
        module = bundle.module
        if module is not None and gen_file.is_file() and hasattr(module, "generation_config"):
            module.generation_config = GenerationConfig.from_pretrained(where)  # rebuilt skeletons lack it

    def save_preprocessing(self, bundle, directory):
        directory.mkdir(parents=True, exist_ok=True)
        if bundle.processor is not None:
            bundle.processor.save_pretrained(directory)
        gen = getattr(bundle.module, "generation_config", None) if bundle.module is not None else None
        if gen is not None and self._seq2seq(bundle):
            gen.save_pretrained(directory)

    def _seq2seq(self, bundle) -> bool:
        if bundle.module is not None and hasattr(bundle.module, "config"):
            return is_seq2seq(bundle.module.config)
        return hasattr(bundle.processor.feature_extractor, "nb_max_frames") or \
            "Whisper" in type(bundle.processor.feature_extractor).__name__

    def wrap(self, bundle):
        return WhisperEncoder(bundle.module) if self._seq2seq(bundle) else CTCLogits(bundle.module)

    def export_graphs(self, bundle):
        """What an export (ONNX Runtime, OpenVINO) writes: Whisper's encoder, decoder and decoder-with-past graphs,
        on which the runtime decodes greedily with a KV cache; a CTC model is one graph (None: the default)."""
        if not self._seq2seq(bundle):
            return None
        from squeezebench.models.seq2seq_graphs import whisper_export_graphs

        return whisper_export_graphs(bundle.module)

    # --- data side --------------------------------------------------------------------------------
    def prepare(self, dataset, bundle, protocol):
        if bundle.processor is None:
            raise SqueezebenchError("speech-recognition needs the model's feature extractor; the source provided none")
        if "audio" not in dataset.examples[0]:
            raise SqueezebenchError(f"dataset {dataset.spec!r} has no audio (use audio-dir:PATH, or csv/jsonl with "
                                    "--audio-column)")
        if any(not str(ex.get("text", "")).strip() for ex in dataset.examples):
            raise SqueezebenchError(f"dataset {dataset.spec!r} has an empty reference transcript")
        return {"dataset": dataset, "seq2seq": self._seq2seq(bundle)}

    def _rate(self, bundle) -> int:
        return int(getattr(bundle.processor.feature_extractor, "sampling_rate", 16000))

    def _features(self, bundle, audio: np.ndarray, seq2seq: bool) -> dict[str, torch.Tensor]:
        fe = bundle.processor.feature_extractor
        if seq2seq:
            return {"input_features": fe(audio, sampling_rate=self._rate(bundle), return_tensors="pt").input_features}
        return {"input_values": fe(audio, sampling_rate=self._rate(bundle), return_tensors="pt").input_values}

    def _fixed_audio(self, bundle, path, seconds: float) -> np.ndarray:
        audio = load_audio(path, self._rate(bundle))
        n = int(round(seconds * self._rate(bundle)))
        return np.resize(audio, n) if len(audio) < n else audio[:n]  # repeats a short utterance to fill

    def example_inputs(self, bundle, data, protocol):
        first = data["dataset"].examples[0]["audio"]
        if data["seq2seq"]:  # the extractor pads/cuts to its fixed 30-s window: 1 x mels x 3000
            one = self._features(bundle, load_audio(first, self._rate(bundle)), True)
        else:
            one = self._features(bundle, self._fixed_audio(bundle, first, CTC_SECONDS), False)
        return {k: v.repeat(protocol.batch_size, *([1] * (v.dim() - 1))) for k, v in one.items()}

    def calibration_inputs(self, bundle, data, protocol, n):
        """Features of ``n`` utterances (outside the evaluated subset when there are any); for Whisper with the
        utterance's transcript as teacher-forced decoder input (CALIBRATION_TOKENS, padded), for CTC cut or
        repeated to CTC_SECONDS so that they batch."""
        out = []
        for ex in data["dataset"].subset(n, protocol.seed).examples:
            if data["seq2seq"]:
                item = self._features(bundle, load_audio(ex["audio"], self._rate(bundle)), True)
                item["decoder_input_ids"] = self._decoder_ids(bundle, ex["text"])
            else:
                item = self._features(bundle, self._fixed_audio(bundle, ex["audio"], CTC_SECONDS), False)
            out.append(item)
        return out

    def pseudo_labelled(self, teacher, bundle, inputs):
        """Whisper: the teacher's greedy transcript of each training utterance replaces the reference as the
        teacher-forced decoder input (distil-whisper trains on pseudo-labels, so the student learns what the teacher
        says, not what it should have said); same prompt tokens, padded to the same length."""
        if not inputs or "decoder_input_ids" not in inputs[0]:
            return inputs, None
        tok, cfg = getattr(bundle, "tokenizer", None), teacher.config
        pad = next((p for p in (getattr(tok, "pad_token_id", None), cfg.pad_token_id, cfg.eos_token_id)
                    if p is not None), 0)
        out, changed = [], 0
        t0 = last = time.perf_counter()
        with torch.no_grad():
            for i, item in enumerate(inputs):
                if time.perf_counter() - last >= PROGRESS_EVERY_S:  # minutes of decoding before training starts
                    last = time.perf_counter()
                    log.info("pseudo-labels: %d/%d utterances transcribed by the teacher (%.0f s, ETA %.0f s)", i,
                             len(inputs), last - t0, (last - t0) / i * (len(inputs) - i))
                n = item["decoder_input_ids"].shape[-1]
                ids = teacher.generate(input_features=item["input_features"], max_new_tokens=max(1, n - PROMPT_TOKENS),
                                       do_sample=False, num_beams=1)[0, :n].tolist()
                ids = ids + [pad] * (n - len(ids))
                label = torch.tensor([ids], dtype=torch.long)
                changed += int(not torch.equal(label, item["decoder_input_ids"]))
                out.append({**item, "decoder_input_ids": label})
        return out, (f"pseudo-labels: the teacher's greedy transcripts of the {len(out)} training utterances "
                     f"({changed} differ from the references) are the decoder's inputs")

    def _decoder_ids(self, bundle, text: str) -> torch.Tensor:
        tok = bundle.tokenizer
        n = min(CALIBRATION_TOKENS, int(getattr(bundle.module.config, "max_target_positions", CALIBRATION_TOKENS)))
        ids = tok(" " + text.strip().lower().capitalize()).input_ids[:n]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return torch.tensor([ids + [pad] * (n - len(ids))], dtype=torch.long)

    # --- evaluation -------------------------------------------------------------------------------
    def evaluate(self, run, bundle, data, protocol, reference):
        examples = data["dataset"].examples
        normalise, norm_desc = normaliser_for(bundle)
        duration = sum(audio_duration_s(ex["audio"]) for ex in examples)
        decode = self._seq2seq_transcripts if data["seq2seq"] else self._ctc_transcripts
        hyps, info = decode(run, bundle, examples)
        refs_n = [normalise(ex["text"]) for ex in examples]
        hyps_n = [normalise(h) for h in hyps]
        metrics = error_rates(refs_n, hyps_n)
        n = len(examples)
        flags = list(info.pop("flags", []))
        metrics["real_time_factor"] = metric_value(RTF, info["transcribe_s"] / max(duration, 1e-9), n,
                                                   audio_s=duration, transcribe_s=info["transcribe_s"])
        if info.get("tokens"):
            metrics["decoder_ms_per_token"] = metric_value(DECODER_MS, 1e3 * info["decoder_s"] / info["tokens"],
                                                           info["tokens"], timing=info["decoder_timing"])
        if reference is not None and reference.get("transcripts") is not None:
            ref = [str(t) for t in np.asarray(reference["transcripts"]).tolist()]
            if len(ref) == n:
                same = np.array([a == b for a, b in zip(ref, hyps)], dtype=float)
                metrics["transcript_agreement"] = metric_value(TRANSCRIPT_AGREEMENT, same.mean(), n,
                                                               bootstrap_ci(lambda i: same[i].mean(), n))
        proto = {"utterances": n, "audio_s": duration, "normaliser": norm_desc, "batch": 1,
                 "sampling_rate": self._rate(bundle), "feature_extractor": type(bundle.processor.feature_extractor).__name__,
                 "dataset_fingerprint": data["dataset"].fingerprint(), **info.get("protocol", {})}
        return EvalResult(metrics, flags, proto, {"transcripts": np.array(hyps, dtype=str)})

    def _ctc_decoder(self, run, bundle) -> Callable[[np.ndarray], tuple[str, dict[str, float]]]:
        """audio -> (transcript, {}): features, the CTC model through the executable, argmax per frame."""
        def transcribe(audio: np.ndarray) -> tuple[str, dict[str, float]]:
            ids = run(self._features(bundle, audio, False)).argmax(-1)
            text = (bundle.processor.batch_decode(ids)[0] if hasattr(bundle.processor, "batch_decode")
                    else bundle.tokenizer.batch_decode(ids)[0])
            return text, {}
        return transcribe

    def _ctc_transcripts(self, run, bundle, examples) -> tuple[list[str], dict[str, Any]]:
        transcribe = self._ctc_decoder(run, bundle)
        t0 = time.perf_counter()
        hyps = [transcribe(load_audio(ex["audio"], self._rate(bundle)))[0] for ex in examples]
        return hyps, {"transcribe_s": time.perf_counter() - t0,
                      "protocol": {"decoding": "CTC greedy (argmax per frame, repeats and blanks collapsed)"}}

    def _seq2seq_decoder(self, run, bundle) -> tuple[Callable[[np.ndarray], tuple[str, dict[str, float]]],
                                                      dict[str, Any]]:
        """(transcribe, protocol): transcribe(audio) -> (text, {"text_tokens", "encoder_s", "decoder_s"}) by greedy
        decoding: on the executable's graphs when it can generate (encoder and decoder time together in
        "decoder_s"), else the encoder through the executable and the decoder through transformers' generate()."""
        many, protocol = self._seq2seq_batch_decoder(run, bundle)

        def transcribe(audio: np.ndarray) -> tuple[str, dict[str, float]]:
            texts, info = many([audio])
            return texts[0], info
        return transcribe, protocol

    def _seq2seq_batch_decoder(self, run, bundle) -> tuple[Callable[[list[np.ndarray]],
                                                                      tuple[list[str], dict[str, float]]],
                                                            dict[str, Any]]:
        """(transcribe_many, protocol): several utterances greedily decoded in one call (their 30-s feature windows
        stacked: Whisper pads every utterance to the same shape; finished rows are padded as generate() pads them),
        -> (texts, {"text_tokens" of all rows, "encoder_s", "decoder_s"}). The evaluation calls it with one
        utterance; a served batch with all of its own."""
        generate_greedy = getattr(run, "generate_greedy", None)
        model = bundle.module
        if generate_greedy is None and (model is None or not hasattr(model, "generate")):
            raise SqueezebenchError("this runtime cannot decode: it has neither generate_greedy() nor a PyTorch "
                                    "model with generate()")
        gen_kwargs = self._generate_kwargs(model)
        max_new = MAX_NEW_TOKENS
        positions = getattr(getattr(model, "config", None), "max_target_positions", None)
        if positions:  # the decoder prompt (up to 4 tokens) and the new tokens must fit the positions
            max_new = min(max_new, int(positions) - 4)
        tok = bundle.tokenizer
        special = set(tok.all_special_ids)

        def transcribe_many(audios: list[np.ndarray]) -> tuple[list[str], dict[str, float]]:
            per = [self._features(bundle, a, True) for a in audios]
            feats = {k: torch.cat([f[k] for f in per]) for k in per[0]}
            encoder_s = 0.0
            if generate_greedy is not None:
                t0 = time.perf_counter()
                ids = generate_greedy(feats, max_new)
                decoder_s = time.perf_counter() - t0
            else:
                from transformers.modeling_outputs import BaseModelOutput

                t0 = time.perf_counter()
                states = run(feats)  # the encoder, through the variant's executable
                encoder_s = time.perf_counter() - t0
                dtype = next(model.parameters()).dtype
                device = next(model.parameters()).device
                enc = BaseModelOutput(last_hidden_state=states.to(device, dtype))
                t0 = time.perf_counter()
                ids = model.generate(encoder_outputs=enc, max_new_tokens=max_new, do_sample=False,
                                     num_beams=1, **gen_kwargs)
                decoder_s = time.perf_counter() - t0
            texts, text_tokens = [], 0
            for row in torch.as_tensor(ids).tolist():
                seq = [int(t) for t in row]
                text_tokens += sum(1 for t in seq if t not in special)
                texts.append(tok.decode(seq, skip_special_tokens=True).strip())
            return texts, {"text_tokens": text_tokens, "encoder_s": encoder_s, "decoder_s": decoder_s}

        protocol = {"decoding": "greedy", "max_new_tokens": max_new,
                    "generation": "executable.generate_greedy" if generate_greedy else
                    "encoder via the executable, decoder via transformers generate()", **gen_kwargs}
        return transcribe_many, protocol

    def _seq2seq_transcripts(self, run, bundle, examples) -> tuple[list[str], dict[str, Any]]:
        transcribe, protocol = self._seq2seq_decoder(run, bundle)
        max_new = protocol["max_new_tokens"]
        hyps, flags = [], []
        tokens = truncated = 0
        decoder_s = encoder_s = 0.0
        t_all = time.perf_counter()
        for ex in examples:
            text, info = transcribe(load_audio(ex["audio"], self._rate(bundle)))
            tokens += info["text_tokens"] + 1  # + end of text
            truncated += info["text_tokens"] >= max_new - 1
            encoder_s += info["encoder_s"]
            decoder_s += info["decoder_s"]
            hyps.append(text)
        transcribe_s = time.perf_counter() - t_all
        if hasattr(run, "generate_greedy"):  # the encoder ran inside generate_greedy: subtract its fixed-input time
            feats = self._features(bundle, load_audio(examples[0]["audio"], self._rate(bundle)), True)
            encoder_times = []
            for _ in range(ENCODER_TIMING_REPEATS):
                t0 = time.perf_counter()
                run(feats)
                encoder_times.append(time.perf_counter() - t0)
            encoder_s = statistics.median(encoder_times) * len(examples)
            decoder_s = max(decoder_s - encoder_s, 0.0)
            timing = "generate_greedy time minus the median fixed-input encoder time"
        else:
            timing = "transformers generate() with precomputed encoder outputs"
        if truncated:
            flags.append(f"{truncated} transcripts reached the {max_new}-token limit")
        return hyps, {"transcribe_s": transcribe_s, "decoder_s": decoder_s, "tokens": tokens, "flags": flags,
                      "decoder_timing": timing, "protocol": {**protocol, "encoder_s": encoder_s}}

    def unit_of_work(self, executable, bundle, data, inputs, protocol) -> UnitOfWork:
        """Transcribe one utterance (features, encoder, greedy decoding), cycling in order through a fixed set
        of the evaluated utterances (decoded from their files once, outside the timed calls)."""
        examples = data["dataset"].examples[: protocol.work_examples or WORK_UTTERANCES]
        rate = self._rate(bundle)
        audios = [load_audio(ex["audio"], rate) for ex in examples]
        if data["seq2seq"]:
            transcribe, how = self._seq2seq_decoder(executable, bundle)
        else:
            transcribe, how = self._ctc_decoder(executable, bundle), {"decoding": "CTC greedy"}
        unit = UnitOfWork(label="per utterance", call=lambda: None, amount_unit="s audio", rate="ms per",
                          protocol={"utterances": len(audios), "audio_s": sum(len(a) for a in audios) / rate,
                                    "files": [Path(str(ex["audio"])).name for ex in examples], **how})

        def call() -> None:
            audio = audios[len(unit.amounts) % len(audios)]
            transcribe(audio)
            unit.amounts.append(len(audio) / rate)

        unit.call = call
        return unit

    # --- serving: one utterance per request, its WAV or FLAC file's bytes in base64 ---------------------------------
    def request_of(self, example):
        return {"audio": audio_base64(example["audio"])}

    def check_request(self, body):
        if not isinstance(body, dict) or not isinstance(body.get("audio"), str):
            return 'the body must be a JSON object with "audio": the base64 of a WAV or FLAC file'
        try:
            raw = base64.b64decode(body["audio"], validate=True)
        except ValueError:  # binascii.Error
            return '"audio" is not base64; send the base64 of a WAV or FLAC file'
        import soundfile

        try:
            info = soundfile.info(io.BytesIO(raw))
        except (RuntimeError, OSError, TypeError):
            return '"audio" is not a WAV or FLAC file soundfile can read'
        return None if info.frames > 0 else '"audio" holds no samples'

    def serve_batch(self, run, bundle, bodies, protocol, context=None):
        """Each utterance's greedy transcript, decoded as the evaluation decodes it. A Whisper batch is decoded in
        one call (the utterances' feature windows stacked, one encoder pass and one decoder step per token for all):
        what dynamic batching buys; a CTC model's utterances, of different lengths, one at a time."""
        rate = self._rate(bundle)
        audios = [load_audio(io.BytesIO(base64.b64decode(b["audio"])), rate) for b in bodies]
        if self._seq2seq(bundle):
            texts, _ = self._seq2seq_batch_decoder(run, bundle)[0](audios)
            return [{"text": t} for t in texts]
        transcribe = self._ctc_decoder(run, bundle)
        return [{"text": transcribe(a)[0]} for a in audios]

    def _generate_kwargs(self, model) -> dict[str, Any]:
        gen = getattr(model, "generation_config", None)
        if gen is not None and getattr(gen, "is_multilingual", False):
            return {"language": "en", "task": "transcribe"}  # English data: transcribe, do not detect
        return {}


def audio_base64(audio: Any) -> str:
    """An example's audio as the base64 of its file (a path), or of a WAV written from decoded samples."""
    if isinstance(audio, dict):
        import soundfile

        buf = io.BytesIO()
        soundfile.write(buf, np.asarray(audio["array"], dtype=np.float32), int(audio["sampling_rate"]), format="WAV")
        raw = buf.getvalue()
    else:
        raw = Path(audio).read_bytes()
    return base64.b64encode(raw).decode("ascii")


class _Processor:
    """A feature extractor and tokenizer pair for models without a processor class."""

    def __init__(self, feature_extractor, tokenizer):
        self.feature_extractor, self.tokenizer = feature_extractor, tokenizer

    def batch_decode(self, ids):
        return self.tokenizer.batch_decode(ids)

    def save_pretrained(self, directory):
        self.feature_extractor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
