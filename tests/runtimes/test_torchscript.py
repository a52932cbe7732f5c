"""torchscript export + runtime: a traced archive that reloads and matches the eager module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from squeezebench.methods import MethodContext, apply_chain, parse_chain
from squeezebench.models.sources import load_model, source_of
from squeezebench.runtimes import load_artifact
from squeezebench.runtimes.base import write_export_manifest
from squeezebench.tasks import TASKS

TOL = 1e-4  # fp32 trace vs eager: the same kernels, differences are rounding only


def build(directory: Path, bundle, task, method: str, calibration: list[dict]):
    """What the worker's build phase does, in process: transforms, export, manifest."""
    chain = parse_chain(method)
    ctx = MethodContext(task=task, bundle=bundle, calibration=lambda n: calibration[:n])
    export = apply_chain(bundle, chain, ctx, directory)
    write_export_manifest(bundle, task, chain, directory, export.runtime, export.weight_files,
                          {"facts": ctx.facts}, export.entry)
    return export


def text_inputs(bundle, texts, max_length=16):
    enc = bundle.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@pytest.fixture(scope="module")
def bert(tiny_bert_dir):
    task = TASKS.get("sentence-embedding")
    return task, load_model(source_of(str(tiny_bert_dir)), task)


@pytest.mark.parametrize("optimize", ["none", "freeze"])
def test_torchscript_round_trip_matches_eager(tmp_path, bert, optimize):
    task, bundle = bert
    calib = [text_inputs(bundle, ["The team won the match after a late goal."], 16)]
    export = build(tmp_path, bundle, task, f"torchscript:optimize={optimize}", calib)
    assert export.runtime == "torchscript" and Path(export.weight_files[0]).name == "model.pt"
    _, exe = load_artifact(tmp_path, task, "cpu", 1)
    assert exe.info["name"] == "torchscript" and exe.info["version"] == torch.__version__
    assert exe.info["device"] == "cpu" and exe.info["threads"] >= 1 and exe.info["optimization"] == optimize
    eager = task.wrap(bundle).eval()
    # other batch sizes and lengths than the traced example, with and without padding
    for texts in (["Shares rose."], ["Oil prices fell as markets worried about demand this week.", "Short one."]):
        inputs = text_inputs(bundle, texts, 32)
        with torch.no_grad():
            expected = eager(**inputs)
        got = exe(inputs)
        assert got.shape == expected.shape and got.dtype == torch.float32
        assert (got - expected).abs().max().item() < TOL


def test_torchscript_image_model_on_cpu(tmp_path):
    task = TASKS.get("image-classification")
    bundle = load_model(source_of("python:tests.helpers_models:tiny_cnn"), task)
    torch.manual_seed(1)
    export = build(tmp_path, bundle, task, "torchscript:optimize=optimize_for_inference",
                   [{"pixel_values": torch.randn(1, 3, 32, 32)}])
    _, exe = load_artifact(tmp_path, task, "cpu", 1)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = task.wrap(bundle).eval()(pixel_values=x)
    assert (exe({"pixel_values": x}) - expected).abs().max().item() < TOL
    assert export.entry.export["file_contents"].startswith("TorchScript archive")


def test_cpu_trace_with_pinned_device_is_refused_on_cuda(tmp_path, bert):
    from squeezebench.errors import SqueezebenchError
    from squeezebench.runtimes.base import read_manifest
    from squeezebench.runtimes.torchscript import load_torchscript

    task, bundle = bert
    build(tmp_path, bundle, task, "torchscript", [text_inputs(bundle, ["The team won the match."], 16)])
    manifest = read_manifest(tmp_path)
    assert manifest["traced_on"] == "cpu" and manifest["cpu_device_constants"] > 0  # transformers' mask .to(device)
    with pytest.raises(SqueezebenchError, match="cannot run on CUDA"):
        load_torchscript(tmp_path, manifest, task, "cuda", None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torchscript_cnn_loads_on_cuda(tmp_path):
    task = TASKS.get("image-classification")
    bundle = load_model(source_of("python:tests.helpers_models:tiny_cnn"), task)
    build(tmp_path, bundle, task, "torchscript", [{"pixel_values": torch.randn(1, 3, 32, 32)}])
    _, exe = load_artifact(tmp_path, task, "cuda", None)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = task.wrap(bundle).eval()(pixel_values=x)
    assert (exe({"pixel_values": x}) - expected).abs().max().item() < 1e-3
