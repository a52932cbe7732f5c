"""prune-structured on tiny config-built models: BERT heads/FFN, Llama KV groups, CNN channels, batch norm."""

from __future__ import annotations

import copy

import torch
from torch import nn

from squeezebench.methods import METHODS, MethodContext, parse_method
from squeezebench.models.bundle import ModelBundle
from tests.methods.pruning_helpers import IMAGE, TEXT, StubTask, bert, cnn, llama, round_trip


def test_structured_bert_is_smaller_and_reloads(tiny_bert_dir, tmp_path):
    r = round_trip("prune-structured:ratio=0.5", lambda: bert(tiny_bert_dir), TEXT, tmp_path, calibrate=True)
    attn = r["skeleton"].encoder.layer[0].attention.self
    assert attn.query.out_features == 32 and attn.num_attention_heads == 2 and attn.all_head_size == 32
    assert r["skeleton"].encoder.layer[0].attention.output.dense.in_features == 32
    assert r["skeleton"].encoder.layer[0].intermediate.dense.out_features == 64
    assert r["skeleton"].encoder.layer[0].output.dense.in_features == 64
    assert torch.allclose(r["out"], r["reloaded"], atol=1e-6)
    assert r["out"].shape == r["ref"].shape
    assert r["size"] < r["orig_size"]
    assert r["facts"]["in_memory_compressed"] is True


def test_structured_more_ratio_means_larger_error(tiny_bert_dir, tmp_path):
    errors = []
    for i, ratio in enumerate((0.25, 0.75)):
        (tmp_path / str(i)).mkdir()
        r = round_trip(f"prune-structured:ratio={ratio}", lambda: bert(tiny_bert_dir), TEXT, tmp_path / str(i),
                   calibrate=True)
        errors.append(float((r["out"] - r["ref"]).abs().mean()))
    assert 0 < errors[0] < errors[1]


def test_structured_llama_removes_kv_groups_and_ffn(tiny_llama_dir, tmp_path):
    r = round_trip("prune-structured:ratio=0.5", lambda: llama(tiny_llama_dir), TEXT, tmp_path, calibrate=True)
    layer = r["skeleton"].model.layers[0]
    assert layer.self_attn.k_proj.out_features == 16  # 1 of 2 KV heads (head_dim 16)
    assert layer.self_attn.q_proj.out_features == 32  # its 2 query heads
    assert layer.self_attn.o_proj.in_features == 32
    assert layer.mlp.down_proj.in_features == 64
    assert torch.allclose(r["out"], r["reloaded"], atol=1e-5)


def test_structured_cnn_prunes_channels(tmp_path):
    r = round_trip("prune-structured:ratio=0.5", cnn, IMAGE, tmp_path, calibrate=True)
    features = r["skeleton"].features
    assert features[0].out_channels == 4 and features[1].num_features == 4 and features[3].in_channels == 4
    assert features[3].out_channels == 8 and r["skeleton"].fc.in_features == 8
    assert torch.allclose(r["out"], r["reloaded"], atol=1e-6)
    assert r["size"] < r["orig_size"]


def test_structured_cnn_reestimates_batchnorm_statistics():
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    calibration = [{"x": x[i:i + 1]} for i in range(6)]

    def pruned(spec):
        model = cnn()
        ctx = MethodContext(task=StubTask(), bundle=ModelBundle(module=model, source={}),
                            calibration=lambda n: calibration[:n])
        return METHODS.get("prune-structured").transform(model, parse_method(spec), ctx), ctx

    model, ctx = pruned("prune-structured:ratio=0.5")
    assert ctx.facts["batchnorm_recalibration_inputs"] == 6
    with torch.no_grad():  # the statistics describe the pruned consumer's output (upstream BN in batch mode)
        h = copy.deepcopy(model).train().features[:4](x)
    bn = model.features[4]
    assert torch.allclose(bn.running_mean, h.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, h.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
    assert bn.momentum == 0.1 and not bn.training

    kept, ctx = pruned("prune-structured:ratio=0.5,bn_samples=0")  # off: the (fresh) statistics are untouched
    assert ctx.facts["batchnorm_recalibration_inputs"] == 0
    assert torch.equal(kept.features[4].running_mean, torch.zeros(8))


def test_structured_check_explains_unsupported_models():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    ctx = MethodContext(task=None, bundle=ModelBundle(module=model, source={}))
    reason = METHODS.get("prune-structured").check(parse_method("prune-structured"), ctx)
    assert reason and "no prunable structure" in reason
