"""token-classification: a BERT-style tagger (NER) scored by seqeval entity F1 on word-level tags.

Protocol (recorded): sentences are split into words by the dataset; each word is tokenised into sub-words
(at most ``seq_len`` tokens per sentence) and the tag predicted at its FIRST sub-token is the word's tag (the
other sub-tokens are ignored); a word cut off by truncation is predicted ``O`` and flagged. Tags are matched
to the model's ``id2label`` by name. Quality: seqeval micro entity F1 (primary), precision and recall
(exact span and type, seqeval's default mode), each with a bootstrap interval over sentences; agreement:
share of sentences whose predicted tag sequence is identical to the original variant's.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.tasks import data_conll, text_common  # data_conll also registers conll:
from squeezebench.tasks.base import EvalResult, register_task
from squeezebench.tasks.metrics import (ENTITY_F1, ENTITY_PRECISION, ENTITY_RECALL, OUTPUT_AGREEMENT, bootstrap_ci,
                                        metric_value)


class TokenLogits(torch.nn.Module):
    """forward(input_ids, attention_mask) -> per-token logits (batch x tokens x tags)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


# --- scoring ----------------------------------------------------------------------------------------------
def entity_counts(y_true: list[list[str]], y_pred: list[list[str]]) -> np.ndarray:
    """Per sentence: (correct entities, predicted entities, gold entities), as seqeval counts them. Sums of
    these give seqeval's micro scores, so a resampled set of sentences is scored from its rows."""
    from seqeval.metrics.sequence_labeling import get_entities

    rows = []
    for t, p in zip(y_true, y_pred):
        gold, pred = set(get_entities(t)), set(get_entities(p))
        rows.append((len(gold & pred), len(pred), len(gold)))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def prf(counts: np.ndarray) -> tuple[float, float, float]:
    """Micro precision, recall, F1 from summed entity counts (0 where undefined, like seqeval)."""
    tp, n_pred, n_gold = counts.sum(0)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return float(p), float(r), float(2 * p * r / (p + r)) if p + r else 0.0


def entity_scores(y_true: list[list[str]], y_pred: list[list[str]]) -> dict[str, dict]:
    """seqeval micro entity F1, precision and recall with bootstrap intervals over sentences."""
    import warnings

    from seqeval.metrics import f1_score, precision_score, recall_score

    n = len(y_true)
    counts = entity_counts(y_true, y_pred)
    out = {}
    with warnings.catch_warnings():  # seqeval warns when a set has no entities; the score is then 0
        warnings.simplefilter("ignore")
        for key, metric, fn, k in (("entity_f1", ENTITY_F1, f1_score, 2), ("entity_precision", ENTITY_PRECISION,
                                   precision_score, 0), ("entity_recall", ENTITY_RECALL, recall_score, 1)):
            out[key] = metric_value(metric, fn(y_true, y_pred), n, bootstrap_ci(lambda i, k=k: prf(counts[i])[k], n),
                                    entities=int(counts[:, 2].sum()))
    return out


def tag_mapping(model_labels: Optional[list[str]], data_labels: list[str]) -> list[str]:
    """The model's spelling of each dataset tag, matched by name; one line when they do not match."""
    if not model_labels or all(str(n).startswith("LABEL_") for n in model_labels):
        raise SqueezebenchError("the model's id2label does not name its tags (LABEL_0, ...); token-classification "
                                "needs a tagger trained for the dataset's tags (e.g. B-PER, I-LOC, O)")
    lower = {str(n).lower(): str(n) for n in model_labels}
    missing = [t for t in data_labels if t.lower() not in lower]
    if missing:
        raise SqueezebenchError(f"the dataset's tags {', '.join(missing[:5])} are not among the model's "
                                f"({', '.join(map(str, model_labels[:9]))}); use a dataset tagged like the model")
    return [lower[t.lower()] for t in data_labels]


# --- the task ---------------------------------------------------------------------------------------------
def encode_words(bundle, sentences: list[list[str]], seq_len: int) -> tuple[dict[str, torch.Tensor], list[list[int]], int]:
    """(model inputs, per sentence the position of each word's first sub-token or -1 when cut by ``seq_len``,
    how many words were cut) for a batch of word lists, padded to the longest."""
    enc = bundle.tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=seq_len, padding=True,
                           return_tensors="pt")
    firsts, cut = [], 0
    for b, sentence in enumerate(sentences):
        first: dict[int, int] = {}
        for pos, w in enumerate(enc.word_ids(b)):
            if w is not None and w not in first:
                first[w] = pos
        firsts.append([first.get(w, -1) for w in range(len(sentence))])
        cut += sum(1 for w in range(len(sentence)) if w not in first)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, firsts, cut


