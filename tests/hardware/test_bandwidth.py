import json

import pytest
import torch

from squeezebench.hardware import bandwidth
from squeezebench.hardware.bandwidth import machine_bandwidth, module_weight_bytes_per_token, roofline


def test_bandwidth_is_measured_once_per_environment_and_cached(tmp_path, monkeypatch):
    calls = []
    real = bandwidth.measure_copy_bandwidth

    def small(buffer_mb=bandwidth.BUFFER_MB, repeats=bandwidth.REPEATS):
        calls.append(1)
        return real(buffer_mb=16, repeats=3)

    monkeypatch.setattr(bandwidth, "measure_copy_bandwidth", small)
    from squeezebench.hardware import contention

    class Quiet(contention.ContentionProbe):
        def stop(self):
            return dict(super().stop(), busy=False)

    monkeypatch.setattr(contention, "ContentionProbe", Quiet)  # the shared test machine is rarely quiet
    path = tmp_path / "bw.json"
    first = machine_bandwidth(path)
    assert first["copy_gb_s"] > 0.1 and len(first["samples_gb_s"]) == 3 and first["threads"] == 1
    second = machine_bandwidth(path)
    assert len(calls) == 1 and second["copy_gb_s"] == first["copy_gb_s"] and second["cached"] == str(path)
    assert bandwidth.environment_id() in json.loads(path.read_text())
    machine_bandwidth(path, refresh=True)
    assert len(calls) == 2


def test_roofline_percent():
    r = roofline(20.0, 500e6, {"copy_gb_s": 10.0, "method": "m"})
    assert r["decode_gb_s"] == pytest.approx(10.0) and r["percent_of_bandwidth"] == pytest.approx(100.0)
    assert r["bandwidth_limit_tokens_per_s"] == pytest.approx(20.0)


@pytest.mark.parametrize("tied", [True, False])
def test_weight_bytes_per_token_counts_the_head_once_and_skips_an_untied_input_table(tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)
    model = LlamaForCausalLM(cfg)
    out = module_weight_bytes_per_token(model)
    params = sum(p.numel() for p in model.parameters()) * 4  # parameters() yields a tied table once
    table = 1000 * 32 * 4
    assert out["tied_embeddings"] is tied
    assert out["bytes"] == (params if tied else params - table) + sum(b.numel() * b.element_size()
                                                                       for b in model.buffers())
    # packed int4 weights count as stored
    from squeezebench.methods.weight_only import quantize_model

    quantize_model(model, 4, 32, False, False, False)
    assert module_weight_bytes_per_token(model)["bytes"] < out["bytes"]


def test_weight_bytes_per_token_counts_torch_ao_packed_int8_weights():
    import torch.ao.quantization as tq

    model = torch.nn.Sequential(torch.nn.Linear(256, 128))
    fp32 = module_weight_bytes_per_token(model)["bytes"]
    q = tq.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    got = module_weight_bytes_per_token(q)["bytes"]
    assert 256 * 128 <= got < 0.3 * fp32  # int8 weights (+ scales, fp32 bias): about a quarter of fp32


def test_weight_bytes_per_token_of_an_int8_dynamic_llama():
    """int8-dynamic swaps the head for a torch.ao Linear whose ``weight`` is a method (it crashed the roofline)."""
    import torch.ao.quantization as tq
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    fp32 = LlamaForCausalLM(cfg)
    before = module_weight_bytes_per_token(fp32)
    q = tq.quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8)
    after = module_weight_bytes_per_token(q)
    assert not after["tied_embeddings"]  # the int8 head is a copy: the fp32 input table is not read per token
    assert after["bytes"] < before["bytes"]


def test_a_bandwidth_measured_on_a_busy_machine_is_measured_again(tmp_path, monkeypatch):
    from squeezebench.hardware import contention

    rates = iter([5.0, 4.0, 9.0])
    monkeypatch.setattr(bandwidth, "measure_copy_bandwidth", lambda: {"copy_gb_s": next(rates)})
    busy = iter([True, True, False])

    class Probe(contention.ContentionProbe):
        def stop(self):
            return {"available": True, "busy": next(busy), "others_cores_avg": 1.0}

    monkeypatch.setattr(contention, "ContentionProbe", Probe)
    path = tmp_path / "bw.json"
    assert machine_bandwidth(path)["copy_gb_s"] == 5.0
    assert machine_bandwidth(path)["copy_gb_s"] == 5.0  # measured again (4.0, busy too): the higher one kept
    quiet = machine_bandwidth(path)
    assert quiet["copy_gb_s"] == 9.0 and quiet["contention"]["busy"] is False
    assert machine_bandwidth(path)["copy_gb_s"] == 9.0  # a quiet measurement is reused
