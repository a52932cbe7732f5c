"""ONNX export methods on tiny config-built models: round trip, agreement with PyTorch, int8 size and facts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from squeezebench.methods import METHODS, MethodContext, parse_chain, parse_method  # noqa: E402
from squeezebench.models.sources import load_model, source_of  # noqa: E402
from squeezebench.runtimes.base import load_artifact, write_export_manifest  # noqa: E402
from squeezebench.tasks import TASKS  # noqa: E402
from squeezebench.tasks.data import load_dataset  # noqa: E402
from squeezebench.tasks.text_common import batches  # noqa: E402
from tests.conftest import TOPICS, fast_protocol  # noqa: E402

FP32_TOL = 1e-4  # ORT fp32 vs PyTorch fp32, embeddings of unit length
INT8_MIN_COSINE = 0.98  # int8 vs fp32 embeddings of the tiny BERT, per row


def _setup(model: str, task_name: str, dataset: str):
    task = TASKS.get(task_name)
    protocol = fast_protocol()
    bundle = load_model(source_of(model), task)
    data = task.prepare(load_dataset(dataset), bundle, protocol)
    ctx = MethodContext(task=task, bundle=bundle, calibration=lambda n: task.calibration_inputs(bundle, data, protocol, n))
    return task, bundle, ctx


def _export(method: str, task, bundle, ctx, directory: Path):
    config = parse_method(method)
    assert METHODS.get(config.name).check(config, ctx) is None
    result = METHODS.get(config.name).export(task.wrap(bundle).eval(), config, ctx, directory)
    write_export_manifest(bundle, task, parse_chain(method), directory, result.runtime, result.weight_files,
                          {"facts": ctx.facts}, result.entry)
    return result


def _texts_batch(bundle):
    texts = [t for ts in TOPICS.values() for t in ts][:3]
    return next(batches(bundle, texts, 3, 32))  # batch 3, padded to its longest: other shape than the export's


@pytest.fixture(scope="module")
def bert(tiny_bert_dir, topic_csv):
    return _setup(str(tiny_bert_dir), "sentence-embedding", f"csv:{topic_csv}")


def test_onnx_fp32_round_trip_matches_pytorch(bert, tmp_path):
    task, bundle, ctx = bert
    result = _export("onnx", task, bundle, ctx, tmp_path)
    assert result.runtime == "onnxruntime" and [p.name for p in result.weight_files] == ["model.onnx"]
    export = result.entry.onnx_export
    assert export["exporter"] == "torchscript" and export["opset"] == 17
    assert export["check_vs_pytorch"]["max_abs_diff"] < FP32_TOL
    assert len(export["check_vs_pytorch"]["inputs"]) == 2  # the example and a batch-2, half-length input
    assert ctx.facts["in_memory_compressed"] is False
    assert result.entry.ort_graph_optimization_level == "ORT_ENABLE_ALL"

    _, executable = load_artifact(tmp_path, task, "cpu", threads=1)
    inputs = _texts_batch(bundle)
    with torch.inference_mode():
        ref = task.wrap(bundle).eval()(**inputs)
    got = executable(inputs)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert (got - ref).abs().max().item() < FP32_TOL
    info = executable.info
    assert info["name"] == "onnxruntime" and info["version"] and info["threads"] == 1
    assert info["providers"] == ["CPUExecutionProvider"] and info["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert "pooling" not in info  # the exported graph already pools


def test_onnx_int8_dynamic_is_smaller_and_close(bert, tmp_path):
    task, bundle, ctx = bert
    fp32_params = bundle.parameter_count()
    result = _export("onnx-int8-dynamic", task, bundle, ctx, tmp_path)
    q = result.entry.quantization
    assert q["weight_type"] == "QInt8" and q["per_channel"] is True and q["reduce_range"] is True
    assert "7-bit" in ctx.facts["in_memory_format"]
    lo, hi = _int8_weight_range(tmp_path / "model.onnx")  # 255 * 64 * 2 = 32640: no u8s8 pair sum saturates int16
    assert -64 <= lo and hi <= 64
    size = sum(p.stat().st_size for p in result.weight_files)
    assert size < 0.4 * fp32_params * 4  # int8 weights: well under the fp32 bytes
    assert [p.name for p in tmp_path.glob("*.onnx")] == ["model.onnx"]  # only the quantised graph is kept
    assert q["check_vs_pytorch"]["mean_cosine"] > INT8_MIN_COSINE
    assert ctx.facts["in_memory_compressed"] is True
    assert result.entry.ort_optimized_graph["int8_ops"]

    _, executable = load_artifact(tmp_path, task, "cpu")
    inputs = _texts_batch(bundle)
    with torch.inference_mode():
        ref = task.wrap(bundle).eval()(**inputs)
    cos = torch.nn.functional.cosine_similarity(executable(inputs), ref, dim=1)
    assert cos.min().item() > INT8_MIN_COSINE
    assert executable.info["int8_kernel"].startswith("u8s8 ")  # the path this CPU takes is recorded


def _int8_weight_range(path: Path) -> tuple[int, int]:
    """(min, max) over the graph's int8 weight initializers."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(path))
    values = [numpy_helper.to_array(t) for t in model.graph.initializer
              if t.data_type == TensorProto.INT8 and t.dims and not t.name.endswith("zero_point")]
    assert values, "no int8 weights in the graph"
    return int(min(v.min() for v in values)), int(max(np.max(v) for v in values))


