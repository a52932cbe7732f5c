"""OpenVINO exports (fp32, NNCF int8, int8 weight-only) + runtime on tiny config-built models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from squeezebench.methods import METHODS, MethodContext, apply_chain, parse_chain  # noqa: E402
from squeezebench.models.sources import load_model, source_of  # noqa: E402
from squeezebench.runtimes import load_artifact  # noqa: E402
from squeezebench.runtimes.base import write_export_manifest  # noqa: E402
from squeezebench.tasks import TASKS  # noqa: E402

FP32_TOL = 1e-4  # OpenVINO f32 kernels vs PyTorch: rounding only
INT8_MIN_COSINE = 0.95  # int8 weights + activations on a random 2-layer BERT: close, not equal


def build(directory: Path, bundle, task, method: str, calibration: list[dict]):
    """What the worker's build phase does, in process: transforms, export, manifest."""
    chain = parse_chain(method)
    ctx = MethodContext(task=task, bundle=bundle, calibration=lambda n: calibration[:n])
    export = apply_chain(bundle, chain, ctx, directory)
    write_export_manifest(bundle, task, chain, directory, export.runtime, export.weight_files,
                          {"facts": ctx.facts}, export.entry)
    return export, ctx.facts


def text_inputs(bundle, texts, max_length=16):
    enc = bundle.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


SENTENCES = ["The team won the match after a late goal by the striker.", "Shares in the bank rose.",
             "The new phone has a faster chip and a better camera.", "Oil prices fell as markets worried.",
             "The coach praised the players.", "Software updates fixed a security flaw in the browser."]


@pytest.fixture(scope="module")
def bert(tiny_bert_dir):
    task = TASKS.get("sentence-embedding")
    bundle = load_model(source_of(str(tiny_bert_dir)), task)
    calib = [text_inputs(bundle, [s], 16) for s in SENTENCES]
    return task, bundle, calib


@pytest.fixture(scope="module")
def fp32_artifact(bert, tmp_path_factory):
    task, bundle, calib = bert
    directory = tmp_path_factory.mktemp("ov-fp32")
    export, facts = build(directory, bundle, task, "openvino", calib)
    return directory, export, facts


def _eager(task, bundle, inputs):
    with torch.no_grad():
        return task.wrap(bundle).eval()(**inputs)


def test_openvino_fp32_round_trip_and_metadata(bert, fp32_artifact):
    task, bundle, calib = bert
    directory, export, facts = fp32_artifact
    assert export.runtime == "openvino" and Path(export.weight_files[0]).name == "model.bin"
    assert (directory / "model.xml").is_file() and facts["in_memory_compressed"] is False
    # fp32 IR: the weights file holds about 4 bytes per parameter
    params = bundle.parameter_count()
    assert 0.9 < Path(export.weight_files[0]).stat().st_size / (4 * params) < 1.1
    _, exe = load_artifact(directory, task, "cpu", 1)
    info = exe.info
    assert info["name"] == "openvino" and info["version"] and info["device"] == "CPU"
    assert info["threads"] == 1 and info["performance_hint"] == "LATENCY" and info["inference_precision"] == "f32"
    assert any(k.startswith("FullyConnected a=f32") for k in info["compute_layers"])
    # dynamic batch and sequence length; padded and unpadded inputs
    for texts, length in ((["Shares rose."], 8), (SENTENCES[:3], 32)):
        inputs = text_inputs(bundle, texts, length)
        got = exe(inputs)
        assert got.dtype == torch.float32 and got.shape == (len(texts), 64)
        assert (got - _eager(task, bundle, inputs)).abs().max().item() < FP32_TOL


