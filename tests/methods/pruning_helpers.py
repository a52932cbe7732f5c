"""Shared by the pruning tests: tiny models, inputs, and a transform -> save -> restore -> reload round trip."""

from __future__ import annotations

import torch

from squeezebench.methods import METHODS, MethodContext, parse_method
from squeezebench.models.bundle import ModelBundle
from squeezebench.runtimes.pytorch import load_state, save_state
from tests.helpers_models import TinyCNN


def bert(path):
    from transformers import BertModel

    return BertModel.from_pretrained(path).eval()


def llama(path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(path).eval()


def cnn():
    torch.manual_seed(0)
    return TinyCNN().eval()


TEXT = {"input_ids": torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(1)),
        "attention_mask": torch.ones(2, 12, dtype=torch.long)}
IMAGE = {"x": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))}


def run(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0] if "input_ids" in inputs else model(**inputs)


class StubTask:
    """Enough of a task for calibration: the wrapped module is the model itself."""

    def wrap(self, bundle):
        return bundle.module


def round_trip(spec, build, inputs, tmp_path, calibrate=False):
    """Transform a fresh model, save, restore on another fresh model, load; returns what the tests compare."""
    config = parse_method(spec)
    method = METHODS.get(config.name)
    model = build()
    reference = run(model, inputs)
    ctx = MethodContext(task=None, bundle=None)
    if calibrate:
        ctx = MethodContext(task=StubTask(), bundle=ModelBundle(module=model, source={}),
                            calibration=lambda n: [inputs] * 2)
    model = method.transform(model, config, ctx) or model
    out = run(model, inputs)
    (tmp_path / "a").mkdir(parents=True)
    files, fmt = save_state(model, tmp_path / "a")
    skeleton = method.restore(build(), config, ctx.facts) or build()
    load_state(skeleton, tmp_path / "a", fmt)
    reloaded = run(skeleton.eval(), inputs)
    (tmp_path / "orig").mkdir()
    orig_files, _ = save_state(build(), tmp_path / "orig")
    return {"model": model, "ref": reference, "out": out, "reloaded": reloaded, "facts": ctx.facts,
            "size": files[0].stat().st_size, "orig_size": orig_files[0].stat().st_size, "skeleton": skeleton}
