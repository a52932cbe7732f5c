"""token-classification: known-answer entity F1, CoNLL reading, sub-word alignment, tag mapping, a tiny BERT
tagger end to end, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from squeezebench.cli import main
from squeezebench.errors import SqueezebenchError
from squeezebench.tasks import TASKS
from squeezebench.tasks.data import DatasetOptions, load_dataset
from squeezebench.tasks.data_conll import from_hf, read_conll
from squeezebench.tasks.token_classification import entity_counts, entity_scores, prf, tag_mapping
from tests.conftest import _save_tokenizer, fast_protocol, minilm_tokenizer_dir

TASK = TASKS.get("token-classification")
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
CONLL = """-DOCSTART- -X- -X- O

John NNP B-NP B-PER
Smith NNP I-NP I-PER
visited VBD B-VP O
Paris NNP B-NP B-LOC
. . O O

Zyxwvutsrq NNP B-NP B-PER
lives VBZ B-VP O
in IN B-PP O
New NNP B-NP B-LOC
York NNP I-NP I-LOC

-DOCSTART- -X- -X- O

Mary B-PER
flew O
home O
"""


# --- known answers ----------------------------------------------------------------------------------------
def test_identical_tags_score_1_and_missed_entities_score_0():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]]
    m = entity_scores(gold, gold)
    assert m["entity_f1"]["value"] == 1.0 and m["entity_precision"]["value"] == 1.0
    assert m["entity_f1"]["ci95"] == [1.0, 1.0] and m["entity_f1"]["entities"] == 3
    none = entity_scores(gold, [["O"] * 4, ["O"] * 3])
    assert none["entity_f1"]["value"] == 0 and none["entity_recall"]["value"] == 0
    wrong_type = entity_scores(gold, [["B-LOC", "I-LOC", "O", "B-PER"], ["O", "B-PER", "I-PER"]])
    assert wrong_type["entity_f1"]["value"] == 0


def test_partial_match_by_hand():
    # gold: PER(0-1), LOC(3), LOC(5); predicted: PER(0-1) right, LOC(3) as ORG, LOC(5) missed, PER(6) extra
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "O", "B-PER"]]
    m = entity_scores(gold, pred)
    assert m["entity_precision"]["value"] == pytest.approx(1 / 3)  # 1 of 3 predicted
    assert m["entity_recall"]["value"] == pytest.approx(1 / 3)  # 1 of 3 gold
    assert m["entity_f1"]["value"] == pytest.approx(1 / 3)
    # a span cut short is wrong as a whole: 1 correct of 2 predicted, 1 of 1 gold... P 1/2, R 1/2
    m2 = entity_scores([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]])
    assert m2["entity_precision"]["value"] == 0.5 and m2["entity_recall"]["value"] == 0.5


def test_per_sentence_counts_reproduce_seqeval_on_random_tags():
    from seqeval.metrics import f1_score, precision_score, recall_score

    rng = np.random.default_rng(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-PER"]
    gold = [[tags[i] for i in rng.integers(0, len(tags), rng.integers(1, 12))] for _ in range(60)]
    pred = [[t if rng.random() < 0.7 else tags[rng.integers(0, len(tags))] for t in s] for s in gold]
    p, r, f = prf(entity_counts(gold, pred))
    assert p == pytest.approx(precision_score(gold, pred)) and r == pytest.approx(recall_score(gold, pred))
    assert f == pytest.approx(f1_score(gold, pred))
    m = entity_scores(gold, pred)
    lo, hi = m["entity_f1"]["ci95"]
    assert lo < m["entity_f1"]["value"] < hi


def test_tag_mapping_by_name_or_one_line():
    assert tag_mapping(["O", "B-per", "I-PER"], ["B-PER", "O"]) == ["B-per", "O"]
    with pytest.raises(SqueezebenchError, match="tags B-LOC are not among the model's"):
        tag_mapping(["O", "B-PER", "I-PER"], ["O", "B-PER", "B-LOC"])
    with pytest.raises(SqueezebenchError, match="does not name its tags"):
        tag_mapping(["LABEL_0", "LABEL_1"], ["O", "B-PER"])


# --- data -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def conll_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("conll") / "ner.txt"
    path.write_text(CONLL)
    return path


def test_conll_reads_first_and_last_column_and_skips_docstart(conll_file):
    sentences = read_conll(str(conll_file))
    assert [s[0] for s in sentences] == [["John", "Smith", "visited", "Paris", "."],
                                         ["Zyxwvutsrq", "lives", "in", "New", "York"], ["Mary", "flew", "home"]]
    assert sentences[1][1] == ["B-PER", "O", "O", "B-LOC", "I-LOC"]
    ds = load_dataset(f"conll:{conll_file}")
    assert ds.label_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]  # O first, then by entity type
    assert ds.examples[0]["text"] == "John Smith visited Paris ." and ds.examples[0]["tags"] == [3, 4, 0, 1, 0]


@pytest.mark.parametrize("line, why", [("Paris\n", "not 'TOKEN TAG'"), ("Paris NNP B-NP LOC\n", "not 'TOKEN TAG'")])
def test_malformed_conll_line_names_file_and_line(tmp_path, line, why):
    path = tmp_path / "bad.conll"
    path.write_text("John B-PER\nSmith I-PER\n" + line)
    with pytest.raises(SqueezebenchError, match=rf"bad.conll:3: .*{why}") as exc:
        load_dataset(f"conll:{path}")
    assert "\n" not in str(exc.value)


def test_hugging_face_tokens_and_class_label_tags():
    feature = SimpleNamespace(names=["O", "B-PER", "I-PER"])
    ds = SimpleNamespace(column_names=["id", "tokens", "ner_tags"],
                         features={"ner_tags": SimpleNamespace(feature=feature)},
                         __iter__=None)
    rows = [{"id": "0", "tokens": ["Ann", "sings"], "ner_tags": [1, 0]}, {"id": "1", "tokens": [], "ner_tags": []}]
    fake = type("Fake", (), {"column_names": ds.column_names, "features": ds.features,
                             "__iter__": lambda self: iter(rows)})()
    out = from_hf(fake, "hf:conll2003", DatasetOptions())
    assert out.label_names == ["O", "B-PER", "I-PER"] and out.examples == [
        {"text": "Ann sings", "tokens": ["Ann", "sings"], "tags": [1, 0]}]


# --- models -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ner_dir(tmp_path_factory) -> Path:
    """A 1-layer BERT token classifier (random weights) whose id2label names CoNLL tags."""
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny-ner")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=len(LABELS),
                     id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    BertForTokenClassification(cfg).eval().save_pretrained(d)
    _save_tokenizer(d)
    return d


class LookupTagger:
    """A fake runtime: tags each sub-token by a table of token ids (others O), to check word alignment."""

    def __init__(self, table: dict[int, int]):
        self.table = table

    def __call__(self, inputs):
        ids = inputs["input_ids"]
        logits = torch.zeros(*ids.shape, len(LABELS))
        logits[..., 0] = 1.0
        for tid, tag in self.table.items():
            logits[ids == tid] = torch.nn.functional.one_hot(torch.tensor(tag), len(LABELS)).float() * 5
        return logits


def test_first_sub_token_is_scored_and_others_ignored(conll_file):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
    pieces = tok.tokenize("Zyxwvutsrq")
    assert len(pieces) > 2  # a word of several sub-words
    first, rest = tok.convert_tokens_to_ids(pieces[0]), tok.convert_tokens_to_ids(pieces[1:])
    table = {tok.convert_tokens_to_ids(w): t for w, t in [("john", 1), ("smith", 2), ("paris", 3), ("new", 3),
                                                           ("york", 4), ("mary", 1)]}
    table[first] = 1
    table.update({i: 4 for i in rest})  # continuation pieces say I-LOC: ignored, the word is B-PER
    bundle = SimpleNamespace(tokenizer=tok, label_names=LABELS, newly_initialized=[])
    ds = load_dataset(f"conll:{conll_file}")
    data = TASK.prepare(ds, bundle, fast_protocol(seq_len=32, eval_batch_size=2))
    result = TASK.evaluate(LookupTagger(table), bundle, data, fast_protocol(seq_len=32), None)
    assert result.metrics["entity_f1"]["value"] == 1.0 and not result.flags
    # without the first piece the word is O: its PER entity is missed (recall 4/5, precision 1)
    table[first] = 0
    miss = TASK.evaluate(LookupTagger(table), bundle, data, fast_protocol(seq_len=32), None)
    assert miss.metrics["entity_recall"]["value"] == pytest.approx(4 / 5)
    assert miss.metrics["entity_precision"]["value"] == 1.0
    agree = TASK.evaluate(LookupTagger(table), bundle, data, fast_protocol(), result.reference)
    assert agree.metrics["output_agreement"]["value"] == pytest.approx(2 / 3)  # sentence 2 differs
    # truncation: words past --seq-len tokens are predicted O and flagged
    short = TASK.prepare(ds, bundle, fast_protocol(seq_len=4))
    cut = TASK.evaluate(LookupTagger(table), bundle, short, fast_protocol(seq_len=4), None)
    assert any("beyond --seq-len 4" in f for f in cut.flags)


def test_tiny_bert_tagger_end_to_end(tmp_path, tiny_ner_dir, conll_file, capsys):
    out = tmp_path / "results"
    code = main(["run", "--model", str(tiny_ner_dir), "--task", "token-classification", "--dataset",
                 f"conll:{conll_file}", "--methods", "original", "int8-dynamic", "--devices", "cpu", "--seq-len", "16",
                 "--min-iters", "3", "--min-time", "0", "--warmup", "1", "--out", str(out), "--team", "t"])
    table = capsys.readouterr().out
    assert code == 0 and "entity F1 " in table and "int8-dynamic" in table  # the metric's own label
    records = [r for f in (out / "t").glob("run-*.json") for r in json.loads(f.read_text())["records"]]
    by = {r["method"]: r for r in records}
    assert by["original"]["status"] == "ok", by["original"]
    assert by["int8-dynamic"]["status"] == "ok", by["int8-dynamic"]
    q = by["original"]["quality"]
    assert q["primary"] == "entity_f1" and 0 <= q["metrics"]["entity_f1"]["value"] <= 1
    assert q["protocol"]["sentences"] == 3 and q["protocol"]["words"] == 13
    assert 0 <= by["int8-dynamic"]["quality"]["metrics"]["output_agreement"]["value"] <= 1


def test_wrong_model_kind_and_unnamed_tags_are_refused(tiny_llama_dir, tiny_bert_dir, conll_file):
    from squeezebench.models.sources import load_model, source_of

    with pytest.raises(SqueezebenchError, match="is a LlamaForCausalLM, not a token classifier"):
        load_model(source_of(str(tiny_llama_dir)), TASK)
    bundle = load_model(source_of(str(tiny_bert_dir)), TASK)  # a bare encoder gets an untrained head, LABEL_0/1
    with pytest.raises(SqueezebenchError, match="does not name its tags"):
        TASK.prepare(load_dataset(f"conll:{conll_file}"), bundle, fast_protocol())


def test_dataset_without_tags_is_one_line(topic_csv, tiny_ner_dir):
    from squeezebench.models.sources import load_model, source_of

    bundle = load_model(source_of(str(tiny_ner_dir)), TASK)
    with pytest.raises(SqueezebenchError, match="no word tags for token-classification"):
        TASK.prepare(load_dataset(f"csv:{topic_csv}"), bundle, fast_protocol())


# --- serving ----------------------------------------------------------------------------------------------
def test_served_tags_and_entities_are_the_evaluated_ones(conll_file):
    """A served sentence gets the tags the evaluation scored (first sub-token of each word) and seqeval's entities."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
    table = {tok.convert_tokens_to_ids(w): t for w, t in [("john", 1), ("smith", 2), ("paris", 3), ("new", 3),
                                                           ("york", 4), ("mary", 1)]}
    bundle = SimpleNamespace(tokenizer=tok, label_names=LABELS, newly_initialized=[])
    ds = load_dataset(f"conll:{conll_file}")
    bodies = [TASK.request_of(ex) for ex in ds.examples]
    assert all(TASK.check_request(b) is None for b in bodies)
    answers = TASK.serve_batch(LookupTagger(table), bundle, bodies, fast_protocol(seq_len=32))
    assert answers[0]["tags"] == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    assert answers[0]["entities"] == [{"type": "PER", "start": 0, "end": 2, "text": "John Smith"},
                                      {"type": "LOC", "start": 3, "end": 4, "text": "Paris"}]
    assert answers[1]["entities"][-1] == {"type": "LOC", "start": 3, "end": 5, "text": "New York"}
    text = TASK.serve_batch(LookupTagger(table), bundle, [{"text": "Mary flew home"}], fast_protocol(seq_len=32))
    assert text[0]["tokens"] == ["Mary", "flew", "home"] and text[0]["entities"][0]["text"] == "Mary"
    for bad in (["x"], {}, {"tokens": []}, {"tokens": ["a", ""]}, {"tokens": "a b"}, {"text": "  "}, {"text": 3}):
        problem = TASK.check_request(bad)
        assert problem and "\n" not in problem, bad
