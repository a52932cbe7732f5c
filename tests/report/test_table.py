import json

import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.report.table import headers, table, update_readme

JSON_KEYS = ["team", "model", "task", "method", "weights_size_mb", "cpu_ms", "gpu_ms", "ram_mb", "vram_mb",
             "quality_metric", "quality_value", "quality_higher_is_better", "flags"]
from squeezebench.results.store import RunFile

ENV = {"hostname": "h", "cpu": "cpu-x", "torch_threads": 2, "torch": "2.13", "transformers": "5"}


def record(team, method, device, median, size_bytes, acc, status="ok", ram=100.0, vram=None, flags=()):
    rec = {"team": team, "model": {"name": "m"}, "task": {"name": "sentence-embedding"}, "method": method,
           "device": device, "status": status, "finished": "2026-01-01T00:00:00",
           "protocol": {"warmup_iters": 5, "min_iters": 30, "min_time_s": 3.0},
           "build": {"status": "ok", "size": {"weights_bytes": size_bytes, "weights_mb": size_bytes / 1e6,
                                               "bits_per_weight": 32.0 * size_bytes / 4e6}}}
    if status != "ok":
        rec["reason"] = "no CUDA device visible to PyTorch"
        return rec
    rec.update(latency={"median": median, "std": 0.1, "timer": "perf_counter"}, input_shapes={"input_ids": [1, 128]},
               memory={"ram_mb": ram}, environment=dict(ENV, gpu="H200" if device == "cuda" else None),
               runtime={"name": "pytorch-eager", "threads": 2},
               quality={"primary": "accuracy", "flags": list(flags),
                        "metrics": {"accuracy": {"value": acc, "unit": "fraction", "ci95": [acc - 0.02, acc + 0.02]}}})
    if vram is not None:
        rec["memory"]["vram"] = {"peak_reserved_mb": vram, "peak_allocated_mb": vram}
    return rec


def write(dirpath, team, records):
    rf = RunFile(dirpath / team / "run-1.json", {"team": team})
    for r in records:
        rf.add(r)


@pytest.fixture
def two_teams(tmp_path):
    write(tmp_path / "a", "alpha", [
        record("alpha", "original", "cpu", 40.0, 4_000_000, 0.90),
        record("alpha", "original", "cuda", 2.0, 4_000_000, 0.90, vram=300.0),
        record("alpha", "fp16", "cpu", 80.0, 2_000_000, 0.89),
        record("alpha", "fp16", "cuda", 1.0, 2_000_000, 0.89, vram=200.0),
    ])
    write(tmp_path / "b", "beta", [
        record("beta", "original", "cpu", 50.0, 4_000_000, 0.90),
        record("beta", "original", "cuda", 0, 0, 0, status="skipped"),
        record("beta", "int8", "cpu", 25.0, 5_000_000, 0.80, flags=["chance-level: x"]),
    ])
    return [tmp_path / "a", tmp_path / "b"]


def test_markdown_headers_in_both_languages(two_teams):
    en = table(two_teams)
    assert en.splitlines()[0] == "| " + " | ".join(headers("en")) + " |"
    ru = table(two_teams, lang="ru")
    assert ru.splitlines()[0] == ("| Модель | Метод | Размер весов | Время инференса (CPU, ms) | Время инференса (GPU, ms) "
                                  "| Использование RAM (MB) | Использование VRAM (MB) | Качество (PPL, BLEU, Accuracy) |")


