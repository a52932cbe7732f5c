"""gguf: write a Llama-family causal LM to GGUF and quantise it with llama.cpp's own quantiser.

Why: squeezebench's int4 PyTorch kernels dequantise in Python on every call, so 4-bit looks slower than fp32.
llama.cpp's Q4/Q8 kernels read the packed weights directly; decoding a small LM is memory-bound, so fewer bytes
per weight really are faster there. This export hands the model, as the chain left it, to that runtime.

Steps: the model's *effective* float weights (a plain Linear's weight; for any other linear module - packed
int4/int8 of int4-weight-only / gptq, AWQ's input-scaled linear - the matrix it really applies, read back by
running it on the identity) are written to an f32 GGUF with the ``gguf`` package (llama.cpp's tensor names, q/k
rows permuted as llama.cpp's converter does), with the Hugging Face BPE tokenizer as GGUF vocabulary; then
``llama_cpp.llama_model_quantize`` writes the requested type. The result is checked against PyTorch on one
calibration window.

After a 4-bit link (gptq, awq, int4-weight-only) the GGUF quantiser re-quantises the *dequantised* weights on
its own grid (q4_0: symmetric, blocks of 32; q4_k_m: super-blocks of 256 with 6-bit sub-scales; q8_0:
symmetric 8-bit, blocks of 32). GPTQ's error compensation survives only as far as its weights land near the new
grid: a second rounding is added on top of GPTQ's; q8_0 after gptq keeps GPTQ's weights almost exactly.

Pair: loaded by the ``llamacpp`` runtime (runtimes/llamacpp.py), told what it needs by a LlamaCppEntry.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import numpy as np
import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import ExportResult, MethodConfig, MethodContext, register_export
from squeezebench.runtimes.llamacpp import GGUF_FILE, INSTALL_HINT, LlamaCppEntry, open_model

log = logging.getLogger(__name__)

Quant = Literal["q4_0", "q4_k_m", "q8_0", "f16", "f32"]
# llama.cpp's llama_ftype values (include/llama.h)
FTYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q4_k_m": 15}
SUPPORTED_TYPES = ("llama",)
# The conversion is checked on the f32/f16 GGUF against PyTorch on one window (SmolLM2 f32: cosine 1.0, KL 2e-7);
# a quantised file is only compared and the numbers recorded (SmolLM2 q4_0: cosine 0.88, top-1 0.84 on 96
# tokens): its cost is what the task's perplexity measures, not a pass/fail here.
FLOAT_MIN_COSINE = 0.999
REQUANT_NOTE = ("the GGUF quantiser re-quantised the dequantised weights of an earlier 4-bit link on its own grid: "
                "the earlier link's rounding and a second rounding both apply")


@dataclass(frozen=True)
class GgufConfig(MethodConfig):
    """quant: llama.cpp weight type (q4_k_m: mostly 4-bit k-quants, some 6-bit; rows not a multiple of 256 fall
    back to a type llama.cpp picks, recorded as tensor_types)."""

    name: ClassVar[str] = "gguf"
    quant: Quant = "q4_k_m"


@dataclass(frozen=True)
class GgufQ4_0Config(MethodConfig):
    """GGUF Q4_0 (symmetric 4-bit, blocks of 32, one fp16 scale: 4.5 bits/weight)."""

    name: ClassVar[str] = "gguf-q4_0"
    quant: ClassVar[str] = "q4_0"


@dataclass(frozen=True)
class GgufQ4KMConfig(MethodConfig):
    """GGUF Q4_K_M (4-bit k-quants, attention v / ffn down partly 6-bit)."""

    name: ClassVar[str] = "gguf-q4_k_m"
    quant: ClassVar[str] = "q4_k_m"


@dataclass(frozen=True)
class GgufQ8_0Config(MethodConfig):
    """GGUF Q8_0 (symmetric 8-bit, blocks of 32, one fp16 scale: 8.5 bits/weight)."""

    name: ClassVar[str] = "gguf-q8_0"
    quant: ClassVar[str] = "q8_0"


# --- effective weights --------------------------------------------------------------------------------------
@torch.no_grad()
def effective_linear_weight(module: nn.Module, in_features: int) -> torch.Tensor:
    """[out, in] matrix a linear module applies: a float Linear's weight, else read back from the module."""
    if type(module) is nn.Linear and module.weight.is_floating_point():
        return module.weight.detach().float()
    dtype = next((t.dtype for t in module.parameters() if t.is_floating_point()), torch.float32)
    zero = module(torch.zeros(1, in_features, dtype=dtype)).float()
    out = module(torch.eye(in_features, dtype=dtype)).float() - zero
    return out.T.contiguous()


