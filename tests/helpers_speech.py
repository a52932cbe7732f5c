"""Tiny speech models (config-built, random weights, real tokenizers built offline) and audio folders for tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

LETTERS = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
TRANSCRIPTS = {"100-1-0000": "HELLO WORLD", "100-1-0001": "THE CAT SAT ON THE MAT",
               "100-1-0002": "A QUICK TEST", "100-1-0003": "SPEECH IS SOUND", "100-1-0004": "ONE MORE LINE",
               "100-1-0005": "LAST OF THEM"}


def write_tone(path: Path, seconds: float, rate: int = 16000, freq: float = 440.0) -> Path:
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return path


def librispeech_dir(root: Path, rate: int = 16000, suffix: str = ".flac") -> Path:
    """A LibriSpeech-layout folder: 100/1/100-1.trans.txt plus one tone per utterance."""
    chapter = root / "100" / "1"
    chapter.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (utt, text) in enumerate(TRANSCRIPTS.items()):
        write_tone(chapter / f"{utt}{suffix}", 0.5 + 0.1 * i, rate, 300 + 50 * i)
        lines.append(f"{utt} {text}")
    (chapter / "100-1.trans.txt").write_text("\n".join(lines))  # no final newline, like LibriSpeech's
    return root


def _byte_vocab() -> dict[str, int]:
    """GPT-2's byte -> printable character table (what byte-level BPE vocabularies are written in)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): i for i, c in enumerate(cs)}


def whisper_tokenizer(directory: Path):
    """A byte-level Whisper tokenizer (256 byte tokens, a few merges) with Whisper's special tokens after them."""
    from transformers import WhisperTokenizer

    vocab = _byte_vocab()
    merges = ["Ġ t", "h e", "Ġt he"]
    for m in merges:
        vocab["".join(m.split())] = len(vocab)
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
                "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    for s in specials:
        vocab[s] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = WhisperTokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"),
                           pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    return tok, {s: vocab[s] for s in specials}


def tiny_whisper_dir(directory: Path) -> Path:
    """A 2+2-layer Whisper (d_model 32, 16 mel bins, 16 decoder positions: random weights decode to the limit) with a real tokenizer, processor and generation config."""
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor)

    torch.manual_seed(0)
    tok, ids = whisper_tokenizer(directory / "_tok")
    eot, sot, nots = ids["<|endoftext|>"], ids["<|startoftranscript|>"], ids["<|notimestamps|>"]
    cfg = WhisperConfig(vocab_size=len(tok), num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_source_positions=1500, max_target_positions=16, pad_token_id=eot, bos_token_id=eot,
                        eos_token_id=eot, decoder_start_token_id=sot)
    model = WhisperForConditionalGeneration(cfg).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot, no_timestamps_token_id=nots,
        prev_sot_token_id=ids["<|startofprev|>"], suppress_tokens=[], begin_suppress_tokens=[eot],
        is_multilingual=False, return_timestamps=False, max_length=16)
    model.save_pretrained(directory)
    model.generation_config.save_pretrained(directory)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=16), tok).save_pretrained(directory)
    return directory


def tiny_ctc_dir(directory: Path) -> Path:
    """A 2-layer wav2vec2 CTC model (random weights) with a letter CTC tokenizer and feature extractor."""
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    torch.manual_seed(0)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate(LETTERS)}}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    tok = Wav2Vec2CTCTokenizer(str(directory / "vocab.json"), word_delimiter_token="|")
    cfg = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, pad_token_id=0,
                         do_stable_layer_norm=True, feat_extract_norm="layer")
    Wav2Vec2ForCTC(cfg).eval().save_pretrained(directory)
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=True)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(directory)
    return directory
