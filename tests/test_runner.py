"""End-to-end runs on tiny config-built models: every task, the core methods, resume, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.results import iter_records
from squeezebench.runner import RunConfig, Runner
from squeezebench.tasks.data import DatasetOptions
from tests.conftest import fast_protocol


def run(tmp_path: Path, **kw) -> list[dict]:
    """The records as written to the run file (JSON values)."""
    config = RunConfig(out=tmp_path / "results", team="t", protocol=kw.pop("protocol", fast_protocol()), **kw)
    return [r.dump() for r in Runner(config).run()]


def by_method(records):
    return {(r["method"], r["device"]): r for r in records}


def test_sentence_embedding_original_fp16_bf16(tmp_path, tiny_bert_dir, topic_csv):
    recs = by_method(run(tmp_path, models=[str(tiny_bert_dir)], task="sentence-embedding",
                         methods=["original", "fp16", "bf16"], dataset=f"csv:{topic_csv}"))
    orig, fp16 = recs[("original", "cpu")], recs[("fp16", "cpu")]
    assert orig["status"] == "ok", orig
    assert fp16["status"] == "ok", fp16
    # size = bytes of the saved files, halved by fp16
    files = Path(orig["build"]["size"]["weight_files"][0])
    assert orig["build"]["size"]["weights_bytes"] > 0
    assert 0.45 < fp16["build"]["size"]["weights_bytes"] / orig["build"]["size"]["weights_bytes"] < 0.55
    assert abs(orig["build"]["size"]["bits_per_weight"] - 32) < 1
    lat = orig["latency"]
    assert lat["iterations"] >= 3 and lat["median"] > 0 and len(lat["samples"]) == lat["iterations"]
    mem = orig["memory"]
    assert mem["peak_rss_mb"] >= mem["baseline_rss_mb"] > 0
    # the kernel's own accounting of the child agrees with what the child read from /proc; a forked child's
    # ru_maxrss starts at the parent's peak RSS (here pytest's), so the larger of the two is what the kernel reports
    # (how much of the parent's peak a child inherits depends on how it was forked: bounded by both)
    kernel = mem["os_child_maxrss_mb"]
    assert mem["process_peak_rss_mb"] * 0.95 <= kernel <= max(mem["process_peak_rss_mb"],
                                                              mem["parent_peak_rss_at_spawn_mb"]) * 1.05
    q = orig["quality"]
    assert q["primary"] == "accuracy" and 0 <= q["metrics"]["accuracy"]["value"] <= 1
    assert len(q["metrics"]["accuracy"]["ci95"]) == 2
    # fp16 is compared with the original's embeddings
    assert fp16["quality"]["metrics"]["cosine_to_original"]["value"] > 0.99
    assert orig["environment"]["torch"] and orig["runtime"]["name"] == "pytorch-eager"


def test_text_classification_flags_untrained_head(tmp_path, tiny_bert_dir, topic_csv):
    recs = run(tmp_path, models=[str(tiny_bert_dir)], task="text-classification", methods=["original"],
               dataset=f"csv:{topic_csv}")
    rec = recs[0]
    assert rec["status"] == "ok", rec
    flags = " ".join(rec["quality"]["flags"])
    assert "untrained weights" in flags and "classifier" in flags
    assert "chance-level" in flags  # a random head cannot beat chance on 36 examples


def test_causal_lm_perplexity_and_generation(tmp_path, tiny_llama_dir, topic_csv):
    recs = by_method(run(tmp_path, models=[str(tiny_llama_dir)], task="causal-lm", methods=["original", "bf16"],
                         dataset=f"csv:{topic_csv}"))
    orig = recs[("original", "cpu")]
    assert orig["status"] == "ok", orig
    m = orig["quality"]["metrics"]
    # random weights over a 30k vocabulary: perplexity near the vocabulary size
    assert 1000 < m["perplexity"]["value"] < 200000
    p = orig["quality"]["protocol"]
    assert p["window"] == 32 and p["stride"] == 16 and p["tokens_scored"] > 0 and p["dataset_fingerprint"]
    gen = orig["generation"]  # the generation measure's own section, no longer inside quality
    assert gen["time_to_first_token"]["value"] > 0 and gen["decode_tokens_per_s"]["value"] > 0
    assert "decode_tokens_per_s" not in m and gen["protocol"]["gen_new_tokens"] > 0
    assert orig["contention"]["window_s"] > 0 and "contention" not in orig["latency"]
    bf16 = recs[("bf16", "cpu")]
    assert bf16["status"] == "ok", bf16
    assert 0.9 < bf16["quality"]["metrics"]["top1_agreement"]["value"] <= 1.0


def test_image_classification_own_model(tmp_path, image_dir):
    recs = run(tmp_path, models=["python:tests.helpers_models:tiny_cnn"], task="image-classification",
               methods=["original"], dataset=f"image-dir:{image_dir}")
    rec = recs[0]
    assert rec["status"] == "ok", rec
    assert "top5_accuracy" not in rec["quality"]["metrics"]  # only 3 classes
    assert rec["input_shapes"] == {"pixel_values": [1, 3, 32, 32]}


def test_failures_are_recorded_and_the_run_goes_on(tmp_path, image_dir):
    recs = run(tmp_path, models=["python:tests.helpers_models:broken", "python:tests.helpers_models:crash_on_load",
                                 "python:tests.helpers_models:tiny_cnn"],
               task="image-classification", methods=["original"], dataset=f"image-dir:{image_dir}")
    status = [r["status"] for r in recs]
    assert status == ["failed", "failed", "ok"]
    assert "broken on purpose" in recs[0]["error"]
    assert "exit code 17" in recs[1]["error"]
    on_disk = list(iter_records([tmp_path / "results"]))
    assert [r.status for r in on_disk] == status


def test_resume_skips_measured_variants_unless_forced(tmp_path, image_dir):
    kw = dict(models=["python:tests.helpers_models:tiny_cnn"], task="image-classification", methods=["original"],
              dataset=f"image-dir:{image_dir}")
    first = run(tmp_path, **kw)
    again = run(tmp_path, **kw)
    assert again[0]["finished"] == first[0]["finished"]
    forced = run(tmp_path, force=True, **kw)
    assert forced[0]["finished"] != first[0]["finished"]


def test_a_method_past_its_first_version_is_measured_again_not_resumed(tmp_path, image_dir, monkeypatch):
    """The same text (``fp16``) built by a newer config version (a changed default) is not the earlier record: it is
    measured again, into its own artifact folder, and its record's chain says the version; then it resumes."""
    from squeezebench.methods.precision import Fp16Config
    from squeezebench.results import Record
    from squeezebench.runner import artifact_dir_of

    kw = dict(models=["python:tests.helpers_models:tiny_cnn"], task="image-classification", methods=["fp16"],
              dataset=f"image-dir:{image_dir}")
    first = run(tmp_path, **kw)
    assert first[0]["status"] == "ok" and first[0]["chain"][0]["version"] == 1
    monkeypatch.setattr(Fp16Config, "version", 2)
    second = run(tmp_path, **kw)
    assert second[0]["finished"] != first[0]["finished"] and second[0]["chain"][0]["version"] == 2
    assert run(tmp_path, **kw)[0]["finished"] == second[0]["finished"]  # version 2 resumes version 2
    out = tmp_path / "results"
    dirs = {artifact_dir_of(out, Record.model_validate(r)) for r in (first[0], second[0])}
    assert len(dirs) == 2
    legacy = dict(first[0], chain=[{"name": "fp16", "params": {}}])  # recorded before configs had versions
    assert artifact_dir_of(out, Record.model_validate(legacy)) == artifact_dir_of(out, Record.model_validate(first[0]))


