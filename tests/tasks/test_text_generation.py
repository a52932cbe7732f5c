"""text-generation: known-answer BLEU/chrF/ROUGE-L, prompts, causal and seq2seq (T5, Marian) tiny models,
an end-to-end run writing a table, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from squeezebench.cli import main
from squeezebench.errors import NotApplicable, SqueezebenchError
from squeezebench.tasks import TASKS
from squeezebench.tasks.data import DatasetOptions, load_dataset
from squeezebench.tasks.text_generation import (agreement, check_prompt, first_line, generation_scores, render,
                                                resampled_corpus_score)
from tests.conftest import _save_tokenizer, fast_protocol

TASK = TASKS.get("text-generation")
PAIRS = [("Shares in the bank rose after strong profits.", "Bank shares rise on profits"),
         ("The team won the cup final after a late goal.", "Late goal wins the cup"),
         ("The new phone has a faster chip and a better camera.", "Faster chip for new phone"),
         ("Oil prices fell as markets worried about demand.", "Oil prices fall")] * 2


# --- known answers ----------------------------------------------------------------------------------------
def test_identical_outputs_score_100():
    refs = ["the cat sat on the mat", "a dog barked at the postman", "rain is expected tomorrow"]
    m, sig = generation_scores(refs, refs)
    for key in ("bleu", "chrf", "rouge_l"):
        assert m[key]["value"] == pytest.approx(100.0) and m[key]["ci95"] == pytest.approx([100.0, 100.0])
        assert m[key]["unit"] == "score 0-100" and m[key]["higher_is_better"]
    assert sig["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.")
    assert "nc:6|nw:0" in sig["chrf"]


def test_disjoint_outputs_score_0():
    m, _ = generation_scores(["xyz qqq", "kkk"], ["abc def", "bad fed"])
    assert m["bleu"]["value"] == 0 and m["chrf"]["value"] == pytest.approx(0, abs=1e-9) and m["rouge_l"]["value"] == 0


def test_partial_bleu_and_rouge_l_by_hand():
    # hypothesis vs reference: n-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths (no brevity penalty);
    # longest common subsequence 5 of 6 words
    m, _ = generation_scores(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert m["bleu"]["value"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)  # 53.73
    assert m["rouge_l"]["value"] == pytest.approx(100 * 5 / 6)


def test_partial_chrf_by_hand():
    # "ab" vs "abc": orders 1 and 2 have hypothesis n-grams, P = 1 and 1, R = 2/3 and 1/2; chrF(beta=2) of the
    # averages P = 1, R = 7/12 is 5 * 7/12 / (4 + 7/12) = 7/11
    m, _ = generation_scores(["ab"], ["abc"])
    assert m["chrf"]["value"] == pytest.approx(700 / 11, rel=1e-9)


def test_resampled_corpus_score_equals_sacrebleu_and_interval_brackets_it():
    from sacrebleu.metrics import BLEU, CHRF

    hyps = ["the cat sat on the mat", "a dog", "markets fell sharply today", "rain again", "a new phone"]
    refs = ["the cat sat on a mat", "the dog barked", "markets fell today", "more rain", "new phone launched"]
    for scorer in (BLEU(), CHRF()):
        fn = resampled_corpus_score(scorer, hyps, refs)
        assert fn(np.arange(len(hyps))) == pytest.approx(scorer.corpus_score(hyps, [refs]).score)
        assert fn(np.array([0, 0])) == pytest.approx(scorer.corpus_score(hyps[:1] * 2, [refs[:1] * 2]).score)
    m, _ = generation_scores(hyps, refs)
    for key in ("bleu", "chrf", "rouge_l"):
        lo, hi = m[key]["ci95"]
        assert lo < m[key]["value"] < hi


def test_agreement_is_the_share_of_identical_outputs():
    ref = {"outputs": np.array(["a", "b", "c", "d"], dtype=str)}
    assert agreement(["a", "b", "x", "d"], ref)["value"] == 0.75
    assert agreement(["a"], ref) is None and agreement(["a"], None) is None


def test_prompt_rendering_and_check():
    assert render("Title: {text}\n{not a field}", "body") == "Title: body\n{not a field}"
    check_prompt("Title for this article: {text}\n")
    with pytest.raises(SqueezebenchError, match=r"has no \{text\} placeholder"):
        check_prompt("Title for this article:")
    assert first_line("\n  Headline here \nmore text") == "Headline here"


# --- datasets ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pairs_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "pairs.jsonl"
    path.write_text("".join(json.dumps({"article": a, "title": t}) + "\n" for a, t in PAIRS))
    return path


def test_input_and_target_columns(pairs_jsonl, tmp_path):
    ds = load_dataset(f"jsonl:{pairs_jsonl}", DatasetOptions(input_column="article", target_column="title"))
    assert ds.examples[0] == {"text": PAIRS[0][0], "target": PAIRS[0][1]}
    with pytest.raises(SqueezebenchError, match="no column 'headline'.*--target-column"):
        load_dataset(f"jsonl:{pairs_jsonl}", DatasetOptions(input_column="article", target_column="headline"))
    csv = tmp_path / "empty.csv"
    csv.write_text("article,title\nsome text,a title\nmore text,\n")
    with pytest.raises(SqueezebenchError, match=r"1 empty reference\(s\) in column 'title' \(first: row 2\)"):
        load_dataset(f"csv:{csv}", DatasetOptions(input_column="article", target_column="title"))


def test_bbc_headlines_is_the_first_line_of_each_article():
    ds = load_dataset("bbc-headlines")
    assert len(ds.examples) == 2225 and ds.spec == "bbc-headlines"
    ex = ds.examples[0]
    assert ex["target"] == "Ad sales boost Time Warner profit"
    assert ex["text"].startswith("Quarterly profits at US media giant TimeWarner") and "\n" not in ex["target"]
    assert "{text}" in ds.meta["prompt"]


# --- tiny models ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory) -> Path:
    """A 2-layer T5 (random weights) with the MiniLM tokenizer ([PAD]=0 starts the decoder, [SEP]=102 ends)."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny-t5")
    cfg = T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, pad_token_id=0,
                   eos_token_id=102, decoder_start_token_id=0)
    T5ForConditionalGeneration(cfg).eval().save_pretrained(d)
    _save_tokenizer(d)
    return d


