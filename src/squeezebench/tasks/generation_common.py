"""Greedy generation shared by the generative tasks (causal-lm speed, text-generation quality and speed).

Generation goes through the executable when its runtime can generate (``run.generate_greedy(inputs,
max_new_tokens) -> LongTensor`` of the NEW token ids only, batch x new: no prompt, no decoder start token),
else through the PyTorch model's ``generate``. Decoding is plain greedy: one beam, no sampling and no
repetition penalties, whatever the checkpoint's generation config says (that is what makes runs comparable).
"""

from __future__ import annotations

import copy
import inspect
import statistics
import time
from typing import Any, Callable

import torch

from squeezebench.tasks.metrics import DECODE, TTFT, metric_value

DECODING = "greedy (1 beam, no sampling, no repetition penalty), KV cache"


class NextTokenLogits(torch.nn.Module):
    """forward(input_ids) -> logits of every position (a decoder-only LM).

    The all-ones attention mask is explicit (same result for unpadded input): without it transformers 5 derives
    packed-sequence masks with ``torch.diff``, which the OpenVINO and ONNX converters cannot translate."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits


class FirstDecoderStepLogits(torch.nn.Module):
    """forward(input_ids) -> logits of the first decoder step of an encoder-decoder LM: the encoder over the
    input plus one decoder step from the start token, the fixed-cost part of every generation."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        start = getattr(model.config, "decoder_start_token_id", None)
        if start is None:
            start = model.config.pad_token_id
        self.start = int(start)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        decoder_input_ids = torch.full_like(input_ids[:, :1], self.start)
        return self.model(input_ids=input_ids, decoder_input_ids=decoder_input_ids, use_cache=False).logits


def is_encoder_decoder(config: Any) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


def can_generate(run: Any, bundle: Any) -> bool:
    return hasattr(run, "generate_greedy") or (bundle.module is not None and hasattr(bundle.module, "generate"))


def _greedy_config(model: torch.nn.Module, max_new: int, min_new: int):
    gen = copy.deepcopy(model.generation_config)
    gen.do_sample, gen.num_beams, gen.num_beam_groups = False, 1, 1
    gen.temperature = gen.top_p = gen.top_k = None
    gen.repetition_penalty, gen.no_repeat_ngram_size, gen.encoder_no_repeat_ngram_size = 1.0, 0, 0
    gen.max_length, gen.max_new_tokens, gen.min_new_tokens = None, max_new, min_new or None
    if gen.pad_token_id is None:
        eos = gen.eos_token_id if gen.eos_token_id is not None else model.config.eos_token_id
        gen.pad_token_id = eos[0] if isinstance(eos, (list, tuple)) else eos
    return gen


@torch.no_grad()
def generate_new_tokens(run: Any, bundle: Any, input_ids: torch.Tensor, max_new_tokens: int,
                        min_new_tokens: int = 0) -> torch.Tensor:
    """Greedy continuation of ``input_ids`` (batch x prompt, on CPU): the new token ids only, on CPU.

    ``min_new_tokens`` (forcing a length past end-of-sequence) is honoured by ``generate`` and by a runtime's
    ``generate_greedy`` that takes it (CTranslate2); another may stop earlier, which callers that need a fixed
    length check."""
    if hasattr(run, "generate_greedy"):
        if min_new_tokens and "min_new_tokens" in inspect.signature(run.generate_greedy).parameters:
            return run.generate_greedy({"input_ids": input_ids}, max_new_tokens, min_new_tokens=min_new_tokens).cpu()
        return run.generate_greedy({"input_ids": input_ids}, max_new_tokens).cpu()
    model = bundle.module
    if model is None or not hasattr(model, "generate"):
        raise RuntimeError("this runtime has no generate()")
    device = next(iter(model.parameters()), torch.empty(0)).device
    ids = input_ids.to(device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                         generation_config=_greedy_config(model, max_new_tokens, min_new_tokens))
    skip = 1 if is_encoder_decoder(model.config) else ids.shape[1]  # the decoder start token, or the prompt
    return out[:, skip:].cpu()


def generation_speed(generate: Callable[[torch.Tensor, int], torch.Tensor], prompt: torch.Tensor, new_tokens: int,
                     repeats: int, device: str) -> dict[str, Any]:
    """Median time to first token and decode tokens/s of greedy generation of a fixed length.

    ``generate(prompt, n)`` returns the n new tokens it made (forced past end-of-sequence when it can)."""

    def timed(n: int) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = generate(prompt, n)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if out.shape[1] != n:
            raise RuntimeError("generation stopped early")
        return time.perf_counter() - t0

    timed(2)  # warm-up
    ttfts, decode_rates = [], []
    for _ in range(repeats):
        first = timed(1)
        full = timed(new_tokens)
        ttfts.append(first * 1e3)
        decode_rates.append((new_tokens - 1) / max(full - first, 1e-9))
    return {"ttft_ms": ttfts, "decode_tokens_per_s": decode_rates}


def speed_metrics(run: Any, bundle: Any, prompt: torch.Tensor, protocol: Any) -> tuple[dict, dict, list[str]]:
    """TTFT and decode tokens/s on ``prompt`` (1 x tokens) as metrics, protocol notes and flags."""
    if not can_generate(run, bundle):
        return {}, {"generation": "not measured: this runtime has no generate()"}, []
    if hasattr(run, "generate_greedy"):
        device = str(getattr(run, "info", {}).get("device") or "cpu")
    else:
        device = str(next(iter(bundle.module.parameters()), torch.empty(0)).device)
    try:
        gen = generation_speed(lambda p, n: generate_new_tokens(run, bundle, p, n, min_new_tokens=n), prompt,
                               protocol.gen_new_tokens, protocol.gen_repeats, device)
    except (RuntimeError, TypeError, ValueError) as exc:
        return {}, {}, [f"generation not measured: {str(exc).splitlines()[0][:120]}"]
    metrics = {"time_to_first_token": metric_value(TTFT, statistics.median(gen["ttft_ms"]), protocol.gen_repeats,
                                                   samples=gen["ttft_ms"]),
               "decode_tokens_per_s": metric_value(DECODE, statistics.median(gen["decode_tokens_per_s"]),
                                                   protocol.gen_repeats, samples=gen["decode_tokens_per_s"])}
    proto = {"gen_prompt_tokens": int(prompt.shape[1]), "gen_new_tokens": protocol.gen_new_tokens,
             "gen_decoding": DECODING + (f", {(getattr(run, 'info', None) or {}).get('name', 'runtime')} generate_greedy"
                                         if hasattr(run, "generate_greedy") else ", transformers generate")}
    return metrics, proto, []

