"""An artifact of several exported graphs (an encoder-decoder): the entry graph is what latency times, and
``generate_greedy`` runs the encoder once then greedy decoding on the decoder graphs, as the artifact's
generation plan (models/seq2seq_graphs.py, written into the manifest by the export) says.

The ONNX Runtime and OpenVINO executables subclass :class:`GraphsExecutable` and only say how to run one graph;
their manifest entries extend :class:`GraphsEntry`.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.models.seq2seq_graphs import LANGUAGE_TO_DETECT, kv_names
from pydantic import BaseModel, ConfigDict

from squeezebench.runtimes.base import Executable, ManifestEntry


class GraphFile(BaseModel):
    """One exported graph: its file in the artifact and its input/output names, in call order."""

    model_config = ConfigDict(frozen=True)
    file: str
    inputs: list[str]
    outputs: list[str]


class GraphsEntry(ManifestEntry):
    """The manifest keys of an artifact of several graphs (all None for a single-graph one): the graphs, the one
    latency times (entry_graph) and the generation plan (models/seq2seq_graphs.py) that drives them."""

    entry_graph: Optional[str] = None
    generation: Optional[dict[str, Any]] = None
    graphs: Optional[dict[str, GraphFile]] = None

    @property
    def multi_graph(self) -> bool:
        return bool(self.graphs)


class GraphsExecutable(Executable):
    """Subclasses implement ``run_graph(name, feeds) -> {output name: array}``; feeds are numpy arrays."""

    def __init__(self, entry: GraphsEntry, info: dict[str, Any]):
        self.graphs: dict[str, GraphFile] = dict(entry.graphs or {})
        self.entry = entry.entry_graph or next(iter(self.graphs))
        self.plan: Optional[dict[str, Any]] = entry.generation
        self.info = info
        info["graphs"] = {name: g.file for name, g in self.graphs.items()}
        info["timed_call"] = f"the {self.entry} graph"
        if self.plan:
            info["decoding"] = self.plan["decoding"]
            info["generation"] = {k: self.plan[k] for k in ("prompt", "eos_token_ids", "pad_token_id")}
        self.last_generation: Optional[dict[str, Any]] = None  # seconds spent per phase by the last generate

    def run_graph(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def prepare(self, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        names = self.graphs[self.entry].inputs
        missing = [n for n in names if n not in inputs]
        if missing:
            raise SqueezebenchError(f"the {self.entry} graph needs inputs {missing}, which this task does not "
                                    f"provide (it gives {', '.join(inputs)})")
        return {n: np.ascontiguousarray(inputs[n].detach().cpu().numpy()) for n in names}

    def run_prepared(self, prepared: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run_graph(self.entry, prepared)

    def to_tensor(self, output: dict[str, np.ndarray]) -> torch.Tensor:
        first = self.graphs[self.entry].outputs[0]
        return torch.from_numpy(np.array(output[first], dtype=np.float32, copy=True))

    def generate_greedy(self, inputs: dict[str, torch.Tensor], max_new_tokens: int) -> torch.Tensor:
        """New tokens (batch, n <= max_new_tokens), as ``model.generate(..., do_sample=False, num_beams=1)``
        gives them: the forced prompt not included, finished rows padded with the pad id."""
        if not self.plan:
            raise SqueezebenchError("this artifact's graphs come without a generation plan; re-export it")
        tokens, timing = greedy_generate(self.run_graph, self.plan, self.prepare(inputs), int(max_new_tokens))
        self.last_generation = timing
        return torch.from_numpy(tokens)


def _prompt(run, plan: dict[str, Any], hidden: np.ndarray) -> np.ndarray:
    """The forced prompt per row; a language placeholder is filled as HF's detect_language does (argmax of the
    first decoder step over the language tokens)."""
    prompt = np.tile(np.asarray(plan["prompt"], dtype=np.int64), (hidden.shape[0], 1))
    if LANGUAGE_TO_DETECT in plan["prompt"]:
        logits = run("decoder", {"decoder_input_ids": prompt[:, :1].copy(), "encoder_hidden_states": hidden})
        lang = np.asarray(plan["language_ids"], dtype=np.int64)
        prompt[:, plan["prompt"].index(LANGUAGE_TO_DETECT)] = lang[logits["logits"][:, -1, lang].argmax(-1)]
    return prompt


def greedy_generate(run, plan: dict[str, Any], encoder_feeds: dict[str, np.ndarray],
                    max_new_tokens: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Encoder once, the decoder on the prompt, then one decoder_with_past call per new token."""
    layers = plan["decoder_layers"]
    t0 = time.perf_counter()
    hidden = run("encoder", encoder_feeds)["encoder_hidden_states"]
    t1 = time.perf_counter()
    prompt = _prompt(run, plan, hidden)
    out = run("decoder", {"decoder_input_ids": prompt, "encoder_hidden_states": hidden})
    cross = {n: out[n] for n in kv_names("cross", layers)}
    past = [out[n] for n in kv_names("present_self", layers)]
    t2 = time.perf_counter()
    max_new = min(max_new_tokens, plan["max_target_positions"] - prompt.shape[1])
    suppress = np.asarray(plan["suppress_tokens"], dtype=np.int64)
    begin = np.asarray(plan["begin_suppress_tokens"], dtype=np.int64)
    eos = np.asarray(plan["eos_token_ids"], dtype=np.int64)
    done = np.zeros(prompt.shape[0], dtype=bool)
    tokens: list[np.ndarray] = []
    logits = out["logits"][:, -1]
    step_s = []
    for step in range(max(0, max_new)):
        scores = logits.astype(np.float32, copy=True)
        scores[:, suppress] = -np.inf
        if step == 0:
            scores[:, begin] = -np.inf
        nxt = np.where(done, plan["pad_token_id"], scores.argmax(-1)).astype(np.int64)
        tokens.append(nxt)
        done |= np.isin(nxt, eos)
        if done.all() or step == max_new - 1:
            break
        ts = time.perf_counter()
        feeds = {"decoder_input_ids": nxt[:, None].copy(), **dict(zip(kv_names("past_self", layers), past)), **cross}
        out = run("decoder_with_past", feeds)
        past = [out[n] for n in kv_names("present_self", layers)]
        logits = out["logits"][:, -1]
        step_s.append(time.perf_counter() - ts)
    result = _trim_like_whisper(tokens, prompt.shape[0], plan)
    timing = {"encoder_s": t1 - t0, "prompt_s": t2 - t1, "decoder_steps": len(step_s),
              "decoder_step_s": float(np.sum(step_s)) if step_s else 0.0, "total_s": time.perf_counter() - t0,
              "new_tokens": int(result.shape[1]), "prompt": prompt.tolist()}
    return result, timing