def test_onnx_int8_static_calibrates(bert, tmp_path):
    task, bundle, ctx = bert
    ctx.facts.clear()
    result = _export("onnx-int8-static:calibration_samples=6,calibrate=minmax", task, bundle, ctx, tmp_path)
    q = result.entry.quantization
    assert q["calibration_samples"] == 6 and q["format_onnx"] == "QDQ" and q["calibrate_method"] == "MinMax"
    assert q["quantized_nodes"] > 0 and q["left_float"]["after a GELU"] == 2  # one FFN down-projection per layer
    assert q["reduce_range"] is True and -64 <= _int8_weight_range(tmp_path / "model.onnx")[0]
    assert q["check_vs_pytorch"]["mean_cosine"] > 0.9
    assert METHODS.get("onnx-int8-static").needs_calibration


def test_int8_refuses_half_precision_model(bert):
    task, bundle, ctx = bert
    half = MethodContext(task=task, bundle=type(bundle)(module=torch.nn.Linear(2, 2).half(), source={}))
    reason = METHODS.get("onnx-int8-dynamic").check(parse_method("onnx-int8-dynamic"), half)
    assert reason and "fp32" in reason


def test_image_model_dynamo_export_has_dynamic_batch(image_dir, tmp_path):
    task, bundle, ctx = _setup("python:tests.helpers_models:tiny_cnn", "image-classification", f"image-dir:{image_dir}")
    result = _export("onnx:exporter=dynamo,opset=18", task, bundle, ctx, tmp_path)
    export = result.entry.onnx_export
    assert export["exporter_requested"] == "dynamo"
    assert export["exporter"] in ("dynamo", "torchscript")  # torchscript only with a recorded fallback reason
    assert export["exporter"] == "dynamo" or export["exporter_fallback_reason"]
    assert export["dynamic_axes"]["pixel_values"] == {0: "batch"}
    _, executable = load_artifact(tmp_path, task, "cpu")
    x = torch.randn(5, 3, 32, 32)
    with torch.inference_mode():
        ref = task.wrap(bundle).eval()(pixel_values=x)
    assert (executable({"pixel_values": x}) - ref).abs().max().item() < FP32_TOL * max(1.0, ref.abs().max().item())


def test_runner_original_then_onnx_chain(tmp_path, image_dir):
    from squeezebench.runner import RunConfig, Runner

    config = RunConfig(models=["python:tests.helpers_models:tiny_cnn"], task="image-classification",
                       methods=["original", "original+onnx"], dataset=f"image-dir:{image_dir}",
                       out=tmp_path / "results", team="t", protocol=fast_protocol())
    recs = {r.method: r.dump() for r in Runner(config).run()}
    orig, onnx = recs["original"], recs["onnx"]
    assert orig["status"] == "ok" and onnx["status"] == "ok", onnx
    assert onnx["build"]["runtime"] == "onnxruntime" and onnx["runtime"]["name"] == "onnxruntime"
    assert onnx["build"]["size"]["weight_files"] == ["model.onnx"]
    assert onnx["quality"]["metrics"]["top1_agreement"]["value"] == 1.0
    assert onnx["quality"]["metrics"]["accuracy"]["value"] == orig["quality"]["metrics"]["accuracy"]["value"]


