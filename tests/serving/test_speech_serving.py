"""speech-recognition behind `serve`: one utterance per request (its audio file in base64), answered with the same
greedy transcript the evaluation produced; malformed audio is a one-line problem."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from squeezebench.models.sources import load_model, source_of
from squeezebench.runtimes.pytorch import TorchExecutable
from squeezebench.tasks import TASKS
from squeezebench.tasks.data import load_dataset
from tests.conftest import fast_protocol
from tests.helpers_speech import librispeech_dir, tiny_ctc_dir, tiny_whisper_dir

pytest.importorskip("soundfile")
TASK = TASKS.get("speech-recognition")


@pytest.fixture(scope="module")
def two_utts(tmp_path_factory):
    return load_dataset(f"audio-dir:{librispeech_dir(tmp_path_factory.mktemp('ls'))}").subset(2, 0)


@pytest.mark.parametrize("make", [tiny_whisper_dir, tiny_ctc_dir])
def test_served_transcripts_are_the_evaluated_ones(make, two_utts, tmp_path):
    bundle = load_model(source_of(str(make(tmp_path / "model"))), TASK)
    run = TorchExecutable(TASK.wrap(bundle).eval(), "cpu", {})
    protocol = fast_protocol()
    evaluated = TASK.evaluate(run, bundle, TASK.prepare(two_utts, bundle, protocol), protocol, None)
    bodies = [TASK.request_of(ex) for ex in two_utts.examples]
    assert all(TASK.check_request(b) is None for b in bodies)
    answers = TASK.serve_batch(run, bundle, bodies, protocol)
    assert [a["text"] for a in answers] == [str(t) for t in evaluated.reference["transcripts"]]


def test_decoded_samples_travel_as_wav_and_bad_audio_is_one_line():
    import soundfile

    samples = {"array": np.sin(np.arange(1600) / 5).astype(np.float32), "sampling_rate": 16000}
    body = TASK.request_of({"audio": samples})
    back, rate = soundfile.read(io.BytesIO(base64.b64decode(body["audio"])), dtype="float32")
    assert rate == 16000 and np.allclose(back, samples["array"], atol=1e-4)
    for bad in ({"text": "x"}, {"audio": "%%%"}, {"audio": base64.b64encode(b"not audio").decode()}, ["a"]):
        problem = TASK.check_request(bad)
        assert problem and "\n" not in problem


def test_a_whisper_batch_is_decoded_in_one_call_with_the_transcripts_of_one_at_a_time(tmp_path):
    """Dynamic batching must buy something for Whisper: a served batch is one encoder pass and one generate() for
    all its utterances, and each answer is the transcript that utterance gets alone."""
    utts = load_dataset(f"audio-dir:{librispeech_dir(tmp_path / 'ls')}")
    bundle = load_model(source_of(str(tiny_whisper_dir(tmp_path / "model"))), TASK)
    run = TorchExecutable(TASK.wrap(bundle).eval(), "cpu", {})
    protocol = fast_protocol()
    bodies = [TASK.request_of(ex) for ex in utts.examples]
    assert len(bodies) >= 3
    alone = [TASK.serve_batch(run, bundle, [b], protocol)[0]["text"] for b in bodies]
    calls, generate = [], bundle.module.generate

    def counted(*a, **k):
        calls.append(k["encoder_outputs"].last_hidden_state.shape[0])
        return generate(*a, **k)
    bundle.module.generate = counted
    together = TASK.serve_batch(run, bundle, bodies, protocol)
    assert calls == [len(bodies)]  # one call, every utterance a row of it
    assert [a["text"] for a in together] == alone