def _bias_free(module: nn.Module, name: str, in_features: int) -> None:
    with torch.no_grad():
        dtype = next((t.dtype for t in module.parameters() if t.is_floating_point()), torch.float32)
        bias = module(torch.zeros(1, in_features, dtype=dtype)).float()
    if bias.abs().max() > 0:
        raise SqueezebenchError(f"gguf export: {name} has a bias; the llama GGUF layout has none (a Llama model?)")


def permute_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's rotary layout for q/k rows (the inverse of what transformers does when it reads a GGUF)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_tensors(model: nn.Module) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """GGUF tensor name -> float32 array, and the hyper-parameters the GGUF header needs."""
    cfg = model.config
    if getattr(cfg, "model_type", None) not in SUPPORTED_TYPES:
        raise SqueezebenchError(f"gguf export supports {', '.join(SUPPORTED_TYPES)} models, not "
                                f"{getattr(cfg, 'model_type', type(model).__name__)!r}")
    hidden, heads = cfg.hidden_size, cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    inner = model.model
    out: dict[str, np.ndarray] = {}
    emb = inner.embed_tokens
    table = (emb.weight_float() if hasattr(emb, "weight_float") else emb.weight).detach().float()
    out["token_embd.weight"] = table
    head = model.get_output_embeddings()
    head_w = effective_linear_weight(head, hidden)
    _bias_free(head, "lm_head", hidden)
    tied = head_w.shape == table.shape and torch.equal(head_w, table)
    if not tied:
        out["output.weight"] = head_w
    out["output_norm.weight"] = inner.norm.weight.detach().float()
    names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
    for i, layer in enumerate(inner.layers):
        out[f"blk.{i}.attn_norm.weight"] = layer.input_layernorm.weight.detach().float()
        out[f"blk.{i}.ffn_norm.weight"] = layer.post_attention_layernorm.weight.detach().float()
        for parent in (layer.self_attn, layer.mlp):
            for hf, gg in names.items():
                module = getattr(parent, hf, None)
                if module is None:
                    continue
                fan_in = (heads * head_dim if hf == "o_proj" else
                          cfg.intermediate_size if hf == "down_proj" else hidden)
                _bias_free(module, f"layer {i} {hf}", fan_in)
                w = effective_linear_weight(module, fan_in)
                if hf == "q_proj":
                    w = permute_rows(w, heads)
                elif hf == "k_proj":
                    w = permute_rows(w, kv_heads)
                out[f"blk.{i}.{gg}.weight"] = w
    expected = 9 * len(inner.layers) + 2 + (0 if tied else 1)
    if len(out) != expected:
        raise SqueezebenchError(f"gguf export found {len(out)} tensors where a Llama model has {expected}; "
                                "the model's layers do not look like transformers' LlamaForCausalLM")
    rope = getattr(cfg, "rope_parameters", None) or {}
    hparams = {"block_count": len(inner.layers), "context_length": cfg.max_position_embeddings,
               "embedding_length": hidden, "feed_forward_length": cfg.intermediate_size, "head_count": heads,
               "head_count_kv": kv_heads, "rope_dimension_count": head_dim, "vocab_size": table.shape[0],
               "layer_norm_rms_eps": float(cfg.rms_norm_eps),
               "rope_freq_base": float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))),
               "tied_embeddings": tied}
    if rope.get("rope_type", "default") not in ("default", None):
        raise SqueezebenchError(f"gguf export writes plain RoPE; this model uses {rope['rope_type']!r} scaling")
    return {k: v.numpy() for k, v in out.items()}, hparams