def _cosine(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def test_openvino_int8_runs_int8_kernels_and_stays_close(tmp_path, bert):
    task, bundle, calib = bert
    export, facts = build(tmp_path, bundle, task, "openvino-int8:samples=6", calib)
    assert facts["in_memory_compressed"] is True and facts["calibration_samples"] == 6
    _, exe = load_artifact(tmp_path, task, "cpu", 1)
    layers = exe.info["compute_layers"]
    int8 = sum(n for k, n in layers.items() if k.startswith("FullyConnected a=i8") or k.startswith("FullyConnected a=u8"))
    assert int8 >= 8, layers  # the encoder's linear layers execute with int8 activations
    inputs = text_inputs(bundle, SENTENCES, 16)
    cos = _cosine(exe(inputs), _eager(task, bundle, inputs))
    assert cos.min().item() > INT8_MIN_COSINE


def test_openvino_int8_weights_file_is_smaller(tmp_path, bert, fp32_artifact):
    task, bundle, calib = bert
    _, fp32, _ = fp32_artifact
    w8, facts = build(tmp_path, bundle, task, "openvino-int8-weights", calib)
    assert facts["in_memory_compressed"] is True
    ratio = Path(w8.weight_files[0]).stat().st_size / Path(fp32.weight_files[0]).stat().st_size
    assert ratio < 0.4, ratio  # int8 weights + per-channel scales
    _, exe = load_artifact(tmp_path, task, "cpu", 1)
    assert any(" w=u8" in k or " w=i8" in k for k in exe.info["compute_layers"]), exe.info["compute_layers"]
    inputs = text_inputs(bundle, SENTENCES, 16)
    assert _cosine(exe(inputs), _eager(task, bundle, inputs)).min().item() > 0.99


def test_openvino_image_model_and_cuda_is_refused(tmp_path):
    task = TASKS.get("image-classification")
    bundle = load_model(source_of("python:tests.helpers_models:tiny_cnn"), task)
    torch.manual_seed(1)
    build(tmp_path, bundle, task, "openvino", [{"pixel_values": torch.randn(1, 3, 32, 32)}])
    _, exe = load_artifact(tmp_path, task, "cpu", 1)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = task.wrap(bundle).eval()(pixel_values=x)
    assert (exe({"pixel_values": x}) - expected).abs().max().item() < FP32_TOL
    assert METHODS.get("openvino").devices == ("cpu",)
    from squeezebench.runtimes import RUNTIMES

    assert "CPU plugin only" in RUNTIMES.get("openvino").check("cuda")


# --- encoder-decoder (a task with export_graphs): one IR per graph, generation on the graphs ------------------
def _whisper_build(directory: Path, method: str):
    from tests.helpers_seq2seq import GraphTask, bundle_of, features, tiny_whisper

    task, model = GraphTask(), tiny_whisper(seed=2)
    export, facts = build(directory, bundle_of(model), task, method, features(6))
    return model, task, export, facts


def test_whisper_openvino_graphs_generate_like_pytorch(tmp_path):
    from tests.helpers_seq2seq import batch, features, pytorch_greedy, same_tokens

    model, task, export, facts = _whisper_build(tmp_path, "openvino")
    assert [Path(p).name for p in export.weight_files] == ["encoder.bin", "decoder.bin", "decoder_with_past.bin"]
    assert all((tmp_path / f"{n}.xml").is_file() for n in ("encoder", "decoder", "decoder_with_past"))
    _, exe = load_artifact(tmp_path, task, "cpu", 1)
    assert exe.info["inference_precision"] == "f32" and exe.info["decoding"] == "kv-cache"
    x = batch(features(3, seed=5))
    ref = pytorch_greedy(model, x["input_features"], 12)
    got = exe.generate_greedy(x, 12)
    assert same_tokens(got, ref), (got, ref)


def test_whisper_openvino_int8_graphs_run(tmp_path):
    from tests.helpers_seq2seq import batch, features

    _, task, export, facts = _whisper_build(tmp_path, "openvino-int8:samples=4")
    assert facts["in_memory_compressed"] is True
    _, exe = load_artifact(tmp_path, task, "cpu", 1)
    layers = exe.info["compute_layers"]
    assert all(any(" a=u8" in k or " a=i8" in k for k in layers[g]) for g in layers), layers
    got = exe.generate_greedy(batch(features(2, seed=5)), 8)
    assert got.dtype == torch.int64 and got.shape[0] == 2 and 1 <= got.shape[1] <= 8


def test_openvino_int4_causal_lm_runs_int4_weights_and_stays_close(tmp_path, tiny_llama_dir):
    task = TASKS.get("causal-lm")
    bundle = load_model(source_of(str(tiny_llama_dir)), task)
    with torch.no_grad():  # larger weights than the init's, so that logits differ clearly between tokens
        for p in bundle.module.parameters():
            if p.dim() == 2:
                p.mul_(5)
    ids = bundle.tokenizer(" ".join(SENTENCES), return_tensors="pt", add_special_tokens=False)["input_ids"]
    calib = [{"input_ids": ids[:, :16]}]
    export, facts = build(tmp_path, bundle, task, "openvino-int4:group_size=32", calib)
    assert facts["in_memory_compressed"] is True
    _, exe = load_artifact(tmp_path, task, "cpu", 1)
    for length in (16, 9):  # the sequence axis stays dynamic
        x = {"input_ids": ids[:, :length]}
        got, ref = exe(x), _eager(task, bundle, x)
        assert got.shape == ref.shape
        assert _cosine(got[0], ref[0]).mean().item() > 0.9
    # read from the compiled forward (compiled on first use when GenAI compiles its own copy for generation)
    assert any(" w=u4" in k or " w=i4" in k for k in exe.info["compute_layers"]), exe.info["compute_layers"]
