"""The OpenVINO exports of a decoder-only LM write a stateful IR (KV cache inside) that OpenVINO GenAI loads: on a
tiny config-built Llama its greedy tokens and logits equal PyTorch's, on GenAI and on the InferRequest loop used
where GenAI is not installed; int4 runs int4 weights; eos and min_new_tokens behave as transformers' generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from squeezebench.methods import MethodContext, apply_chain, parse_chain  # noqa: E402
from squeezebench.models.sources import load_model, source_of  # noqa: E402
from squeezebench.runtimes import load_artifact, openvino_lm  # noqa: E402
from squeezebench.runtimes.base import write_export_manifest  # noqa: E402
from squeezebench.tasks import TASKS  # noqa: E402
from squeezebench.tasks.generation_common import generate_new_tokens  # noqa: E402
from tests.helpers_models import varied  # noqa: E402

GENERATION, CAUSAL = TASKS.get("text-generation"), TASKS.get("causal-lm")
needs_genai = pytest.mark.skipif(openvino_lm.genai_missing() is not None, reason=str(openvino_lm.genai_missing()))


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    bundle = load_model(source_of(str(tiny_llama_dir)), GENERATION)
    varied(bundle.module)
    return bundle


PROMPT = torch.randint(1000, 3000, (1, 9), generator=torch.Generator().manual_seed(0))


def _build(bundle, task, method: str, directory: Path):
    """What the worker's build phase does, in process: export, manifest."""
    ctx = MethodContext(task=task, bundle=bundle, calibration=lambda n: [{"input_ids": PROMPT}][:n])
    export = apply_chain(bundle, parse_chain(method), ctx, directory)
    write_export_manifest(bundle, task, parse_chain(method), directory, export.runtime, export.weight_files,
                          {"facts": ctx.facts}, export.entry)
    return export, ctx


@pytest.fixture(scope="module")
def fp32(llama, tmp_path_factory):
    directory = tmp_path_factory.mktemp("ov-lm-fp32")
    export, ctx = _build(llama, GENERATION, "openvino", directory)
    return directory, export, ctx


def _reference(bundle, n: int, ids: torch.Tensor = PROMPT) -> torch.Tensor:
    with torch.no_grad():
        out = bundle.module.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                     max_new_tokens=n)
    return out[:, ids.shape[1]:]


def test_the_export_writes_a_stateful_folder_genai_loads(llama, fp32):
    directory, export, ctx = fp32
    lm = export.entry.stateful_lm
    assert lm is not None and export.entry.openvino_xml == "genai/openvino_model.xml"
    assert lm.eos_token_ids == [102] and lm.layers == 2 and lm.kv_heads == 2
    assert lm.check_vs_pytorch["max_abs_diff"] < 1e-3 * max(1.0, lm.check_vs_pytorch["reference_max_abs"])
    folder = directory / "genai"
    assert [Path(f).name for f in export.weight_files] == ["openvino_model.bin"]
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == [102]
    import openvino as ov

    model = ov.Core().read_model(str(folder / "openvino_model.xml"))
    assert sorted(i.get_any_name() for i in model.inputs) == ["attention_mask", "beam_idx", "input_ids",
                                                                "position_ids"]
    assert len(model.get_sinks()) == 4  # one Assign per layer's keys and values: the cache is state
    if lm.tokenizer == "converted":
        assert (folder / "openvino_tokenizer.xml").is_file() and (folder / "openvino_detokenizer.xml").is_file()
    assert any("stateful LM" in n for n in ctx.notes)


def _check_generates_like_pytorch(llama, exe):
    ref = _reference(llama, 12)
    assert len(set(ref.flatten().tolist())) > 1
    assert torch.equal(exe.generate_greedy({"input_ids": PROMPT}, 12), ref)
    with torch.no_grad():
        logits = llama.module(PROMPT).logits
    assert torch.allclose(exe({"input_ids": PROMPT}), logits, atol=1e-3)
    # eos ends the answer (and is returned, as transformers does); min_new_tokens forces the length past it
    first = int(ref[0, 0])
    exe.eos = [first]
    assert exe.generate_greedy({"input_ids": PROMPT}, 8).tolist() == [[first]]
    assert generate_new_tokens(exe, llama, PROMPT, 8, min_new_tokens=8).shape == (1, 8)