def test_cuda_without_gpu_is_skipped_with_reason(tmp_path, image_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    recs = run(tmp_path, models=["python:tests.helpers_models:tiny_cnn"], task="image-classification",
               methods=["original"], devices=["cuda"], dataset=f"image-dir:{image_dir}")
    assert recs[0]["status"] == "skipped" and "CUDA" in recs[0]["reason"]


@pytest.mark.parametrize("kw, message", [
    (dict(task="sentence-embeding"), "did you mean 'sentence-embedding'"),
    (dict(methods=["fp61"]), "did you mean 'fp16'"),
    (dict(models=["/no/such/model"]), "does not exist"),
    (dict(dataset="csv:/no/such.csv"), "does not exist"),
    (dict(protocol=fast_protocol(batch_size=0)), "--batch-size must be a positive number"),
    (dict(dataset_options=DatasetOptions(text_column="body")), "no column 'body'"),
])
def test_bad_input_fails_before_any_variant(tmp_path, tiny_bert_dir, topic_csv, kw, message):
    base = dict(models=[str(tiny_bert_dir)], task="sentence-embedding", methods=["original"], dataset=f"csv:{topic_csv}")
    base.update(kw)
    with pytest.raises(SqueezebenchError, match=message):
        Runner(RunConfig(out=tmp_path / "r", team="t", protocol=base.pop("protocol", fast_protocol()), **base))
    assert not (tmp_path / "r").exists()


def test_pruned_then_distilled_variant_is_saved_reloaded_and_closer_to_the_original(tmp_path, tiny_bert_dir,
                                                                                     topic_csv):
    pruned, distilled = "prune-structured:ratio=0.5", "prune-structured:ratio=0.5+distill:steps=40,batch_size=4,lr=0.001"
    recs = by_method(run(tmp_path, models=[str(tiny_bert_dir)], task="sentence-embedding",
                         methods=["original", pruned, distilled], dataset=f"csv:{topic_csv}",
                         protocol=fast_protocol(calibration_samples=32)))
    p = recs[("prune-structured:ratio=0.5", "cpu")]
    d = recs[("prune-structured:ratio=0.5+distill:steps=40,batch_size=4,lr=0.001", "cpu")]
    assert d["status"] == "ok", d
    assert d["build"]["size"]["weights_bytes"] == p["build"]["size"]["weights_bytes"]  # same shapes
    facts = d["build"]["size"]["distill"]
    assert facts["loss_last"] < facts["loss_first"] and facts["blocks_matched"] == 2
    cos_p = p["quality"]["metrics"]["cosine_to_original"]["value"]
    cos_d = d["quality"]["metrics"]["cosine_to_original"]["value"]
    assert 1 - cos_d < 1 - cos_p, (cos_p, cos_d)  # measured on the reloaded artifact
