"""The OpenVINO runtime's path for a decoder-only LM exported as a stateful IR (KV cache in OpenVINO variables).

Generation runs on OpenVINO GenAI's ``LLMPipeline`` (greedy, its own KV cache handling) where openvino_genai is
installed, else on a plain InferRequest loop over the same stateful IR (prompt, then one token per call on the kept
state); ``info["generation"]`` says which ran. The forward the perplexity and latency paths call (logits of every
position) runs the stateful IR from an empty cache; GenAI compiles its own copy, so under GenAI that forward is
compiled on first use only.

Pair: written by the OpenVINO weight exports (methods/export_openvino.py with methods/lib/openvino_lm.py), which
describe the folder in the manifest's ``stateful_lm`` (:class:`StatefulLm`); loaded by runtimes/openvino.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from squeezebench.errors import SqueezebenchError
from squeezebench.runtimes.base import Executable

log = logging.getLogger(__name__)

GENAI_DIR = "genai"  # the folder LLMPipeline loads, inside the artifact
MODEL_XML = "openvino_model.xml"
TOKENIZER_XML = "openvino_tokenizer.xml"
DETOKENIZER_XML = "openvino_detokenizer.xml"
GENAI_HINT = "pip install 'squeezebench[openvino]' (openvino-genai, openvino-tokenizers)"


class StatefulLm(BaseModel):
    """A stateful LM folder: where it is, the ids greedy decoding stops at and pads with, whether the tokenizer
    was converted (GenAI's text API needs it; squeezebench passes token ids), and how the export checked the IR
    against PyTorch (a prompt, then one decode step on the kept state)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    folder: str = GENAI_DIR
    eos_token_ids: list[int] = []
    pad_token_id: Optional[int] = None
    tokenizer: str = ""
    check_vs_pytorch: dict[str, Any] = {}
    converter: str = ""
    layers: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    kv_cache_precision: Optional[str] = None  # e.g. f32 (the f32 variant); None: the CPU plugin's default (u8 on x86)


def genai_missing() -> Optional[str]:
    try:
        import openvino_genai  # noqa: F401
    except ImportError:
        return f"openvino_genai is not installed; {GENAI_HINT}"
    return None


def _pad_rows(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    return torch.tensor([list(r) + [pad] * (width - len(r)) for r in rows], dtype=torch.long).reshape(len(rows), width)


class StatefulLmExecutable(Executable):
    """forward: input_ids -> logits of every position (state reset per call); ``generate_greedy`` decodes with
    the KV cache: GenAI's LLMPipeline when given, else an InferRequest loop on the stateful IR."""

    def __init__(self, compile_forward: Callable[[], Any], lm: StatefulLm, info: dict[str, Any],
                 pipeline: Any = None):
        self._compile_forward = compile_forward
        self._request: Any = None
        self.on_compiled: Optional[Callable[[Any], None]] = None
        self.lm = lm
        self.eos = list(lm.eos_token_ids)
        self.pad = int(lm.pad_token_id if lm.pad_token_id is not None else (self.eos or [0])[0])
        self.pipeline = pipeline
        self.info = info

    @property
    def request(self) -> Any:
        if self._request is None:
            compiled = self._compile_forward()
            if self.on_compiled is not None:
                self.on_compiled(compiled)
            self._request = compiled.create_infer_request()
        return self._request

    def prepare(self, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        if "input_ids" not in inputs:
            raise SqueezebenchError(f"the OpenVINO LM runs token ids; this task gives {', '.join(inputs)}")
        return np.ascontiguousarray(inputs["input_ids"].detach().cpu().numpy().astype(np.int64))

    def _step(self, ids: np.ndarray, seen: int) -> np.ndarray:
        batch, n = ids.shape
        result = self.request.infer({
            "input_ids": ids, "attention_mask": np.ones((batch, seen + n), dtype=np.int64),
            "position_ids": np.tile(np.arange(seen, seen + n, dtype=np.int64), (batch, 1)),
            "beam_idx": np.arange(batch, dtype=np.int32)})
        return result["logits"]

    def run_prepared(self, prepared: np.ndarray) -> np.ndarray:
        self.request.reset_state()
        return np.array(self._step(prepared, 0), dtype=np.float32, copy=True)

    def to_tensor(self, output: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(output)

    def generate_greedy(self, inputs: dict[str, torch.Tensor], max_new_tokens: int,
                        min_new_tokens: int = 0) -> torch.Tensor:
        """New token ids (batch, n <= max_new_tokens) as transformers' greedy ``generate`` gives them: up to and
        including an eos token (not before ``min_new_tokens``), rows padded with the pad id; one row at a time."""
        rows = [self._generate_row(row[None], int(max_new_tokens), int(min_new_tokens)) for row in self.prepare(inputs)]
        return _pad_rows(rows, self.pad)

    def _generate_row(self, ids: np.ndarray, max_new: int, min_new: int) -> list[int]:
        if self.pipeline is not None:
            return self._genai_row(ids, max_new, min_new)
        self.request.reset_state()
        logits, seen, out = self._step(ids, 0), ids.shape[1], []
        for step in range(max_new):
            scores = np.array(logits[0, -1], dtype=np.float32, copy=True)
            if step < min_new and self.eos:
                scores[self.eos] = -np.inf
            token = int(scores.argmax())
            out.append(token)
            if token in self.eos or step == max_new - 1:
                break
            logits = self._step(np.array([[token]], dtype=np.int64), seen)
            seen += 1
        return out

    def _genai_row(self, ids: np.ndarray, max_new: int, min_new: int) -> list[int]:
        import openvino as ov
        import openvino_genai

        config = openvino_genai.GenerationConfig()
        config.do_sample, config.num_beams = False, 1
        config.max_new_tokens, config.min_new_tokens = max_new, min_new
        if self.eos:
            config.eos_token_id, config.stop_token_ids = self.eos[0], set(self.eos)
        else:  # GenAI refuses an unset eos: one that never stops anything
            config.eos_token_id, config.ignore_eos = 0, True
        return list(self.pipeline.generate(ov.Tensor(ids), config).tokens[0])


def load_stateful_lm(directory: Path, lm: StatefulLm, config: dict[str, Any], info: dict[str, Any],
                     layer_precisions: Callable[[Any], dict[str, int]]) -> StatefulLmExecutable:
    """The executable of a stateful LM folder: GenAI's pipeline where installed (``config``: the CPU plugin
    properties, threads included, plus the cache precision the export asked for), else the stateful IR alone."""
    import openvino as ov

    folder = Path(directory) / lm.folder
    if not (folder / MODEL_XML).is_file():
        raise SqueezebenchError(f"artifact {directory} has no stateful LM {lm.folder}/{MODEL_XML}; rebuild it with "
                                "`squeezebench run`")

    if lm.kv_cache_precision:
        config = {**config, "KV_CACHE_PRECISION": lm.kv_cache_precision}
    info.update(config=config, kv_cache_precision=lm.kv_cache_precision or "the CPU plugin's default")

    def compile_forward() -> Any:
        return ov.Core().compile_model(str(folder / MODEL_XML), "CPU", config=config)

    reason = genai_missing()
    pipeline = None
    if reason is None:
        import openvino_genai

        pipeline = openvino_genai.LLMPipeline(str(folder), "CPU", **config)
        info.update(generation=f"OpenVINO GenAI {openvino_genai.__version__} LLMPipeline (greedy, its KV cache)",
                    forward="stateful IR compiled on first forward call (GenAI compiles its own copy)")
    else:
        log.info("%s: generating with an InferRequest loop on the stateful IR", reason)
        info.update(generation=("InferRequest loop on the stateful IR (greedy, KV cache in OpenVINO variables); "
                                f"{reason}"), forward="stateful IR, state reset per call")
    info.update(stateful_lm={"folder": lm.folder, "tokenizer": lm.tokenizer, "eos_token_ids": lm.eos_token_ids})
    executable = StatefulLmExecutable(compile_forward, lm, info, pipeline)
    executable.on_compiled = lambda compiled: info.update(compute_layers=layer_precisions(compiled))
    if pipeline is None:
        executable.request  # noqa: B018 - the only compiled copy: compiled at load, as the plain IR is
    return executable
