"""Tokenisation helpers shared by the text tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.tasks.base import Task


def load_tokenizer(bundle, where: str, kwargs: dict) -> None:
    from transformers import AutoTokenizer

    try:
        bundle.tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise SqueezebenchError(f"cannot load a tokenizer from {where!r}: {str(exc).splitlines()[0]}") from None
    if bundle.tokenizer.pad_token is None:
        bundle.tokenizer.pad_token = bundle.tokenizer.eos_token or bundle.tokenizer.unk_token


def save_tokenizer(bundle, directory: Path) -> None:
    if bundle.tokenizer is not None:
        bundle.tokenizer.save_pretrained(directory)


def require_text(bundle) -> None:
    if bundle.tokenizer is None:
        raise SqueezebenchError("this text task needs a tokenizer; the model source provided none")


def fixed_batch(bundle, texts: list[str], batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
    """``batch_size`` real texts, padded/truncated to exactly ``seq_len`` tokens."""
    texts = (texts * (batch_size // max(len(texts), 1) + 1))[:batch_size]
    enc = bundle.tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def batches(bundle, texts: list[str], batch_size: int, max_len: int) -> Iterator[dict[str, torch.Tensor]]:
    """Batches padded to their longest member (at most ``max_len`` tokens)."""
    for i in range(0, len(texts), batch_size):
        enc = bundle.tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_len,
                               return_tensors="pt")
        yield {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class TextTask(Task):
    """Base of the tasks fed by a tokenizer: loads it with the model, saves it beside every artifact."""

    input_kind = "text"

    def attach_preprocessing(self, bundle, where, kwargs):
        load_tokenizer(bundle, where, kwargs)

    def save_preprocessing(self, bundle, directory):
        save_tokenizer(bundle, directory)

    def request_of(self, example):
        return {"text": example["text"]}

    def check_request(self, body):
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return 'the body must be a JSON object with a "text" string, e.g. {"text": "The match ended 2-1."}'
        if not body["text"].strip():
            return '"text" is empty; send the text to classify or embed'
        return None

    def serve_outputs(self, run, bundle, bodies, protocol) -> torch.Tensor:
        """The model's output for a batch of checked bodies, padded to their longest (at most ``seq_len`` tokens)."""
        (inputs,) = batches(bundle, [b["text"] for b in bodies], len(bodies), protocol.seq_len)
        return run(inputs).float()
