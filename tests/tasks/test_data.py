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
