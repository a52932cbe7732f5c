"""The llamacpp runtime end to end: squeezebench's runner builds a GGUF variant of a tiny Llama and measures it
(perplexity on the original's windows, TTFT / decode through generate_greedy, the roofline) in fresh processes."""

from __future__ import annotations

import pytest

from squeezebench.runtimes.llamacpp import llama_cpp_missing
from tests.conftest import fast_protocol
from tests.methods.test_export_gguf import bpe_tokenizer, tiny_llama

pytestmark = pytest.mark.skipif(llama_cpp_missing() is not None, reason=str(llama_cpp_missing()))


def test_runner_measures_a_gguf_variant_on_llamacpp(tmp_path, topic_csv):
    from squeezebench.runner import RunConfig, Runner

    tok = bpe_tokenizer()
    model_dir = tmp_path / "tiny-bpe-llama"
    tiny_llama(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    config = RunConfig(models=[str(model_dir)], task="causal-lm", methods=["original", "gguf-q8_0"],
                       dataset=f"csv:{topic_csv}", protocol=fast_protocol(threads=1), out=tmp_path / "results",
                       team="t")
    recs = {r.method: r.dump() for r in Runner(config).run()}
    orig, q8 = recs["original"], recs["gguf-q8_0"]
    assert orig["status"] == "ok", orig
    assert q8["status"] == "ok", q8
    assert q8["runtime"]["name"] == "llamacpp" and q8["runtime"]["threads"] == 1
    m = q8["quality"]["metrics"]
    # scored on the original's windows: a paired ratio, close to 1 for 8-bit weights
    assert 0.9 < m["perplexity_ratio_to_original"]["value"] < 1.1
    gen = q8["generation"]
    assert gen["decode_tokens_per_s"]["value"] > 0 and gen["time_to_first_token"]["value"] > 0
    assert "generate_greedy" in gen["protocol"]["gen_decoding"]
    roof = gen["decode_bandwidth_percent"]
    assert roof["weight_bytes_per_token"] == q8["runtime"]["weight_bytes_per_token"] > 0
    assert roof["value"] > 0 and roof["bandwidth_gb_s"] > 0
    assert orig["generation"]["decode_bandwidth_percent"]["weight_bytes_per_token"] > \
        2 * roof["weight_bytes_per_token"]  # fp32 PyTorch vs Q8_0 bytes
    assert q8["build"]["size"]["in_memory_format"].startswith("GGUF q8_0")
