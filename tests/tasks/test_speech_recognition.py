from pathlib import Path

import numpy as np
import pytest
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.models.sources import load_model, source_of
from squeezebench.runtimes.pytorch import TorchExecutable
from squeezebench.tasks import TASKS
from squeezebench.tasks.data import load_dataset
from squeezebench.tasks.speech_recognition import (CALIBRATION_TOKENS, CTC_SECONDS, auto_class_for, error_rates,
                                                   normaliser_for, plain_normalise)
from tests.conftest import fast_protocol
from tests.helpers_speech import librispeech_dir, tiny_ctc_dir, tiny_whisper_dir

TASK = TASKS.get("speech-recognition")


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory) -> Path:
    return tiny_whisper_dir(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="module")
def ctc_dir(tmp_path_factory) -> Path:
    return tiny_ctc_dir(tmp_path_factory.mktemp("tiny-ctc"))


@pytest.fixture(scope="module")
def speech_ds(tmp_path_factory):
    return load_dataset(f"audio-dir:{librispeech_dir(tmp_path_factory.mktemp('ls'))}")


@pytest.fixture(scope="module")
def two_utts(speech_ds):
    """Two utterances: a random Whisper decodes every one to its token limit, so keep them few."""
    return speech_ds.subset(2, 0)


def _executable(bundle):
    return TorchExecutable(TASK.wrap(bundle).eval(), "cpu", {})


# --- scoring ------------------------------------------------------------------------------------------------
def test_wer_cer_known_answers():
    m = error_rates(["A B C D"], ["A X C"])  # 1 substitution + 1 deletion of 4 words
    assert m["wer"]["value"] == pytest.approx(0.5)
    assert m["cer"]["value"] == pytest.approx(3 / 7)  # B->X, then " D" deleted, of 7 characters
    corpus = error_rates(["A B", "C D E F"], ["A B", "C D"])  # corpus rate, not the mean of per-utterance rates
    assert corpus["wer"]["value"] == pytest.approx(2 / 6)
    assert corpus["wer"]["unit"] == "fraction" and corpus["wer"]["higher_is_better"] is False
    lo, hi = corpus["wer"]["ci95"]
    assert 0 <= lo <= 2 / 6 <= hi <= 0.5
    assert error_rates(["A B C"], [""])["wer"]["value"] == 1.0  # empty transcript: all deletions
    assert error_rates(["A B"], ["A B C D"])["wer"]["value"] == 1.0  # insertions count


def test_empty_reference_is_one_line():
    with pytest.raises(SqueezebenchError, match="reference transcript is empty"):
        error_rates(["  "], ["A"])


def test_normalisers(whisper_dir):
    assert plain_normalise("Hello, world!  It's  me-too.") == "HELLO WORLD IT'S ME TOO"
    bundle = load_model(source_of(str(whisper_dir)), TASK)
    normalise, desc = normaliser_for(bundle)
    assert "EnglishTextNormalizer" in desc
    assert normalise("Mr. Smith, 20 dollars!") == normalise("mister smith twenty dollars")


def test_auto_class_by_model_kind(whisper_dir, ctc_dir, tiny_bert_dir):
    from transformers import AutoConfig

    assert auto_class_for(AutoConfig.from_pretrained(whisper_dir)) == "AutoModelForSpeechSeq2Seq"
    assert auto_class_for(AutoConfig.from_pretrained(ctc_dir)) == "AutoModelForCTC"
    with pytest.raises(SqueezebenchError, match="'bert' is not a speech-recognition model"):
        load_model(source_of(str(tiny_bert_dir)), TASK)


# --- Whisper ------------------------------------------------------------------------------------------------
def test_whisper_inputs_and_evaluation(whisper_dir, two_utts):
    speech_ds = two_utts
    bundle = load_model(source_of(str(whisper_dir)), TASK)
    protocol = fast_protocol()
    data = TASK.prepare(speech_ds, bundle, protocol)
    inputs = TASK.example_inputs(bundle, data, protocol)
    assert list(inputs["input_features"].shape) == [1, 16, 3000]  # fixed 30-s window
    run = _executable(bundle)
    assert run(inputs).shape == (1, 1500, 32)  # latency times the encoder
    calls = []
    handle = bundle.module.get_encoder().register_forward_hook(lambda *a: calls.append(1))
    result = TASK.evaluate(run, bundle, data, protocol, None)
    handle.remove()
    assert len(calls) == len(speech_ds.examples)  # generate() reused the executable's encoder output
    m = result.metrics
    assert {"wer", "cer", "real_time_factor", "decoder_ms_per_token"} <= set(m)
    assert m["real_time_factor"]["value"] > 0 and m["decoder_ms_per_token"]["unit"] == "ms"
    assert result.protocol["max_new_tokens"] == 12 and "EnglishTextNormalizer" in result.protocol["normaliser"]
    hyps = result.reference["transcripts"]
    assert len(hyps) == len(speech_ds.examples)
    again = TASK.evaluate(run, bundle, data, protocol, result.reference)
    assert again.metrics["transcript_agreement"]["value"] == 1.0
    assert result.flags == ["2 transcripts reached the 12-token limit"]

    class Exported(TorchExecutable):  # an exported runtime: decoding through the executable's own generate
        def generate_greedy(self, inputs, max_new_tokens):
            return bundle.module.generate(input_features=inputs["input_features"], max_new_tokens=max_new_tokens)

    exported = TASK.evaluate(Exported(TASK.wrap(bundle).eval(), "cpu", {}), bundle, data, protocol, result.reference)
    assert exported.metrics["transcript_agreement"]["value"] == 1.0
    assert exported.protocol["generation"] == "executable.generate_greedy"


