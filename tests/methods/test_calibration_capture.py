"""Calibration capture: blocks walked in order with the right inputs, Linears grouped by shared input, notes."""

from __future__ import annotations

import torch
from torch import nn

from squeezebench.methods import MethodContext
from squeezebench.methods.lib.calibration_capture import (InputRecorder, calibrate_blockwise, calibration_facts,
                                                          calibration_source, find_blocks, input_groups, with_hidden)
from squeezebench.tasks import TASKS


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.o = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, hidden_states, scale=1.0):
        return (self.o(torch.relu(self.q(hidden_states)) * self.k(hidden_states)) * scale,)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x, scale=0.5)[0]
        return self.head(x)


SAMPLES = [{"x": torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(i))} for i in range(2)]


def test_find_blocks_and_input_groups():
    model = _Toy()
    assert find_blocks(model) == ("layers", model.layers)
    block = model.layers[0]
    names = {"o": block.o, "k": block.k, "q": block.q}  # dict order is not call order
    groups = input_groups(block, names, lambda: block(SAMPLES[0]["x"]))
    assert groups == [["q", "k"], ["o"]]  # q and k read the same tensor; o runs last


def _walk(feed_quantized: bool):
    """Zero each block's ``o`` (a stand-in for quantizing it) and record what the next block was fed."""
    model = _Toy()
    reference = [s["x"] for s in SAMPLES]
    with torch.no_grad():
        fp_out0 = [model.layers[0](x, scale=0.5)[0] for x in reference]
    seen, scopes = {}, []

    def scope(root, names, run, prefix):
        scopes.append((prefix, sorted(names)))
        inputs = []
        with InputRecorder({"first": root.get_submodule(sorted(names)[0])}, lambda _n, x: inputs.append(x)):
            run()
        seen[prefix] = inputs
        if prefix:
            with torch.no_grad():
                root.o.weight.zero_()
                root.o.bias.zero_()

    targets = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    blocks = calibrate_blockwise(model, SAMPLES, "cpu", targets, scope, feed_quantized=feed_quantized, label="test")
    return blocks, scopes, seen, fp_out0


def test_blockwise_walk_feeds_quantized_or_full_precision_outputs():
    blocks, scopes, seen, fp_out0 = _walk(feed_quantized=True)
    assert blocks == 2
    assert scopes == [("layers.0.", ["k", "o", "q"]), ("layers.1.", ["k", "o", "q"]), ("", ["head"])]
    assert all(torch.equal(x, torch.zeros_like(x)) for x in seen["layers.1."])  # block 0's zeroed output
    # the rest runs the whole model with every block changed: head input is zero too
    assert all(torch.equal(x, torch.zeros_like(x)) for x in seen[""])

    _, _, seen, fp_out0 = _walk(feed_quantized=False)
    assert all(torch.allclose(x, y.reshape(-1, 4)) for x, y in zip(seen["layers.1."], fp_out0))


def test_with_hidden_replaces_positional_or_keyword_hidden_states():
    h = torch.ones(1)
    assert with_hidden((torch.zeros(1), 5), {"a": 1}, h) == ((h, 5), {"a": 1})
    assert with_hidden((), {"hidden_states": torch.zeros(1), "a": 1}, h) == ((), {"hidden_states": h, "a": 1})


def test_calibration_source_follows_the_task_attribute_and_facts_count_tokens():
    scored = MethodContext(task=TASKS.get("causal-lm"), bundle=None)
    held_out = MethodContext(task=TASKS.get("sentence-embedding"), bundle=None)
    assert calibration_source(scored) == "causal-lm takes them from the data it scores: not held out"
    assert calibration_source(held_out) == "sentence-embedding's calibration split"
    assert calibration_source(MethodContext(task=None, bundle=None)) == "the task's calibration split"
    facts = calibration_facts([{"input_ids": torch.zeros(1, 7)}, {"input_ids": torch.zeros(1, 5)}])
    assert facts == {"calibration_samples": 2, "calibration_seq_len": 7, "calibration_tokens": 12}
