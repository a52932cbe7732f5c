"""Metrics: registered once with name, unit, direction, protocol version and display form; bootstrap intervals.

The ``Metric`` type and its registry live in measures.quality (the quality cell reads them; measures never import
tasks); the built-in metrics are declared here."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from squeezebench.measures.quality import METRICS, Metric, register_metric  # noqa: F401  (re-exported)

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20261128


def _metric(name: str, unit: str, higher: bool, version: int, description: str, label: str, decimals: int,
            **display) -> Metric:
    """Declare a metric: stored unit, direction, protocol version, and its display form (measures.quality.Metric)."""
    return register_metric(Metric(name, unit, higher, version, description, label, decimals, **display))


# display forms: fractions as they are with a Δ in points ("pt"); error rates in % with a Δ in percentage points
POINTS = {"delta": "pt"}
PERCENT = {"scale": 100.0, "suffix": " %", "delta": "pp"}

ACCURACY = _metric("accuracy", "fraction", True, 1, "share of examples whose top-1 prediction equals the label",
                   "accuracy", 4, **POINTS)
MACRO_F1 = _metric("macro_f1", "fraction", True, 1, "unweighted mean of per-class F1", "macro-F1", 4, shown=False,
                   **POINTS)
TOP5 = _metric("top5_accuracy", "fraction", True, 1, "share of examples whose label is among the 5 highest scores",
               "top5", 4, **POINTS)
PERPLEXITY = _metric("perplexity", "ppl", False, 1, "exp of the mean token negative log-likelihood (sliding window)",
                     "perplexity", 3)
AGREEMENT = _metric("top1_agreement", "fraction", True, 1,
                    "share of top-1 predictions identical to the original variant's", "agree", 4, **POINTS)
COSINE = _metric("cosine_to_original", "cosine", True, 1, "mean cosine similarity of embeddings to the original variant's",
                 "cos", 4)
PPL_RATIO = _metric("perplexity_ratio_to_original", "ratio", False, 1,
                    "perplexity / the original variant's on the same windows (paired bootstrap interval)",
                    "perplexity ratio", 3, shown=False)  # the perplexity's Δ % says it
TTFT = _metric("time_to_first_token", "ms", False, 1, "prompt prefill plus first generated token, median", "TTFT ms", 1,
               shown=False)
WER = _metric("wer", "fraction", False, 1, "corpus word error rate: (S + D + I) / reference words, normalised texts",
              "WER", 2, **PERCENT)
CER = _metric("cer", "fraction", False, 1, "corpus character error rate: (S + D + I) / reference characters",
              "CER", 2, **PERCENT)
TRANSCRIPT_AGREEMENT = _metric("transcript_agreement", "fraction", True, 1,
                               "share of transcripts identical to the original variant's (before normalisation)",
                               "same transcript", 4, **POINTS)
DECODER_MS = _metric("decoder_ms_per_token", "ms", False, 1, "greedy decoding time per generated token (encoder excluded)",
                     "decoder ms/token", 1)
RTF = _metric("real_time_factor", "ratio", False, 1, "transcription wall time of the evaluated set / its audio duration",
              "RTF", 3)
DECODE = _metric("decode_tokens_per_s", "tokens/s", True, 1, "generated tokens after the first, per second, median",
                 "decode tok/s", 1, shown=False)
BLEU = _metric("bleu", "score 0-100", True, 1, "corpus BLEU of generated texts against references (sacrebleu)",
               "BLEU", 3)
CHRF = _metric("chrf", "score 0-100", True, 1, "corpus chrF of generated texts against references (sacrebleu)",
               "chrF", 1)
ROUGE_L = _metric("rouge_l", "score 0-100", True, 1, "mean ROUGE-L F-measure of generated texts (rouge-score)",
                  "ROUGE-L", 1)
ENTITY_F1 = _metric("entity_f1", "fraction", True, 1, "micro F1 of predicted entities (seqeval, exact span and type)",
                    "entity F1", 4, **POINTS)
ENTITY_PRECISION = _metric("entity_precision", "fraction", True, 1, "share of predicted entities that are gold (seqeval)",
                           "precision", 4, **POINTS)
ENTITY_RECALL = _metric("entity_recall", "fraction", True, 1, "share of gold entities that are predicted (seqeval)",
                        "recall", 4, **POINTS)
OUTPUT_AGREEMENT = _metric("output_agreement", "fraction", True, 1,
                           "share of outputs (generated texts, tag sequences) identical to the original variant's",
                           "same output", 4, **POINTS)
ROOFLINE = _metric("decode_bandwidth_percent", "%", True, 1, "median decode tokens/s x weight bytes read per token, "
                   "as % of this machine's measured memory copy bandwidth (hardware/bandwidth.py)",
                   "% of memory bandwidth", 1, shown=False)


def metric_value(metric: Metric, value: float, n: int, ci: Optional[tuple[float, float]] = None, **extra) -> dict:
    """A metric result as recorded: value, unit, 95 % interval, sample count."""
    out = {"value": float(value), "unit": metric.unit, "higher_is_better": metric.higher_is_better,
           "version": metric.version, "n": int(n)}
    if ci is not None:
        out["ci95"] = [float(ci[0]), float(ci[1])]
    out.update(extra)
    return out


def bootstrap_ci(stat: Callable[[np.ndarray], float], n: int, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of ``stat(indices)`` over ``n`` examples."""
    rng = np.random.default_rng(seed)
    values = np.array([stat(rng.integers(0, n, n)) for _ in range(resamples)])
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def paired_bootstrap_ci(stat_a: Callable[[np.ndarray], float], stat_b: Callable[[np.ndarray], float], n: int,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95 % interval of ``stat_a(idx) / stat_b(idx)`` with the SAME resampled indices for both: the paired test
    for two variants scored on identical examples (their shared difficulty cancels out)."""
    return bootstrap_ci(lambda idx: stat_a(idx) / stat_b(idx), n, resamples, seed)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    precision_den = cm.sum(axis=0)
    recall_den = cm.sum(axis=1)
    present = recall_den > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(precision_den > 0, tp / np.maximum(precision_den, 1), 0.0)
        r = np.where(recall_den > 0, tp / np.maximum(recall_den, 1), 0.0)
        f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return float(f1[present].mean()) if present.any() else 0.0


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, dict]:
    """Accuracy and macro-F1 with bootstrap intervals."""
    n = len(y_true)
    correct = (y_true == y_pred).astype(float)
    acc = metric_value(ACCURACY, correct.mean(), n, bootstrap_ci(lambda i: correct[i].mean(), n),
                       per_example=correct.tolist())
    f1 = metric_value(MACRO_F1, macro_f1(y_true, y_pred, n_classes), n,
                      bootstrap_ci(lambda i: macro_f1(y_true[i], y_pred[i], n_classes), n, resamples=300))
    return {"accuracy": acc, "macro_f1": f1}


def chance_flag(accuracy: dict, y_true: np.ndarray, n_classes: int) -> Optional[str]:
    """'chance-level' when the interval reaches chance (1/classes or the majority-class rate)."""
    counts = np.bincount(y_true, minlength=n_classes)
    chance = max(1.0 / max(n_classes, 1), counts.max() / max(len(y_true), 1))
    if accuracy["ci95"][0] <= chance:
        return f"chance-level: accuracy CI {accuracy['ci95'][0]:.3f}-{accuracy['ci95'][1]:.3f} reaches chance {chance:.3f}"
    return None
