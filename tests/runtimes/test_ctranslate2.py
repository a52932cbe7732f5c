"""The ctranslate2 runtime and the ct2 exports: CTranslate2's float32 greedy decoding gives PyTorch's tokens (tiny
Whisper, tiny Llama), int8 runs and says which compute type ran, a model CTranslate2 cannot convert is skipped with
the reason, and the real runner builds and measures ``original`` and ``ct2-int8`` side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from squeezebench.methods import METHODS, MethodContext
from squeezebench.methods.base import why_not
from squeezebench.methods.export_ct2 import Ct2Config, Ct2Int8Config, export_ct2
from squeezebench.models.sources import load_model, source_of
from squeezebench.runtimes.ctranslate2 import ct2_missing, executable_for
from squeezebench.tasks import TASKS
from squeezebench.tasks.data import load_dataset
from tests.conftest import fast_protocol
from tests.helpers_models import varied
from tests.helpers_speech import librispeech_dir, tiny_whisper_dir

pytestmark = pytest.mark.skipif(ct2_missing() is not None, reason=str(ct2_missing()))

SPEECH, CAUSAL = TASKS.get("speech-recognition"), TASKS.get("causal-lm")


def _export(bundle, task, config, inputs: dict[str, torch.Tensor], directory: Path):
    """The ct2 export as the build worker runs it, and the executable the runtime makes of its folder."""
    ctx = MethodContext(task=task, bundle=bundle, calibration=lambda n: [inputs][:n])
    result = export_ct2(task.wrap(bundle).eval(), config, ctx, directory)
    return result, executable_for(directory / result.entry.ct2_dir, result.entry, "cpu", 1), ctx


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    bundle = load_model(source_of(str(tiny_whisper_dir(tmp_path_factory.mktemp("tiny-whisper")))), SPEECH)
    varied(bundle.module)
    return bundle


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    bundle = load_model(source_of(str(tiny_llama_dir)), CAUSAL)
    varied(bundle.module)
    return bundle


def test_whisper_float32_decodes_pytorchs_tokens(whisper, tmp_path):
    torch.manual_seed(0)
    feats = torch.randn(2, 16, 3000)
    result, ex, ctx = _export(whisper, SPEECH, Ct2Config(), {"input_features": feats[:1]}, tmp_path)
    assert result.runtime == "ctranslate2" and result.entry.ct2_family == "whisper"
    assert result.entry.ct2["check_vs_pytorch"]["mean_cosine"] > 0.999  # the encoder states
    assert ex.info["compute_type"] == "float32" and ex.info["threads"] == 1
    with torch.no_grad():  # 16 decoder positions: the prompt (2) and up to 14 new tokens
        ref = whisper.module.generate(feats, do_sample=False, num_beams=1, max_new_tokens=14)
    got = ex.generate_greedy({"input_features": feats}, 128)  # what the speech task asks: capped as transformers does
    assert got.shape == ref.shape == (2, 14) and len(set(ref.flatten().tolist())) > 1  # varied, not one token
    assert torch.equal(got, ref)
    assert torch.equal(ex.generate_greedy({"input_features": feats}, 5), ref[:, :5])
    assert torch.allclose(ex({"input_features": feats[:1]}), SPEECH.wrap(whisper)(input_features=feats[:1]),
                          atol=1e-4)
    assert not ctx.facts["in_memory_compressed"]


def test_llama_float32_logits_and_greedy_tokens_equal_pytorch(llama, tmp_path):
    ids = torch.randint(1000, 3000, (1, 9), generator=torch.Generator().manual_seed(0))
    result, ex, _ = _export(llama, CAUSAL, Ct2Config(), {"input_ids": ids}, tmp_path)
    assert result.entry.ct2_family == "generator" and result.entry.eos_token_ids == [102]
    with torch.no_grad():
        logits = llama.module(ids).logits
        ref = llama.module.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                    max_new_tokens=12)[:, ids.shape[1]:]
    assert torch.allclose(ex({"input_ids": ids}), logits, atol=1e-3)
    got = ex.generate_greedy({"input_ids": ids}, 12)
    assert len(set(ref.flatten().tolist())) > 1 and torch.equal(got, ref)
    assert ex.generate_greedy({"input_ids": ids}, 12, min_new_tokens=12).shape == (1, 12)


def test_llama_stops_at_eos_as_pytorch_does(llama, tmp_path):
    ids = torch.randint(1000, 3000, (1, 9), generator=torch.Generator().manual_seed(0))
    _, ex, _ = _export(llama, CAUSAL, Ct2Config(), {"input_ids": ids}, tmp_path)
    first = int(ex.generate_greedy({"input_ids": ids}, 1)[0, 0])
    ex.eos = [first]  # the first greedy token ends the answer
    assert ex.generate_greedy({"input_ids": ids}, 8).tolist() == [[first]]
    assert ex.generate_greedy({"input_ids": ids}, 8, min_new_tokens=8).shape == (1, 8)
    # the generation speed measure forces its length through generate_new_tokens: CTranslate2 honours it
    from squeezebench.tasks.generation_common import generate_new_tokens

    assert generate_new_tokens(ex, llama, ids, 8, min_new_tokens=8).shape == (1, 8)
    assert generate_new_tokens(ex, llama, ids, 8).tolist() == [[first]]


def test_int8_runs_and_reports_its_compute_type(llama, tmp_path):
    ids = torch.randint(1000, 3000, (1, 9), generator=torch.Generator().manual_seed(0))
    result, ex, ctx = _export(llama, CAUSAL, Ct2Int8Config(), {"input_ids": ids}, tmp_path)
    assert ex.info["compute_type_requested"] == "int8"
    assert ex.info["compute_type"].startswith("int8")  # int8_float32 on a CPU
    assert result.entry.ct2["compute_type_on_cpu"] == ex.info["compute_type"]
    assert ctx.facts["in_memory_compressed"] and "CTranslate2 int8" in ctx.facts["in_memory_format"]
    assert 0.5 < result.entry.ct2["check_vs_pytorch"]["mean_cosine"] <= 1.0001
    fp32_bytes = sum(p.numel() * 4 for p in llama.module.parameters())
    assert (tmp_path / "ct2" / "model.bin").stat().st_size < 0.5 * fp32_bytes
    assert ex.generate_greedy({"input_ids": ids}, 4, min_new_tokens=4).shape == (1, 4)


def test_a_model_ctranslate2_cannot_convert_is_skipped_with_the_reason(tmp_path):
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    from tests.conftest import _save_tokenizer

    cfg = GPTNeoConfig(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global"], 2]],
                       max_position_embeddings=64)
    GPTNeoForCausalLM(cfg).save_pretrained(tmp_path / "neo")
    _save_tokenizer(tmp_path / "neo")
    bundle = load_model(source_of(str(tmp_path / "neo")), CAUSAL)
    reason = why_not(METHODS.get("ct2-int8"), MethodContext(task=CAUSAL, bundle=bundle))
    assert reason.startswith("CTranslate2 cannot convert gpt_neo models (GPTNeoConfig); it converts ")
    assert "Llama" in reason and "Whisper" in reason


def test_a_bert_sentence_embedding_is_pooled_as_pytorch_pools_it(tiny_bert_dir, tmp_path):
    task = TASKS.get("sentence-embedding")
    bundle = load_model(source_of(str(tiny_bert_dir)), task)
    batch = bundle.tokenizer(["a short one", "a longer sentence with a few more words in it"], padding=True,
                             return_tensors="pt")
    inputs = {k: batch[k] for k in task.input_names}
    assert inputs["attention_mask"].min() == 0  # a padded row: CTranslate2 runs it unpadded
    result, ex, _ = _export(bundle, task, Ct2Config(), inputs, tmp_path)
    assert result.entry.ct2_family == "encoder" and result.entry.mean_pool
    with torch.no_grad():
        ref = task.wrap(bundle)(**inputs)
    assert torch.allclose(ex(inputs), ref, atol=1e-4)
    assert not hasattr(ex, "generate_greedy") and "generation" not in ex.info


def test_a_model_with_a_task_head_says_why(tiny_bert_dir):
    task = TASKS.get("text-classification")
    bundle = load_model(source_of(str(tiny_bert_dir)), task, num_labels=2)
    reason = why_not(METHODS.get("ct2"), MethodContext(task=task, bundle=bundle))
    assert reason.startswith("squeezebench runs Whisper, decoder-only causal LMs") and \
        "BertForSequenceClassification is none of them" in reason


def test_runner_measures_original_and_ct2_int8_whisper(tmp_path):
    from squeezebench.runner import RunConfig, Runner

    data = librispeech_dir(tmp_path / "ls")
    config = RunConfig(models=[str(tiny_whisper_dir(tmp_path / "w"))], task="speech-recognition",
                       methods=["original", "ct2-int8"], dataset=f"audio-dir:{data}",
                       protocol=fast_protocol(threads=1, limit=2, work_examples=2), out=tmp_path / "results", team="t")
    recs = {r.method: r.dump() for r in Runner(config).run()}
    orig, q8 = recs["original"], recs["ct2-int8"]
    assert orig["status"] == "ok", orig
    assert q8["status"] == "ok", q8
    rt = q8["runtime"]
    assert rt["name"] == "ctranslate2" and rt["threads"] == 1 and rt["compute_type"].startswith("int8")
    assert q8["latency"]["unit_of_work"]["label"] == "per utterance"  # one transcript per timed call
    assert q8["quality"]["protocol"]["generation"] == "executable.generate_greedy"
    assert set(q8["quality"]["metrics"]) >= {"wer", "cer", "transcript_agreement"}
    assert q8["build"]["size"]["in_memory_format"].startswith("CTranslate2 int8")


def test_runner_measures_original_and_ct2_int8_llama(tmp_path, tiny_llama_dir, topic_csv):
    from squeezebench.runner import RunConfig, Runner

    config = RunConfig(models=[str(tiny_llama_dir)], task="causal-lm", methods=["original", "ct2-int8"],
                       dataset=f"csv:{topic_csv}", protocol=fast_protocol(threads=1), out=tmp_path / "results",
                       team="t")
    recs = {r.method: r.dump() for r in Runner(config).run()}
    q8 = recs["ct2-int8"]
    assert recs["original"]["status"] == "ok" and q8["status"] == "ok", q8
    m = q8["quality"]["metrics"]
    assert 0.8 < m["perplexity_ratio_to_original"]["value"] < 1.25  # scored on the original's windows
    gen = q8["generation"]
    assert gen["decode_tokens_per_s"]["value"] > 0 and "ctranslate2 generate_greedy" in gen["protocol"]["gen_decoding"]


def test_runner_measures_a_ct2_sentence_embedding(tmp_path, tiny_bert_dir, topic_csv):
    from squeezebench.runner import RunConfig, Runner

    config = RunConfig(models=[str(tiny_bert_dir)], task="sentence-embedding", methods=["original", "ct2"],
                       dataset=f"csv:{topic_csv}", protocol=fast_protocol(threads=1), out=tmp_path / "results",
                       team="t")
    recs = {r.method: r.dump() for r in Runner(config).run()}
    ct2 = recs["ct2"]
    assert recs["original"]["status"] == "ok" and ct2["status"] == "ok", ct2
    assert ct2["runtime"]["family"] == "encoder" and ct2["runtime"]["compute_type"] == "float32"
    size, orig_size = ct2["build"]["size"], recs["original"]["build"]["size"]
    assert [Path(f).name for f in size["weight_files"]] == ["model.bin"]  # not its config or vocabulary
    assert 0.98 < size["weights_bytes"] / orig_size["weights_bytes"] < 1.02  # float32 weights, as the original's
    # float32 embeddings of the same weights: the same neighbours as the original's
    assert ct2["quality"]["metrics"]["accuracy"]["value"] == recs["original"]["quality"]["metrics"]["accuracy"]["value"]


def test_a_gpu_run_is_refused_with_the_reason():
    from squeezebench.runtimes import RUNTIMES

    assert RUNTIMES.get("ctranslate2").unavailable("cuda:0") == "squeezebench runs CTranslate2 on the CPU only for now"
    assert RUNTIMES.get("ctranslate2").unavailable("cpu") is None
