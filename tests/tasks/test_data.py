import json

import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.tasks.data import DatasetOptions, load_dataset


def test_csv_labels_and_deterministic_balanced_subset(topic_csv):
    ds = load_dataset(f"csv:{topic_csv}")
    assert ds.label_names == ["business", "sport", "tech"]
    a = ds.subset(9, seed=3)
    b = ds.subset(9, seed=3)
    assert [e["text"] for e in a.examples] == [e["text"] for e in b.examples]
    assert sorted(e["label"] for e in a.examples) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.subset(9, seed=4).fingerprint() != a.fingerprint()


def test_split_is_stratified_and_disjoint(topic_csv):
    train, test = load_dataset(f"csv:{topic_csv}").split(0.5, seed=0)
    assert len(train.examples) + len(test.examples) == 36
    assert {e["label"] for e in test.examples} == {0, 1, 2}
    assert not {e["text"] for e in train.examples} & {e["text"] for e in test.examples}


def test_missing_column_names_columns(topic_csv):
    with pytest.raises(SqueezebenchError, match=r"no column 'body' \(columns: text, label\)"):
        load_dataset(f"csv:{topic_csv}", DatasetOptions(text_column="body"))


def test_jsonl_and_empty(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"text": f"t{i}", "label": i % 2}) for i in range(4)))
    assert load_dataset(f"jsonl:{p}").label_names == ["0", "1"]
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(SqueezebenchError, match="empty"):
        load_dataset(f"jsonl:{empty}")


def test_missing_path_and_unknown_kind():
    with pytest.raises(SqueezebenchError, match="does not exist"):
        load_dataset("csv:/nope/x.csv")
    with pytest.raises(SqueezebenchError, match="did you mean 'csv'"):
        load_dataset("cvs:/x")


def test_builtin_bbc_news():
    ds = load_dataset("bbc-news")
    assert len(ds.examples) == 2225
    assert ds.label_names == ["business", "entertainment", "politics", "sports", "tech"]


def test_image_dir(image_dir):
    ds = load_dataset(f"image-dir:{image_dir}")
    assert len(ds.examples) == 12 and ds.label_names == ["class0", "class1", "class2"]


def _balanced(n_classes: int, per_class: int):
    from squeezebench.tasks.data import Dataset

    # class by class, as a CSV sorted by label would be
    return Dataset("x", [{"text": f"{c}-{i}", "label": c} for c in range(n_classes) for i in range(per_class)])


@pytest.mark.parametrize("n_classes, per_class", [(2, 10), (4, 10), (4, 3), (2, 2), (3, 7)])
def test_split_holds_every_class_on_both_sides(n_classes, per_class):
    ds = _balanced(n_classes, per_class)
    train, test = ds.split(0.5, seed=0)
    assert {e["label"] for e in train.examples} == set(range(n_classes))
    assert {e["label"] for e in test.examples} == set(range(n_classes))
    assert len(train.examples) + len(test.examples) == n_classes * per_class
    assert not {e["text"] for e in train.examples} & {e["text"] for e in test.examples}
    again = ds.split(0.5, seed=0)[1]
    assert [e["text"] for e in again.examples] == [e["text"] for e in test.examples]  # deterministic
    assert [e["text"] for e in ds.split(0.5, seed=1)[1].examples] != [e["text"] for e in test.examples] or per_class <= 2


def test_split_per_class_fraction():
    train, test = _balanced(4, 10).split(0.3, seed=0)
    for c in range(4):
        assert sum(e["label"] == c for e in test.examples) == 3


def test_latin1_csv_is_refused_with_the_line(tmp_path):
    p = tmp_path / "l1.csv"
    p.write_bytes("text,label\nok,a\ncaf\u00e9 cr\u00e8me,b\n".encode("latin-1"))
    with pytest.raises(SqueezebenchError, match=r"not UTF-8 \(byte 0xe9 on line 3\).*iconv"):
        load_dataset(f"csv:{p}")
    p.write_bytes("\ufefftext,label\ncaf\u00e9,a\n".encode("utf-8"))  # UTF-8 with a BOM is fine
    assert load_dataset(f"csv:{p}").examples[0]["text"] == "caf\u00e9"


def test_unicode_digit_label_sorts_without_crashing(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\na,\u00b2\nb,10\nc,2\nd,-1\ne,x\n", encoding="utf-8")
    assert load_dataset(f"csv:{p}").label_names == ["-1", "2", "10", "x", "\u00b2"]


@pytest.mark.parametrize("line, message", [
    ("[1,2,3]", r"d.jsonl:2 is a JSON list, not an object"),
    ('"text"', r"d.jsonl:2 is a JSON str, not an object"),
    ("{nope", r"d.jsonl:2 is not valid JSON"),
    ("[" * 200000, r"d.jsonl:2 is not valid JSON"),
])
def test_jsonl_line_that_is_not_an_object(tmp_path, line, message):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"text": "a", "label": 1}) + "\n" + line + "\n")
    with pytest.raises(SqueezebenchError, match=message):
        load_dataset(f"jsonl:{p}")


@pytest.mark.parametrize("content, message", [
    ("", "is empty"), ("\n\n", "is empty"), ("text,label\n", "has a header but no rows"),
    ("text,label\nhello\n", "row 1 has no value in column 'label'"),
])
def test_empty_header_only_and_short_csv(tmp_path, content, message):
    p = tmp_path / "d.csv"
    p.write_text(content)
    with pytest.raises(SqueezebenchError, match=message):
        load_dataset(f"csv:{p}")
