"""bnb-int8 / bnb-nf4. They are registered for CUDA only; bitsandbytes >= 0.46 also runs its layers on CPU,
which lets these tests check the module swap and the save/restore round trip without a GPU."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from squeezebench.methods import METHODS, MethodContext, parse_method
from squeezebench.models.bundle import ModelBundle
from squeezebench.runtimes.pytorch import load_state, save_state

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None


def test_bnb_is_cuda_only_and_says_why():
    for name in ("bnb-int8", "bnb-nf4"):
        method = METHODS.get(name)
        assert method.devices == ("cuda",)
        reason = method.check(parse_method(name), MethodContext(task=None, bundle=None, device="cpu"))
        assert reason in ("bitsandbytes needs a CUDA GPU", "bitsandbytes is not installed (pip install bitsandbytes)")


def _cpu_layers_work() -> bool:
    if not HAS_BNB:
        return False
    try:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear8bitLt(16, 16, has_fp16_weights=False).to("cpu")
        layer(torch.randn(2, 16))
        return True
    except Exception:  # noqa: BLE001 - an old bitsandbytes without CPU kernels
        return False


@pytest.mark.skipif(not _cpu_layers_work(), reason="bitsandbytes with CPU kernels is not installed")
@pytest.mark.parametrize("spec", ["bnb-int8:dtype=float32", "bnb-nf4:dtype=float32"])
def test_bnb_round_trip_on_cpu(spec, tiny_llama_dir, tmp_path):
    import bitsandbytes as bnb
    from transformers import LlamaForCausalLM

    def build():
        return LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()

    config = parse_method(spec)
    method = METHODS.get(config.name)
    inputs = torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = build()(inputs).logits
    model = build()
    ctx = MethodContext(task=None, bundle=ModelBundle(module=model, source={}), device="cpu")
    model = method.transform(model, config, ctx)
    kind = bnb.nn.Linear8bitLt if config.name == "bnb-int8" else bnb.nn.Linear4bit
    assert sum(isinstance(m, kind) for m in model.modules()) == ctx.facts["quantized_linear_layers"] == 14
    assert type(model.lm_head) is torch.nn.Linear  # heads stay, as in transformers' BitsAndBytesConfig
    files, fmt = save_state(model, tmp_path)
    skeleton = method.restore(build(), config, ctx.facts)
    load_state(skeleton, tmp_path, fmt)
    with torch.no_grad():
        out, reloaded = model(inputs).logits, skeleton.eval()(inputs).logits
    assert torch.equal(out, reloaded)
    rel = ((out - reference).norm() / reference.norm()).item()
    assert 0 < rel < (0.05 if config.name == "bnb-int8" else 0.3)


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_BNB and torch.cuda.is_available()), reason="needs bitsandbytes and a CUDA GPU")
@pytest.mark.parametrize("name", ["bnb-int8", "bnb-nf4"])
def test_bnb_on_cuda(name, tiny_llama_dir, tmp_path):
    from transformers import LlamaForCausalLM

    def build():
        return LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()

    config = parse_method(name)
    method = METHODS.get(name)
    inputs = torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(1)).cuda()
    model = build()
    ctx = MethodContext(task=None, bundle=ModelBundle(module=model, source={}), device="cuda")
    assert method.check(config, ctx) is None
    model = method.transform(model, config, ctx)
    files, fmt = save_state(model, tmp_path)
    skeleton = method.restore(build(), config, ctx.facts)
    load_state(skeleton, tmp_path, fmt)
    skeleton.to("cuda")
    with torch.no_grad():
        assert torch.allclose(model(inputs).logits.float(), skeleton.eval()(inputs).logits.float(), atol=1e-3)