@pytest.fixture(scope="module")
def tiny_marian_dir(tmp_path_factory) -> Path:
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny-marian")
    cfg = MarianConfig(vocab_size=30522, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                       decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
                       pad_token_id=0, eos_token_id=102, decoder_start_token_id=0, forced_eos_token_id=102)
    MarianMTModel(cfg).eval().save_pretrained(d)
    _save_tokenizer(d)
    return d


@pytest.fixture(scope="module")
def tiny_ner_dir(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertForTokenClassification

    d = tmp_path_factory.mktemp("tiny-ner")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, num_labels=3, id2label={0: "O", 1: "B-PER", 2: "I-PER"},
                     label2id={"O": 0, "B-PER": 1, "I-PER": 2})
    BertForTokenClassification(cfg).eval().save_pretrained(d)
    _save_tokenizer(d)
    return d


def _in_process(model_dir: Path, protocol, dataset):
    """Load, prepare and evaluate the way the measure worker does, on the PyTorch model in this process."""
    from squeezebench.models.sources import load_model, source_of
    from squeezebench.runtimes.pytorch import TorchExecutable

    bundle = load_model(source_of(str(model_dir)), TASK)
    data = TASK.prepare(dataset, bundle, protocol)
    run = TorchExecutable(TASK.wrap(bundle).eval(), "cpu", {"name": "pytorch-eager", "device": "cpu"})
    with torch.no_grad():
        return bundle, data, run, TASK.evaluate(run, bundle, data, protocol, None)


@pytest.mark.parametrize("fixture, auto", [("tiny_t5_dir", "T5ForConditionalGeneration"),
                                           ("tiny_marian_dir", "MarianMTModel"),
                                           ("tiny_llama_dir", "LlamaForCausalLM")])
def test_seq2seq_and_causal_models_generate_and_are_scored(request, fixture, auto, pairs_jsonl):
    ds = load_dataset(f"jsonl:{pairs_jsonl}", DatasetOptions(input_column="article", target_column="title"))
    protocol = fast_protocol(gen_prompt="Title for this article: {text}\n", gen_new_tokens=5, seq_len=8)
    bundle, data, run, result = _in_process(request.getfixturevalue(fixture), protocol, ds)
    assert type(bundle.module).__name__ == auto
    m = result.metrics
    for key in ("bleu", "chrf", "rouge_l"):
        assert 0 <= m[key]["value"] <= 100 and m[key]["n"] == len(PAIRS)
    speed = TASK.generation_speed(run, bundle, data, protocol)
    assert speed.metrics["time_to_first_token"]["value"] > 0 and speed.metrics["decode_tokens_per_s"]["value"] > 0
    assert speed.protocol["gen_new_tokens"] == 5 and "time_to_first_token" not in m
    p = result.protocol
    assert p["prompt_format"] == "prompt template (--prompt)" and p["max_new_tokens"] == 5
    assert p["inputs_truncated"] == len(PAIRS)  # every article is longer than 8 tokens
    assert 0 < p["mean_new_tokens"] <= 5 and p["signatures"]["bleu"].startswith("nrefs:1")
    outputs = result.reference["outputs"]
    assert len(outputs) == len(PAIRS)
    # the scores are those of the recorded outputs, and the latency module is a forward over the prompt
    assert m["bleu"]["value"] == pytest.approx(generation_scores(list(outputs), data["references"])[0]["bleu"]["value"])
    logits = run(TASK.example_inputs(bundle, data, protocol))
    assert logits.shape[:2] == ((1, 1) if bundle.module.config.is_encoder_decoder else (1, protocol.seq_len))
    # a variant identical to the original agrees with it on every output
    again = TASK.evaluate(run, bundle, data, protocol, {"outputs": outputs})
    assert again.metrics["output_agreement"]["value"] == 1.0