def test_merge_deltas_and_flags(two_teams):
    rows = {(r["team"], r["method"]): r for r in json.loads(table(two_teams, fmt="json"))}
    assert set(rows) == {("alpha", "original"), ("alpha", "fp16"), ("beta", "original"), ("beta", "int8")}
    assert [k for k in rows[("alpha", "fp16")] if k in JSON_KEYS] == JSON_KEYS  # plug-ins (tests) may add columns
    fp16 = rows[("alpha", "fp16")]
    assert fp16["cpu_ms"] == 80.0 and fp16["gpu_ms"] == 1.0 and fp16["vram_mb"] == 200.0
    assert "slower than original on CPU" in fp16["flags"]
    assert not any("GPU" in f for f in fp16["flags"])
    int8 = rows[("beta", "int8")]
    assert any(f.startswith("not compressed") for f in int8["flags"])
    assert any(f.startswith("chance-level") for f in int8["flags"])
    md = table(two_teams)
    fp16_line = next(l for l in md.splitlines() if "| fp16 |" in l)
    assert "(−50 %" in fp16_line and "0.50× of original" in fp16_line and "2.00× of original" in fp16_line
    assert "(-1.0 pt)" in fp16_line
    beta_orig = next(l for l in md.splitlines() if "[beta] | original" in l)
    assert "skipped: no CUDA device" in beta_orig


def test_csv_and_update_readme(two_teams, tmp_path):
    csv_text = table(two_teams, fmt="csv", lang="ru")
    assert csv_text.splitlines()[0].startswith("Модель,Метод,Размер весов")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- squeezebench:table demo -->\nold\n<!-- /squeezebench:table demo -->\nend\n")
    update_readme(readme, "NEW TABLE", "demo")
    assert readme.read_text() == "intro\n<!-- squeezebench:table demo -->\nNEW TABLE\n<!-- /squeezebench:table demo -->\nend\n"
    with pytest.raises(SqueezebenchError, match="has no"):
        update_readme(readme, "x")


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SqueezebenchError, match="no results found"):
        table([tmp_path])


def _with(rec, protocol=None, fingerprint=None, threads=None):
    rec = json.loads(json.dumps(rec))
    rec["protocol"].update(protocol or {})
    if fingerprint:
        rec["model"]["fingerprint"] = fingerprint
    if threads is not None and "environment" in rec:
        rec["environment"]["torch_threads"] = threads
        rec["runtime"]["threads"] = threads
    return rec


def test_mixed_protocols_render_as_separate_groups_without_cross_deltas(tmp_path):
    write(tmp_path, "alpha", [
        _with(record("alpha", "original", "cpu", 40.0, 4_000_000, 0.90), {"seq_len": 128}),
        _with(record("alpha", "fp16", "cpu", 80.0, 2_000_000, 0.89), {"seq_len": 128}),
        _with(record("alpha", "fp16", "cpu", 11.0, 2_000_000, 0.70), {"seq_len": 16}),
    ])
    md = table([tmp_path])
    lines = [l for l in md.splitlines() if "| fp16 |" in l]
    assert len(lines) == 2  # the earlier fp16 row is kept beside the new one
    short = next(l for l in lines if "11.00" in l)
    assert "(G2)" in short and "× of original" not in short and " pt)" not in short
    long = next(l for l in lines if "80.00" in l)
    assert "(G1)" in long and "0.50× of original" in long
    assert "G2: sentence-embedding" in md and "seq_len=16" in md


def test_thread_counts_never_pair_across_folders(tmp_path):
    write(tmp_path / "one", "t", [_with(record("t", "original", "cpu", 40.0, 4_000_000, 0.9), {"threads": 1}, threads=1)])
    write(tmp_path / "two", "u", [_with(record("u", "original", "cpu", 40.0, 4_000_000, 0.9), {"threads": 2}, threads=2),
                                  _with(record("u", "fp16", "cpu", 20.0, 2_000_000, 0.9), {"threads": 2}, threads=2)])
    rows = json.loads(table([tmp_path / "one", tmp_path / "two"], fmt="json"))
    assert len(rows) == 3
    md = table([tmp_path / "one", tmp_path / "two"])
    assert "2.00× of original" in md  # u's fp16 against u's original, both 2 threads
    assert md.count("× of original") == 1
    assert "1 threads" in md and "2 threads" in md  # each protocol line says how it was timed


def test_same_model_name_other_files_are_separate_rows(tmp_path):
    write(tmp_path, "t", [_with(record("t", "original", "cpu", 40.0, 4_000_000, 0.9), fingerprint="aaaa"),
                          _with(record("t", "original", "cpu", 30.0, 4_000_000, 0.8), fingerprint="bbbb")])
    md = table([tmp_path])
    assert "m (aaaa)" in md and "m (bbbb)" in md


