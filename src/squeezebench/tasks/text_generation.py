"""text-generation: greedy generations of a causal or seq2seq LM scored against references.

Protocol (recorded): each example's input is cut to ``seq_len`` tokens and put into the prompt (``--prompt``
with ``{text}``; else the tokenizer's chat template around the dataset's default instruction; else that
instruction as plain text); greedy decoding of at most ``gen_new_tokens`` tokens, one example at a time (no
padding); the output is stripped and, when every reference is one line, cut at its first line break.
Quality: corpus BLEU and chrF (sacrebleu, signature recorded) and mean ROUGE-L F (rouge-score), each with a
bootstrap interval of the corpus score over resampled examples; agreement: share of outputs identical to the
original variant's. Inference time (``unit_of_work``): producing one answer, prompt to at most ``gen_new_tokens``
new tokens, over the first prompts. Speed (``generation_speed``, for the generation measure): time to first token and
decode tokens/s, as causal-lm gives them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from squeezebench.errors import NotApplicable, SqueezebenchError
from squeezebench.tasks import data_text, text_common  # noqa: F401  (data_text registers bbc-headlines)
from squeezebench.tasks.base import EvalResult, UnitOfWork, register_task
from squeezebench.tasks.generation_common import (DECODING, FirstDecoderStepLogits, NextTokenLogits, can_generate,
                                                  generate_new_tokens, is_encoder_decoder, speed_metrics)
from squeezebench.tasks.metrics import BLEU, CHRF, OUTPUT_AGREEMENT, ROUGE_L, bootstrap_ci, metric_value

PLACEHOLDER = "{text}"
GENERATIVE_HEADS = ("ForCausalLM", "ForConditionalGeneration")
WORK_PROMPTS = 8  # prompts the per-answer inference time cycles through (--work-examples)
MAX_SERVED_NEW_TOKENS = 1024  # a served request may ask for at most this many new tokens


def check_prompt(template: str) -> None:
    """A prompt template must say where the input goes."""
    if PLACEHOLDER not in template:
        raise SqueezebenchError(f"--prompt {template!r} has no {PLACEHOLDER} placeholder; put {PLACEHOLDER} where "
                                "the input text goes, e.g. --prompt 'Title for this article: {text}\\n'")
    unknown = sorted({f for f in re.findall(r"\{([A-Za-z_]\w*)\}", template) if f"{{{f}}}" != PLACEHOLDER})
    if unknown:  # sent literally, a field the user meant to fill would reach the model as "{title}"
        raise SqueezebenchError(f"--prompt {template!r} has the unknown field {{{unknown[0]}}}; only {PLACEHOLDER} "
                                "is filled in (with each example's input): remove the others")


def render(template: str, text: str) -> str:
    """``template`` with ``{text}`` replaced (other braces are literal, unlike str.format)."""
    return template.replace(PLACEHOLDER, text)


def first_line(text: str) -> str:
    return next((line.strip() for line in text.strip().splitlines() if line.strip()), "")


CHAT_TEMPLATE = "tokenizer chat template, one user message"


def prompt_ids(tok: Any, text: str, template: str, how: str, max_input_tokens: int) -> tuple[torch.Tensor, bool]:
    """The token ids of one example's prompt, and whether its input was cut: the input cut to
    ``max_input_tokens`` tokens, put into ``template``, then the chat template when ``how`` says so. The
    evaluation and the served variant both build prompts here, so a served answer is the evaluated one."""
    text = text.strip()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    cut = len(ids) > max_input_tokens
    if cut:
        text = tok.decode(ids[:max_input_tokens], skip_special_tokens=True)
    prompt = render(template, text)
    if how == CHAT_TEMPLATE:
        prompt = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)
        return tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"][0], cut
    return tok(prompt, return_tensors="pt")["input_ids"][0], cut


@dataclass(frozen=True)
class ServedPrompt:
    """How a served request becomes a prompt and its answer an output: as the variant's evaluation did (its
    record's quality protocol), else as a run with this protocol would."""

    template: str
    how: str
    first_line_only: bool


