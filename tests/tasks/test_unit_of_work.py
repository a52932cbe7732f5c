"""The inference column times each task's unit of work: known answers for the unit's label, amounts and rate,
with fake executables whose cost per unit is known (a sleep per generated token)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from squeezebench.measures.latency import measure_latency
from squeezebench.models.sources import load_model, source_of
from squeezebench.runtimes.pytorch import TorchExecutable
from squeezebench.tasks import TASKS
from squeezebench.tasks.base import UnitOfWork, shape_label
from squeezebench.tasks.data import load_dataset
from squeezebench.tasks.data_audio import audio_duration_s
from tests.conftest import fast_protocol
from tests.helpers_speech import librispeech_dir, tiny_whisper_dir

TOKEN_S = 0.01  # the fake generator's cost per new token
NEW_TOKENS = 6


def test_shape_labels():
    assert shape_label({"input_ids": torch.zeros(1, 128)}) == "per 128-token input"
    assert shape_label({"input_ids": torch.zeros(8, 64)}) == "per batch of 8 × 64-token inputs"
    assert shape_label({"pixel_values": torch.zeros(1, 3, 224, 224)}) == "per 224×224 image"
    assert shape_label({"input_features": torch.zeros(1, 80, 3000)}) == "per input (input_features 1×80×3000)"


def test_summary_uses_the_timed_calls_only():
    unit = UnitOfWork("per utterance", lambda: None, "s audio", "ms per", amounts=[9.0, 2.0, 4.0])
    s = unit.summary([100.0, 300.0])  # the first amount belongs to a warm-up call
    assert s["mean_amount"] == 3.0 and s["ms_per_amount"] == pytest.approx(400 / 6)
    assert UnitOfWork("per answer", lambda: None, "new tokens", "per s", amounts=[4.0, 4.0]).summary(
        [200.0, 200.0])["amount_per_s"] == pytest.approx(20.0)
    assert UnitOfWork("per 128-token input", lambda: None).summary([1.0]) == {"label": "per 128-token input"}


class SleepyGenerator:
    """An executable that 'generates' NEW_TOKENS tokens at TOKEN_S seconds each and records its prompts."""

    info = {"name": "sleepy"}

    def __init__(self):
        self.prompts = []

    def generate_greedy(self, inputs, max_new_tokens):
        self.prompts.append(int(inputs["input_ids"].shape[1]))
        n = min(NEW_TOKENS, max_new_tokens)
        time.sleep(n * TOKEN_S)
        return torch.ones(1, n, dtype=torch.long)


def test_text_generation_times_one_answer(tiny_llama_dir):
    task = TASKS.get("text-generation")
    protocol = fast_protocol(gen_new_tokens=8, work_examples=3)
    bundle = load_model(source_of(str(tiny_llama_dir)), task)
    data = task.prepare(load_dataset("bbc-headlines").subset(5, 0), bundle, protocol)
    fake = SleepyGenerator()
    unit = task.unit_of_work(fake, bundle, data, {}, protocol)
    timing = measure_latency(unit.call, "cpu", warmup_iters=1, min_iters=6, min_time_s=0.0, max_time_s=30.0)
    summary = unit.summary(timing["samples"])
    expected_ms = NEW_TOKENS * TOKEN_S * 1e3
    assert expected_ms <= timing["median"] <= expected_ms * 1.5 + 20  # sleep is a floor; generous ceiling
    assert summary["label"] == "per answer" and summary["mean_amount"] == NEW_TOKENS
    assert summary["amount_per_s"] == pytest.approx(1e3 / (TOKEN_S * 1e3), rel=0.35)
    assert summary["prompts"] == 3 and summary["max_new_tokens"] == 8
    prompt_lengths = [int(p.numel()) for p in data["prompts"][:3]]
    assert fake.prompts == (prompt_lengths * 3)[:7]  # cycles through the scored prompts in order


def test_text_generation_without_a_generator_falls_back_to_a_forward(tiny_llama_dir):
    task = TASKS.get("text-generation")
    protocol = fast_protocol()
    bundle = load_model(source_of(str(tiny_llama_dir)), task)
    data = task.prepare(load_dataset("bbc-headlines").subset(2, 0), bundle, protocol)
    bundle.module = None  # e.g. an exported graph without generate_greedy
    exe = TorchExecutable(torch.nn.Identity(), "cpu", {})
    unit = task.unit_of_work(exe, bundle, data, {"input_ids": torch.zeros(1, 16, dtype=torch.long)}, protocol)
    assert unit.label == "per 16-token input (this runtime cannot generate)"


def test_speech_times_one_utterance_in_order(tmp_path: Path):
    task = TASKS.get("speech-recognition")
    protocol = fast_protocol(work_examples=3)
    bundle = load_model(source_of(str(tiny_whisper_dir(tmp_path / "w"))), task)
    dataset = load_dataset(f"audio-dir:{librispeech_dir(tmp_path / 'ls')}")
    data = task.prepare(dataset, bundle, protocol)
    seen = []

    class Graphs(TorchExecutable):  # decodes on its own graphs, as the ONNX/OpenVINO runtimes do
        def generate_greedy(self, inputs, max_new_tokens):
            seen.append(inputs["input_features"].sum().item())
            return torch.tensor([[50257, 1000, 50256]])

    unit = task.unit_of_work(Graphs(task.wrap(bundle).eval(), "cpu", {}), bundle, data, {}, protocol)
    for _ in range(4):
        unit.call()
    durations = [audio_duration_s(ex["audio"]) for ex in dataset.examples[:3]]
    assert unit.amounts == pytest.approx(durations + durations[:1], abs=1e-3)
    assert seen[3] == seen[0] and len(set(seen[:3])) == 3  # the fixed set, cycled in order
    summary = unit.summary([100.0, 100.0, 100.0])
    assert summary["label"] == "per utterance" and summary["utterances"] == 3
    assert summary["ms_per_amount"] == pytest.approx(300 / sum(unit.amounts[1:]))
    assert summary["audio_s"] == pytest.approx(sum(durations), abs=1e-3)


def test_the_cell_and_the_note_name_the_unit_in_both_languages():
    from squeezebench.i18n import language, translate
    from squeezebench.results.schema import WorkUnit

    unit = WorkUnit(label="per utterance", amount_unit="s audio", mean_amount=6.26, ms_per_amount=149.9,
                    utterances=8, audio_s=50.0)
    assert unit.describe() == "per utterance (6.3 s audio, 150 ms per s audio)"
    assert unit.scope() == "8 fixed utterances (50.0 s audio)"
    with language("ru"):
        assert unit.describe(translate) == "на высказывание (6.3 с аудио, 150 мс на с аудио)"
        assert translate(unit.scope()) == "8 фиксированных высказываний (50.0 с аудио)"
        assert translate("per 128-token input") == "на вход из 128 токенов"
    answer = WorkUnit(label="per answer", amount_unit="new tokens", mean_amount=23.7, amount_per_s=23.2, prompts=8,
                      max_new_tokens=24)
    assert answer.describe() == "per answer (23.7 new tokens, 23.2 new tokens/s)"
    assert answer.scope() == "8 fixed prompts, ≤ 24 new tokens each"
    assert WorkUnit(label="per 128-token input").scope() is None