# --- encoder-decoder (a task with export_graphs): one ONNX file per graph, generation on the graphs -----------
def _whisper_export(method: str, directory: Path, multilingual: bool = False):
    from tests.helpers_seq2seq import GraphTask, bundle_of, features, tiny_whisper

    task, model = GraphTask(), tiny_whisper(multilingual, seed=2, language="en" if multilingual else None)
    bundle, samples = bundle_of(model), features(6)
    ctx = MethodContext(task=task, bundle=bundle, calibration=lambda n: samples[:n])
    result = _export(method, task, bundle, ctx, directory)
    return model, task, result, ctx


def test_whisper_onnx_graphs_generate_like_pytorch(tmp_path):
    from tests.helpers_seq2seq import batch, features, pytorch_greedy, same_tokens

    model, task, result, ctx = _whisper_export("onnx", tmp_path, multilingual=True)
    assert [p.name for p in result.weight_files] == ["encoder.onnx", "decoder.onnx", "decoder_with_past.onnx"]
    extra = result.entry.dump()
    assert extra["entry_graph"] == "encoder" and extra["generation"]["prompt"] == [50258, 50259, 50359, 50363]
    assert all(e["check_vs_pytorch"]["max_abs_diff"] < 1e-3 for e in extra["onnx_export"].values())
    assert ctx.facts["in_memory_compressed"] is False
    _, exe = load_artifact(tmp_path, task, "cpu", threads=1)
    x = batch(features(3, seed=5))
    ref = pytorch_greedy(model, x["input_features"], 12)
    got = exe.generate_greedy(x, 12)
    assert same_tokens(got, ref), (got, ref)
    assert exe.info["decoding"] == "kv-cache" and exe.last_generation["decoder_steps"] == 11
    with torch.inference_mode():  # the timed call: the encoder graph
        hidden = model.get_encoder()(x["input_features"]).last_hidden_state
    assert (exe(x) - hidden).abs().max().item() < 1e-4 * max(1.0, hidden.abs().max().item())


def test_whisper_onnx_int8_dynamic_graphs_run(tmp_path):
    from tests.helpers_seq2seq import batch, features

    _, task, result, ctx = _whisper_export("onnx-int8-dynamic", tmp_path)
    assert set(result.entry.quantization) == {"encoder", "decoder", "decoder_with_past"}
    assert all(s["int8_ops"] for s in result.entry.ort_optimized_graph.values())
    checks = {n: q["check_vs_pytorch"] for n, q in result.entry.quantization.items()}
    assert "next_token_agreement" not in checks["encoder"]  # states, not logits
    assert all(0.0 <= checks[n]["next_token_agreement"] <= 1.0 for n in ("decoder", "decoder_with_past"))
    assert all(_int8_weight_range(tmp_path / f"{n}.onnx")[0] >= -64 for n in checks)
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["decoder.onnx", "decoder_with_past.onnx", "encoder.onnx"]
    _, exe = load_artifact(tmp_path, task, "cpu", threads=1)
    got = exe.generate_greedy(batch(features(2, seed=5)), 8)
    assert got.dtype == torch.int64 and got.shape[0] == 2 and 1 <= got.shape[1] <= 8


def test_a_llama_causal_lm_exports_to_onnx_and_agrees_with_pytorch(tmp_path, tiny_llama_dir, topic_csv):
    """The causal-lm forward passes an explicit all-ones mask, so the exporters never meet transformers' torch.diff."""
    from squeezebench.runner import RunConfig, Runner

    config = RunConfig(models=[str(tiny_llama_dir)], task="causal-lm", methods=["original", "onnx"],
                       dataset=f"csv:{topic_csv}", out=tmp_path / "results", team="t", protocol=fast_protocol())
    recs = {r.method: r for r in Runner(config).run()}
    assert recs["onnx"].ok, recs["onnx"].error
    assert recs["onnx"].quality.metrics["top1_agreement"].value > 0.99