@needs_genai
def test_genai_generates_pytorchs_greedy_tokens(llama, fp32):
    directory, _, _ = fp32
    _, exe = load_artifact(directory, GENERATION, "cpu", 1)
    assert exe.pipeline is not None and exe.info["generation"].startswith("OpenVINO GenAI")
    assert exe.info["threads"] == 1
    _check_generates_like_pytorch(llama, exe)
    assert any(k.startswith("FullyConnected a=f32") for k in exe.info["compute_layers"])  # after the forward


def test_without_genai_the_stateful_ir_generates_the_same_tokens(llama, fp32, monkeypatch):
    directory, _, _ = fp32
    monkeypatch.setattr(openvino_lm, "genai_missing", lambda: "openvino_genai is not installed (test)")
    _, exe = load_artifact(directory, GENERATION, "cpu", 1)
    assert exe.pipeline is None and exe.info["generation"].startswith("InferRequest loop")
    assert "compute_layers" in exe.info  # compiled at load: the only copy
    _check_generates_like_pytorch(llama, exe)


def test_int4_runs_int4_weights_and_generates(llama, tmp_path):
    export, ctx = _build(llama, CAUSAL, "openvino-int4", tmp_path)
    assert export.entry.stateful_lm is not None and ctx.facts["in_memory_compressed"]
    assert export.entry.export["mode"] == "int4_sym" and export.entry.stateful_lm.check_vs_pytorch["min_cosine"] > 0.5
    _, exe = load_artifact(tmp_path, CAUSAL, "cpu", 1)
    assert exe({"input_ids": PROMPT}).shape == (1, 9, llama.module.config.vocab_size)
    assert any(" w=u4" in k or " w=i4" in k for k in exe.info["compute_layers"]), exe.info["compute_layers"]
    got = exe.generate_greedy({"input_ids": PROMPT}, 6, min_new_tokens=6)
    assert got.shape == (1, 6) and got.dtype == torch.int64


def test_a_model_that_is_not_a_causal_lm_keeps_the_stateless_graph(llama, tiny_bert_dir):
    from squeezebench.methods.lib.openvino_lm import stateful_lm_module

    task = TASKS.get("sentence-embedding")
    assert stateful_lm_module(task.wrap(load_model(source_of(str(tiny_bert_dir)), task))) is None
    assert stateful_lm_module(GENERATION.wrap(llama)) is llama.module


def test_runner_times_answers_and_decode_speed_on_the_stateful_lm(tmp_path, tiny_llama_dir):
    from squeezebench.runner import RunConfig, Runner
    from squeezebench.tasks.data import DatasetOptions
    from tests.conftest import fast_protocol

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"text": f"The council met on day {i} and approved the new budget plan.",
                                        "target": f"Budget approved on day {i}"}) + "\n" for i in range(4)))
    config = RunConfig(models=[str(tiny_llama_dir)], task="text-generation", methods=["original", "openvino-int4"],
                       dataset=f"jsonl:{data}", dataset_options=DatasetOptions(target_column="target"), protocol=fast_protocol(threads=1, limit=3, work_examples=2),
                       out=tmp_path / "results", team="t")
    recs = {r.method: r.dump() for r in Runner(config).run()}
    assert recs["original"]["status"] == "ok", {k: v for k, v in recs["original"].items() if k in ("error", "notes")}
    q4 = recs["openvino-int4"]
    assert q4["status"] == "ok", {k: v for k, v in q4.items() if k in ("error", "notes")}
    path = "OpenVINO GenAI" if openvino_lm.genai_missing() is None else "InferRequest loop"
    assert q4["runtime"]["generation"].startswith(path) and q4["runtime"]["threads"] == 1
    assert q4["latency"]["unit_of_work"]["label"] == "per answer"
    gen = q4["generation"]
    assert gen["decode_tokens_per_s"]["value"] > 0 and "openvino generate_greedy" in gen["protocol"]["gen_decoding"]
    assert [Path(f).name for f in q4["build"]["size"]["weight_files"]] == ["openvino_model.bin"]
