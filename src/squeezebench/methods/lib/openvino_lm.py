"""A decoder-only causal LM as a stateful OpenVINO IR with its KV cache inside (what optimum-intel's export
writes and OpenVINO GenAI's LLMPipeline loads), built offline from the PyTorch module without optimum.

Why: the stateless next-token graph the other OpenVINO exports write recomputes the whole prefix for every new
token, so a generation on it measures no decode speed worth comparing; the stateful IR keeps keys and values in
OpenVINO variables between calls, as GenAI runs it.

How: the LM is traced with its past keys/values as explicit inputs (a DynamicCache rebuilt from them inside the
traced forward) and its present keys/values as outputs; a ``beam_idx`` input gathers the cache rows (GenAI feeds
it), ``apply_make_stateful_transformation`` turns each past/present pair into a variable, and the variables start
as zeros of the batch's size and an empty sequence axis. The export then compresses the stateful model (NNCF) and
checks it against PyTorch: a prompt, then one decode step on the kept state.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from squeezebench.atomic import atomic_write_json
from squeezebench.errors import SqueezebenchError
from squeezebench.runtimes.openvino_lm import GENAI_DIR, MODEL_XML, DETOKENIZER_XML, TOKENIZER_XML, StatefulLm

log = logging.getLogger(__name__)

TRACE_PAST = 2  # past positions and new tokens of the traced example: a prompt longer than 1 keeps the traced
TRACE_NEW = 3   # attention on its general path (a 1-token query takes transformers' decode-only branches)
FP32_REL_TOL = 1e-3
COMPRESSED_MIN_COSINE = 0.5  # a sanity floor (a broken cache gives ~0); quality is the task's to measure


def stateful_lm_module(wrapped: torch.nn.Module) -> Optional[torch.nn.Module]:
    """The causal LM inside ``wrapped`` when ``wrapped`` is its next-token-logits forward (the LM tasks' wrap: an
    attribute ``model`` holding a decoder-only ...ForCausalLM), else None."""
    module = getattr(wrapped, "model", None)
    config = getattr(module, "config", None)
    if module is None or config is None or getattr(config, "is_encoder_decoder", False):
        return None
    if not type(module).__name__.endswith("ForCausalLM"):
        return None
    return module


def _kv_shape(config: Any) -> tuple[int, int]:
    """(key/value heads, head size) of the text decoder's layers."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = int(getattr(text, "num_key_value_heads", None) or text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
    return heads, head_dim


class _WithPast(torch.nn.Module):
    """forward(input_ids, attention_mask, position_ids, past) -> (logits, present k/v per layer, flat)."""

    def __init__(self, model: torch.nn.Module, layers: int):
        super().__init__()
        self.model, self.layers = model, layers
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def forward(self, input_ids, attention_mask, position_ids, past):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i, layer in enumerate(cache.layers):
            # filled directly: DynamicLayer.update starts from an empty 1-D tensor, a concat OpenVINO refuses
            layer.lazy_initialization(past[2 * i], past[2 * i + 1])
            layer.keys, layer.values = past[2 * i], past[2 * i + 1]
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, **{self.cache_arg: cache})
        flat = []
        for layer in out.past_key_values.layers:
            flat += [layer.keys, layer.values]
        return (out.logits, *flat)