def _trim_like_whisper(tokens: list[np.ndarray], batch: int, plan: dict[str, Any]) -> np.ndarray:
    """What Whisper's generate does to each row before returning it: drop the padding (all pad ids, one kept
    when pad == eos), then one final eos, then what follows the last pair of timestamp tokens (its segment
    logic); rows are right-padded with the pad id to the longest."""
    pad, eos = plan["pad_token_id"], plan["eos_token_ids"][0]
    rows = []
    for row in (np.stack(tokens, axis=1) if tokens else np.zeros((batch, 0), dtype=np.int64)):
        if len(row) and row[-1] == pad:
            n = int((row == pad).sum()) - (1 if pad == eos else 0)
            row = row[:len(row) - n] if n else row
        if len(row) and row[-1] == eos:
            row = row[:-1]
        rows.append(_cut_at_timestamp_pairs(row, plan.get("timestamp_begin")))
    width = max((len(r) for r in rows), default=0)
    return np.stack([np.pad(r, (0, width - len(r)), constant_values=pad) for r in rows]).astype(np.int64)


def _cut_at_timestamp_pairs(row: np.ndarray, timestamp_begin: Optional[int]) -> np.ndarray:
    """HF Whisper's ``_retrieve_segment`` on a row: two timestamp tokens in a row close a segment, and the tokens
    after the last such pair are dropped unless the row ends on a single timestamp."""
    if timestamp_begin is None or len(row) < 2:
        return row
    ts = row >= timestamp_begin
    pairs = [i + 1 for i in range(len(row) - 1) if ts[i] and ts[i + 1]]
    if not pairs or (not ts[-2] and ts[-1]):
        return row
    return row[:pairs[-1] + 1]
