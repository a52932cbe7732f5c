"""int8-weight-only / int4-weight-only: model surgery, tied heads, sizes and errors, a runner run."""

from __future__ import annotations

import torch
from torch import nn

from squeezebench.methods import METHODS, MethodContext, parse_method
from squeezebench.methods.lib.packed_linear import QuantizedEmbedding, WeightOnlyLinear
from squeezebench.methods.weight_only import head_names, linears_to_quantize, replace_linears, restore_as
from squeezebench.runtimes.pytorch import load_state, save_state
from tests.conftest import fast_protocol


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
