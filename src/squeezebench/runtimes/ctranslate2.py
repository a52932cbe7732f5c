"""CTranslate2 runtime: a model converted by CTranslate2's Transformers converter, run by its C++ engine (what
faster-whisper runs), in the compute type the export chose (float32, int8, int8_float32, ...).

Three model families: Whisper (``ctranslate2.models.Whisper``: the timed call is the encoder, ``generate_greedy``
transcribes greedily with the decoder prompt the speech task's PyTorch ``generate`` uses) and decoder-only LMs
(``ctranslate2.Generator``: the timed call is next-token logits of every position through ``forward_batch``,
``generate_greedy`` decodes greedily with CTranslate2's KV cache) and encoder-only models (``ctranslate2.Encoder``:
the last hidden states, mean-pooled when the task's forward is a sentence embedding). Token ids stay the Hugging Face tokenizer's:
the converter's vocabulary is only used to hand CTranslate2 the token strings its ``generate_batch`` takes.

Pair: the ct2 exports (methods/export_ct2.py: ``ct2``, ``ct2-int8``, ``ct2-int8-float32``) fill :class:`Ct2Entry`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.models.seq2seq_graphs import LANGUAGE_TO_DETECT
from squeezebench.runtimes.base import Executable, ManifestEntry, Runtime, bundle_for_runtime, register_runtime
from squeezebench.runtimes.graphs import _cut_at_timestamp_pairs

log = logging.getLogger(__name__)

MODEL_DIR = "ct2"
INSTALL_HINT = "pip install 'squeezebench[ct2]' (ctranslate2)"
# CTranslate2's compute types (https://opennmt.net/CTranslate2/quantization.html)
COMPUTE_TYPES = ("float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16")
Family = Literal["whisper", "generator", "encoder"]
# CTranslate2 4.x's Whisper.generate returns at most max_length // 2 new tokens whatever the prompt (measured on
# tiny models with 16 and 64 decoder positions: openai-whisper's sample_len = n_text_ctx // 2), so it is asked
# for twice the new tokens wanted and the result is cut to them
WHISPER_LENGTH_FACTOR = 2


class Ct2Entry(ManifestEntry):
    """What a ct2 export tells this runtime: the converted model's folder, its family (which CTranslate2 class
    loads it), the compute type to load it in, the eos ids a generator stops at, the Whisper decoding plan
    (models/seq2seq_graphs.whisper_generation_plan: prompt, eos, pad); and what it records: how it converted and
    how the converted model compared with PyTorch (ct2)."""

    ct2_dir: str = MODEL_DIR
    ct2_family: Family
    ct2_compute_type: str = "float32"
    eos_token_ids: list[int] = []
    pad_token_id: Optional[int] = None
    whisper_plan: Optional[dict[str, Any]] = None
    mean_pool: bool = False  # encoder: the task's forward is the L2-normalised mean of the token states
    ct2: dict[str, Any] = {}


def ct2_missing() -> Optional[str]:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return f"CTranslate2 is not installed: {INSTALL_HINT}"
    return None


def _check_device(device: str) -> Optional[str]:
    if not device.startswith("cpu"):  # CTranslate2's wheel runs CUDA too; the GPU path is not written or tested yet
        return "squeezebench runs CTranslate2 on the CPU only for now"
    return ct2_missing()


def _to_numpy(view: Any) -> np.ndarray:
    return np.array(view, dtype=np.float32, copy=True)


def _pad_rows(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    return torch.tensor([list(r) + [pad] * (width - len(r)) for r in rows], dtype=torch.long).reshape(len(rows), width)


class Ct2WhisperExecutable(Executable):
    """input_features -> encoder states (what latency's forward times); ``generate_greedy`` transcribes."""

    def __init__(self, model: Any, entry: Ct2Entry, vocabulary: list[str], info: dict[str, Any]):
        import ctranslate2

        self.sv = ctranslate2.StorageView
        self.model = model
        self.plan = dict(entry.whisper_plan or {})
        self.ids = {tok: i for i, tok in enumerate(vocabulary)}
        self.info = info
        self.last_generation: Optional[dict[str, Any]] = None

    def prepare(self, inputs: dict[str, torch.Tensor]) -> Any:
        if "input_features" not in inputs:
            raise SqueezebenchError(f"CTranslate2 Whisper runs input_features; this task gives {', '.join(inputs)}")
        feats = inputs["input_features"].detach().cpu().float().numpy()
        return self.sv.from_array(np.ascontiguousarray(feats))

    def run_prepared(self, prepared: Any) -> Any:
        return self.model.encode(prepared, to_cpu=True)

    def to_tensor(self, output: Any) -> torch.Tensor:
        return torch.from_numpy(_to_numpy(output))

    def _prompts(self, features: Any, batch: int) -> list[list[int]]:
        prompt = [int(t) for t in self.plan["prompt"]]
        if LANGUAGE_TO_DETECT not in prompt:
            return [prompt] * batch
        rows = []
        for found in self.model.detect_language(features):  # [(language token, probability)], best first
            row = list(prompt)
            row[prompt.index(LANGUAGE_TO_DETECT)] = self.ids[found[0][0]]
            rows.append(row)
        return rows

    def generate_greedy(self, inputs: dict[str, torch.Tensor], max_new_tokens: int) -> torch.Tensor:
        """New tokens (batch, n <= max_new_tokens) as transformers' greedy Whisper ``generate`` returns them: no
        prompt, no end of text, rows cut at timestamp pairs and padded with the pad id; at most the decoder's
        positions less the prompt, as transformers allows."""
        features = self.prepare(inputs)
        prompts = self._prompts(features, int(inputs["input_features"].shape[0]))
        max_new = min(int(max_new_tokens), int(self.plan["max_target_positions"]) - len(prompts[0]))
        results = self.model.generate(features, prompts, beam_size=1, sampling_topk=1, suppress_blank=True,
                                      suppress_tokens=[-1], max_length=WHISPER_LENGTH_FACTOR * max_new,
                                      return_scores=False)
        rows = [_cut_at_timestamp_pairs(np.asarray(r.sequences_ids[0][:max_new], dtype=np.int64),
                                        self.plan.get("timestamp_begin")).tolist() for r in results]
        return _pad_rows(rows, int(self.plan["pad_token_id"]))


class Ct2GeneratorExecutable(Executable):
    """input_ids -> logits of every position (``Generator.forward_batch``); ``generate_greedy`` decodes."""

    def __init__(self, model: Any, entry: Ct2Entry, vocabulary: list[str], info: dict[str, Any]):
        self.model = model
        self.vocabulary = vocabulary
        self.eos = [int(t) for t in entry.eos_token_ids]
        self.pad = int(entry.pad_token_id if entry.pad_token_id is not None else (self.eos or [0])[0])
        self.info = info

    def prepare(self, inputs: dict[str, torch.Tensor]) -> list[list[int]]:
        if "input_ids" not in inputs:
            raise SqueezebenchError(f"a CTranslate2 generator runs token ids; this task gives {', '.join(inputs)}")
        return [row.tolist() for row in inputs["input_ids"].detach().cpu()]

    def run_prepared(self, prepared: list[list[int]]) -> Any:
        return self.model.forward_batch(prepared)

    def to_tensor(self, output: Any) -> torch.Tensor:
        return torch.from_numpy(_to_numpy(output))

    def generate_greedy(self, inputs: dict[str, torch.Tensor], max_new_tokens: int,
                        min_new_tokens: int = 0) -> torch.Tensor:
        """New token ids (batch, n <= max_new_tokens) of greedy decoding, as transformers' greedy ``generate``
        gives them: up to and including an eos token (not before ``min_new_tokens``), rows padded with the pad id."""
        prompts = [[self.vocabulary[t] for t in row] for row in self.prepare(inputs)]
        results = self.model.generate_batch(prompts, beam_size=1, sampling_topk=1, max_length=int(max_new_tokens),
                                            min_length=int(min_new_tokens), include_prompt_in_result=False,
                                            end_token=self.eos or None, return_end_token=True)
        return _pad_rows([r.sequences_ids[0] for r in results], self.pad)


class Ct2EncoderExecutable(Executable):
    """input_ids (+ attention_mask, token_type_ids) -> the last hidden states (``Encoder.forward_batch`` on the
    unpadded rows), mean-pooled and L2-normalised when the task's forward is (sentence embeddings)."""

    def __init__(self, model: Any, entry: Ct2Entry, vocabulary: list[str], info: dict[str, Any]):
        self.model = model
        self.mean_pool = entry.mean_pool
        self.info = info
        if self.mean_pool:
            info["pooling"] = "mean over the attention mask, L2-normalised (numpy), inside the timed call"

    def prepare(self, inputs: dict[str, torch.Tensor]) -> tuple[list[list[int]], Optional[list[list[int]]], np.ndarray]:
        if "input_ids" not in inputs:
            raise SqueezebenchError(f"a CTranslate2 encoder runs token ids; this task gives {', '.join(inputs)}")
        ids = inputs["input_ids"].detach().cpu()
        mask = inputs.get("attention_mask", torch.ones_like(ids)).detach().cpu()
        lengths = mask.sum(1).tolist()
        rows = [row[:n].tolist() for row, n in zip(ids, lengths)]
        types = inputs.get("token_type_ids")
        types = None if types is None else [row[:n].tolist() for row, n in zip(types.detach().cpu(), lengths)]
        return rows, types, mask.numpy()

    def run_prepared(self, prepared) -> np.ndarray:
        rows, types, mask = prepared
        hidden = _to_numpy(self.model.forward_batch(rows, token_type_ids=types).last_hidden_state)
        if hidden.shape[1] < mask.shape[1]:  # CTranslate2 pads to the longest row; the task's batch may be longer
            hidden = np.pad(hidden, ((0, 0), (0, mask.shape[1] - hidden.shape[1]), (0, 0)))
        if not self.mean_pool:
            return hidden
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def to_tensor(self, output: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(output)


# what each family's timed call takes (the export checks that input against PyTorch)
FAMILY_INPUTS = {"whisper": ("input_features",), "generator": ("input_ids",),
                 "encoder": ("input_ids", "attention_mask", "token_type_ids")}
EXECUTABLES = {"whisper": Ct2WhisperExecutable, "generator": Ct2GeneratorExecutable, "encoder": Ct2EncoderExecutable}
TIMED_CALLS = {"whisper": "the Whisper encoder (ctranslate2.models.Whisper.encode)",
               "generator": "next-token logits of every position (ctranslate2.Generator.forward_batch)",
               "encoder": "the encoder's last hidden states (ctranslate2.Encoder.forward_batch)"}
CLASSES = {"whisper": "models.Whisper", "generator": "Generator", "encoder": "Encoder"}


def open_model(path: Path, family: str, compute_type: str, threads: int) -> Any:
    """The CTranslate2 model object of ``family`` on the CPU (one worker, ``threads`` intra-op threads)."""
    import ctranslate2

    cls = ctranslate2.models.Whisper if family == "whisper" else getattr(ctranslate2, CLASSES[family])
    try:
        return cls(str(path), device="cpu", compute_type=compute_type, intra_threads=int(threads), inter_threads=1)
    except (RuntimeError, ValueError) as exc:
        raise SqueezebenchError(f"CTranslate2 cannot load {path} as {compute_type}: "
                                f"{str(exc).splitlines()[0][:200]}") from None


def executable_for(path: Path, entry: Ct2Entry, device: str, threads: int) -> Executable:
    """The executable of a converted model folder: what the runtime loads and what the export checks."""
    import ctranslate2

    model = open_model(path, entry.ct2_family, entry.ct2_compute_type, threads)
    vocabulary = json.loads((path / "vocabulary.json").read_text())
    info = {"name": "ctranslate2", "version": ctranslate2.__version__, "device": device, "threads": int(threads),
            "family": entry.ct2_family, "compute_type_requested": entry.ct2_compute_type,
            "compute_type": str(model.compute_type), "timed_call": TIMED_CALLS[entry.ct2_family],
            **({"generation": "greedy (1 beam), CTranslate2's KV cache (generate_greedy)"}
               if hasattr(EXECUTABLES[entry.ct2_family], "generate_greedy") else {})}
    return EXECUTABLES[entry.ct2_family](model, entry, vocabulary, info)


def load_ct2(directory: Path, manifest: dict[str, Any], task, device: str, threads: Optional[int]):
    entry = Ct2Entry.read(manifest)
    path = Path(directory) / entry.ct2_dir
    if not (path / "model.bin").is_file():
        raise SqueezebenchError(f"artifact {directory} has no CTranslate2 model in {entry.ct2_dir}/; rebuild it "
                                "with `squeezebench run`")
    n_threads = int(threads or torch.get_num_threads())
    executable = executable_for(path, entry, device, n_threads)
    executable.info["threads_from"] = "--threads" if threads else "torch.get_num_threads()"
    return bundle_for_runtime(directory, manifest, task), executable


register_runtime(Runtime("ctranslate2", "CTranslate2 (converted Transformers model: Whisper, decoder-only LMs, "
                         "encoders; "
                         "float32 / int8 compute types)", load_ct2, _check_device, ("cpu",), Ct2Entry))