def test_seq2seq_generation_strips_the_decoder_start_and_follows_the_executable(tiny_t5_dir, pairs_jsonl):
    from squeezebench.tasks.generation_common import generate_new_tokens

    ds = load_dataset(f"jsonl:{pairs_jsonl}", DatasetOptions(input_column="article", target_column="title"))
    protocol = fast_protocol(gen_new_tokens=4, seq_len=8)
    bundle, data, run, result = _in_process(tiny_t5_dir, protocol, ds)
    ids = data["prompts"][0].unsqueeze(0)
    new = generate_new_tokens(run, bundle, ids, 4, min_new_tokens=4)
    full = bundle.module.generate(input_ids=ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, num_beams=1)
    assert full[0, 0] == 0 and torch.equal(new, full[:, 1:])

    class Exported:  # a runtime that generates by itself (as exported runtimes will)
        info = {"name": "fake", "device": "cpu"}
        calls = 0

        def generate_greedy(self, inputs, max_new_tokens):
            Exported.calls += 1
            return torch.full((1, max_new_tokens), 2023)  # the token "this"

    bundle.module = None
    out = TASK.evaluate(Exported(), bundle, data, protocol, None)
    assert Exported.calls >= len(PAIRS) and set(out.reference["outputs"]) == {"this this this this"}
    assert "generate_greedy" in TASK.generation_speed(Exported(), bundle, data, protocol).protocol["gen_decoding"]

    class NoGenerate:
        info = {"name": "onnxruntime"}
    with pytest.raises(NotApplicable, match="onnxruntime has no generate_greedy"):
        TASK.evaluate(NoGenerate(), bundle, data, protocol, None)


def test_chat_template_is_used_when_there_is_no_prompt(tiny_llama_dir, pairs_jsonl):
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    ds = load_dataset(f"jsonl:{pairs_jsonl}", DatasetOptions(input_column="article", target_column="title"))
    data = TASK.prepare(ds, SimpleNamespace(tokenizer=tok), fast_protocol(seq_len=64))
    assert data["prompt_format"] == "tokenizer chat template, one user message"
    text = tok.decode(data["prompts"][0])
    assert text.startswith("< user >") and "shares in the bank" in text and text.endswith("< assistant >")
    plain = TASK.prepare(ds, SimpleNamespace(tokenizer=tok), fast_protocol(seq_len=64, gen_prompt="T: {text}"))
    assert plain["prompt_format"] == "prompt template (--prompt)" and "user" not in tok.decode(plain["prompts"][0])


# --- end to end and bad input -----------------------------------------------------------------------------
def test_run_end_to_end_writes_a_table(tmp_path, tiny_llama_dir, pairs_jsonl, capsys):
    out = tmp_path / "results"
    code = main(["run", "--model", str(tiny_llama_dir), "--task", "text-generation", "--dataset",
                 f"jsonl:{pairs_jsonl}", "--input-column", "article", "--target-column", "title",
                 "--prompt", "Title for this article: {text}\\n", "--methods", "original", "int8-dynamic",
                 "--devices", "cpu", "--seq-len", "16", "--gen-tokens", "4", "--min-iters", "3", "--min-time", "0",
                 "--warmup", "1", "--out", str(out), "--team", "t"])
    table = capsys.readouterr().out
    assert code == 0
    assert "BLEU " in table and "bleu" not in table and "chrF" in table and "ROUGE-L" in table and "int8-dynamic" in table
    records = [r for f in (out / "t").glob("run-*.json") for r in json.loads(f.read_text())["records"]]
    by = {r["method"]: r for r in records}
    assert by["original"]["status"] == "ok", by["original"]
    assert by["int8-dynamic"]["status"] == "ok", by["int8-dynamic"]
    q = by["original"]["quality"]
    assert q["primary"] == "bleu" and q["protocol"]["prompt_template"] == "Title for this article: {text}\n"
    assert 0 <= by["int8-dynamic"]["quality"]["metrics"]["output_agreement"]["value"] <= 1


def test_prompt_without_placeholder_is_one_line(capsys, tiny_llama_dir):
    assert main(["run", "--model", str(tiny_llama_dir), "--task", "text-generation", "--prompt", "Title:"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no {text} placeholder" in err[0]


def test_no_or_empty_references_are_one_line(tiny_llama_dir):
    from types import SimpleNamespace

    from squeezebench.tasks.data import Dataset

    bundle = SimpleNamespace(tokenizer=object())
    with pytest.raises(SqueezebenchError, match="no references for text-generation; pass --target-column"):
        TASK.prepare(Dataset("csv:x", [{"text": "a"}]), bundle, fast_protocol())
    with pytest.raises(SqueezebenchError, match=r"1 empty reference\(s\) \(first: example 1\)"):
        TASK.prepare(Dataset("csv:x", [{"text": "a", "target": "t"}, {"text": "b", "target": " "}]), bundle,
                     fast_protocol())


def test_wrong_model_kind_is_refused(tiny_ner_dir):
    from squeezebench.models.sources import load_model, source_of

    with pytest.raises(SqueezebenchError, match="is a BertForTokenClassification, not a language model"):
        load_model(source_of(str(tiny_ner_dir)), TASK)
