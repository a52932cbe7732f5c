"""prune-unstructured, prune-structured, prune-2of4 on tiny config-built models."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from squeezebench.methods import METHODS, MethodContext, parse_method
from squeezebench.methods.pruning import pack_bits, pack_codes, unpack_bits, unpack_codes
from squeezebench.models.bundle import ModelBundle
from squeezebench.runtimes.pytorch import load_state, save_state
from tests.helpers_models import TinyCNN


def _bert(path):
    from transformers import BertModel

    return BertModel.from_pretrained(path).eval()


def _llama(path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(path).eval()


def _cnn():
    torch.manual_seed(0)
    return TinyCNN().eval()


TEXT = {"input_ids": torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(1)),
        "attention_mask": torch.ones(2, 12, dtype=torch.long)}
IMAGE = {"x": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))}


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0] if "input_ids" in inputs else model(**inputs)


class _StubTask:
    """Enough of a task for calibration: the wrapped module is the model itself."""

    def wrap(self, bundle):
        return bundle.module


def _apply(spec, build, inputs, tmp_path, calibrate=False):
    """Transform a fresh model, save, restore on another fresh model, load; returns what the tests compare."""
    config = parse_method(spec)
    method = METHODS.get(config.name)
    model = build()
    reference = _run(model, inputs)
    ctx = MethodContext(task=None, bundle=None)
    if calibrate:
        ctx = MethodContext(task=_StubTask(), bundle=ModelBundle(module=model, source={}),
                            calibration=lambda n: [inputs] * 2)
    model = method.transform(model, config, ctx) or model
    out = _run(model, inputs)
    (tmp_path / "a").mkdir(parents=True)
    files, fmt = save_state(model, tmp_path / "a")
    skeleton = method.restore(build(), config, ctx.facts) or build()
    load_state(skeleton, tmp_path / "a", fmt)
    reloaded = _run(skeleton.eval(), inputs)
    (tmp_path / "orig").mkdir()
    orig_files, _ = save_state(build(), tmp_path / "orig")
    return {"model": model, "ref": reference, "out": out, "reloaded": reloaded, "facts": ctx.facts,
            "size": files[0].stat().st_size, "orig_size": orig_files[0].stat().st_size, "skeleton": skeleton}


def test_bit_packing_round_trips():
    flags = torch.rand(101) > 0.5
    assert pack_bits(flags).numel() == 13
    assert torch.equal(unpack_bits(pack_bits(flags), 101), flags)
    for bits in (1, 2, 3, 4, 5, 8):
        codes = torch.randint(0, 2 ** bits, (77,))
        assert pack_codes(codes, bits).numel() == -(-77 * bits // 8)
        assert torch.equal(unpack_codes(pack_codes(codes, bits), bits, 77), codes)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_round_trip_sparsity_and_size(tiny_bert_dir, tmp_path, scope):
    r = _apply(f"prune-unstructured:sparsity=0.5,scope={scope}", lambda: _bert(tiny_bert_dir), TEXT, tmp_path)
    assert torch.equal(r["out"], r["reloaded"])
    assert not torch.equal(r["out"], r["ref"])
    assert abs(r["facts"]["sparsity_achieved"] - 0.5) < 0.01
    linears = [m for m in r["skeleton"].modules() if isinstance(m, nn.Linear)]
    zeros = sum(int((m.weight == 0).sum()) for m in linears)
    assert abs(zeros / sum(m.weight.numel() for m in linears) - 0.5) < 0.01
    if scope == "layer":
        for m in linears:
            assert abs(float((m.weight == 0).float().mean()) - 0.5) < 0.02
    # only compact buffers are saved: no dense Linear weight in the state dict
    state = r["model"].state_dict()
    assert "encoder.layer.0.attention.self.query.weight" not in state
    assert state["encoder.layer.0.attention.self.query.weight_mask"].dtype == torch.uint8
    # the tiny model is dominated by its (unpruned) embeddings: the Linear part shrinks to 17/32
    linear_bytes = sum(m.weight.numel() * 4 for m in linears)
    assert r["orig_size"] - r["size"] > 0.4 * linear_bytes
    assert r["facts"]["in_memory_compressed"] is False


def test_more_sparsity_means_larger_error(tiny_bert_dir, tmp_path):
    errors = []
    for i, s in enumerate((0.3, 0.6, 0.9)):
        (tmp_path / str(i)).mkdir()
        r = _apply(f"prune-unstructured:sparsity={s}", lambda: _bert(tiny_bert_dir), TEXT, tmp_path / str(i))
        errors.append(float((r["out"] - r["ref"]).abs().mean()))
    assert errors[0] < errors[1] < errors[2]


def test_unstructured_high_sparsity_uses_csr_and_round_trips(tmp_path):
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 8)).eval()

    x = {"input": torch.randn(3, 512)}
    r = _apply("prune-unstructured:sparsity=0.97,scope=layer", build, x, tmp_path)
    assert "weight_crow" in r["model"][0]._compact_names
    assert torch.allclose(r["out"], r["reloaded"], atol=1e-6)
    assert r["size"] < 0.1 * r["orig_size"]
    # >= 90 % sparse Linear layers run the sparse CSR matmul; the result equals the dense pruned weight's
    weight = r["skeleton"][0].weight
    assert weight.layout == torch.sparse_csr and r["facts"]["in_memory_compressed"] is True
    dense = weight.to_dense()
    assert torch.allclose(r["skeleton"][0](x["input"]), x["input"] @ dense.T + r["skeleton"][0].bias, atol=1e-5)
    off = _apply("prune-unstructured:sparsity=0.97,scope=layer,csr_matmul=off", build, x, tmp_path / "off")
    assert off["skeleton"][0].weight.layout == torch.strided
    assert torch.allclose(off["out"], r["out"], atol=1e-5)


def test_structured_bert_is_smaller_and_reloads(tiny_bert_dir, tmp_path):
    r = _apply("prune-structured:ratio=0.5", lambda: _bert(tiny_bert_dir), TEXT, tmp_path, calibrate=True)
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
        r = _apply(f"prune-structured:ratio={ratio}", lambda: _bert(tiny_bert_dir), TEXT, tmp_path / str(i),
                   calibrate=True)
        errors.append(float((r["out"] - r["ref"]).abs().mean()))
    assert 0 < errors[0] < errors[1]


def test_structured_llama_removes_kv_groups_and_ffn(tiny_llama_dir, tmp_path):
    r = _apply("prune-structured:ratio=0.5", lambda: _llama(tiny_llama_dir), TEXT, tmp_path, calibrate=True)
    layer = r["skeleton"].model.layers[0]
    assert layer.self_attn.k_proj.out_features == 16  # 1 of 2 KV heads (head_dim 16)
    assert layer.self_attn.q_proj.out_features == 32  # its 2 query heads
    assert layer.self_attn.o_proj.in_features == 32
    assert layer.mlp.down_proj.in_features == 64
    assert torch.allclose(r["out"], r["reloaded"], atol=1e-5)


def test_structured_cnn_prunes_channels(tmp_path):
    r = _apply("prune-structured:ratio=0.5", _cnn, IMAGE, tmp_path, calibrate=True)
    features = r["skeleton"].features
    assert features[0].out_channels == 4 and features[1].num_features == 4 and features[3].in_channels == 4
    assert features[3].out_channels == 8 and r["skeleton"].fc.in_features == 8
    assert torch.allclose(r["out"], r["reloaded"], atol=1e-6)
    assert r["size"] < r["orig_size"]


def test_structured_cnn_reestimates_batchnorm_statistics():
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    calibration = [{"x": x[i:i + 1]} for i in range(6)]

    def pruned(spec):
        model = _cnn()
        ctx = MethodContext(task=_StubTask(), bundle=ModelBundle(module=model, source={}),
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


def test_24_check_on_cpu_and_pattern(tmp_path):
    method = METHODS.get("prune-2of4")
    assert "CUDA" in method.check(parse_method("prune-2of4"), MethodContext(task=None, bundle=None, device="cpu"))

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)).eval()

    r = _apply("prune-2of4", build, {"input": torch.randn(3, 128)}, tmp_path)
    w = r["skeleton"][0].weight
    assert torch.equal((w.view(-1, 4) != 0).sum(dim=1), torch.full((64 * 32,), 2))
    assert "weight" in dict(r["skeleton"][2].named_parameters())  # 64x10 is not a kernel-friendly shape
    assert torch.equal(r["out"], r["reloaded"])


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8,
                    reason="2:4 sparse kernels need a CUDA GPU with sm80+")
def test_24_runs_semi_structured_on_cuda():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 128)).half().eval()
    method = METHODS.get("prune-2of4")
    model = method.transform(model, parse_method("prune-2of4"), MethodContext(task=None, bundle=None, device="cuda"))
    x = torch.randn(64, 128, dtype=torch.float16)
    dense_out = model(x)
    model.cuda()
    out = model(x.cuda())
    assert model[0]._semi_structured
    assert torch.allclose(out.float().cpu(), dense_out.float(), atol=1e-2)
