"""int8-weight-only / int4-weight-only and their building blocks (round to nearest, packing, modules)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from squeezebench.methods import METHODS, MethodContext, parse_method
from squeezebench.methods.weight_only import (QuantizedEmbedding, WeightOnlyLinear, dequantize, head_names,
                                              linears_to_quantize, pack_int4, quantize_rtn, replace_linears,
                                              restore_as, unpack_int4)
from squeezebench.runtimes.pytorch import load_state, save_state
from tests.conftest import fast_protocol


def test_rtn_error_is_at_most_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(8, 300)  # 300 = 2 full groups of 128 and a short one of 44
    for bits in (4, 8):
        for symmetric in (False, True):
            codes, scales, zeros = quantize_rtn(w, bits, 128, symmetric)
            assert codes.dtype == torch.uint8 and codes.shape == w.shape
            assert scales.shape == zeros.shape == (8, 3)
            assert int(codes.max()) <= 2 ** bits - 1
            err = (dequantize(codes, scales, zeros, 128) - w).abs()
            step = scales.repeat_interleave(128, dim=1)[:, :300]
            assert (err <= step / 2 + 1e-6).all()
    # group_size <= 0: one group per row
    codes, scales, zeros = quantize_rtn(w, 4, -1)
    assert scales.shape == (8, 1)


def test_int4_packing_round_trips_and_halves_bytes():
    codes = torch.randint(0, 16, (5, 77), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (5, 39) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed, 77), codes)


@pytest.mark.parametrize("bits", [4, 8])
def test_weight_only_linear_holds_only_compressed_buffers(bits):
    torch.manual_seed(0)
    lin = nn.Linear(256, 64)
    q = WeightOnlyLinear.from_linear(lin, bits, 128)
    state = q.state_dict()
    assert set(state) == {"qweight", "scales", "zeros", "bias"}
    assert state["qweight"].dtype == torch.uint8 and state["scales"].dtype == torch.float16
    assert state["qweight"].numel() == 64 * 256 * bits // 8
    x = torch.randn(3, 256)
    rel = ((q(x) - lin(x)).norm() / lin(x).norm()).item()
    assert rel < (0.15 if bits == 4 else 0.01)
    # an empty module of the same shape takes the state dict strictly and computes the same
    empty = WeightOnlyLinear.empty(256, 64, bits, 128)
    empty.load_state_dict(state, strict=True)
    assert torch.equal(empty(x), q(x))


def test_quantized_embedding_gathers_dequantized_rows():
    torch.manual_seed(0)
    emb = nn.Embedding(50, 32, padding_idx=0)
    q = QuantizedEmbedding.from_embedding(emb, 4, 16)
    ids = torch.tensor([[3, 7, 7], [0, 49, 1]])
    full = q.weight
    assert torch.equal(q(ids), full[ids])
    assert (q(ids) - emb(ids)).abs().max() < 0.2


def test_replace_linears_and_head_names(tiny_llama_dir):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
    assert head_names(model) == {"lm_head"}
    names = [n for n, _ in linears_to_quantize(model)]
    assert "lm_head" not in names and len(names) == 2 * 7  # q, k, v, o, gate, up, down per layer
    replaced = replace_linears(model, lambda n, lin: nn.Identity() if n.endswith("q_proj") else None)
    assert replaced == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    fresh = LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
    restore_as(fresh, 4, 32, {"quantized_linears": 14})
    assert sum(isinstance(m, WeightOnlyLinear) for m in fresh.modules()) == 14


def _transform_save_restore(spec, build, inputs, tmp_path):
    config = parse_method(spec)
    method = METHODS.get(config.name)
    ref_model = build()
    with torch.no_grad():
        reference = ref_model(**inputs)[0]
    ctx = MethodContext(task=None, bundle=None)
    model = method.transform(build(), config, ctx)
    directory = tmp_path / spec.replace(":", "_").replace(",", "_")
    directory.mkdir()
    files, fmt = save_state(model, directory)
    skeleton = method.restore(build(), config, ctx.facts)
    load_state(skeleton, directory, fmt)
    with torch.no_grad():
        out, reloaded = model(**inputs)[0], skeleton.eval()(**inputs)[0]
    return {"ref": reference, "out": out, "reloaded": reloaded, "facts": ctx.facts, "format": fmt,
            "size": files[0].stat().st_size, "model": model}


def test_tied_llama_head_shares_the_quantized_embedding(tiny_llama_dir, tmp_path):
    from transformers import LlamaForCausalLM

    def build():
        return LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()

    params = sum(p.numel() for p in build().parameters())  # the tied table is counted once
    inputs = {"input_ids": torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(1))}
    r = _transform_save_restore("int4-weight-only:group_size=32", build, inputs, tmp_path)
    assert r["format"] == "safetensors"
    assert r["facts"]["in_memory_compressed"] is True and r["facts"]["tied_head_shares_embedding"] is True
    assert r["model"].lm_head.packed() is r["model"].model.embed_tokens
    assert not any(k.startswith("lm_head.") for k in r["model"].state_dict())
    assert torch.equal(r["out"], r["reloaded"])
    bits_per_weight = r["size"] * 8 / params
    assert bits_per_weight < 5.5  # 4-bit codes + fp16 scale and uint8 zero per 32 weights, norms in fp32
    agree = (r["out"].argmax(-1) == r["ref"].argmax(-1)).float().mean()
    assert agree > 0.5


def test_int4_error_exceeds_int8_error_and_files_shrink(tiny_bert_dir, tmp_path):
    from transformers import BertModel

    def build():
        return BertModel.from_pretrained(tiny_bert_dir).eval()

    inputs = {"input_ids": torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(1)),
              "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    params = sum(p.numel() for p in build().parameters())
    r8 = _transform_save_restore("int8-weight-only", build, inputs, tmp_path)
    r4 = _transform_save_restore("int4-weight-only:group_size=32", build, inputs, tmp_path)
    r4_no_emb = _transform_save_restore("int4-weight-only:group_size=32,embeddings=false", build, inputs, tmp_path)
    for r in (r8, r4, r4_no_emb):
        assert torch.equal(r["out"], r["reloaded"])
    err8, err4 = [(r["out"] - r["ref"]).norm() / r["ref"].norm() for r in (r8, r4)]
    assert 0 < err8 < err4 < 0.5
    bpw8, bpw4, bpw4_no_emb = [r["size"] * 8 / params for r in (r8, r4, r4_no_emb)]
    assert 8 < bpw8 < 9.5 and 4 < bpw4 < 5.5
    assert bpw4_no_emb > 20  # the 30522 x 64 word embeddings are most of this tiny model and stay fp32
    assert isinstance(r4["model"].embeddings.word_embeddings, QuantizedEmbedding)
    assert isinstance(r4_no_emb["model"].embeddings.word_embeddings, nn.Embedding)


def test_runner_measures_int4_weight_only(tmp_path, tiny_bert_dir, topic_csv):
    from squeezebench.runner import RunConfig, Runner

    config = RunConfig(models=[str(tiny_bert_dir)], task="sentence-embedding", dataset=f"csv:{topic_csv}",
                       methods=["original", "int4-weight-only:group_size=32"], out=tmp_path / "results", team="t",
                       protocol=fast_protocol())
    recs = {r.method: r.dump() for r in Runner(config).run()}
    orig, q = recs["original"], recs["int4-weight-only:group_size=32"]
    assert orig["status"] == "ok" and q["status"] == "ok", q
    size = q["build"]["size"]
    assert size["in_memory_compressed"] is True and "int4" in size["in_memory_format"]
    assert size["weights_bytes"] < 0.2 * orig["build"]["size"]["weights_bytes"]
    assert 0.5 < q["quality"]["metrics"]["cosine_to_original"]["value"] < 1.0
