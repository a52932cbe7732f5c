"""Scoring shared by the classification tasks: metrics, chance and untrained-head flags, agreement."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from squeezebench.tasks.metrics import AGREEMENT, TOP5, bootstrap_ci, chance_flag, classification_metrics, metric_value


def score_logits(logits: np.ndarray, y_true: np.ndarray, n_classes: int, bundle,
                 reference: Optional[dict[str, Any]], top5: bool = False) -> tuple[dict, list[str], dict]:
    y_pred = logits.argmax(1)
    metrics = classification_metrics(y_true, y_pred, max(n_classes, logits.shape[1]))
    if top5 and logits.shape[1] >= 5:
        top = np.argsort(-logits, axis=1)[:, :5]
        hit = (top == y_true[:, None]).any(1).astype(float)
        metrics["top5_accuracy"] = metric_value(TOP5, hit.mean(), len(hit), bootstrap_ci(lambda i: hit[i].mean(), len(hit)))
    flags = []
    chance = chance_flag(metrics["accuracy"], y_true, max(n_classes, 1))
    if len(np.unique(y_true)) == 1 and len(y_true) > 0:
        flags.append("all examples are one class: accuracy only says how often that class is predicted")
    elif chance:
        flags.append(chance)
    if bundle.newly_initialized:
        shown = ", ".join(bundle.newly_initialized[:3]) + (" ..." if len(bundle.newly_initialized) > 3 else "")
        flags.append(f"untrained weights: {shown} newly initialised by the loader")
    if reference is not None and reference.get("predictions") is not None:
        ref = np.asarray(reference["predictions"])
        if ref.shape == y_pred.shape:
            same = (ref == y_pred).astype(float)
            metrics["top1_agreement"] = metric_value(AGREEMENT, same.mean(), len(same),
                                                     bootstrap_ci(lambda i: same[i].mean(), len(same)))
    return metrics, flags, {"predictions": y_pred}