def test_whisper_calibration_has_teacher_forced_decoder_ids(whisper_dir, speech_ds):
    bundle = load_model(source_of(str(whisper_dir)), TASK)
    data = TASK.prepare(speech_ds, bundle, fast_protocol())
    calib = TASK.calibration_inputs(bundle, data, fast_protocol(), 2)
    assert len(calib) == 2 and calib[0]["decoder_input_ids"].shape == (1, 16)  # CALIBRATION_TOKENS, cut to the positions
    logits = TASK.wrap(bundle)(**calib[0])
    assert logits.shape == (1, 16, bundle.module.config.vocab_size)
    assert CALIBRATION_TOKENS > 16


def test_whisper_artifact_round_trip_keeps_generation_config(whisper_dir, two_utts, tmp_path):
    speech_ds = two_utts
    from squeezebench.methods import parse_chain
    from squeezebench.runtimes.base import load_artifact
    from squeezebench.runtimes.pytorch import save_pytorch_artifact

    bundle = load_model(source_of(str(whisper_dir)), TASK)
    save_pytorch_artifact(bundle, TASK, parse_chain("original"), tmp_path, {})
    loaded, run = load_artifact(tmp_path, TASK, "cpu")
    assert loaded.module.generation_config.no_timestamps_token_id == bundle.module.generation_config.no_timestamps_token_id
    data = TASK.prepare(speech_ds, loaded, fast_protocol())
    first = TASK.evaluate(_executable(bundle), bundle, TASK.prepare(speech_ds, bundle, fast_protocol()),
                          fast_protocol(), None)
    assert TASK.evaluate(run, loaded, data, fast_protocol(), first.reference).metrics["transcript_agreement"]["value"] == 1.0


# --- CTC ----------------------------------------------------------------------------------------------------
def test_ctc_inputs_and_evaluation(ctc_dir, speech_ds):
    bundle = load_model(source_of(str(ctc_dir)), TASK)
    protocol = fast_protocol()
    data = TASK.prepare(speech_ds, bundle, protocol)
    inputs = TASK.example_inputs(bundle, data, protocol)
    assert list(inputs["input_values"].shape) == [1, int(CTC_SECONDS * 16000)]
    result = TASK.evaluate(_executable(bundle), bundle, data, protocol, None)
    assert "decoder_ms_per_token" not in result.metrics and 0 <= result.metrics["cer"]["value"]
    assert result.protocol["normaliser"].startswith("upper-case")
    assert all(h == h.upper() for h in result.reference["transcripts"])  # letters from the CTC vocabulary
    calib = TASK.calibration_inputs(bundle, data, protocol, 3)
    assert [c["input_values"].shape[1] for c in calib] == [int(CTC_SECONDS * 16000)] * 3


def test_dataset_without_audio_is_one_line(ctc_dir, topic_csv):
    bundle = load_model(source_of(str(ctc_dir)), TASK)
    with pytest.raises(SqueezebenchError, match="has no audio"):
        TASK.prepare(load_dataset(f"csv:{topic_csv}"), bundle, fast_protocol())


# --- methods on speech models -------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["whisper", "ctc"])
def test_structured_pruning_and_weight_only_on_speech_models(which, whisper_dir, ctc_dir, two_utts, tmp_path):
    """Whisper/wav2vec2 layers are found by prune-structured (heads + FFN, importance from calibration inputs that
    reach the decoder); weight-only quantisation copes with wav2vec2's missing get_input_embeddings."""
    from squeezebench.methods import MethodContext, apply_chain, parse_chain

    bundle = load_model(source_of(str(whisper_dir if which == "whisper" else ctc_dir)), TASK)
    p = fast_protocol()
    data = TASK.prepare(two_utts, bundle, p)
    inputs = TASK.example_inputs(bundle, data, p)
    ctx = MethodContext(task=TASK, bundle=bundle, protocol=p, calibration=lambda n: TASK.calibration_inputs(bundle, data, p, n))
    apply_chain(bundle, parse_chain("prune-structured:ratio=0.5+int4-weight-only:group_size=16"), ctx, tmp_path)
    summary = ctx.facts["structured_summary"]
    assert summary == ["2/4 heads, 32/64 FFN"] * (4 if which == "whisper" else 2)
    assert "on calibration data" in ctx.notes[0]
    assert torch.isfinite(TASK.wrap(bundle)(**inputs)).all()
