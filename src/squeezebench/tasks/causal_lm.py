"""causal-lm: sliding-window token perplexity over a text corpus, plus generation speed.

Perplexity protocol (recorded): the dataset's texts joined by a blank line, tokenised once, the first
``ppl_max_tokens`` tokens; windows of ``ppl_window`` tokens every ``ppl_stride`` tokens; each token is
scored once, with at least ``ppl_window - ppl_stride`` tokens of context after the first window.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.tasks import text_common
from squeezebench.tasks.base import EvalResult, Executable, register_task
from squeezebench.tasks.generation_common import NextTokenLogits, speed_metrics
from squeezebench.tasks.metrics import (AGREEMENT, PERPLEXITY, PPL_RATIO, ROOFLINE, bootstrap_ci, metric_value,
                                        paired_bootstrap_ci)


CALIBRATION_MAX_TOKENS = 1 << 20  # tokens of calibration text kept (BBC News outside a subset: ~1M)


def window_nll(run: Executable, ids: torch.Tensor, window: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-window (sum of NLL, tokens scored) and argmax predictions of scored tokens."""
    n = ids.shape[0]
    sums, counts, preds = [], [], []
    prev_end = 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        target_len = end - prev_end
        chunk = ids[begin:end].unsqueeze(0)
        logits = run({"input_ids": chunk}).float()[0]
        logp = torch.log_softmax(logits[:-1], dim=-1)
        targets = chunk[0, 1:]
        nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1)
        k = min(target_len, nll.numel())  # the very first token has no context and is not scored
        scored = nll[-k:]
        sums.append(float(scored.sum()))
        counts.append(int(scored.numel()))
        preds.append(logits[:-1].argmax(-1)[-k:].numpy())
        prev_end = end
        if end == n:
            break
    return np.array(sums), np.array(counts), np.concatenate(preds)


def perplexity_from(sums: np.ndarray, counts: np.ndarray) -> float:
    return float(np.exp(sums.sum() / counts.sum()))


def decode_roofline(metrics: dict[str, dict], run: Any, model: Optional[torch.nn.Module]) -> Optional[dict[str, Any]]:
    """Weight bytes read per generated token (as the variant runs) and the % of the machine's measured memory
    bandwidth the median decode rate uses; None when the bytes are unknown."""
    from squeezebench.measures.bandwidth import machine_bandwidth, module_weight_bytes_per_token, roofline

    info = getattr(run, "info", None) or {}
    if info.get("weight_bytes_per_token"):
        per_token, source = int(info["weight_bytes_per_token"]), f"{info.get('name', 'runtime')} weight tensors"
    elif model is not None:
        per_token, source = module_weight_bytes_per_token(model)["bytes"], "PyTorch parameters and buffers"
    else:
        return None
    out = roofline(metrics["decode_tokens_per_s"]["value"], per_token, machine_bandwidth())
    out["weight_bytes_from"] = source
    return out


