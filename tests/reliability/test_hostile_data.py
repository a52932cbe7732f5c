"""Hostile or careless data files: one line for bad encodings, repeated columns and header rows; dropped examples
counted; degenerate data flagged (issue 22, cases 1-2 and the partial ones); a seeded fuzz of the readers."""

from __future__ import annotations

import logging
import random
from types import SimpleNamespace

import numpy as np
import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.tasks import TASKS
from squeezebench.tasks.classification_common import score_logits
from squeezebench.tasks.data import load_dataset
from tests.conftest import fast_protocol, minilm_tokenizer_dir
from tests.helpers_speech import TRANSCRIPTS, librispeech_dir, write_tone


def test_latin1_conll_is_one_line(tmp_path):
    path = tmp_path / "ner.conll"
    path.write_bytes("Jos\u00e9 B-PER\nvisit\u00f3 O\n".encode("latin-1"))
    with pytest.raises(SqueezebenchError) as err:
        load_dataset(f"conll:{path}")
    assert str(err.value) == (f"CoNLL file {str(path)!r} is not UTF-8 (byte 0xe9 on line 1); re-save it as UTF-8, "
                              "e.g. iconv -f latin1 -t utf-8 IN > OUT")


def test_conll_keeps_line_numbers_and_crlf(tmp_path):
    path = tmp_path / "ner.conll"
    path.write_bytes(b"John B-PER\r\nran O\r\n\r\nbad\r\n")
    with pytest.raises(SqueezebenchError, match=r"ner.conll:4: 'bad' is not 'TOKEN TAG'"):
        load_dataset(f"conll:{path}")


def test_latin1_transcript_is_one_line(tmp_path):
    root = librispeech_dir(tmp_path / "ls")
    (root / "100" / "1" / "100-1.trans.txt").write_bytes("100-1-0000 CAF\u00c9\n".encode("latin-1"))
    with pytest.raises(SqueezebenchError, match=r"transcript file .* is not UTF-8 \(byte 0xc9 on line 1\)"):
        load_dataset(f"audio-dir:{root}")


def test_duplicate_csv_column_is_refused_naming_it(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label,text\ngood,pos,WRONG\nbad,neg,WRONG\n", encoding="utf-8")
    with pytest.raises(SqueezebenchError) as err:
        load_dataset(f"csv:{path}")
    assert str(err.value) == (f"CSV file {str(path)!r} names column 'text' twice in its header; rename or drop one "
                              "of them")


def test_repeated_header_row_inside_a_csv_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\ngood,pos\ntext,label\nbad,neg\n", encoding="utf-8")
    with pytest.raises(SqueezebenchError, match=r"repeats its header as data row 2; remove that line"):
        load_dataset(f"csv:{path}")
    path.write_text("text,label\ntext,pos\nlabel,neg\n", encoding="utf-8")  # a cell equal to a column name is data
    assert len(load_dataset(f"csv:{path}").examples) == 2


def test_utterance_without_a_transcript_line_is_counted_and_said(tmp_path, caplog):
    root = librispeech_dir(tmp_path / "ls")
    write_tone(root / "100" / "1" / "100-1-0099.flac", 0.2)
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(f"audio-dir:{root}")
    assert len(ds.examples) == len(TRANSCRIPTS) and ds.meta["audio_without_transcript"] == 1
    assert "1 audio file(s) have no transcript line and are not evaluated (first: " in caplog.text
    assert "100-1-0099.flac" in caplog.text


def test_no_entity_data_is_flagged(tmp_path, caplog):
    from tests.tasks.test_token_classification import LABELS, LookupTagger
    from transformers import AutoTokenizer

    path = tmp_path / "plain.conll"
    path.write_text("the O\ncat O\n\nsat O\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(f"conll:{path}")
    assert "has no entity tags (every tag is O)" in caplog.text
    task = TASKS.get("token-classification")
    bundle = SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(minilm_tokenizer_dir()), label_names=LABELS,
                             newly_initialized=[])
    data = task.prepare(ds, bundle, fast_protocol(seq_len=16))
    result = task.evaluate(LookupTagger({}), bundle, data, fast_protocol(seq_len=16), None)
    assert "no entities in the reference tags: entity F1 is undefined (shown as 0)" in result.flags


def test_all_one_class_data_is_flagged(tmp_path, caplog):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,pos\nb,pos\nc,pos\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        load_dataset(f"csv:{path}")
    assert "every example has label 'pos'" in caplog.text
    logits = np.tile([[2.0, 0.0]], (30, 1))
    bundle = SimpleNamespace(newly_initialized=[])
    _, flags, _ = score_logits(logits, np.zeros(30, dtype=np.int64), 2, bundle, None)
    assert flags == ["all examples are one class: accuracy only says how often that class is predicted"]
    _, flags, _ = score_logits(logits, np.array([0, 1] * 15), 2, bundle, None)
    assert not any("one class" in f for f in flags)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "conll"])
def test_fuzzed_files_give_a_dataset_or_one_line(tmp_path, kind):
    """Seeded and bounded: 60 random byte files per reader; each loads or is refused with a SqueezebenchError of one
    line, never another exception."""
    rng = random.Random(f"22-{kind}")
    pieces = [b"text", b"label", b",", b"\n", b"\r\n", b'"', b"{", b"}", b":", b" O", b" B-PER", b"\xe9", b"\xff",
              b"\x00", b"a", "й".encode(), b'{"text": "a", "label": 1}', b"-DOCSTART-", b"\t", b"text,label\n"]
    for i in range(60):
        path = tmp_path / f"f{i}.{kind}"
        path.write_bytes(b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))))
        try:
            load_dataset(f"{kind}:{path}")
        except SqueezebenchError as exc:
            assert "\n" not in str(exc).strip(), (path.read_bytes(), str(exc))


def test_duplicate_jsonl_key_is_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y", "text": "WRONG"}\n', encoding="utf-8")
    with pytest.raises(SqueezebenchError) as err:
        load_dataset(f"jsonl:{path}")
    assert str(err.value) == f"{path}:2 names key 'text' twice; keep one of them"


def test_latin1_file_in_a_text_folder_is_one_line(tmp_path):
    (tmp_path / "pos").mkdir()
    (tmp_path / "pos" / "a.txt").write_text("fine", encoding="utf-8")
    (tmp_path / "pos" / "b.txt").write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(SqueezebenchError, match=r"text file '.*b\.txt' is not UTF-8 \(byte 0xe9 on line 1\)"):
        load_dataset(f"text-dir:{tmp_path}")
