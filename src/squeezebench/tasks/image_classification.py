"""image-classification: top-1 / top-5 accuracy on labelled images (resize, centre-crop, normalise)."""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.models.bundle import ImagePreprocessing
from squeezebench.tasks.base import EvalResult, Task, register_task
from squeezebench.tasks.classification_common import score_logits


def load_image(path, pre: ImagePreprocessing) -> torch.Tensor:
    """An image file (a path, or a file object: a served request's bytes) resized, centre-cropped, normalised."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = pre.resize / min(w, h)
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        w, h = im.size
        left, top = (w - pre.crop) // 2, (h - pre.crop) // 2
        im = im.crop((left, top, left + pre.crop, top + pre.crop))
        arr = np.asarray(im, dtype=np.float32) / 255.0
    arr = (arr - np.array(pre.mean, dtype=np.float32)) / np.array(pre.std, dtype=np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


class ImageLogits(torch.nn.Module):
    """forward(pixel_values) -> logits, for transformers image models and plain nn.Modules alike."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.is_hf = hasattr(model, "config") and hasattr(model.config, "to_dict")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.is_hf:
            return self.model(pixel_values=pixel_values).logits
        out = self.model(pixel_values)
        return out if isinstance(out, torch.Tensor) else out[0]


@register_task
class ImageClassification(Task):
    name = "image-classification"
    version = 1
    auto_class = "AutoModelForImageClassification"
    primary_metric = "accuracy"
    metrics = ("accuracy", "macro_f1", "top1_agreement", "top5_accuracy")
    input_names = ("pixel_values",)
    input_kind = "image"
    needs_labels = True
    labels_from_model = True
    calibration_held_out = False  # calibration images are drawn from the scored data
    default_dataset = "imagenet-sample:../shared/data/imagenet-sample"

    def attach_preprocessing(self, bundle, where, kwargs):
        saved = Path(where) / "image_preprocessing.json"
        if saved.is_file():
            bundle.image = ImagePreprocessing(**json.loads(saved.read_text()))
            return
        try:
            from transformers import AutoImageProcessor

            proc = AutoImageProcessor.from_pretrained(where, **kwargs)
            size = getattr(proc, "size", {}) or {}
            crop = getattr(proc, "crop_size", None) or {}
            side = size.get("shortest_edge") or size.get("height") or 224
            bundle.image = ImagePreprocessing(
                resize=int(side if crop else side), crop=int(crop.get("height", side) if crop else side),
                mean=tuple(proc.image_mean), std=tuple(proc.image_std))
        except (OSError, ValueError, AttributeError, TypeError):
            bundle.image = ImagePreprocessing()

    def save_preprocessing(self, bundle, directory):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "image_preprocessing.json").write_text(json.dumps(asdict(bundle.image or ImagePreprocessing())))

    def wrap(self, bundle):
        return ImageLogits(bundle.module)

    def prepare(self, dataset, bundle, protocol):
        if "image" not in dataset.examples[0] or any("label" not in ex for ex in dataset.examples):
            raise SqueezebenchError(f"dataset {dataset.spec!r} needs labelled images for image-classification")
        return {"test": dataset, "n_classes": len(dataset.label_names or [])}

    def _pixels(self, bundle, examples) -> torch.Tensor:
        return torch.stack([load_image(ex["image"], bundle.image or ImagePreprocessing()) for ex in examples])

    def example_inputs(self, bundle, data, protocol):
        ex = data["test"].examples
        ex = (ex * (protocol.batch_size // len(ex) + 1))[: protocol.batch_size]
        return {"pixel_values": self._pixels(bundle, ex)}

    def calibration_inputs(self, bundle, data, protocol, n):
        # a class-balanced pick; the worker passes images outside the evaluated subset when there are any
        return [{"pixel_values": self._pixels(bundle, [ex])} for ex in data["test"].subset(n, protocol.seed).examples]

    def evaluate(self, run, bundle, data, protocol, reference):
        ds = data["test"]
        bs = protocol.eval_batch_size
        logits = torch.cat([run({"pixel_values": self._pixels(bundle, ds.examples[i:i + bs])})
                            for i in range(0, len(ds.examples), bs)]).float().numpy()
        metrics, flags, ref = score_logits(logits, ds.labels, data["n_classes"], bundle, reference, top5=True)
        pre = bundle.image or ImagePreprocessing()
        return EvalResult(metrics, flags, {"examples": len(ds.examples), "preprocessing": asdict(pre)}, ref)

    # --- serving ----------------------------------------------------------------------------------------------
    def request_of(self, example):
        return {"image": base64.b64encode(Path(example["image"]).read_bytes()).decode("ascii")}

    def check_request(self, body):
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            return 'the body must be a JSON object with "image": the base64 of a JPEG or PNG file'
        try:
            raw = base64.b64decode(body["image"], validate=True)
        except (binascii.Error, ValueError):
            return '"image" is not base64; send the base64 of a JPEG or PNG file'
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(raw)) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return '"image" is not an image file PIL can read; send a JPEG or PNG'
        return None

    def serve_batch(self, run, bundle, bodies, protocol, context=None):
        """Each image's predicted class (index and the model's label name), preprocessed as the evaluation does."""
        pre = bundle.image or ImagePreprocessing()
        pixels = torch.stack([load_image(io.BytesIO(base64.b64decode(b["image"])), pre) for b in bodies])
        names = bundle.label_names or []
        best = run({"pixel_values": pixels}).float().argmax(-1).tolist()
        return [{"label": names[i] if i < len(names) else str(i), "index": i} for i in best]