@register_task
class CausalLM(text_common.TextTask):
    name = "causal-lm"
    version = 1
    auto_class = "AutoModelForCausalLM"
    primary_metric = "perplexity"
    metrics = ("perplexity", "perplexity_ratio_to_original", "top1_agreement", "decode_tokens_per_s",
               "time_to_first_token", "decode_bandwidth_percent")
    input_names = ("input_ids",)
    calibration_held_out = False  # calibration windows may come from the scored text

    def wrap(self, bundle):
        return NextTokenLogits(bundle.module)

    def prepare(self, dataset, bundle, protocol):
        text_common.require_text(bundle)
        if "text" not in dataset.examples[0]:
            raise SqueezebenchError(f"dataset {dataset.spec!r} has no text for perplexity (pass --text-column)")
        if protocol.ppl_stride > protocol.ppl_window:
            raise SqueezebenchError("--ppl-stride must not exceed --ppl-window")
        text = "\n\n".join(ex["text"].strip() for ex in dataset.examples)
        ids = bundle.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
        ids = ids[: protocol.ppl_max_tokens]
        if ids.numel() < 2:
            raise SqueezebenchError(f"dataset {dataset.spec!r} has fewer than 2 tokens; nothing to score")
        return {"ids": ids, "dataset": dataset}

    def example_inputs(self, bundle, data, protocol):
        ids = data["ids"]
        need = protocol.batch_size * protocol.seq_len
        reps = need // ids.numel() + 1
        return {"input_ids": ids.repeat(reps)[:need].reshape(protocol.batch_size, protocol.seq_len).clone()}

    def calibration_data(self, data, rest, bundle, protocol):
        # all the text outside the evaluated subset (not cut at --ppl-max-tokens: distillation wants many windows)
        if rest.examples:
            return self.prepare(rest, bundle, dataclasses.replace(protocol, ppl_max_tokens=CALIBRATION_MAX_TOKENS)), None
        return super().calibration_data(data, rest, bundle, protocol)

    def calibration_inputs(self, bundle, data, protocol, n):
        """``n`` distinct windows of seq_len tokens, backwards from token max(--ppl-max-tokens, n x seq_len)
        (fewer when the text is shorter; the whole text when it is shorter than one window)."""
        ids, seq = data["ids"], protocol.seq_len
        end = min(ids.numel(), max(protocol.ppl_max_tokens, n * seq))
        starts = [end - (i + 1) * seq for i in range(min(n, end // seq))] or [0]
        return [{"input_ids": ids[s:s + seq].unsqueeze(0).clone()} for s in starts]

    def evaluate(self, run, bundle, data, protocol, reference):
        sums, counts, preds = window_nll(run, data["ids"], protocol.ppl_window, protocol.ppl_stride)
        ppl = perplexity_from(sums, counts)
        if not np.isfinite(ppl):
            raise SqueezebenchError("the variant produced non-finite log-likelihoods; perplexity is undefined")
        metrics = {"perplexity": metric_value(PERPLEXITY, ppl, int(counts.sum()),
                                              bootstrap_ci(lambda i: perplexity_from(sums[i], counts[i]), len(sums)),
                                              windows=len(sums), window_nll_sums=sums.tolist(),
                                              window_tokens=counts.tolist())}
        if reference is not None and reference.get("predictions") is not None:
            ref = np.asarray(reference["predictions"])
            if ref.shape == preds.shape:
                same = (ref == preds).astype(float)
                metrics["top1_agreement"] = metric_value(AGREEMENT, same.mean(), len(same))
        if reference is not None and reference.get("window_nll_sums") is not None:
            ref_sums, ref_counts = np.asarray(reference["window_nll_sums"]), np.asarray(reference["window_tokens"])
            if ref_sums.shape == sums.shape and np.array_equal(ref_counts, counts):
                metrics["perplexity_ratio_to_original"] = metric_value(
                    PPL_RATIO, ppl / perplexity_from(ref_sums, ref_counts), len(sums),
                    paired_bootstrap_ci(lambda i: perplexity_from(sums[i], counts[i]),
                                        lambda i: perplexity_from(ref_sums[i], ref_counts[i]), len(sums)))
        tok = bundle.tokenizer
        proto = {"window": protocol.ppl_window, "stride": protocol.ppl_stride, "tokens_scored": int(counts.sum()),
                 "max_tokens": protocol.ppl_max_tokens, "tokenizer": type(tok).__name__,
                 "tokenizer_name": getattr(tok, "name_or_path", ""), "vocab_size": len(tok),
                 "dataset_fingerprint": data["dataset"].fingerprint(), "documents": len(data["dataset"].examples),
                 "joiner": "\\n\\n", "first_token_scored": False}
        speed, speed_proto, flags = speed_metrics(run, bundle, data["ids"][: protocol.gen_prompt_tokens].unsqueeze(0),
                                                  protocol)
        metrics.update(speed)
        proto.update(speed_proto)
        if "decode_tokens_per_s" in metrics:
            try:
                roof = decode_roofline(metrics, run, bundle.module)
            except Exception as exc:  # noqa: BLE001 - a derived number must not lose the measured ones
                roof = None
                flags.append(f"roofline not computed: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
            if roof is not None:
                metrics["decode_bandwidth_percent"] = metric_value(ROOFLINE, roof["percent_of_bandwidth"],
                                                                   protocol.gen_repeats, **roof)
        return EvalResult(metrics, flags, proto, {"predictions": preds, "window_nll_sums": sums,
                                                  "window_tokens": counts})
