"""GGUF export of a tiny config-built Llama: the writer (checked by reading the file back with transformers, no
llama.cpp needed), effective weights of packed/scaled linears, and llama.cpp quantisation when it is installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")

from squeezebench.methods.export_gguf import (bpe_vocab, effective_linear_weight, llama_tensors,  # noqa: E402
                                              permute_rows, write_gguf)

TEXT = ("The team won the match after a late goal by the striker. Shares in the bank rose after strong profits. "
        "The new phone has a faster chip and a better camera. Oil prices fell as markets worried about demand. ") * 4


def bpe_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on a few sentences (what a GPT-2/SmolLM-style model ships)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|endoftext|>")


def tiny_llama(vocab_size: int, tied: bool = True, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=tied, rope_theta=10000.0, bos_token_id=1, eos_token_id=0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger than the init's 0.02 std so that logits differ clearly between tokens
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(5)
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return bpe_tokenizer()


def test_permute_rows_is_the_inverse_of_transformers_gguf_reader():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = torch.randn(64, 32)
    back = LlamaTensorProcessor(config={})._reverse_permute_weights(permute_rows(w, 4).numpy(), 4, 4)
    assert np.array_equal(back, w.numpy())
    assert not torch.equal(permute_rows(w, 4), w)


def test_effective_weight_of_packed_and_input_scaled_linears():
    from squeezebench.methods.awq import InputScaledLinear
    from squeezebench.methods.lib.packed_linear import WeightOnlyLinear

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=False)
    packed = WeightOnlyLinear.from_linear(linear, 4, 32)
    assert torch.allclose(effective_linear_weight(packed, 64), packed.weight_float(), atol=1e-5)
    scaled = InputScaledLinear(packed, 64)
    scaled.input_scale.uniform_(0.5, 2.0)
    expect = packed.weight_float() * scaled.input_scale[None, :]
    assert torch.allclose(effective_linear_weight(scaled, 64), expect, atol=1e-5)
    assert effective_linear_weight(linear, 64) is not None and torch.equal(effective_linear_weight(linear, 64),
                                                                          linear.weight)


@pytest.mark.parametrize("tied", [True, False])
def test_f32_gguf_reads_back_in_transformers_with_the_same_logits(tmp_path, tokenizer, tied):
    from transformers import AutoModelForCausalLM

    model = tiny_llama(len(tokenizer), tied)
    tensors, hparams = llama_tensors(model)
    assert hparams["tied_embeddings"] is tied and ("output.weight" in tensors) is (not tied)
    vocab = bpe_vocab(tokenizer, hparams["vocab_size"])
    assert len(vocab["tokens"]) == hparams["vocab_size"] and vocab["merges"]
    write_gguf(tmp_path / "m.gguf", tensors, hparams, vocab, "f32", "tiny")
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    ids = tokenizer(TEXT[:200], return_tensors="pt")["input_ids"][:, :32]
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, back(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_non_llama_models_are_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    from squeezebench.errors import SqueezebenchError

    with pytest.raises(SqueezebenchError, match="supports llama"):
        llama_tensors(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)))


# --- with llama.cpp ---------------------------------------------------------------------------------------------
def _llamacpp():
    from squeezebench.runtimes.llamacpp import llama_cpp_missing

    reason = llama_cpp_missing()
    if reason:
        pytest.skip(reason)


def build(directory: Path, model, tokenizer, method: str):
    from types import SimpleNamespace

    from squeezebench.methods import MethodContext, apply_chain, parse_chain
    from squeezebench.models.bundle import ModelBundle
    from squeezebench.runtimes.base import write_export_manifest
    from squeezebench.tasks import TASKS

    task = TASKS.get("causal-lm")
    bundle = ModelBundle(module=model, source={"kind": "python", "name": "tiny"})
    bundle.tokenizer = tokenizer
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    calibration = [{"input_ids": ids[:, i * 48:(i + 1) * 48]} for i in range(4)]
    chain = parse_chain(method)
    ctx = MethodContext(task=task, bundle=bundle, calibration=lambda n: calibration[:n],
                        protocol=SimpleNamespace(calibration_samples=4))
    for config in chain:
        from squeezebench.methods import METHODS

        reason = METHODS.get(config.name).check and METHODS.get(config.name).check(config, ctx)
        assert not reason, reason
    export = apply_chain(bundle, chain, ctx, directory)
    write_export_manifest(bundle, task, chain, directory, export.runtime, export.weight_files,
                          {"facts": ctx.facts, "notes": ctx.notes}, export.entry)
    return export, ctx, ids


@pytest.mark.parametrize("method,min_cos", [("gguf:quant=f32", 0.9999), ("gguf-q8_0", 0.995), ("gguf-q4_0", 0.9),
                                            ("gguf-q4_k_m", 0.9)])
def test_llamacpp_runs_the_exported_gguf_like_pytorch(tmp_path, tokenizer, method, min_cos):
    _llamacpp()
    from squeezebench.runtimes import load_artifact
    from squeezebench.tasks import TASKS

    model = tiny_llama(len(tokenizer))
    export, ctx, ids = build(tmp_path, model, tokenizer, method)
    gguf = export.entry.gguf
    assert gguf["check_vs_pytorch"]["mean_cosine"] >= min_cos
    assert gguf["f32_conversion_check"]["mean_cosine"] >= 0.999 and gguf["f32_conversion_check"]["top1_agreement"] == 1
    quant = method.split("=")[-1].removeprefix("gguf-")
    if quant == "f32":
        assert set(gguf["tensor_types"]) == {"F32"}
    else:  # llama.cpp really wrote low-bit tensors (a 64-wide row may fall back to another block type)
        low = {k for k in gguf["tensor_types"] if k.startswith(("Q", "IQ"))}
        assert low, gguf["tensor_types"]
        assert gguf["weight_bytes_per_token"] < 0.6 * 4 * sum(p.numel() for p in model.parameters())
    _, run = load_artifact(tmp_path, TASKS.get("causal-lm"), "cpu", threads=1)
    assert run.info["threads"] == 1 and run.info["name"] == "llamacpp"
    x = {"input_ids": ids[:, :40]}
    got = run(x)
    with torch.no_grad():
        ref = model(input_ids=x["input_ids"]).logits.float()
    assert got.shape == ref.shape
    cos = torch.nn.functional.cosine_similarity(got[0], ref[0], dim=-1).mean().item()
    assert cos >= min_cos
    # greedy decoding with the KV cache agrees with the full-sequence logits of the same runtime
    new = run.generate_greedy({"input_ids": ids[:, :16]}, 6)
    assert new.shape == (1, 6) and new.dtype == torch.long
    seq = torch.cat([ids[:, :16], new], 1)
    full = run({"input_ids": seq})[0]
    assert torch.equal(full[15:-1].argmax(-1), new[0])
    if quant == "f32":  # and with transformers' greedy generate on the PyTorch model
        hf = model.generate(ids[:, :16], max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
        assert torch.equal(hf[0, 16:], new[0])


def test_gguf_after_int4_weight_only_says_it_requantised(tmp_path, tokenizer):
    _llamacpp()
    model = tiny_llama(len(tokenizer))
    export, ctx, _ = build(tmp_path, model, tokenizer, "int4-weight-only:group_size=32+gguf-q8_0")
    assert export.entry.gguf["requantized_after_4bit"]
    assert any("re-quantised" in n for n in ctx.notes)
    # q8_0 of the int4 weights: llama.cpp's logits follow the int4 PyTorch model closely
    assert export.entry.gguf["check_vs_pytorch"]["mean_cosine"] > 0.995


def test_a_wrong_conversion_is_caught_by_the_f32_check(tmp_path, tokenizer, monkeypatch):
    _llamacpp()
    from squeezebench.errors import SqueezebenchError
    from squeezebench.methods import export_gguf

    monkeypatch.setattr(export_gguf, "permute_rows", lambda w, heads: w)  # forget llama.cpp's rotary layout
    with pytest.raises(SqueezebenchError, match="conversion is broken"):
        build(tmp_path, tiny_llama(len(tokenizer)), tokenizer, "gguf-q8_0")
