"""gptq on the tiny config-built Llama: beats round-to-nearest on real layer inputs, saves packed, reloads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from squeezebench.methods import METHODS, MethodContext, parse_method
from squeezebench.methods import gptq as gptq_mod
from squeezebench.methods.lib.packed_linear import WeightOnlyLinear
from squeezebench.methods.lib.rtn import dequantize, quantize_rtn, quantize_with, rtn_params
from squeezebench.models.bundle import ModelBundle
from squeezebench.runtimes.pytorch import load_state, save_state
from tests.conftest import TOPICS


def llama(path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(path).eval()


def calibration(path, n=6, seq=24):
    """Real text windows tokenized with the model's tokenizer (the topic sentences, joined)."""
    from transformers import AutoTokenizer

    text = " ".join(t for texts in TOPICS.values() for t in texts) * 3
    ids = AutoTokenizer.from_pretrained(path)(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    return [{"input_ids": ids[i * seq:(i + 1) * seq].unsqueeze(0).clone()} for i in range(n)]


def layer_inputs(model, name, samples):
    xs = []
    handle = model.get_submodule(name).register_forward_pre_hook(
        lambda _m, a: xs.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for s in samples:
            model(**s)
    handle.remove()
    return torch.cat(xs).float()


def context(model, samples):
    return MethodContext(task=None, bundle=ModelBundle(module=model, source={}), calibration=lambda n: samples[:n])


@pytest.mark.parametrize("layer, act_order", [("model.layers.0.self_attn.q_proj", False),
                                              ("model.layers.1.mlp.down_proj", True)])
def test_gptq_reconstructs_layer_output_better_than_rtn(tiny_llama_dir, layer, act_order):
    model = llama(tiny_llama_dir)
    samples = calibration(tiny_llama_dir)
    X = layer_inputs(model, layer, samples)
    W = model.get_submodule(layer).weight.detach()
    H = 2 * X.T.double() @ X.double() / X.shape[0]
    group = 32
    codes, scales, zeros = gptq_mod.gptq_quantize(W, H, 4, group, act_order=act_order)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 15
    assert scales.shape == (W.shape[0], W.shape[1] // group)
    Q = dequantize(codes, scales.half(), zeros, group)
    R = dequantize(*quantize_rtn(W, 4, group), group)
    err_gptq = ((X @ (W - Q).T) ** 2).mean()
    err_rtn = ((X @ (W - R).T) ** 2).mean()
    assert err_gptq < 0.8 * err_rtn, (float(err_gptq), float(err_rtn))


def test_gptq_without_calibration_error_matches_rtn_grid():
    """With H = I (no correlations, no error feedback) GPTQ must round exactly like RTN on the stored grid."""
    torch.manual_seed(0)
    W = torch.randn(8, 64)
    codes, scales, zeros = gptq_mod.gptq_quantize(W, torch.eye(64) * 1e6, 4, 16, damp=1e-6)
    s, z = rtn_params(W, 4, 16)
    assert torch.equal(codes, quantize_with(W, s.half().float(), z, 4, 16))


def test_gptq_transform_saves_packed_int4_and_reloads(tiny_llama_dir, tmp_path):
    samples = calibration(tiny_llama_dir)
    config = parse_method("gptq:group_size=32")
    method = METHODS.get("gptq")
    model = llama(tiny_llama_dir)
    probe = {"input_ids": samples[0]["input_ids"]}
    with torch.no_grad():
        reference = model(**probe).logits
    ctx = context(model, samples)
    assert method.check(config, ctx) is None
    model = method.transform(model, config, ctx) or model
    assert ctx.facts["in_memory_compressed"] is True
    assert ctx.facts["calibration_samples"] == len(samples) and ctx.facts["quantized_linears"] == 14
    assert ctx.facts["sequential_blocks"] == 2
    assert not any(type(m) is nn.Linear for m in model.modules())
    q = model.get_submodule("model.layers.0.mlp.down_proj")
    assert isinstance(q, WeightOnlyLinear) and q.qweight.dtype == torch.uint8
    assert q.qweight.shape == (q.out_features, q.in_features // 2)
    with torch.no_grad():
        out = model(**probe).logits
    assert not torch.equal(out, reference)
    assert torch.nn.functional.cosine_similarity(out.flatten(), reference.flatten(), dim=0) > 0.9
    files, fmt = save_state(model, tmp_path)
    skeleton = method.restore(llama(tiny_llama_dir), config, ctx.facts)
    load_state(skeleton, tmp_path, fmt)
    with torch.no_grad():
        assert torch.equal(skeleton.eval()(**probe).logits, out)
    state = torch.load(files[0], weights_only=True) if fmt == "torch" else None
    linear_bytes = sum(v.numel() * v.element_size() for k, v in (state or skeleton.state_dict()).items()
                       if ".layers." in k and "layernorm" not in k)
    linear_params = sum(m.in_features * m.out_features for n, m in skeleton.named_modules()
                        if isinstance(m, WeightOnlyLinear) and ".layers." in n)
    assert linear_bytes * 8 / linear_params < 5.5  # ~4 bits per weight plus fp16 scales / uint8 zeros per 32


def test_gptq_check_skips_a_model_without_linears():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    ctx = MethodContext(task=None, bundle=ModelBundle(module=model, source={}))
    reason = METHODS.get("gptq").check(parse_method("gptq"), ctx)
    assert reason and "Linear" in reason


def test_gptq_rejects_unsupported_bits():
    from squeezebench.errors import SqueezebenchError

    with pytest.raises(SqueezebenchError):
        parse_method("gptq:bits=3")
