"""llama.cpp runtime (llama-cpp-python's C API): a GGUF causal LM with llama.cpp's own low-bit kernels.

Two calls matter: next-token logits for every position of a token sequence (what perplexity and the latency
loop use: the same windows on the same runtime that is timed) and greedy generation with the KV cache
(``generate_greedy``, what TTFT and decode tokens/s time). Both go through ``llama_decode`` directly rather
than the high-level ``Llama`` class: its ``logits_all`` mode keeps an n_ctx x vocab score array and its
sampler adds Python work per token, neither of which a deployment pays.

Each call starts from an empty KV cache; tokens are fed as ids (the Hugging Face tokenizer stays the one
source of token ids), so llama.cpp's own tokenizer is never used.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.runtimes.base import Executable, ManifestEntry, Runtime, bundle_for_runtime, register_runtime

log = logging.getLogger(__name__)

GGUF_FILE = "model.gguf"
INSTALL_HINT = "pip install 'squeezebench[llamacpp]' (compiles llama.cpp from source: ~10-15 min on 2 cores)"
MAX_CTX = 2048  # KV cache length (SmolLM2: 47 MB at f16); longer inputs raise a clear error
N_BATCH = 512


class LlamaCppEntry(ManifestEntry):
    """What the gguf export (methods/export_gguf.py, this runtime's pair) tells it: the GGUF file, and how it was
    written and quantised (gguf: quant, tensor types, weight bytes per token, checks against PyTorch)."""

    gguf_file: str = GGUF_FILE
    gguf: dict[str, Any] = {}
_LOG_CALLBACK: Any = None  # kept alive: llama.cpp calls it from C


def llama_cpp_missing() -> Optional[str]:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return f"llama-cpp-python is not installed; {INSTALL_HINT}"
    except OSError as exc:  # the shared library failed to load
        return f"llama-cpp-python cannot load its library ({str(exc).splitlines()[0][:120]}); reinstall it"
    return None


def _init_backend() -> Any:
    """Import llama_cpp once, send llama.cpp's log to Python logging at debug level, init the backend."""
    global _LOG_CALLBACK
    import llama_cpp

    if _LOG_CALLBACK is None:
        @llama_cpp.llama_log_callback
        def _log(level, text, user_data):  # noqa: ARG001 - C signature
            log.debug("llama.cpp: %s", text.decode(errors="replace").rstrip())

        _LOG_CALLBACK = _log
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp


class LlamaCppModel:
    """One model + context + batch. ``logits`` and ``generate`` each start from an empty KV cache."""

    def __init__(self, path: Path, threads: int, n_ctx: int = MAX_CTX):
        lc = self.lc = _init_backend()
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self.model = lc.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise SqueezebenchError(f"llama.cpp cannot load {path} (run with -v for its log)")
        cparams = lc.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, N_BATCH, N_BATCH
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.no_perf = True
        self.ctx = lc.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            lc.llama_model_free(self.model)
            raise SqueezebenchError(f"llama.cpp cannot create a context for {path} (n_ctx {n_ctx})")
        self.n_ctx, self.threads = n_ctx, threads
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.batch = lc.llama_batch_init(N_BATCH, 0, 1)
        self.info = {"model_bytes": int(lc.llama_model_size(self.model)),
                     "model_parameters": int(lc.llama_model_n_params(self.model)),
                     "system_info": lc.llama_print_system_info().decode(errors="replace").strip()}

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self.lc.llama_batch_free(self.batch)
            self.lc.llama_free(self.ctx)
            self.lc.llama_model_free(self.model)
            self.ctx = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _clear(self) -> None:
        self.lc.llama_memory_clear(self.lc.llama_get_memory(self.ctx), True)

    def _decode(self, tokens: list[int], start: int, all_logits: bool) -> None:
        b = self.batch
        b.n_tokens = len(tokens)
        for i, tok in enumerate(tokens):
            b.token[i] = tok
            b.pos[i] = start + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = all_logits or i == len(tokens) - 1
        rc = self.lc.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _check_len(self, n: int) -> None:
        if n > self.n_ctx:
            raise SqueezebenchError(f"{n} tokens exceed the llama.cpp context of {self.n_ctx}; use a shorter "
                                    "--ppl-window / --seq-len / prompt")

    def logits(self, tokens: list[int]) -> np.ndarray:
        """[len(tokens), vocab] float32 next-token logits of every position."""
        self._check_len(len(tokens))
        self._clear()
        out = np.empty((len(tokens), self.n_vocab), dtype=np.float32)
        for start in range(0, len(tokens), N_BATCH):
            chunk = tokens[start:start + N_BATCH]
            self._decode(chunk, start, True)
            ptr = self.lc.llama_get_logits(self.ctx)
            out[start:start + len(chunk)] = np.ctypeslib.as_array(ptr, shape=(len(chunk), self.n_vocab))
        return out

    def _last_argmax(self) -> int:
        ptr = self.lc.llama_get_logits_ith(self.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def generate(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        """Greedy decoding with the KV cache: prompt prefill (logits of its last token only), then one
        ``llama_decode`` per new token. No stop token: exactly ``max_new_tokens`` come back."""
        self._check_len(len(prompt) + max_new_tokens)
        self._clear()
        for start in range(0, len(prompt), N_BATCH):
            self._decode(prompt[start:start + N_BATCH], start, False)
        new = [self._last_argmax()]
        pos = len(prompt)
        while len(new) < max_new_tokens:
            self._decode([new[-1]], pos, False)
            pos += 1
            new.append(self._last_argmax())
        return new


def open_model(path: Path, threads: int, n_ctx: int = MAX_CTX) -> LlamaCppModel:
    missing = llama_cpp_missing()
    if missing:
        raise SqueezebenchError(missing)
    return LlamaCppModel(Path(path), int(threads), n_ctx)


class LlamaCppExecutable(Executable):
    """input_ids [batch, seq] -> logits [batch, seq, vocab] (rows run one after another), plus greedy decoding."""

    def __init__(self, model: LlamaCppModel, info: dict[str, Any]):
        self.model = model
        self.info = info

    def prepare(self, inputs: dict[str, torch.Tensor]) -> list[list[int]]:
        if "input_ids" not in inputs:
            raise SqueezebenchError(f"llama.cpp runs token ids; this task gives {', '.join(inputs)}")
        return [row.tolist() for row in inputs["input_ids"].detach().cpu()]

    def run_prepared(self, prepared: list[list[int]]) -> np.ndarray:
        return np.stack([self.model.logits(row) for row in prepared])

    def to_tensor(self, output: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(output)

    def generate_greedy(self, inputs: dict[str, torch.Tensor], max_new_tokens: int) -> torch.Tensor:
        """New token ids, shape (1, max_new_tokens), of greedy decoding after ``inputs['input_ids']`` (batch 1)."""
        ids = inputs["input_ids"]
        if ids.dim() != 2 or ids.shape[0] != 1:
            raise SqueezebenchError(f"generate_greedy takes one prompt (batch 1), got input_ids {list(ids.shape)}")
        return torch.tensor([self.model.generate(ids[0].tolist(), max_new_tokens)], dtype=torch.long)


def load_llamacpp(directory: Path, manifest: dict[str, Any], task, device: str, threads: Optional[int]):
    import llama_cpp

    entry = LlamaCppEntry.read(manifest)
    path = Path(directory) / entry.gguf_file
    if not path.is_file():
        raise SqueezebenchError(f"artifact {directory} has no GGUF file {path.name}; rebuild it with `squeezebench run`")
    n_threads = int(threads or torch.get_num_threads())
    model = open_model(path, n_threads)
    gguf = entry.gguf
    info = {"name": "llamacpp", "version": llama_cpp.__version__, "device": "cpu", "threads": n_threads,
            "threads_from": "--threads" if threads else "torch.get_num_threads()", "n_ctx": model.n_ctx,
            "n_batch": N_BATCH, "quant": gguf.get("quant"), "tensor_types": gguf.get("tensor_types"),
            "weight_bytes_per_token": gguf.get("weight_bytes_per_token"),
            "timed_call": "llama_decode of the whole input with logits for every position, from an empty KV cache",
            "generation": "greedy, KV cache, one llama_decode per token (generate_greedy)", **model.info}
    return bundle_for_runtime(directory, manifest, task), LlamaCppExecutable(model, info)


def _check_device(device: str) -> Optional[str]:
    if not device.startswith("cpu"):
        return "squeezebench runs llama.cpp on the CPU only (a CPU build of llama-cpp-python)"
    return llama_cpp_missing()


register_runtime(Runtime("llamacpp", "llama.cpp via llama-cpp-python (GGUF, CPU low-bit kernels)", load_llamacpp,
                         _check_device, ("cpu",), LlamaCppEntry))
