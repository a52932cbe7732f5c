"""ONNX Runtime runtime: device checks, pooling of token-embedding graphs, and ONNX files given as the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from squeezebench.errors import SqueezebenchError  # noqa: E402
from squeezebench.methods import parse_chain  # noqa: E402
from squeezebench.models.sources import source_of  # noqa: E402
from squeezebench.runtimes.base import MANIFEST, load_artifact  # noqa: E402
from squeezebench.runtimes.onnxruntime import (check_device, count_onnx_parameters,  # noqa: E402
                                               mean_pool_normalize)
from squeezebench.tasks import TASKS  # noqa: E402
from squeezebench.tasks.sentence_embedding import MeanPooledEmbedding  # noqa: E402
from tests.conftest import minilm_tokenizer_dir  # noqa: E402

FP32_TOL = 1e-4


class TokenEmbeddings(torch.nn.Module):
    """A BERT that outputs last_hidden_state and takes token_type_ids, like packaged ONNX encoders."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]


@pytest.fixture(scope="module")
def token_onnx(tiny_bert_dir, tmp_path_factory):
    from transformers import BertModel

    model = BertModel.from_pretrained(tiny_bert_dir).eval()
    path = tmp_path_factory.mktemp("onnx-input") / "encoder.onnx"
    ids = torch.randint(1000, 2000, (1, 12))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    mask = torch.ones_like(ids)
    mask[:, -3:] = 0
    torch.onnx.export(TokenEmbeddings(model).eval(), (ids, mask, torch.zeros_like(ids)), str(path),
                      input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17,
                      dynamo=False)
    return model, path


def test_check_device():
    assert check_device("cpu") is None
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "onnxruntime-gpu" in check_device("cuda")


