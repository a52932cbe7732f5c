"""awq on the tiny config-built Llama: the scale search beats round-to-nearest, folds are exact, reloads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from squeezebench.methods import METHODS, parse_method
from squeezebench.methods import awq as awq_mod
from squeezebench.methods import weight_only
from squeezebench.methods.lib.rtn import dequantize, quantize_rtn
from squeezebench.runtimes.pytorch import load_state, save_state
from tests.methods.test_gptq import calibration, context, layer_inputs, llama


def _with_outlier_channels(model):
    """Real LLMs have a few input channels with much larger activations; give the tiny model some."""
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[:3] *= 12
            layer.post_attention_layernorm.weight[5:7] *= 8
    return model


def test_awq_scale_search_lowers_group_output_error(tiny_llama_dir):
    model = _with_outlier_channels(llama(tiny_llama_dir))
    samples = calibration(tiny_llama_dir)
    X = layer_inputs(model, "model.layers.0.self_attn.q_proj", samples)
    attn = model.model.layers[0].self_attn
    W = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach()
    s, alpha, losses = awq_mod.search_scale(W, X, 4, 32, grid=20)
    assert alpha > 0 and s.shape == (W.shape[1],)
    assert losses["awq_mse"] < 0.9 * losses["rtn_mse"], losses
    # the reported loss is real: recompute it with the stored int4 grid
    q = dequantize(*quantize_rtn(W * s, 4, 32), 32) / s
    assert ((X @ (q - W).T) ** 2).mean() < losses["rtn_mse"]


def test_awq_transform_folds_scales_and_reloads(tiny_llama_dir, tmp_path):
    samples = calibration(tiny_llama_dir)
    config = parse_method("awq:group_size=32")
    method = METHODS.get("awq")
    build = lambda: _with_outlier_channels(llama(tiny_llama_dir))  # noqa: E731
    model = build()
    norm_before = model.model.layers[0].input_layernorm.weight.detach().clone()
    probe = {"input_ids": samples[0]["input_ids"]}
    with torch.no_grad():
        reference = model(**probe).logits
    rtn = build()
    weight_only.quantize_model(rtn, 4, 32, False, True, True)
    ctx = context(model, samples)
    model = method.transform(model, config, ctx) or model
    facts = ctx.facts
    assert facts["in_memory_compressed"] is True and facts["quantized_linears"] == 14
    assert facts["awq_search"]["folded_groups"] >= 4  # q/k/v and gate/up into the norms, down into up
    assert not torch.equal(model.model.layers[0].input_layernorm.weight, norm_before)  # 1/s folded into the norm
    assert not any(type(m) is nn.Linear for m in model.modules())
    for name in facts["awq_input_scaled"]:  # o_proj under grouped-query attention: explicit input scale
        assert isinstance(model.get_submodule(name), awq_mod.InputScaledLinear)
    with torch.no_grad():
        out = model(**probe).logits
        rtn_out = rtn(**probe).logits
    assert ((out - reference) ** 2).mean() < ((rtn_out - reference) ** 2).mean()
    files, fmt = save_state(model, tmp_path)
    skeleton = method.restore(build(), config, facts)
    load_state(skeleton, tmp_path, fmt)
    with torch.no_grad():
        assert torch.equal(skeleton.eval()(**probe).logits, out)


def test_fold_check_rejects_a_norm_that_is_not_multiplicative():
    class OnePlusNorm(nn.Module):  # Gemma-style: y = x_hat * (1 + w); dividing w by s is not exact
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.rand(8))

        def forward(self, x):
            return x / x.norm(dim=-1, keepdim=True) * (1 + self.weight)

    x = torch.randn(4, 8)
    s = torch.rand(8) + 0.5
    assert awq_mod._foldable_norm(nn.LayerNorm(8), x, s)
    assert not awq_mod._foldable_norm(OnePlusNorm(), x, s)


def test_awq_check_skips_a_model_without_linears():
    from squeezebench.methods import MethodContext
    from squeezebench.models.bundle import ModelBundle

    ctx = MethodContext(task=None, bundle=ModelBundle(module=nn.Sequential(nn.Conv2d(3, 4, 3)), source={}))
    assert METHODS.get("awq").check(parse_method("awq"), ctx)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_awq_runs_on_cuda(tiny_llama_dir):
    samples = calibration(tiny_llama_dir)
    model = llama(tiny_llama_dir)
    ctx = context(model, samples)
    ctx.device = "cuda"
    model = METHODS.get("awq").transform(model, parse_method("awq:group_size=32"), ctx) or model
    assert next(model.parameters()).device.type == "cpu"
