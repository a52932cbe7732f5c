"""ct2, ct2-int8, ct2-int8-float32: convert the model with CTranslate2's Transformers converter and run it with
CTranslate2 in one of its compute types (the engine faster-whisper uses; int8: 8-bit weights and int8 GEMMs).

Why: a team that wants fast Whisper or a small LM on CPU may pick CTranslate2 instead of a compression method;
measuring it as a variant puts it in the same table, under the same quality and timing protocol.

The converter reads the model as the chain left it (a copy: it takes the modules apart) and the bundle's
tokenizer, so nothing is downloaded; weights are stored in the compute type (``quantization``) and loaded in it.
The converted model is checked against PyTorch on one example input (the task's forward: Whisper's encoder
states, an LM's logits, an encoder's states or mean-pooled embedding): float32 must agree (cosine >=
FLOAT_MIN_COSINE), a quantised type is only recorded.

Pair: loaded by the ``ctranslate2`` runtime (runtimes/ctranslate2.py), told what it needs by a Ct2Entry.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import ExportResult, MethodConfig, MethodContext, register_export
from squeezebench.methods.lib.exports import example_inputs
from squeezebench.models.seq2seq_graphs import whisper_generation_plan
from squeezebench.runtimes.ctranslate2 import FAMILY_INPUTS, MODEL_DIR, Ct2Entry, executable_for

log = logging.getLogger(__name__)

ComputeType = Literal["float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                      "bfloat16"]
FLOAT_MIN_COSINE = 0.999


@dataclass(frozen=True)
class Ct2Config(MethodConfig):
    """compute_type: CTranslate2's weight/compute type, used both to store the converted weights and to run them
    (int8 on CPU runs as int8_float32: int8 GEMMs, float32 elsewhere; the record says which ran)."""

    name: ClassVar[str] = "ct2"
    compute_type: ComputeType = "float32"


@dataclass(frozen=True)
class Ct2Int8Config(MethodConfig):
    """CTranslate2 int8 (8-bit weights, int8 GEMMs; what faster-whisper's compute_type="int8" runs)."""

    name: ClassVar[str] = "ct2-int8"
    compute_type: ClassVar[str] = "int8"


@dataclass(frozen=True)
class Ct2Int8Float32Config(MethodConfig):
    """CTranslate2 int8_float32 (8-bit weights and GEMMs, every other layer in float32)."""

    name: ClassVar[str] = "ct2-int8-float32"
    compute_type: ClassVar[str] = "int8_float32"


def family_of(module: Any) -> Optional[str]:
    """'whisper' for a Whisper encoder-decoder, 'generator' for a decoder-only causal LM, 'encoder' for a bare
    encoder (BertModel, ...: CTranslate2's Encoder has no task heads), else None."""
    config = getattr(module, "config", None)
    kind = type(module).__name__
    if getattr(config, "model_type", None) == "whisper" and hasattr(module, "get_encoder"):
        return "whisper"
    if getattr(config, "is_encoder_decoder", False):
        return None
    if kind.endswith("ForCausalLM"):
        return "generator"
    if kind.endswith("Model") and "For" not in kind and not getattr(config, "is_decoder", False):
        return "encoder"
    return None


def convertible(config: Any) -> Optional[str]:
    """Why CTranslate2's Transformers converter cannot convert a model with this config, or None."""
    from ctranslate2.converters import transformers as converter

    loaders = getattr(converter, "_MODEL_LOADERS", None)  # private: if it moves, the converter itself says no
    name = type(config).__name__
    if loaders is not None and name not in loaders:
        return (f"CTranslate2 cannot convert {getattr(config, 'model_type', name)} models ({name}); it converts "
                f"{', '.join(sorted(n.removesuffix('Config') for n in loaders))}")
    return None


def _check(config: MethodConfig, ctx: MethodContext) -> Optional[str]:
    module = getattr(ctx.bundle, "module", None) if ctx.bundle is not None else None
    if module is None:
        return None
    reason = convertible(module.config)
    if reason:
        return reason
    if family_of(module) is None:
        return ("squeezebench runs Whisper, decoder-only causal LMs (...ForCausalLM) and bare encoders (...Model: "
                f"CTranslate2's Encoder has no task heads) on CTranslate2; {type(module).__name__} is none of them")
    return None


def _tokenizer_for(bundle: Any, module: Any) -> Any:
    """The bundle's tokenizer, with bos/eos tokens named from the model config when the tokenizer has none
    (the converter writes them into the CTranslate2 config)."""
    tok = getattr(bundle, "tokenizer", None)
    if tok is None:
        raise SqueezebenchError("ct2 export needs the model's tokenizer (its vocabulary); the source provided none")
    tok = copy.deepcopy(tok)
    for kind in ("bos", "eos", "unk"):
        token_id = getattr(module.config, f"{kind}_token_id", None)
        if getattr(tok, f"{kind}_token", None) is None and isinstance(token_id, int) and token_id < len(tok):
            setattr(tok, f"{kind}_token", tok.convert_ids_to_tokens(token_id))
    return tok


def float_copy(module: Any) -> Any:
    """A float32 copy for the converter (it takes the modules apart), with the config it expects: a model read
    from a GGUF file holds dequantised float weights but keeps a ``gguf`` quantization_config (refused)."""
    model = copy.deepcopy(module)
    with torch.no_grad():  # ``.float()`` refuses GGUF-loaded models
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.float()
    quant = getattr(model.config, "quantization_config", None)
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    if str(getattr(method, "value", method)).lower() == "gguf":
        del model.config.quantization_config
        model.hf_quantizer = None
    if not getattr(model.config, "is_encoder_decoder", False) and not hasattr(model.config, "position_embedding_type"):
        # CTranslate2's BERT-family loaders read it; transformers 5 dropped it (its BERT is absolute-only)
        model.config.position_embedding_type = "absolute"
    return model


def convert(module: Any, tokenizer: Any, output: Path, compute_type: str) -> float:
    """Convert an in-memory Transformers model (a copy of it) with CTranslate2; seconds taken."""
    import ctranslate2

    model = float_copy(module)

    class InMemoryConverter(ctranslate2.converters.TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            return model

        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return tokenizer

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="squeezebench-ct2-") as tmp:
        model.config.save_pretrained(tmp)  # the converter reads the config by path; nothing else
        try:
            InMemoryConverter(tmp).convert(str(output), quantization=compute_type, force=True)
        except (ValueError, NotImplementedError, AttributeError, KeyError, RuntimeError) as exc:
            raise SqueezebenchError(f"CTranslate2's converter failed on this model: {str(exc).splitlines()[0][:200]}"
                                    " (a model changed by an earlier link may not convert)") from None
    return time.perf_counter() - t0


def compare(executable: Any, wrapped: torch.nn.Module, example: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The converted model's forward (encoder states / logits) against PyTorch's on one example input."""
    with torch.no_grad():
        ref = wrapped(**example).float()
        ref = ref.reshape(-1, ref.shape[-1]).numpy()
        got = executable(example).float().reshape(ref.shape).numpy()
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12)
    return {"rows": int(ref.shape[0]), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "max_abs_diff": float(np.abs(got - ref).max()), "reference_max_abs": float(np.abs(ref).max())}


def export_ct2(wrapped, config: MethodConfig, ctx: MethodContext, directory: Path) -> ExportResult:
    module = ctx.bundle.module
    family = family_of(module)
    compute_type = config.compute_type
    out = Path(directory) / MODEL_DIR
    convert_s = convert(module, _tokenizer_for(ctx.bundle, module), out, compute_type)
    gen = getattr(module, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    eos = module.config.eos_token_id if eos is None else eos
    eos_ids = [int(t) for t in (eos if isinstance(eos, (list, tuple)) else [eos]) if t is not None]
    pad = getattr(gen, "pad_token_id", None) if gen is not None else None
    sample = example_inputs(ctx, wrapped, 1, "a ct2 export")[0]
    # Whisper: the encoder states only (not the teacher-forced decoder logits)
    example = {k: sample[k] for k in FAMILY_INPUTS[family] if k in sample}
    with torch.no_grad():  # a 2-D forward from an encoder: the task pools the token states (checked below)
        pooled = family == "encoder" and wrapped(**example).dim() == 2
    entry = Ct2Entry(ct2_dir=MODEL_DIR, ct2_family=family, ct2_compute_type=compute_type, eos_token_ids=eos_ids,
                     pad_token_id=None if pad is None else int(pad), mean_pool=pooled,
                     whisper_plan=whisper_generation_plan(module) if family == "whisper" else None)
    executable = executable_for(out, entry, "cpu", torch.get_num_threads())
    check = compare(executable, wrapped, example)
    if compute_type == "float32" and not check["mean_cosine"] >= FLOAT_MIN_COSINE:
        raise SqueezebenchError(f"CTranslate2's float32 model disagrees with PyTorch: mean cosine "
                                f"{check['mean_cosine']:.4f} < {FLOAT_MIN_COSINE}; the conversion is broken")
    import ctranslate2

    ran = executable.info["compute_type"]
    ctx.facts.update(in_memory_compressed=compute_type != "float32",
                     in_memory_format=f"CTranslate2 {ran} (weights stored as {compute_type})")
    ctx.notes.append(f"converted by CTranslate2 {ctranslate2.__version__}, run as {ran}")
    # the weights only: config.json and vocabulary.json are like the tokenizer files no variant counts
    return ExportResult(runtime="ctranslate2", weight_files=[out / "model.bin"], entry=entry.model_copy(update={"ct2": {
        "converter": "ctranslate2.converters.TransformersConverter (in-memory model)",
        "version": ctranslate2.__version__, "quantization": compute_type, "compute_type_on_cpu": ran,
        "convert_s": convert_s, "check_vs_pytorch": check,
        "tolerance": f"float32: mean cosine >= {FLOAT_MIN_COSINE}; quantised types recorded only"}}))


for _cls, _summary in ((Ct2Config, "CTranslate2 conversion run by CTranslate2 (compute_type=float32|int8|int8_float32"
                                   "|int8_float16|...; Whisper, decoder-only LMs, encoders)"),
                       (Ct2Int8Config, "ct2:compute_type=int8 (CTranslate2 int8, as faster-whisper runs it)"),
                       (Ct2Int8Float32Config, "ct2:compute_type=int8_float32 (CTranslate2 int8 weights, float32 "
                                              "activations)")):
    register_export(_cls, _summary, runtime="ctranslate2", check=_check, devices=("cpu",))(export_ct2)