def convert_stateful(module: torch.nn.Module) -> tuple[Any, dict[str, Any]]:
    """(stateful ov.Model, what was done) of a decoder-only causal LM in f32."""
    import openvino as ov
    from openvino import opset13
    from openvino._offline_transformations import apply_make_stateful_transformation

    config = module.config
    cache_probe = _layer_count(module)
    heads, head_dim = _kv_shape(config)
    dtype = next(module.parameters()).dtype
    past = tuple(torch.zeros(1, heads, TRACE_PAST, head_dim, dtype=dtype) for _ in range(2 * cache_probe))
    example = {"input_ids": torch.ones(1, TRACE_NEW, dtype=torch.long),
               "attention_mask": torch.ones(1, TRACE_PAST + TRACE_NEW, dtype=torch.long),
               "position_ids": torch.arange(TRACE_PAST, TRACE_PAST + TRACE_NEW)[None], "past": past}
    try:
        with torch.no_grad():
            model = ov.convert_model(_WithPast(module.eval(), cache_probe), example_input=example)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; one clear line
        raise SqueezebenchError(f"openvino.convert_model failed on the LM with its KV cache: "
                                f"{str(exc).splitlines()[0][:200]}") from None
    past_names = [f"past_key_values.{i}.{kv}" for i in range(cache_probe) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(cache_probe) for kv in ("key", "value")]
    if len(model.inputs) != 3 + len(past_names) or len(model.outputs) != 1 + len(present_names):
        raise SqueezebenchError(f"the traced LM has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                                f"expected {3 + len(past_names)} and {1 + len(present_names)}")
    for port, name in zip(model.inputs[3:], past_names):
        port.get_tensor().set_names({name})
    model.outputs[0].get_tensor().set_names({"logits"})
    for port, name in zip(model.outputs[1:], present_names):
        port.get_tensor().set_names({name})
    shapes = {n: ov.PartialShape([-1, -1]) for n in ("input_ids", "attention_mask", "position_ids")}
    shapes.update({n: ov.PartialShape([-1, heads, -1, head_dim]) for n in past_names})
    model.reshape(shapes)
    # beam_idx: which batch row of the kept cache each row continues (GenAI feeds it; 0..batch-1 for greedy)
    beam_idx = opset13.parameter(name="beam_idx", dtype=ov.Type.i32, shape=ov.PartialShape([-1]))
    beam_idx.output(0).get_tensor().set_names({"beam_idx"})
    model.add_parameters([beam_idx])
    for name in past_names:
        port = model.input(name)
        users = port.get_target_inputs()
        gathered = opset13.gather(port, beam_idx, opset13.constant(0))
        for user in users:
            user.replace_source_output(gathered.output(0))
    model.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(model, dict(zip(past_names, present_names)))
    # each variable starts as zeros: the batch of input_ids, the heads, no positions yet, the head size
    batch = opset13.gather(opset13.shape_of(model.input("input_ids"), output_type="i64"),
                           opset13.constant([0]), opset13.constant(0))
    for op in model.get_ops():
        if op.get_type_name() == "ReadValue":
            dims = [batch] + [opset13.constant(np.array([d.min_length], dtype=np.int64))
                              for d in list(op.get_output_partial_shape(0))[1:]]
            zero = opset13.constant(0.0, dtype=op.get_output_element_type(0))
            op.set_arguments([opset13.broadcast(zero, opset13.concat(dims, axis=0))])
    model.validate_nodes_and_infer_types()
    facts = {"converter": "openvino.convert_model (PyTorch frontend) with past/present keys and values, "
                          "beam_idx gather, apply_make_stateful_transformation",
             "layers": cache_probe, "kv_heads": heads, "head_dim": head_dim}
    return model, facts


def _layer_count(module: torch.nn.Module) -> int:
    from transformers.cache_utils import DynamicCache

    layers = len(DynamicCache(config=module.config).layers)
    if not layers:
        raise SqueezebenchError(f"{type(module).__name__}: its config gives no cache layers; the stateful OpenVINO "
                                "export supports decoder-only LMs with a plain key/value cache")
    return layers


def stateful_logits(compiled: Any, rows: list[np.ndarray]) -> list[np.ndarray]:
    """Logits of the last token of each call: ``rows[0]`` from an empty cache, every later row continuing it."""
    request = compiled.create_infer_request()
    request.reset_state()
    seen, out = 0, []
    for ids in rows:
        n = ids.shape[1]
        result = request.infer({"input_ids": ids, "attention_mask": np.ones((1, seen + n), dtype=np.int64),
                                "position_ids": np.arange(seen, seen + n, dtype=np.int64)[None],
                                "beam_idx": np.zeros(1, dtype=np.int32)})
        out.append(np.array(result["logits"][:, -1], dtype=np.float32, copy=True))
        seen += n
    return out


def check_against_pytorch(model: Any, module: torch.nn.Module, prompt: torch.Tensor, compressed: bool) -> dict:
    """Compare the stateful IR with PyTorch on ``prompt`` (1 x n) then one more token decoded on the kept state."""
    import openvino as ov

    prompt = prompt[:, :64]
    with torch.no_grad():
        ref_logits = module(input_ids=prompt, attention_mask=torch.ones_like(prompt), use_cache=False).logits
        nxt = ref_logits[:, -1:].argmax(-1)
        full = torch.cat([prompt, nxt], 1)
        ref_step = module(input_ids=full, attention_mask=torch.ones_like(full), use_cache=False).logits[:, -1]
    # f32 compute and an f32 cache: the CPU plugin's default cache precision (u8 on x86) would be part of the error
    compiled = ov.Core().compile_model(model, "CPU", config={"INFERENCE_PRECISION_HINT": "f32",
                                                             "KV_CACHE_PRECISION": "f32", "INFERENCE_NUM_THREADS": 1})
    got = stateful_logits(compiled, [prompt.numpy(), nxt.numpy()])
    refs = [ref_logits[:, -1].float().numpy(), ref_step.float().numpy()]
    diff = max(float(np.abs(g - r).max()) for g, r in zip(got, refs))
    scale = max(float(np.abs(r).max()) for r in refs)
    cosine = min(float(np.dot(g.ravel(), r.ravel()) / (np.linalg.norm(g) * np.linalg.norm(r) + 1e-12))
                 for g, r in zip(got, refs))
    check = {"prompt_tokens": int(prompt.shape[1]), "decode_steps": 1, "max_abs_diff": diff,
             "reference_max_abs": scale, "min_cosine": cosine}
    if not compressed and not (np.isfinite(diff) and diff <= FP32_REL_TOL * max(1.0, scale)):
        raise SqueezebenchError(f"the stateful OpenVINO LM diverges from PyTorch: max abs diff {diff:.3g} "
                                f"(logits up to {scale:.3g}); report this model")
    if compressed and not (np.isfinite(cosine) and cosine >= COMPRESSED_MIN_COSINE):
        raise SqueezebenchError(f"the compressed stateful OpenVINO LM is far from PyTorch: cosine {cosine:.3f} < "
                                f"{COMPRESSED_MIN_COSINE}")
    return check


def eos_ids(module: torch.nn.Module) -> list[int]:
    """The ids greedy decoding stops at, as transformers' generate reads them (generation config, else config)."""
    gen = getattr(module, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if eos is None:
        eos = getattr(module.config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def write_genai_folder(model: Any, module: torch.nn.Module, tokenizer: Any, directory: Path,
                       compress: Optional[Callable[[Any], Any]], prompt: torch.Tensor,
                       extra: dict[str, Any], fp16: bool = False,
                       kv_cache_precision: Optional[str] = None) -> tuple[list[Path], StatefulLm]:
    """GENAI_DIR/: the (compressed) stateful IR, the tokenizer and detokenizer IRs when openvino_tokenizers converts
    the tokenizer, config.json and a greedy generation_config.json: the folder ``openvino_genai.LLMPipeline``
    loads; ``fp16`` stores float weights as fp16; ``kv_cache_precision`` is what the runtime asks the CPU plugin
    for (None: its default). Returns the weight files and the manifest's description."""
    import openvino as ov

    folder = Path(directory) / GENAI_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if compress is not None:
        model = compress(model)
    ov.save_model(model, str(folder / MODEL_XML), compress_to_fp16=fp16)
    check = check_against_pytorch(ov.Core().read_model(str(folder / MODEL_XML)), module, prompt,
                                  compressed=compress is not None or fp16)
    eos = eos_ids(module)
    pad = getattr(module.config, "pad_token_id", None)
    atomic_write_json(folder / "config.json", module.config.to_dict(), default=str)
    atomic_write_json(folder / "generation_config.json",
                      {"do_sample": False, "num_beams": 1, "eos_token_id": eos or None, "pad_token_id": pad})
    tokenizer_note = _convert_tokenizer(tokenizer, folder)
    entry = StatefulLm(eos_token_ids=eos, pad_token_id=pad if isinstance(pad, int) else None,
                       tokenizer=tokenizer_note, check_vs_pytorch=check, kv_cache_precision=kv_cache_precision,
                       **extra)
    return [folder / MODEL_XML.replace(".xml", ".bin")], entry


def _convert_tokenizer(tokenizer: Any, folder: Path) -> str:
    """'converted' or why not: GenAI's text API needs the IRs; squeezebench hands GenAI token ids and does not."""
    import openvino as ov

    if tokenizer is None:
        return "not converted: the model source gave no tokenizer"
    try:
        import openvino_tokenizers
    except ImportError:
        return "not converted: openvino_tokenizers is not installed"
    try:
        tok, detok = openvino_tokenizers.convert_tokenizer(tokenizer, with_detokenizer=True)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; recorded, not fatal
        log.warning("openvino_tokenizers could not convert the tokenizer: %s", str(exc).splitlines()[0][:200])
        return f"not converted: {str(exc).splitlines()[0][:160]}"
    ov.save_model(tok, str(folder / TOKENIZER_XML))
    ov.save_model(detok, str(folder / DETOKENIZER_XML))
    return "converted"