# --- vocabulary ---------------------------------------------------------------------------------------------
def bpe_vocab(tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """GGUF ``gpt2`` vocabulary (tokens, types, merges, special ids) of a Hugging Face byte-level BPE tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise SqueezebenchError("gguf export needs a fast (tokenizers) tokenizer; this model has none")
    model = json.loads(backend.to_str())["model"]
    if model.get("type") != "BPE":
        raise SqueezebenchError(f"gguf export writes byte-level BPE vocabularies; this tokenizer is {model.get('type')}")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    special = {t.content: t.special for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    tokens, types = [], []
    for i in range(vocab_size):
        tok = tokenizer.convert_ids_to_tokens(i) if i < len(tokenizer) else None
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(5)  # UNUSED
        else:
            tokens.append(tok)
            types.append(1 if tok not in special else (3 if special[tok] else 4))  # NORMAL, CONTROL, USER_DEFINED
    ids = {k: getattr(tokenizer, f"{k}_token_id", None) for k in ("bos", "eos", "unk", "pad")}
    return {"tokens": tokens, "types": types, "merges": merges, "ids": ids}


def write_gguf(path: Path, tensors: dict[str, np.ndarray], hparams: dict[str, Any], vocab: dict[str, Any],
               dtype: Literal["f32", "f16"], name: str, pre: str = "default") -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_block_count(hparams["block_count"])
    writer.add_context_length(hparams["context_length"])
    writer.add_embedding_length(hparams["embedding_length"])
    writer.add_feed_forward_length(hparams["feed_forward_length"])
    writer.add_head_count(hparams["head_count"])
    writer.add_head_count_kv(hparams["head_count_kv"])
    writer.add_rope_dimension_count(hparams["rope_dimension_count"])
    writer.add_rope_freq_base(hparams["rope_freq_base"])
    writer.add_layer_norm_rms_eps(hparams["layer_norm_rms_eps"])
    writer.add_vocab_size(hparams["vocab_size"])
    writer.add_file_type(FTYPES[dtype])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    for key, value in vocab["ids"].items():
        if value is not None:
            getattr(writer, f"add_{key}_token_id")(int(value))
    writer.add_add_bos_token(False)
    for tname, arr in tensors.items():
        keep_f32 = dtype == "f32" or arr.ndim == 1  # norms stay f32, as llama.cpp's converter writes them
        writer.add_tensor(tname, np.ascontiguousarray(arr.astype(np.float32 if keep_f32 else np.float16)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize(src: Path, dst: Path, quant: str, threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[quant]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0 or not dst.is_file():
        raise SqueezebenchError(f"llama_model_quantize to {quant} failed (return code {rc})")


def tensor_summary(path: Path) -> dict[str, Any]:
    """Tensor types and bytes of a GGUF file as written (what llama.cpp will hold in memory)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    types: Counter = Counter()
    by_type: Counter = Counter()
    total = embd = 0
    has_output = False
    for t in reader.tensors:
        types[t.tensor_type.name] += 1
        by_type[t.tensor_type.name] += int(t.n_bytes)
        total += int(t.n_bytes)
        if t.name == "token_embd.weight":
            embd = int(t.n_bytes)
        has_output |= t.name == "output.weight"
    # a token reads one row of token_embd; with no output.weight the head reads all of token_embd
    per_token = total - embd if has_output else total
    return {"tensor_types": dict(types), "tensor_mb_by_type": {k: round(v / 1e6, 3) for k, v in by_type.items()},
            "tensor_bytes": total, "weight_bytes_per_token": per_token, "tied_embeddings": not has_output}


# --- method -------------------------------------------------------------------------------------------------
def _check(config: MethodConfig, ctx: MethodContext) -> Optional[str]:
    try:  # llama-cpp-python itself: the llamacpp runtime's check, run first by register_export
        import gguf  # noqa: F401
    except ImportError:
        return f"the gguf package is not installed; {INSTALL_HINT}"
    if ctx.task is not None and getattr(ctx.task, "auto_class", None) != "AutoModelForCausalLM":
        return "gguf export is for causal language models (task causal-lm)"
    module = getattr(ctx.bundle, "module", None) if ctx.bundle is not None else None
    if module is not None and getattr(getattr(module, "config", None), "model_type", None) not in SUPPORTED_TYPES:
        return f"gguf export supports {', '.join(SUPPORTED_TYPES)} models only"
    return None


def _source_pre(ctx: MethodContext) -> str:
    """The source GGUF's pre-tokenizer name when the model came from one (e.g. 'smollm'), else 'default'."""
    source = getattr(ctx.bundle, "source", None) or {}
    if source.get("kind") == "gguf":
        import gguf

        field = gguf.GGUFReader(source["path"]).fields.get("tokenizer.ggml.pre")
        if field is not None:
            return str(field.contents())
    return "default"


def _compare(path: Path, wrapped: nn.Module, ctx: MethodContext, threads: int) -> dict[str, Any]:
    samples = ctx.calibration(1) if ctx.calibration is not None else []
    if not samples:
        raise SqueezebenchError("gguf export needs one example window from the task data; the data gave none")
    ids = samples[0]["input_ids"][:1, :128]
    with torch.no_grad():
        ref = wrapped(input_ids=ids).float()[0].numpy()
    runner = open_model(path, threads, n_ctx=max(256, ids.shape[1]))
    try:
        got = runner.logits(ids[0].tolist())
    finally:
        runner.close()
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12)
    log_p, log_q = torch.log_softmax(torch.from_numpy(ref), -1), torch.log_softmax(torch.from_numpy(got), -1)
    kl = float((log_p.exp() * (log_p - log_q)).sum(-1).mean())
    return {"tokens": int(ids.shape[1]), "max_abs_diff": float(np.abs(got - ref).max()),
            "reference_max_abs": float(np.abs(ref).max()), "mean_cosine": float(cos.mean()),
            "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()), "mean_kl_to_pytorch": kl}


def _check_conversion(path: Path, wrapped: nn.Module, ctx: MethodContext, threads: int) -> dict[str, Any]:
    check = _compare(path, wrapped, ctx, threads)
    check["tolerance"] = f"mean cosine of next-token logits to PyTorch >= {FLOAT_MIN_COSINE}"
    if not np.isfinite(check["mean_cosine"]) or check["mean_cosine"] < FLOAT_MIN_COSINE:
        raise SqueezebenchError(f"llama.cpp's {path.name} disagrees with PyTorch: mean logit cosine "
                                f"{check['mean_cosine']:.4f} < {FLOAT_MIN_COSINE}; the GGUF conversion is broken")
    return check


def _earlier_4bit(ctx: MethodContext) -> bool:
    from squeezebench.methods.lib.packed_linear import _PackedWeight

    module = ctx.bundle.module
    return any(isinstance(m, _PackedWeight) and m.bits == 4 for m in module.modules())


def export_gguf(wrapped: nn.Module, config: MethodConfig, ctx: MethodContext, directory: Path) -> ExportResult:
    quant = config.quant
    threads = torch.get_num_threads()
    model = ctx.bundle.module
    t0 = time.perf_counter()
    tensors, hparams = llama_tensors(model)
    vocab = bpe_vocab(ctx.bundle.tokenizer, hparams["vocab_size"])
    path = Path(directory) / GGUF_FILE
    name = (getattr(ctx.bundle, "source", None) or {}).get("name") or "model"
    pre = _source_pre(ctx)
    if quant in ("f32", "f16"):
        write_gguf(path, tensors, hparams, vocab, quant, name, pre)
        write_s, quant_s = time.perf_counter() - t0, 0.0
        check = conversion = _check_conversion(path, wrapped, ctx, threads)
    else:
        with tempfile.TemporaryDirectory(prefix="squeezebench-gguf-") as tmp:
            f32 = Path(tmp) / "f32.gguf"
            write_gguf(f32, tensors, hparams, vocab, "f32", name, pre)
            write_s = time.perf_counter() - t0
            conversion = _check_conversion(f32, wrapped, ctx, threads)
            t1 = time.perf_counter()
            quantize(f32, path, quant, threads)
            quant_s = time.perf_counter() - t1
        check = _compare(path, wrapped, ctx, threads)
        if not np.isfinite(check["mean_kl_to_pytorch"]):
            raise SqueezebenchError(f"llama.cpp's {quant} model gives non-finite logits")
    summary = tensor_summary(path)
    requant = quant not in ("f32", "f16") and _earlier_4bit(ctx)
    fmt = f"GGUF {quant} ({', '.join(f'{k} x{v}' for k, v in sorted(summary['tensor_types'].items()))})"
    ctx.facts.update(in_memory_compressed=quant not in ("f32",), in_memory_format=fmt + ", run by llama.cpp kernels",
                     weight_bytes_per_token=summary["weight_bytes_per_token"])
    ctx.notes.append(f"written to GGUF with the gguf package, quantised by llama.cpp to {quant}")
    if requant:
        ctx.notes.append(REQUANT_NOTE)
    entry = LlamaCppEntry(gguf_file=GGUF_FILE, gguf={
        "quant": quant, "pre_tokenizer": pre, "hparams": hparams, "write_s": write_s, "quantize_s": quant_s,
        "requantized_after_4bit": requant, "f32_conversion_check": conversion, "check_vs_pytorch": check,
        **summary})
    return ExportResult(runtime="llamacpp", weight_files=[path], entry=entry)


for _cls, _summary in ((GgufConfig, "GGUF file quantised by llama.cpp (quant=q4_0|q4_k_m|q8_0|f16|f32), "
                                    "run by llama.cpp (Llama-family causal LMs)"),
                       (GgufQ4_0Config, "gguf:quant=q4_0 (llama.cpp symmetric 4-bit, blocks of 32)"),
                       (GgufQ4KMConfig, "gguf:quant=q4_k_m (llama.cpp 4-bit k-quants)"),
                       (GgufQ8_0Config, "gguf:quant=q8_0 (llama.cpp symmetric 8-bit, blocks of 32)")):
    register_export(_cls, _summary, runtime="llamacpp", check=_check, devices=("cpu",))(export_gguf)