def test_russian_translates_cells_flags_and_notes(two_teams):
    ru = table(two_teams, lang="ru")
    fp16_line = next(l for l in ru.splitlines() if "| fp16 |" in l)
    assert "0.50× от оригинала" in fp16_line and "⚠ медленнее оригинала на CPU" in fp16_line
    assert "of original" not in fp16_line and "slower" not in fp16_line
    beta_orig = next(l for l in ru.splitlines() if "[beta] | original" in l)
    assert "— (пропущен: no CUDA device visible to PyTorch)" in beta_orig  # the reason is the method's own words
    int8 = next(l for l in ru.splitlines() if "[beta] | int8" in l)
    assert "⚠ не сжата: сохранённые веса не меньше, чем у оригинала" in int8
    notes = [l for l in ru.splitlines() if l.startswith("- ")]
    assert any("потоков: 2" in n and "прогревочных запусков" in n for n in notes)
    assert notes[-1].startswith("- Размер весов: байты сохранённых файлов весов")
    assert "threads" not in ru and "Weights size" not in ru
    assert "slower than original on CPU" in table(two_teams)  # English is unchanged
    rows = json.loads(table(two_teams, fmt="json", lang="ru"))  # JSON stays machine-readable English
    assert "slower than original on CPU" in next(r for r in rows if r["method"] == "fp16")["flags"]


def _speech(method, wer, cer, agreement=None):
    metrics = {"wer": {"value": wer, "unit": "fraction", "higher_is_better": False, "ci95": [wer - 0.05, wer + 0.05]},
               "real_time_factor": {"value": 0.1234, "unit": "ratio", "higher_is_better": False},
               "cer": {"value": cer, "unit": "fraction", "higher_is_better": False}}
    if agreement is not None:
        metrics["transcript_agreement"] = {"value": agreement, "unit": "fraction"}
    rec = record("s", method, "cpu", 10.0, 4_000_000, 0.0)
    rec["task"] = {"name": "speech-recognition"}
    rec["quality"] = {"primary": "wer", "metrics": metrics, "flags": []}
    return rec


def test_error_rates_show_in_percent_with_a_delta_in_percentage_points(tmp_path):
    write(tmp_path, "s", [_speech("original", 0.0981, 0.05), _speech("int8", 0.1234, 0.061, 0.75)])
    rows = {r["method"]: r for r in json.loads(table([tmp_path], fmt="json"))}
    assert rows["int8"]["quality_value"] == 0.1234  # stored and exported as a fraction
    md = table([tmp_path])
    orig = next(l for l in md.splitlines() if "| original |" in l)
    int8 = next(l for l in md.splitlines() if "| int8 |" in l)
    assert "WER 9.81 % [4.81–14.81]; CER 5.00 %; RTF 0.123 |" in orig
    # the task's order (wer, cer, transcript_agreement, real_time_factor), not the record's
    assert "WER 12.34 % [7.34–17.34] (+2.5 pp); CER 6.10 %; same transcript 0.7500; RTF 0.123 ⚠" in int8
    ru = table([tmp_path], lang="ru")
    assert "WER 12.34 % [7.34–17.34] (+2.5 п.п.); CER 6.10 %; та же транскрипция 0.7500" in ru


def test_a_newly_registered_metric_shows_from_its_own_declaration(tmp_path):
    from squeezebench.measures.quality import METRICS, Metric, register_metric

    if "toy_share_of_vowels" not in METRICS:
        register_metric(Metric("toy_share_of_vowels", "fraction", True, 1, "a metric of this test only",
                               label="vowels", scale=100.0, suffix=" %", decimals=1))
    rec = record("alpha", "original", "cpu", 40.0, 4_000_000, 0.9)
    rec["quality"]["metrics"]["toy_share_of_vowels"] = {"value": 0.4567, "unit": "fraction"}
    write(tmp_path, "alpha", [rec])
    assert "accuracy 0.9000 [0.8800–0.9200]; vowels 45.7 % |" in table([tmp_path])