def predicted_tags(run, inputs: dict[str, torch.Tensor], firsts: list[list[int]], labels: list[str]) -> list[list[str]]:
    """Each word's tag: the argmax at its first sub-token ("O" for a word cut by the length limit)."""
    argmax = run(inputs).float().argmax(-1)
    return [[labels[int(argmax[b, p])] if p >= 0 else "O" for p in positions] for b, positions in enumerate(firsts)]


def entity_spans(words: list[str], tags: list[str]) -> list[dict[str, Any]]:
    """The entities of a tag sequence as seqeval reads them (IOB, conlleval rules): type, word span [start, end)
    and its text."""
    from seqeval.metrics.sequence_labeling import get_entities

    return [{"type": kind, "start": start, "end": end + 1, "text": " ".join(words[start:end + 1])}
            for kind, start, end in get_entities(list(tags))]


@register_task
class TokenClassification(text_common.TextTask):
    name = "token-classification"
    version = 1
    auto_class = "AutoModelForTokenClassification"
    primary_metric = "entity_f1"
    metrics = ("entity_f1", "entity_precision", "entity_recall", "output_agreement")
    default_dataset = "hf:conll2003"
    input_names = ("input_ids", "attention_mask")
    input_kind = "tokens"  # each example: words ("tokens") and their tags ("tags")
    needs_labels = False  # the labels are per-word tags, checked by check_dataset
    labels_from_model = True  # id2label names the tags
    calibration_held_out = True

    def examples_from_rows(self, rows, options):
        return data_conll.token_rows(rows, options)  # tokens and a tag column

    def check_dataset(self, dataset):
        super().check_dataset(dataset)
        if any("tags" not in ex for ex in dataset.examples):
            raise SqueezebenchError(f"dataset {dataset.spec!r} has no word tags, which token-classification needs "
                                    "(conll:PATH, or an hf: dataset with tokens and --label-column tags)")

    def auto_class_for(self, config) -> str:
        heads = [a for a in (getattr(config, "architectures", None) or []) if "For" in a]
        if heads and not any(a.endswith("ForTokenClassification") for a in heads):
            raise SqueezebenchError(f"the model is a {heads[0]}, not a token classifier; token-classification "
                                    "needs a ...ForTokenClassification model (e.g. dslim/bert-base-NER)")
        return self.auto_class

    def attach_preprocessing(self, bundle, where, kwargs):
        super().attach_preprocessing(bundle, where, kwargs)
        labels = getattr(getattr(bundle.module, "config", None), "id2label", None)
        if labels and not bundle.label_names:
            bundle.label_names = [str(labels[i]) for i in sorted(labels)]

    def wrap(self, bundle):
        return TokenLogits(bundle.module)

    # --- data -------------------------------------------------------------------------------------------
    def prepare(self, dataset, bundle, protocol):
        text_common.require_text(bundle)
        if any("tokens" not in ex or "tags" not in ex for ex in dataset.examples):
            raise SqueezebenchError(f"dataset {dataset.spec!r} has no word tags for token-classification; use "
                                    "conll:PATH or a Hugging Face dataset with tokens and ner_tags")
        if not getattr(bundle.tokenizer, "is_fast", False):
            raise SqueezebenchError("token-classification aligns words to sub-words and needs a fast (Rust) tokenizer; "
                                    "the model's tokenizer is a slow one")
        names = tag_mapping(bundle.label_names, dataset.label_names or [])
        gold = [[names[t] for t in ex["tags"]] for ex in dataset.examples]
        batches, cut = [], 0
        words = [ex["tokens"] for ex in dataset.examples]
        for i in range(0, len(words), protocol.eval_batch_size):
            inputs, firsts, n_cut = encode_words(bundle, words[i:i + protocol.eval_batch_size], protocol.seq_len)
            batches.append((inputs, firsts))
            cut += n_cut
        return {"dataset": dataset, "gold": gold, "batches": batches, "words_without_token": cut}

    def example_inputs(self, bundle, data, protocol):
        return text_common.fixed_batch(bundle, [ex["text"] for ex in data["dataset"].examples], protocol.batch_size,
                                       protocol.seq_len)

    def calibration_inputs(self, bundle, data, protocol, n):
        texts = [ex["text"] for ex in data["dataset"].subset(n, protocol.seed).examples]
        return [text_common.fixed_batch(bundle, [t], 1, protocol.seq_len) for t in texts]

    # --- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, run, bundle, data, protocol, reference):
        labels = bundle.label_names
        pred_ids: list[list[int]] = []
        for inputs, firsts in data["batches"]:
            argmax = run(inputs).float().argmax(-1)
            for b, positions in enumerate(firsts):
                pred_ids.append([int(argmax[b, p]) if p >= 0 else -1 for p in positions])
        outside = labels.index("O") if "O" in labels else None
        pred = [[labels[i] if i >= 0 else "O" for i in sent] for sent in pred_ids]
        metrics = entity_scores(data["gold"], pred)
        flat = np.array([i if i >= 0 else (outside if outside is not None else -1) for s in pred_ids for i in s],
                        dtype=np.int64)
        lengths = np.array([len(s) for s in pred_ids], dtype=np.int64)
        if reference is not None and reference.get("predictions") is not None:
            ref, ref_len = np.asarray(reference["predictions"]), np.asarray(reference.get("lengths"))
            if ref.shape == flat.shape and np.array_equal(ref_len, lengths):
                bounds = np.cumsum(lengths)[:-1]
                same = np.array([np.array_equal(a, b) for a, b in zip(np.split(flat, bounds), np.split(ref, bounds))],
                                dtype=float)
                metrics["output_agreement"] = metric_value(OUTPUT_AGREEMENT, same.mean(), len(same),
                                                           bootstrap_ci(lambda i: same[i].mean(), len(same)))
        flags = []
        if data["words_without_token"]:
            flags.append(f"{data['words_without_token']} word(s) beyond --seq-len {protocol.seq_len} tokens (or "
                         "without a sub-token) predicted O")
        if bundle.newly_initialized:
            flags.append(f"untrained weights: {', '.join(bundle.newly_initialized[:3])} newly initialised by the loader")
        if not any(t != "O" for s in data["gold"] for t in s):
            flags.append("no entities in the reference tags: entity F1 is undefined (shown as 0)")
        tok = bundle.tokenizer
        proto = {"sentences": len(pred), "words": int(lengths.sum()), "max_tokens": protocol.seq_len,
                 "alignment": "first sub-token of each word scored, others ignored",
                 "scheme": "seqeval default mode (conlleval-compatible), micro average",
                 "tag_mapping": "by name to the model's id2label", "tags": sorted(set(t for s in data["gold"] for t in s)),
                 "tokenizer": type(tok).__name__, "tokenizer_name": getattr(tok, "name_or_path", ""),
                 "dataset_fingerprint": data["dataset"].fingerprint()}
        return EvalResult(metrics, flags, proto, {"predictions": flat, "lengths": lengths})

    # --- serving ----------------------------------------------------------------------------------------------
    def request_of(self, example):
        return {"tokens": list(example["tokens"])}

    def check_request(self, body):
        if not isinstance(body, dict):
            return 'the body must be a JSON object with "tokens" (a list of words) or "text" (split on spaces)'
        if "tokens" in body:
            words = body["tokens"]
            if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
                return '"tokens" must be a non-empty list of non-empty word strings, e.g. ["Alice", "visited", "Paris"]'
            return None
        if not isinstance(body.get("text"), str) or not body["text"].split():
            return 'send "tokens" (a list of words) or a non-empty "text" (split on spaces into words)'
        return None

    def serve_batch(self, run, bundle, bodies, protocol, context=None):
        """Each sentence's word tags and entities, scored as the evaluation scores them (first sub-token of each
        word, at most --seq-len tokens)."""
        sentences = [list(b["tokens"]) if "tokens" in b else b["text"].split() for b in bodies]
        inputs, firsts, _ = encode_words(bundle, sentences, protocol.seq_len)
        tags = predicted_tags(run, inputs, firsts, bundle.label_names)
        return [{"tokens": words, "tags": t, "entities": entity_spans(words, t)} for words, t in zip(sentences, tags)]
