"""int8-dynamic and int8-static (PyTorch's int8 Linear kernels on CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from squeezebench.methods import METHODS, MethodContext, parse_method
from squeezebench.methods.lib.packed_linear import QuantizedEmbedding
from squeezebench.models.bundle import ModelBundle
from squeezebench.runtimes.pytorch import load_state, save_state
from tests.helpers_models import TinyCNN

INPUTS = {"input_ids": torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(1)),
          "attention_mask": torch.ones(2, 12, dtype=torch.long)}


class _Task:
    input_names = ("input_ids", "attention_mask")

    def wrap(self, bundle):
        return bundle.module


def _calibration(n):
    g = torch.Generator().manual_seed(2)
    return [{"input_ids": torch.randint(1000, 5000, (1, 12), generator=g),
             "attention_mask": torch.ones(1, 12, dtype=torch.long)} for _ in range(n)]


def _apply(spec, tiny_bert_dir, tmp_path):
    from transformers import BertModel

    def build():
        return BertModel.from_pretrained(tiny_bert_dir).eval()

    config = parse_method(spec)
    method = METHODS.get(config.name)
    with torch.no_grad():
        reference = build()(**INPUTS)[0]
    model = build()
    ctx = MethodContext(task=_Task(), bundle=ModelBundle(module=model, source={}), calibration=_calibration)
    assert method.check(config, ctx) is None
    model = method.transform(model, config, ctx) or model
    directory = tmp_path / spec.replace(":", "_").replace(",", "_").replace("=", "_")
    directory.mkdir()
    files, fmt = save_state(model, directory)
    skeleton = method.restore(build(), config, ctx.facts) or build()
    load_state(skeleton, directory, fmt)  # torch.load(weights_only=True) + strict load_state_dict
    with torch.no_grad():
        out, reloaded = model(**INPUTS)[0], skeleton.eval()(**INPUTS)[0]
    return {"ref": reference, "out": out, "reloaded": reloaded, "facts": ctx.facts, "format": fmt,
            "size": files[0].stat().st_size, "model": model, "notes": ctx.notes}


@pytest.mark.parametrize("spec", ["int8-dynamic", "int8-dynamic:per_channel=false,embeddings=true,float_down_projections=false",
                                  "int8-static:calibration_samples=4", "int8-static:embeddings=true,calibration_samples=3"])
def test_int8_round_trips_and_stays_close(spec, tiny_bert_dir, tmp_path):
    from torch.ao.nn.quantized import Linear as StaticLinear
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    r = _apply(spec, tiny_bert_dir, tmp_path)
    assert r["format"] == "torch"  # packed int8 params are not plain tensors
    assert torch.equal(r["out"], r["reloaded"])
    rel = ((r["out"] - r["ref"]).norm() / r["ref"].norm()).item()
    assert 0 < rel < 0.1
    kind = DynamicLinear if spec.startswith("int8-dynamic") else StaticLinear
    n = sum(isinstance(m, kind) for m in r["model"].modules())
    float_names = sorted(name for name, m in r["model"].named_modules() if type(m) is nn.Linear)
    if spec == "int8-dynamic":  # the feed-forward down projections (intermediate -> hidden) stay fp32 by default
        assert float_names == ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]
        assert n == r["facts"]["quantized_linear_layers"] == 2 * 5 + 1
        assert r["facts"]["float_linear_layers"] == 2
    else:
        assert n == r["facts"]["quantized_linear_layers"] == 2 * 6 + 1  # 6 per layer + pooler
        assert float_names == []
    assert r["facts"]["in_memory_compressed"] is True
    embedded = "embeddings=true" in spec
    assert isinstance(r["model"].embeddings.word_embeddings, QuantizedEmbedding) == embedded
    if spec.startswith("int8-static"):
        assert r["facts"]["calibration_samples"] == (4 if "samples=4" in spec else 3)


def test_int8_static_uses_calibration_ranges(tiny_bert_dir, tmp_path):
    r = _apply("int8-static:calibration_samples=4", tiny_bert_dir, tmp_path)
    quant = r["model"].encoder.layer[0].attention.self.query.quant
    assert float(quant.scale) != 1.0  # a range was observed (an uncalibrated observer gives scale 1)


def test_int8_is_cpu_only_and_needs_linears():
    dyn = parse_method("int8-dynamic")
    method = METHODS.get("int8-dynamic")
    assert method.devices == ("cpu",)
    assert "CPU" in method.check(dyn, MethodContext(task=None, bundle=None, device="cuda"))
    no_linear = ModelBundle(module=nn.Sequential(nn.Conv2d(3, 4, 3)), source={})
    assert "no nn.Linear" in method.check(dyn, MethodContext(task=None, bundle=no_linear))
    assert method.check(dyn, MethodContext(task=None, bundle=ModelBundle(module=TinyCNN(), source={}))) is None
    assert METHODS.get("int8-static").needs_calibration
