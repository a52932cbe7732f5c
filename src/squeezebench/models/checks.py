"""Checks of a local model's config.json that must fail before any subprocess starts, with what to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from squeezebench.errors import SqueezebenchError

# config keys that hold the most positions a text model can embed, in the order they are trusted
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx")


def local_config(source: dict[str, Any]) -> Optional[dict[str, Any]]:
    """config.json of a local Hugging Face directory, else None (hub ids, GGUF, ONNX and python: models)."""
    if source.get("kind") != "hf" or not source.get("local"):
        return None
    path = Path(source["id"]) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SqueezebenchError(f"cannot read {path} ({exc}); is the model folder complete?") from None
    if not isinstance(config, dict):
        raise SqueezebenchError(f"{path} is not a JSON object; is the model folder complete?")
    return config


def max_positions(config: dict[str, Any]) -> Optional[tuple[int, str]]:
    """(positions, key) for the first position limit the config states (also inside text_config)."""
    for cfg in (config, config.get("text_config") or {}):
        for key in POSITION_KEYS:
            value = cfg.get(key) if isinstance(cfg, dict) else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, key
    return None


def check_model_config(source: dict[str, Any], seq_len: int, gen_tokens: Optional[int] = None) -> None:
    """Refuse a --seq-len or --gen-tokens beyond the model's positions, and custom code (auto_map in config.json or
    tokenizer_config.json) without --trust-remote-code."""
    config = local_config(source)
    if config is None:
        return
    tokenizer = _tokenizer_config(Path(source["id"]))
    for where, cfg in (("config.json", config), ("tokenizer_config.json", tokenizer)):
        if cfg.get("auto_map") and not source.get("trust_remote_code"):
            classes = ", ".join(sorted(cfg["auto_map"])) if isinstance(cfg["auto_map"], dict) else "auto_map"
            raise SqueezebenchError(
                f"model {source['name']!r} ships its own code ({classes} in the auto_map of {where}); pass "
                "--trust-remote-code to run it (after reading that code) - without it the stock transformers "
                "class would be measured instead")
    limit = max_positions(config)
    if limit and seq_len > limit[0]:
        raise SqueezebenchError(f"--seq-len {seq_len} exceeds the {limit[0]} positions model {source['name']!r} "
                                f"can embed ({limit[1]} in config.json); pass --seq-len {limit[0]} or less")
    if limit and gen_tokens is not None and gen_tokens > limit[0]:
        raise SqueezebenchError(f"--gen-tokens {gen_tokens} exceeds the {limit[0]} positions model "
                                f"{source['name']!r} can embed ({limit[1]} in config.json); pass fewer")


def _tokenizer_config(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json of a model folder ({} when absent or unreadable: the tokenizer load says why)."""
    try:
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}
