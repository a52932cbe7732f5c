"""text-classification: a sequence-classification model's accuracy and macro-F1 on labelled texts."""

from __future__ import annotations

import logging

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.tasks import text_common
from squeezebench.tasks.base import EvalResult, register_task
from squeezebench.tasks.classification_common import score_logits

log = logging.getLogger(__name__)


class SequenceLogits(torch.nn.Module):
    """forward(input_ids, attention_mask) -> logits."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def label_mapping(model_labels: list[str] | None, data_labels: list[str] | None) -> tuple[list[int] | None, str]:
    """Map dataset label index -> model output index, by name when the names match, else by position."""
    if not model_labels or not data_labels:
        return None, "by index"
    lower = {n.lower(): i for i, n in enumerate(model_labels)}
    if all(n.lower() in lower for n in data_labels):
        return [lower[n.lower()] for n in data_labels], "by label name"
    return None, "by index (model and dataset label names differ)"


@register_task
class TextClassification(text_common.TextTask):
    name = "text-classification"
    version = 1
    auto_class = "AutoModelForSequenceClassification"
    primary_metric = "accuracy"
    metrics = ("accuracy", "macro_f1", "top1_agreement")
    input_names = ("input_ids", "attention_mask")
    needs_labels = True
    labels_from_model = True
    calibration_held_out = False  # calibration inputs are drawn from the scored data

    def wrap(self, bundle):
        return SequenceLogits(bundle.module)

    def prepare(self, dataset, bundle, protocol):
        text_common.require_text(bundle)
        if "text" not in dataset.examples[0] or any("label" not in ex for ex in dataset.examples):
            raise SqueezebenchError(f"dataset {dataset.spec!r} needs text and label columns for text-classification")
        mapping, how = label_mapping(bundle.label_names, dataset.label_names)
        num_labels = getattr(getattr(bundle.module, "config", None), "num_labels", None)
        if mapping is None and num_labels is not None and dataset.label_names and len(dataset.label_names) > num_labels:
            raise SqueezebenchError(
                f"the model predicts {num_labels} classes but dataset {dataset.spec!r} has {len(dataset.label_names)}")
        return {"test": dataset, "mapping": mapping, "mapping_how": how,
                "n_classes": num_labels or len(dataset.label_names or [])}

    def example_inputs(self, bundle, data, protocol):
        return text_common.fixed_batch(bundle, [ex["text"] for ex in data["test"].examples],
                                       protocol.batch_size, protocol.seq_len)

    def serve_batch(self, run, bundle, bodies, protocol, context=None):
        """Each text's predicted class: its index and the model's label name (when the model names its classes)."""
        names = bundle.label_names or []
        best = self.serve_outputs(run, bundle, bodies, protocol).argmax(-1).tolist()
        return [{"label": names[i] if i < len(names) else str(i), "index": i} for i in best]

    def calibration_inputs(self, bundle, data, protocol, n):
        # the worker passes data prepared from examples outside the evaluated subset when there are any
        texts = [ex["text"] for ex in data["test"].subset(n, protocol.seed).examples]
        return [text_common.fixed_batch(bundle, [t], 1, protocol.seq_len) for t in texts]

    def evaluate(self, run, bundle, data, protocol, reference):
        ds = data["test"]
        logits = torch.cat([run(b) for b in text_common.batches(
            bundle, [ex["text"] for ex in ds.examples], protocol.eval_batch_size, protocol.seq_len)]).float().numpy()
        y = ds.labels
        if data["mapping"] is not None:
            y = np.array(data["mapping"])[y]
        metrics, flags, ref = score_logits(logits, y, data["n_classes"], bundle, reference)
        return EvalResult(metrics, flags, {"examples": len(y), "label_mapping": data["mapping_how"],
                                           "max_tokens": protocol.seq_len}, ref)
