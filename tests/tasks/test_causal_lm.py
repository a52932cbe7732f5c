import math

import torch

from squeezebench.tasks.causal_lm import perplexity_from, window_nll


class Bigram(torch.nn.Module):
    def __init__(self, vocab=11):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, input_ids):
        return self.table[input_ids]


def test_sliding_window_scores_every_token_once_and_matches_direct_computation():
    model = Bigram()
    ids = torch.randint(0, 11, (50,), generator=torch.Generator().manual_seed(1))
    run = lambda inputs: model(inputs["input_ids"]).detach()
    sums, counts, _ = window_nll(run, ids, window=16, stride=8)
    assert counts.sum() == len(ids) - 1
    # a bigram model needs one token of context, so the windowed NLL equals the full-sequence NLL
    logp = torch.log_softmax(model(ids[:-1]), -1)
    direct = -logp.gather(1, ids[1:, None]).sum().item()
    assert math.isclose(sums.sum(), direct, rel_tol=1e-5)
    assert math.isclose(perplexity_from(sums, counts), math.exp(direct / (len(ids) - 1)), rel_tol=1e-5)


def test_evaluate_records_window_losses_and_a_paired_ratio_to_the_original():
    from types import SimpleNamespace

    import numpy as np

    from squeezebench.tasks import TASKS
    from squeezebench.protocol import Protocol

    task = TASKS.get("causal-lm")
    ids = torch.randint(0, 11, (200,), generator=torch.Generator().manual_seed(1))
    data = {"ids": ids, "dataset": SimpleNamespace(fingerprint=lambda: "x", examples=[1])}
    tokenizer = type("Tok", (), {"__len__": lambda self: 11, "name_or_path": ""})()
    bundle = SimpleNamespace(tokenizer=tokenizer, module=None)  # module None: no generation timing
    protocol = Protocol(ppl_window=32, ppl_stride=16)
    model = Bigram()
    original = task.evaluate(lambda x: model(x["input_ids"]).detach(), bundle, data, protocol, None)
    ppl = original.metrics["perplexity"]
    assert len(ppl["window_nll_sums"]) == ppl["windows"] == len(original.reference["window_nll_sums"])
    noisy = Bigram()
    with torch.no_grad():
        noisy.table.add_(0.5 * torch.randn(11, 11, generator=torch.Generator().manual_seed(2)))
    reference = {k: np.asarray(v) for k, v in original.reference.items()}
    variant = task.evaluate(lambda x: noisy(x["input_ids"]).detach(), bundle, data, protocol, reference)
    ratio = variant.metrics["perplexity_ratio_to_original"]
    assert math.isclose(ratio["value"], variant.metrics["perplexity"]["value"] / ppl["value"], rel_tol=1e-9)
    assert ratio["ci95"][0] <= ratio["value"] <= ratio["ci95"][1]
    same = task.evaluate(lambda x: model(x["input_ids"]).detach(), bundle, data, protocol, reference)
    assert same.metrics["perplexity_ratio_to_original"]["ci95"] == [1.0, 1.0]


def test_calibration_windows_are_distinct_and_keep_the_old_order():
    from squeezebench.tasks import TASKS
    from squeezebench.protocol import Protocol

    task = TASKS.get("causal-lm")
    ids = torch.arange(10_000)
    p = Protocol(seq_len=128, ppl_max_tokens=4096)
    few = task.calibration_inputs(None, {"ids": ids}, p, 32)
    assert [int(w["input_ids"][0, 0]) for w in few[:2]] == [4096 - 128, 4096 - 256]  # as before: from token 4096
    many = task.calibration_inputs(None, {"ids": ids}, p, 70)
    starts = [int(w["input_ids"][0, 0]) for w in many]
    assert len(set(starts)) == 70 and all(w["input_ids"].shape == (1, 128) for w in many)
    assert len(task.calibration_inputs(None, {"ids": ids}, p, 500)) == 10_000 // 128  # no repeats
    short = task.calibration_inputs(None, {"ids": torch.arange(50)}, p, 4)
    assert len(short) == 1 and short[0]["input_ids"].shape == (1, 50)


def test_generation_speed_is_timed_through_a_runtimes_generate_greedy_with_the_roofline(monkeypatch):
    from types import SimpleNamespace

    from squeezebench.hardware import bandwidth
    from squeezebench.tasks import TASKS
    from squeezebench.protocol import Protocol

    monkeypatch.setattr(bandwidth, "machine_bandwidth", lambda: {"copy_gb_s": 10.0, "cached": "test"})
    model = Bigram()

    class Runtime:
        info = {"name": "fake", "weight_bytes_per_token": 1_000_000}

        def __init__(self):
            self.calls = []

        def __call__(self, x):
            return model(x["input_ids"]).detach()

        def generate_greedy(self, inputs, n):
            self.calls.append((inputs["input_ids"].shape, n))
            return torch.zeros(1, n, dtype=torch.long)

    run = Runtime()
    task = TASKS.get("causal-lm")
    ids = torch.randint(0, 11, (200,), generator=torch.Generator().manual_seed(1))
    data = {"ids": ids, "dataset": SimpleNamespace(fingerprint=lambda: "x", examples=[1])}
    tokenizer = type("Tok", (), {"__len__": lambda self: 11, "name_or_path": ""})()
    bundle = SimpleNamespace(tokenizer=tokenizer, module=None)
    protocol = Protocol(ppl_window=32, ppl_stride=16, gen_prompt_tokens=8, gen_new_tokens=5, gen_repeats=2)
    assert "decode_tokens_per_s" not in task.evaluate(run, bundle, data, protocol, None).metrics  # not quality's
    result = task.generation_speed(run, bundle, data, protocol)
    m = result.metrics
    assert (torch.Size([1, 8]), 5) in run.calls and (torch.Size([1, 8]), 1) in run.calls
    assert m["decode_tokens_per_s"]["value"] > 0 and m["time_to_first_token"]["n"] == 2
    roof = m["decode_bandwidth_percent"]
    assert roof["weight_bytes_per_token"] == 1_000_000 and roof["bandwidth_gb_s"] == 10.0
    expect = 100 * m["decode_tokens_per_s"]["value"] * 1e6 / 10e9
    assert math.isclose(roof["value"], expect, rel_tol=1e-9)
    assert "fake generate_greedy" in result.protocol["gen_decoding"]
