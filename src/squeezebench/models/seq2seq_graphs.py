"""Whisper as three exportable graphs with a KV cache, and the greedy-decoding plan the runtimes follow.

- ``encoder``: input_features -> encoder_hidden_states (run once per utterance; what latency times).
- ``decoder``: the forced prompt (decoder_input_ids) + encoder_hidden_states -> logits, the prompt's self-attention
  keys/values (``present_self_{key,value}_{i}``) and the cross-attention keys/values (``cross_{key,value}_{i}``),
  which depend on the audio only and so are computed once here instead of at every token.
- ``decoder_with_past``: new token(s) + ``past_self_*`` + ``cross_*`` -> logits + ``present_self_*``.

The decoder graphs are written with the model's own modules (layer norms, projections, activation) and plain
matmul/softmax attention: the HF forward builds masks and caches with Python control flow that tracing would bake
into the graph at the example's shape. tests/models/test_seq2seq_graphs.py checks them against the HF forward and
``generate``. A speech task returns :func:`whisper_export_graphs` from its ``export_graphs`` hook.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Optional

import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.models.graphs import ExportGraphs, GraphSpec

log = logging.getLogger(__name__)

LANGUAGE_TO_DETECT = -1  # placeholder in the plan's prompt: the runtime detects the language from the audio
CALIBRATION_NEW_TOKENS = 12  # tokens PyTorch generates per calibration utterance, for the decoders' examples
STEP_EXAMPLES_PER_UTTERANCE = 3  # decoder_with_past examples taken at spread positions of each generated text
# generation options the graph runtimes do not implement: a model that sets them is refused, not mis-decoded
UNSUPPORTED_OPTIONS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "length_penalty": 1.0,
                       "bad_words_ids": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
                       "return_timestamps": None, "min_new_tokens": None}


def kv_names(prefix: str, layers: int) -> list[str]:
    """e.g. present_self_key_0, present_self_value_0, present_self_key_1, ..."""
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


class WhisperEncoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_features=input_features).last_hidden_state


class _WhisperDecoderCore(nn.Module):
    """The HF Whisper decoder's math with an explicit cache (lists of tensors, batch x heads x length x head_dim)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.decoder = model.get_decoder()
        self.proj_out = model.get_output_embeddings()
        self.layers = len(self.decoder.layers)

    @staticmethod
    def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], -1, head_dim).transpose(1, 2)

    def cross_kv(self, encoder_hidden_states: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in self.decoder.layers:
            attn = layer.encoder_attn
            out += [self._heads(attn.k_proj(encoder_hidden_states), attn.head_dim),
                    self._heads(attn.v_proj(encoder_hidden_states), attn.head_dim)]
        return out

    def _attend(self, attn, q_in, k, v, mask: Optional[torch.Tensor]) -> torch.Tensor:
        q = self._heads(attn.q_proj(q_in) * attn.scaling, attn.head_dim)
        scores = torch.matmul(q, k.transpose(-1, -2))
        if mask is not None:
            scores = scores + mask
        out = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2)
        return attn.out_proj(out.reshape(out.shape[0], out.shape[1], -1))

    def step(self, ids: torch.Tensor, past: Optional[list[torch.Tensor]],
             cross: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits for ``ids`` after ``past`` (None: nothing before), and the self-attention cache including them."""
        dec = self.decoder
        t = ids.shape[1]
        start = past[0].shape[2] if past is not None else 0
        positions = torch.arange(t, device=ids.device) + start
        hidden = dec.embed_tokens(ids) + dec.embed_positions.weight.index_select(0, positions).unsqueeze(0)
        keys = torch.arange(t + start, device=ids.device)
        mask = torch.zeros(t, t + start, dtype=hidden.dtype, device=ids.device).masked_fill(
            keys.unsqueeze(0) > positions.unsqueeze(1), torch.finfo(hidden.dtype).min)
        present = []
        for i, layer in enumerate(dec.layers):
            attn = layer.self_attn
            x = layer.self_attn_layer_norm(hidden)
            k, v = self._heads(attn.k_proj(x), attn.head_dim), self._heads(attn.v_proj(x), attn.head_dim)
            if past is not None:
                k, v = torch.cat([past[2 * i], k], dim=2), torch.cat([past[2 * i + 1], v], dim=2)
            present += [k, v]
            hidden = hidden + self._attend(attn, x, k, v, mask)
            x = layer.encoder_attn_layer_norm(hidden)
            hidden = hidden + self._attend(layer.encoder_attn, x, cross[2 * i], cross[2 * i + 1], None)
            x = layer.final_layer_norm(hidden)
            hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(x)))
        return self.proj_out(dec.layer_norm(hidden)), present


class WhisperDecoderGraph(_WhisperDecoderCore):
    """prompt ids + encoder states -> (logits, *present_self_*, *cross_*)."""

    def forward(self, decoder_input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor):
        cross = self.cross_kv(encoder_hidden_states)
        logits, present = self.step(decoder_input_ids, None, cross)
        return (logits, *present, *cross)


class WhisperDecoderWithPastGraph(_WhisperDecoderCore):
    """new ids + past_self_* + cross_* (interleaved key, value per layer) -> (logits, *present_self_*)."""

    def forward(self, decoder_input_ids: torch.Tensor, *cache: torch.Tensor):
        n = 2 * self.layers
        logits, present = self.step(decoder_input_ids, list(cache[:n]), list(cache[n:]))
        return (logits, *present)


# --- generation plan ------------------------------------------------------------------------------------
def _token_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def whisper_generation_plan(model: nn.Module) -> dict[str, Any]:
    """What ``model.generate(features, do_sample=False, num_beams=1)`` does, as data the runtimes follow: the
    forced prompt (HF's own ``_retrieve_init_tokens``, with -1 where it would detect the language), the suppressed
    tokens, eos and pad ids. Refuses generation options the graph runtimes do not implement."""
    gc = copy.deepcopy(model.generation_config)
    for option, default in UNSUPPORTED_OPTIONS.items():
        if getattr(gc, option, default) not in (default, None, False, 0):
            raise SqueezebenchError(f"the model's generation config sets {option}={getattr(gc, option)!r}, which "
                                    "generation on exported graphs does not implement; measure it with PyTorch")
    gc.return_timestamps = False  # transcripts without timestamps, as generate() gives by default
    detect = getattr(gc, "lang_to_id", None)
    saved = getattr(model, "detect_language", None)
    model.detect_language = lambda **kwargs: torch.full((1,), LANGUAGE_TO_DETECT, dtype=torch.long)
    try:
        prompt = model._retrieve_init_tokens(None, 1, gc, model.config, 3000, {})[0].tolist()
    except Exception as exc:  # noqa: BLE001 - a private transformers API; say which part failed
        raise SqueezebenchError(f"cannot derive Whisper's decoder prompt from its generation config: {exc}") from None
    finally:
        if saved is not None:
            del model.detect_language
    eos = _token_list(gc.eos_token_id if gc.eos_token_id is not None else model.config.eos_token_id)
    pad = gc.pad_token_id if gc.pad_token_id is not None else model.config.pad_token_id
    return {"kind": "whisper", "decoding": "kv-cache", "prompt": [int(t) for t in prompt],
            "language_ids": sorted(int(v) for v in detect.values()) if detect and LANGUAGE_TO_DETECT in prompt else [],
            "suppress_tokens": _token_list(gc.suppress_tokens),
            "begin_suppress_tokens": _token_list(gc.begin_suppress_tokens),
            "eos_token_ids": eos, "pad_token_id": int(pad if pad is not None else eos[0]),
            "max_target_positions": int(model.config.max_target_positions),
            # generate() cuts rows at pairs of timestamp tokens even without timestamps (its segment logic)
            "timestamp_begin": (int(gc.no_timestamps_token_id) + 1 if getattr(gc, "no_timestamps_token_id", None)
                                is not None else None),
            "decoder_layers": len(model.get_decoder().layers)}


# --- examples for export, checks and calibration ----------------------------------------------------------
def _features(samples: list[dict[str, torch.Tensor]], dtype: torch.dtype) -> list[torch.Tensor]:
    if not samples or any("input_features" not in s for s in samples):
        raise SqueezebenchError("exporting Whisper's graphs needs task inputs with input_features")
    return [s["input_features"].to(dtype) for s in samples]


def whisper_export_graphs(model: nn.Module) -> ExportGraphs:
    """The encoder, decoder and decoder_with_past graphs of a ``WhisperForConditionalGeneration`` (any size,
    including pruned ones: head counts are read from the weights) and its generation plan."""
    if not (hasattr(model, "get_encoder") and hasattr(model.get_decoder(), "embed_positions")):
        raise SqueezebenchError(f"{type(model).__name__} is not a Whisper encoder-decoder; the graph export "
                                "knows WhisperForConditionalGeneration only")
    model = model.eval()
    plan = whisper_generation_plan(model)
    layers = plan["decoder_layers"]
    encoder, decoder, step = WhisperEncoderGraph(model), WhisperDecoderGraph(model), WhisperDecoderWithPastGraph(model)
    dtype = next(model.parameters()).dtype
    cache: dict[str, Any] = {}

    def runs(samples):
        """Encoder states and prompt + greedy PyTorch continuation per sample (computed once per sample list)."""
        key = tuple(id(s) for s in samples)
        if cache.get("key") != key:
            out = []
            with torch.no_grad():  # not inference_mode: the examples are traced by the exporters
                for x in _features(samples, dtype):
                    hidden = encoder(x)
                    prompt = _torch_prompt(decoder, hidden, plan)
                    ids = model.generate(x, max_new_tokens=CALIBRATION_NEW_TOKENS, do_sample=False, num_beams=1)
                    ids = ids if isinstance(ids, torch.Tensor) else ids.sequences
                    if not (ids.shape[1] >= prompt.shape[1] and torch.equal(ids[:, :prompt.shape[1]], prompt)):
                        ids = torch.cat([prompt, ids], dim=1)  # transformers 5 returns the new tokens only
                    out.append((x, hidden, ids))
            cache.update(key=key, runs=out)
        return cache["runs"]

    def encoder_examples(samples):
        return [{"input_features": x} for x, _, _ in runs(samples)]

    def decoder_examples(samples):
        return [{"decoder_input_ids": ids[:, :len(plan["prompt"])], "encoder_hidden_states": h}
                for _, h, ids in runs(samples)]

    def step_examples(samples):
        out = []
        with torch.no_grad():  # not inference_mode: the examples are traced by the exporters
            for _, hidden, ids in runs(samples):
                n_prompt = len(plan["prompt"])
                cross = decoder.cross_kv(hidden)
                last = ids.shape[1] - 1
                for pos in sorted({min(last, n_prompt + k * max(1, (last - n_prompt) // STEP_EXAMPLES_PER_UTTERANCE))
                                   for k in range(STEP_EXAMPLES_PER_UTTERANCE)}):
                    _, past = decoder.step(ids[:, :pos], None, cross)
                    feeds = {"decoder_input_ids": ids[:, pos:pos + 1]}
                    feeds.update(zip(kv_names("past_self", layers), past))
                    feeds.update(zip(kv_names("cross", layers), cross))
                    out.append(feeds)
        return out

    batch = {0: "batch"}
    self_axes = {0: "batch", 2: "self_length"}
    graphs = {
        "encoder": GraphSpec(encoder, ("input_features",), ("encoder_hidden_states",),
                             {"input_features": batch, "encoder_hidden_states": batch}, encoder_examples),
        "decoder": GraphSpec(decoder, ("decoder_input_ids", "encoder_hidden_states"),
                             ("logits", *kv_names("present_self", layers), *kv_names("cross", layers)),
                             {"decoder_input_ids": {0: "batch", 1: "sequence"}, "encoder_hidden_states": batch,
                              "logits": {0: "batch", 1: "sequence"},
                              **{n: {0: "batch", 2: "sequence"} for n in kv_names("present_self", layers)},
                              **{n: batch for n in kv_names("cross", layers)}}, decoder_examples),
        "decoder_with_past": GraphSpec(step, ("decoder_input_ids", *kv_names("past_self", layers),
                                              *kv_names("cross", layers)),
                                       ("logits", *kv_names("present_self", layers)),
                                       {"decoder_input_ids": {0: "batch", 1: "sequence"},
                                        **{n: {0: "batch", 2: "past_length"} for n in kv_names("past_self", layers)},
                                        **{n: batch for n in kv_names("cross", layers)},
                                        "logits": {0: "batch", 1: "sequence"},
                                        **{n: self_axes for n in kv_names("present_self", layers)}},
                                       step_examples),
    }
    return ExportGraphs(graphs, plan, [f"encoder-decoder exported as {', '.join(graphs)}; greedy decoding with a "
                                       "KV cache on the exported graphs (cross-attention keys/values once per "
                                       "utterance)"])


def _torch_prompt(decoder: WhisperDecoderGraph, hidden: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
    """The plan's prompt for each row of ``hidden``, the language detected as HF's ``detect_language`` does."""
    prompt = torch.tensor(plan["prompt"], dtype=torch.long).expand(hidden.shape[0], -1).clone()
    if LANGUAGE_TO_DETECT in plan["prompt"]:
        start = prompt[:, :1]
        logits = decoder(start, hidden)[0][:, -1]
        lang = torch.tensor(plan["language_ids"])
        prompt[:, plan["prompt"].index(LANGUAGE_TO_DETECT)] = lang[logits[:, lang].argmax(-1)]
    return prompt

