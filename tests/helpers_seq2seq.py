"""A tiny config-built Whisper (random weights) with a real-looking generation config, and a minimal task that
declares its export graphs the way the speech-recognition task does (``export_graphs`` hook)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from squeezebench.models.bundle import ModelBundle
from squeezebench.models.seq2seq_graphs import WhisperEncoderGraph, whisper_export_graphs
from squeezebench.tasks.base import Task

N_MELS, FRAMES = 80, 60  # max_source_positions=30: the encoder takes 2 x 30 mel frames


def tiny_whisper(multilingual: bool = False, seed: int = 0, language=None):
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=51865, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=N_MELS,
                        max_source_positions=FRAMES // 2, max_target_positions=64,
                        init_std=0.3,  # varied tokens from random weights (0.02 repeats one token)
                        decoder_start_token_id=50258 if multilingual else 50257, pad_token_id=50256,
                        eos_token_id=50256, bos_token_id=50256)
    model = WhisperForConditionalGeneration(cfg).eval()
    gc = GenerationConfig.from_model_config(cfg)
    gc.suppress_tokens = [1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58]
    gc.begin_suppress_tokens = [220, 50256]
    if multilingual:  # as whisper-base: start 50258, <|en|> 50259, transcribe 50359, notimestamps 50363
        gc.lang_to_id = {"<|en|>": 50259, "<|de|>": 50261, "<|fr|>": 50265}
        gc.task_to_id = {"translate": 50358, "transcribe": 50359}
        gc.no_timestamps_token_id, gc.is_multilingual = 50363, True
        gc.language = language
    else:  # as whisper-tiny.en: start 50257, notimestamps 50362
        gc.no_timestamps_token_id, gc.is_multilingual = 50362, False
    model.generation_config = gc
    return model


def features(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_features": torch.randn(1, N_MELS, FRAMES, generator=g)} for _ in range(n)]


class GraphTask(Task):
    """The seam a speech task fills: input_features in, encoder states from wrap(), graphs from export_graphs."""

    name = "test-seq2seq"
    input_names = ("input_features",)

    def wrap(self, bundle) -> torch.nn.Module:
        return WhisperEncoderGraph(bundle.module)

    def export_graphs(self, bundle):
        return whisper_export_graphs(bundle.module)

    def save_preprocessing(self, bundle, directory: Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)


def bundle_of(model) -> ModelBundle:
    return ModelBundle(module=model, source={"kind": "python", "name": "tiny-whisper"})


def pytorch_greedy(model, x: torch.Tensor, n: int) -> torch.Tensor:
    with torch.inference_mode():
        return model.generate(x, max_new_tokens=n, do_sample=False, num_beams=1)


def batch(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"input_features": torch.cat([s["input_features"] for s in samples])}


def same_tokens(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a.numpy(), b.numpy()))
