"""Whisper's exportable graphs and generation plan, run in PyTorch: same logits as the HF forward, and greedy
decoding on them gives model.generate's tokens (prompt, language detection, suppression, eos)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.models.graphs import export_graphs_of
from squeezebench.models.seq2seq_graphs import kv_names, whisper_export_graphs, whisper_generation_plan
from squeezebench.runtimes.graphs import greedy_generate
from squeezebench.tasks import TASKS
from tests.helpers_seq2seq import GraphTask, batch, bundle_of, features, pytorch_greedy, same_tokens, tiny_whisper


def torch_runner(graphs):
    """run_graph over the PyTorch graph modules: what the ONNX/OpenVINO executables do with their graphs."""

    def run(name, feeds):
        spec = graphs.graphs[name]
        with torch.no_grad():
            out = spec.module(*[torch.from_numpy(np.asarray(feeds[n])) for n in spec.input_names])
        out = out if isinstance(out, tuple) else (out,)
        return {n: o.numpy() for n, o in zip(spec.output_names, out)}

    return run


def test_decoder_graphs_match_the_hf_forward():
    model = tiny_whisper(multilingual=True, language="en")
    graphs = whisper_export_graphs(model)
    x = batch(features(2))["input_features"]
    ids = torch.randint(0, 50000, (2, 7))
    with torch.no_grad():
        ref = model(input_features=x, decoder_input_ids=ids).logits
        hidden = graphs.graphs["encoder"].module(x)
        full = graphs.graphs["decoder"].module(ids, hidden)
        head = graphs.graphs["decoder"].module(ids[:, :3], hidden)
        layers = 2
        past, cross = head[1:1 + 2 * layers], head[1 + 2 * layers:]
        tail = graphs.graphs["decoder_with_past"].module(ids[:, 3:], *past, *cross)
    assert (full[0] - ref).abs().max().item() < 1e-4 * ref.abs().max().item()
    assert (tail[0] - ref[:, 3:]).abs().max().item() < 1e-4 * ref.abs().max().item()  # KV cache = full prefix
    assert tail[1].shape == (2, 4, 7, 8)  # batch, heads, all 7 positions, head_dim
    spec = graphs.graphs["decoder_with_past"]
    assert spec.input_names[1:5] == tuple(kv_names("past_self", layers)) and spec.output_names[0] == "logits"


@pytest.mark.parametrize("multilingual,language,prompt", [
    (False, None, [50257, 50362]),  # tiny.en: <|startoftranscript|> <|notimestamps|>
    (True, "de", [50258, 50261, 50359, 50363]),  # language and task forced
    (True, None, [50258, -1, 50363]),  # language detected from the audio
])
def test_greedy_on_graphs_equals_generate(multilingual, language, prompt):
    model = tiny_whisper(multilingual, seed=1, language=language)
    graphs = whisper_export_graphs(model)
    assert graphs.generation["prompt"] == prompt and graphs.generation["decoding"] == "kv-cache"
    x = batch(features(3, seed=4))["input_features"]
    ref = pytorch_greedy(model, x, 10)
    got, timing = greedy_generate(torch_runner(graphs), graphs.generation, {"input_features": x.numpy()}, 10)
    assert same_tokens(torch.from_numpy(got), ref), (got, ref)
    assert timing["new_tokens"] == 10 and timing["decoder_steps"] == 9
    if language is None and multilingual:
        assert all(p[1] in (50259, 50261, 50265) for p in timing["prompt"])


def test_eos_stops_rows_and_is_trimmed_like_generate():
    model = tiny_whisper(seed=1)
    x = batch(features(3, seed=4))["input_features"]
    first = pytorch_greedy(model, x, 10)
    model.generation_config.eos_token_id = int(first[1, 3])  # row 1 now ends at its 4th token
    ref = pytorch_greedy(model, x, 10)
    graphs = whisper_export_graphs(model)
    got, _ = greedy_generate(torch_runner(graphs), graphs.generation, {"input_features": x.numpy()}, 10)
    assert same_tokens(torch.from_numpy(got), ref), (got, ref)
    assert (got[1, 3:] == graphs.generation["pad_token_id"]).all()


def test_examples_give_every_graph_its_inputs():
    graphs = whisper_export_graphs(tiny_whisper())
    samples = features(2)
    for name, spec in graphs.graphs.items():
        examples = spec.examples(samples)
        assert examples and all(set(spec.input_names) <= set(e) for e in examples), name
    steps = graphs.graphs["decoder_with_past"].examples(samples)
    assert len({e["past_self_key_0"].shape[2] for e in steps}) > 1  # several cache lengths


def test_unsupported_generation_options_are_refused():
    model = tiny_whisper()
    model.generation_config.repetition_penalty = 1.3
    with pytest.raises(SqueezebenchError, match="repetition_penalty"):
        whisper_generation_plan(model)
    with pytest.raises(SqueezebenchError, match="not a Whisper"):
        whisper_export_graphs(torch.nn.Linear(2, 2))


def test_tasks_without_the_hook_keep_one_graph():
    model = tiny_whisper()
    assert export_graphs_of(TASKS.get("image-classification"), bundle_of(model)) is None
    assert list(export_graphs_of(GraphTask(), bundle_of(model)).graphs) == ["encoder", "decoder", "decoder_with_past"]
