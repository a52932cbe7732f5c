"""sentence-embedding: mean-pooled, L2-normalised embeddings scored MTEB-style.

Quality = accuracy (and macro-F1) of a logistic regression trained on the embeddings of a fixed,
stratified train split and scored on the test split; agreement = mean cosine to the original's embeddings.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.tasks import text_common
from squeezebench.tasks.base import EvalProtocol as Protocol, EvalResult, Executable, register_task
from squeezebench.tasks.metrics import COSINE, bootstrap_ci, chance_flag, classification_metrics, metric_value


class MeanPooledEmbedding(torch.nn.Module):
    """forward(input_ids, attention_mask) -> L2-normalised mean of the last hidden states."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def embed(run: Executable, bundle, texts: list[str], protocol: Protocol) -> np.ndarray:
    out = [run(b) for b in text_common.batches(bundle, texts, protocol.eval_batch_size, protocol.seq_len)]
    return torch.cat(out).float().numpy()


@register_task
class SentenceEmbedding(text_common.TextTask):
    name = "sentence-embedding"
    version = 1
    auto_class = "AutoModel"
    primary_metric = "accuracy"
    metrics = ("accuracy", "macro_f1", "cosine_to_original")
    input_names = ("input_ids", "attention_mask")
    output_kind = "embedding"
    needs_labels = True

    def wrap(self, bundle):
        return MeanPooledEmbedding(bundle.module)

    def serve_batch(self, run, bundle, bodies, protocol, context=None):
        """Each text's L2-normalised embedding."""
        return [{"embedding": row} for row in self.serve_outputs(run, bundle, bodies, protocol).tolist()]

    def prepare(self, dataset, bundle, protocol):
        text_common.require_text(bundle)
        if not dataset.examples or "text" not in dataset.examples[0]:
            raise SqueezebenchError(f"dataset {dataset.spec!r} has no text; sentence-embedding needs a text column")
        if any("label" not in ex for ex in dataset.examples):
            raise SqueezebenchError(
                f"dataset {dataset.spec!r} has no labels; sentence-embedding scores a classifier on them "
                "(pass --label-column)")
        train, test = dataset.split(protocol.test_fraction, protocol.seed)
        if len({ex["label"] for ex in train.examples}) < 2:
            raise SqueezebenchError(f"dataset {dataset.spec!r} needs at least 2 classes in its train split; raise --limit")
        return {"train": train, "test": test, "n_classes": len(dataset.label_names or [])}

    def example_inputs(self, bundle, data, protocol):
        texts = [ex["text"] for ex in data["test"].examples]
        return text_common.fixed_batch(bundle, texts, protocol.batch_size, protocol.seq_len)

    def calibration_data(self, data, rest, bundle, protocol):
        # the classifier's train split (never scored), then the examples outside the evaluated subset
        return {"train": data["train"], "rest": rest}, None

    def calibration_inputs(self, bundle, data, protocol, n):
        rest = data.get("rest")
        texts = [ex["text"] for ex in data["train"].examples + (rest.examples if rest is not None else [])][:n]
        return [text_common.fixed_batch(bundle, [t], 1, protocol.seq_len) for t in texts]

    def evaluated_inputs(self, bundle, data, protocol):
        # only the test split is scored: the classifier's train split is training data (a student may learn from it)
        return [text_common.fixed_batch(bundle, [ex["text"]], 1, protocol.seq_len) for ex in data["test"].examples]

    def evaluate(self, run, bundle, data, protocol, reference: Optional[dict[str, Any]]):
        from sklearn.linear_model import LogisticRegression

        train, test = data["train"], data["test"]
        x_train = embed(run, bundle, [ex["text"] for ex in train.examples], protocol)
        x_test = embed(run, bundle, [ex["text"] for ex in test.examples], protocol)
        if not np.isfinite(x_train).all() or not np.isfinite(x_test).all():
            raise SqueezebenchError("the variant produced non-finite embeddings (overflow?); its quality is undefined")
        clf = LogisticRegression(max_iter=1000, random_state=protocol.seed)
        clf.fit(x_train, train.labels)
        y_true = test.labels
        y_pred = clf.predict(x_test)
        n_classes = max(data["n_classes"], int(y_true.max()) + 1)
        metrics = classification_metrics(y_true, y_pred, n_classes)
        flags = [f for f in [chance_flag(metrics["accuracy"], y_true, n_classes)] if f]
        if reference is not None and reference.get("embeddings") is not None:
            ref = np.asarray(reference["embeddings"])
            if ref.shape == x_test.shape:
                cos = (ref * x_test).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(x_test, axis=1) + 1e-12)
                metrics["cosine_to_original"] = metric_value(
                    COSINE, cos.mean(), len(cos), bootstrap_ci(lambda i: cos[i].mean(), len(cos)))
        return EvalResult(
            metrics=metrics, flags=flags,
            protocol={"classifier": "sklearn LogisticRegression(max_iter=1000)", "train_examples": len(train.examples),
                      "test_examples": len(test.examples), "pooling": "mean over attention mask, L2-normalised",
                      "max_tokens": protocol.seq_len},
            reference={"embeddings": x_test})