def test_numpy_pooling_matches_the_task_pooling():
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 8)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])

    class Fake(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return (hidden,)

    ref = MeanPooledEmbedding(Fake())(input_ids=None, attention_mask=mask)
    got = mean_pool_normalize(hidden.numpy(), mask.numpy())
    assert np.abs(got - ref.numpy()).max() < 1e-6


def test_onnx_source_records_tokenizer(token_onnx):
    _, path = token_onnx
    source = source_of(f"onnx:{path}", tokenizer="offline:all-minilm-l6-v2")
    assert source["kind"] == "onnx" and source["tokenizer"] == str(minilm_tokenizer_dir().resolve())
    assert source_of(f"onnx:{path}")["tokenizer"] is None  # nothing beside the file
    with pytest.raises(SqueezebenchError, match="does not exist"):
        source_of(f"onnx:{path}", tokenizer="./no-such-tokenizer")


def _job(path, tmp_path, tokenizer):
    return {"source": source_of(f"onnx:{path}", tokenizer=tokenizer), "artifact_dir": str(tmp_path / "artifact")}


def build_onnx_input(job, task, chain):
    """The build phase of an onnx: model, run by the worker as a run does (the record's build section, as JSON)."""
    from squeezebench.variant import Job
    from squeezebench.worker import _jsonable, build

    result = build(Job(source=job["source"], task=task.name, dataset="bbc-news", dataset_options={}, protocol={},
                       method="+".join(c.name for c in chain), chain=[{"name": c.name, "params": c.params()}
                                                                     for c in chain],
                       device="cpu", artifact_dir=job["artifact_dir"], reference_path="", is_original=False))
    return json.loads(json.dumps(result, default=_jsonable))


def test_onnx_input_model_is_copied_and_pooled(token_onnx, tiny_bert_dir, tmp_path):
    model, path = token_onnx
    task = TASKS.get("sentence-embedding")
    result = build_onnx_input(_job(path, tmp_path, str(tiny_bert_dir)), task, parse_chain("original"))
    assert result["status"] == "ok" and result["runtime"] == "onnxruntime"
    size = result["size"]
    assert size["weight_files"] == ["model.onnx"] and size["weights_bytes"] == path.stat().st_size
    assert size["parameters"] == count_onnx_parameters(path) > 0
    assert size["in_memory_compressed"] is False  # an fp32 graph
    artifact = tmp_path / "artifact"
    manifest = json.loads((artifact / MANIFEST).read_text())
    assert manifest["runtime"] == "onnxruntime" and (artifact / "preprocessing" / "tokenizer_config.json").is_file()

    bundle, executable = load_artifact(artifact, task, "cpu", threads=1)
    assert "pooling" in executable.info and executable.info["token_type_ids"].startswith("fed as zeros")
    enc = bundle.tokenizer(["a short text", "a somewhat longer text about football matches"], padding=True,
                           return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with torch.inference_mode():
        ref = MeanPooledEmbedding(model)(**inputs)
    got = executable(inputs)
    assert got.shape == ref.shape and (got - ref).abs().max().item() < FP32_TOL


def test_onnx_input_only_as_is(token_onnx, tiny_bert_dir, tmp_path):
    _, path = token_onnx
    task = TASKS.get("sentence-embedding")
    result = build_onnx_input(_job(path, tmp_path, str(tiny_bert_dir)), task, parse_chain("fp16"))
    assert result == {"status": "skipped", "reason": "an ONNX input model can only be measured as is"}
    with pytest.raises(SqueezebenchError, match="--tokenizer"):
        build_onnx_input(_job(path, tmp_path, None), task, parse_chain("original"))


def test_cli_passes_tokenizer(token_onnx):
    from squeezebench.cli import build_parser

    _, path = token_onnx
    args = build_parser().parse_args(["run", "--model", f"onnx:{path}", "--task", "sentence-embedding",
                                      "--tokenizer", "offline:all-minilm-l6-v2"])
    assert args.tokenizer == "offline:all-minilm-l6-v2"


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, tiny_bert_dir, where):
    from tests.helpers_onnx import onnx_with_external

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"s" * 64)
    model_dir = tmp_path / "downloads" / "model"
    location = {"parent": "../../secret.bin", "absolute": str(secret), "symlink": "link.bin"}[where]
    if where == "symlink":
        model_dir.mkdir(parents=True)
        (model_dir / "link.bin").symlink_to(secret)
    path = onnx_with_external(model_dir / "hostile.onnx", location)
    out = tmp_path / "out"
    job = {"source": source_of(f"onnx:{path}", tokenizer=str(tiny_bert_dir)), "artifact_dir": str(out / "artifact")}
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(SqueezebenchError, match="outside its folder") as info:
        build_onnx_input(job, TASKS.get("sentence-embedding"), parse_chain("original"))
    assert "\n" not in str(info.value)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere


def test_external_data_inside_the_folder_is_copied(tmp_path, tiny_bert_dir):
    from tests.helpers_onnx import onnx_with_external

    model_dir = tmp_path / "model"
    (model_dir / "weights").mkdir(parents=True)
    (model_dir / "weights" / "w.bin").write_bytes(np.eye(4, dtype=np.float32).tobytes())
    path = onnx_with_external(model_dir / "m.onnx", "weights/w.bin")
    job = {"source": source_of(f"onnx:{path}", tokenizer=str(tiny_bert_dir)), "artifact_dir": str(tmp_path / "a")}
    result = build_onnx_input(job, TASKS.get("image-classification"), parse_chain("original"))
    assert result["status"] == "ok", result
    assert (tmp_path / "a" / "weights" / "w.bin").read_bytes() == (model_dir / "weights" / "w.bin").read_bytes()
    missing = onnx_with_external(model_dir / "m2.onnx", "gone.bin")
    job["source"] = source_of(f"onnx:{missing}", tokenizer=str(tiny_bert_dir))
    with pytest.raises(SqueezebenchError, match="missing from"):
        build_onnx_input(job, TASKS.get("image-classification"), parse_chain("original"))