# --- scoring ----------------------------------------------------------------------------------------------
def resampled_corpus_score(scorer: Any, hyps: list[str], refs: list[str]) -> Callable[[np.ndarray], float]:
    """idx -> the sacrebleu corpus score of examples ``idx``. BLEU and chrF statistics are additive per example,
    so a resampled corpus is scored from summed statistics (what sacrebleu does for its paired bootstrap)."""
    stats = np.asarray(scorer._extract_corpus_statistics(hyps, [refs]), dtype=np.float64)
    return lambda idx: float(scorer._compute_score_from_stats(list(stats[idx].sum(0))).score)


def generation_scores(hyps: list[str], refs: list[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """BLEU and chrF (corpus) and ROUGE-L (mean F), all 0-100, with bootstrap intervals over examples, plus
    each metric's signature."""
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU as SacreBLEU, CHRF as SacreCHRF

    n = len(hyps)
    metrics: dict[str, dict] = {}
    signatures: dict[str, str] = {}
    for key, metric, scorer in (("bleu", BLEU, SacreBLEU()), ("chrf", CHRF, SacreCHRF())):
        value = float(scorer.corpus_score(hyps, [refs]).score)
        metrics[key] = metric_value(metric, value, n, bootstrap_ci(resampled_corpus_score(scorer, hyps, refs), n))
        signatures[key] = str(scorer.get_signature())
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    per_example = np.array([rouge.score(r, h)["rougeL"].fmeasure * 100 for h, r in zip(hyps, refs)])
    metrics["rouge_l"] = metric_value(ROUGE_L, per_example.mean(), n, bootstrap_ci(lambda i: per_example[i].mean(), n))
    signatures["rouge_l"] = "rouge-score rougeL F-measure, default tokenizer (lower-case a-z0-9 words), no stemmer"
    return metrics, signatures


def agreement(outputs: list[str], reference: Optional[dict[str, Any]]) -> Optional[dict]:
    """Share of outputs identical to the original variant's (None without a comparable reference)."""
    if reference is None or reference.get("outputs") is None:
        return None
    ref = [str(s) for s in np.asarray(reference["outputs"]).tolist()]
    if len(ref) != len(outputs):
        return None
    same = np.array([a == b for a, b in zip(outputs, ref)], dtype=float)
    return metric_value(OUTPUT_AGREEMENT, same.mean(), len(same), bootstrap_ci(lambda i: same[i].mean(), len(same)))


# --- the task ---------------------------------------------------------------------------------------------
@register_task
class TextGeneration(text_common.TextTask):
    name = "text-generation"
    version = 2  # 2: the inference time is producing an answer (was: one forward over a fixed prompt)
    auto_class = "AutoModelForCausalLM"  # AutoModelForSeq2SeqLM for encoder-decoder configs (auto_class_for)
    primary_metric = "bleu"
    metrics = ("bleu", "chrf", "rouge_l", "output_agreement")
    default_dataset = "bbc-headlines"
    input_names = ("input_ids",)
    input_kind = "text"
    needs_labels = False  # needs references (example["target"]), checked in prepare
    labels_from_model = False
    calibration_held_out = True

    def auto_class_for(self, config) -> str:
        heads = [a for a in (getattr(config, "architectures", None) or []) if "For" in a]
        if heads and not any(a.endswith(GENERATIVE_HEADS) for a in heads):
            raise SqueezebenchError(f"the model is a {heads[0]}, not a language model that generates text; "
                                    "text-generation needs a causal LM (...ForCausalLM) or a seq2seq LM "
                                    "(T5, BART, Marian: ...ForConditionalGeneration)")
        return "AutoModelForSeq2SeqLM" if is_encoder_decoder(config) else "AutoModelForCausalLM"

    def wrap(self, bundle):
        """What exports and calibration see: one forward over a fixed prompt (seq2seq: the encoder plus one decoder
        step); the inference time is a whole answer (``unit_of_work``)."""
        if is_encoder_decoder(bundle.module.config):
            return FirstDecoderStepLogits(bundle.module)
        return NextTokenLogits(bundle.module)

    # --- data -------------------------------------------------------------------------------------------
    def prompt_format(self, bundle, dataset, protocol) -> tuple[str, str]:
        """(template, how) for this run: --prompt as given, else the chat template, else plain text."""
        if protocol.gen_prompt is not None:
            check_prompt(protocol.gen_prompt)
            return protocol.gen_prompt, "prompt template (--prompt)"
        template = dataset.meta.get("prompt", PLACEHOLDER)
        if getattr(bundle.tokenizer, "chat_template", None):
            return template, CHAT_TEMPLATE
        return template, "prompt template (dataset default)" if template != PLACEHOLDER else "the input as is"

    def prepare(self, dataset, bundle, protocol):
        text_common.require_text(bundle)
        if any("target" not in ex for ex in dataset.examples):
            raise SqueezebenchError(f"dataset {dataset.spec!r} has no references for text-generation; pass "
                                    "--target-column (csv:/jsonl:) or use --dataset bbc-headlines")
        empty = [i for i, ex in enumerate(dataset.examples) if not ex["target"].strip()]
        if empty:
            raise SqueezebenchError(f"dataset {dataset.spec!r} has {len(empty)} empty reference(s) (first: example "
                                    f"{empty[0]}); text-generation scores against references: fill or drop them")
        template, how = self.prompt_format(bundle, dataset, protocol)
        tok = bundle.tokenizer
        prompts, truncated = [], 0
        for ex in dataset.examples:
            ids, cut = prompt_ids(tok, ex["text"], template, how, protocol.seq_len)
            truncated += cut
            prompts.append(ids)
        return {"dataset": dataset, "prompts": prompts, "references": [ex["target"].strip() for ex in dataset.examples],
                "template": template, "prompt_format": how, "truncated_inputs": truncated,
                "single_line": all("\n" not in ex["target"].strip() for ex in dataset.examples)}

    def _stream(self, data) -> torch.Tensor:
        return torch.cat(data["prompts"])

    def example_inputs(self, bundle, data, protocol):
        ids = self._stream(data)
        need = protocol.batch_size * protocol.seq_len
        reps = need // ids.numel() + 1
        return {"input_ids": ids.repeat(reps)[:need].reshape(protocol.batch_size, protocol.seq_len).clone()}

    def calibration_inputs(self, bundle, data, protocol, n):
        """``n`` windows of seq_len tokens of the prompts, back to back (the worker passes prompts of examples
        outside the evaluated subset when there are any)."""
        ids, seq = self._stream(data), protocol.seq_len
        starts = [i * seq for i in range(min(n, ids.numel() // seq))] or [0]
        return [{"input_ids": ids[s:s + seq].unsqueeze(0).clone()} for s in starts]

    def unit_of_work(self, executable, bundle, data, inputs, protocol) -> UnitOfWork:
        """Produce one answer: greedy generation of at most ``gen_new_tokens`` tokens from an example's prompt (as
        scored), cycling in order through the first prompts; a runtime that cannot generate is timed per forward."""
        if not can_generate(executable, bundle):
            unit = super().unit_of_work(executable, bundle, data, inputs, protocol)
            unit.label += " (this runtime cannot generate)"
            return unit
        prompts = data["prompts"][: protocol.work_examples or WORK_PROMPTS]
        unit = UnitOfWork(label="per answer", call=lambda: None, amount_unit="new tokens", rate="per s",
                          protocol={"prompts": len(prompts), "max_new_tokens": protocol.gen_new_tokens,
                                    "prompt_tokens": [int(p.numel()) for p in prompts], "decoding": DECODING})

        def call() -> None:
            prompt = prompts[len(unit.amounts) % len(prompts)]
            new = generate_new_tokens(executable, bundle, prompt.unsqueeze(0), protocol.gen_new_tokens)
            unit.amounts.append(float(new.shape[1]))

        unit.call = call
        return unit

    # --- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, run, bundle, data, protocol, reference):
        if not can_generate(run, bundle):
            raise NotApplicable(f"text-generation needs a runtime that generates; {run.info.get('name', 'this runtime')} "
                                "has no generate_greedy() yet")
        tok = bundle.tokenizer
        outputs, lengths = [], []
        for ids in data["prompts"]:
            new = generate_new_tokens(run, bundle, ids.unsqueeze(0), protocol.gen_new_tokens)[0]
            lengths.append(int(new.numel()))
            text = tok.decode(new, skip_special_tokens=True).strip()
            outputs.append(first_line(text) if data["single_line"] else text)
        metrics, signatures = generation_scores(outputs, data["references"])
        agree = agreement(outputs, reference)
        if agree is not None:
            metrics["output_agreement"] = agree
        flags = []
        if bundle.newly_initialized:
            flags.append(f"untrained weights: {', '.join(bundle.newly_initialized[:3])} newly initialised by the loader")
        if not any(outputs):
            flags.append("every generated text is empty")
        proto = {"examples": len(outputs), "prompt_format": data["prompt_format"], "prompt_template": data["template"],
                 "input_max_tokens": protocol.seq_len, "inputs_truncated": data["truncated_inputs"],
                 "max_new_tokens": protocol.gen_new_tokens, "decoding": DECODING + ", batch 1 (no padding)",
                 "output_cut": "first line" if data["single_line"] else "none (multi-line references)",
                 "mean_new_tokens": float(np.mean(lengths)), "signatures": signatures,
                 "tokenizer": type(tok).__name__, "tokenizer_name": getattr(tok, "name_or_path", ""),
                 "dataset_fingerprint": data["dataset"].fingerprint(), "examples_shown": outputs[:3]}
        return EvalResult(metrics, flags, proto, {"outputs": np.array(outputs, dtype=str)})

    def generation_speed(self, run, bundle, data, protocol):
        """TTFT and decode tokens/s on the first prompt's first ``gen_prompt_tokens`` tokens."""
        prompt = data["prompts"][0][: protocol.gen_prompt_tokens].unsqueeze(0)
        metrics, proto, flags = speed_metrics(run, bundle, prompt, protocol)
        return EvalResult(metrics, flags, proto)

    # --- serving (squeezebench serve / loadtest) ------------------------------------------------------
    # request_of: {"text": the example's input} (TextTask), which the service formats as the evaluation did

    def check_request(self, body):
        problem = super().check_request(body)
        if problem is None and "max_new_tokens" in body:
            n = body["max_new_tokens"]
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SERVED_NEW_TOKENS:
                return f'"max_new_tokens" must be an integer from 1 to {MAX_SERVED_NEW_TOKENS}, got {n!r}'
        return problem

    def serving_context(self, record) -> Optional[ServedPrompt]:
        """The prompt format and output cut the variant's evaluation recorded (None: decided per batch from the
        protocol and the tokenizer, as a run would)."""
        proto = record.quality.protocol if record.quality is not None else {}
        if "prompt_template" not in proto or "prompt_format" not in proto:
            return None
        return ServedPrompt(proto["prompt_template"], proto["prompt_format"],
                            str(proto.get("output_cut", "")).startswith("first line"))

    def serve_batch(self, run, bundle, bodies, protocol, context=None):
        """Each request's greedy answer to its text, put into the prompt the evaluation used and cut as it cut
        its outputs (one prompt at a time, no padding: as evaluated); with the number of new tokens."""
        if not can_generate(run, bundle):
            raise SqueezebenchError(f"{run.info.get('name', 'this runtime')} cannot generate text; serve a variant "
                                    "whose runtime generates (PyTorch, ONNX Runtime, OpenVINO, CTranslate2, gguf)")
        fmt = context
        if fmt is None:
            template = protocol.gen_prompt if protocol.gen_prompt is not None else PLACEHOLDER
            how = CHAT_TEMPLATE if (protocol.gen_prompt is None and getattr(bundle.tokenizer, "chat_template", None)) \
                else "prompt template"
            fmt = ServedPrompt(template, how, False)
        answers = []
        for body in bodies:
            ids, _ = prompt_ids(bundle.tokenizer, body["text"], fmt.template, fmt.how, protocol.seq_len)
            new = generate_new_tokens(run, bundle, ids.unsqueeze(0),
                                      int(body.get("max_new_tokens", protocol.gen_new_tokens)))[0]
            text = bundle.tokenizer.decode(new, skip_special_tokens=True).strip()
            answers.append({"text": first_line(text) if fmt.first_line_only else text, "new_tokens": int(new.numel())})
        return answers
