"""The CLI turns bad input into one line on stderr and a non-zero exit, never a traceback."""

import json
import subprocess
import sys

import pytest

from squeezebench.cli import main


@pytest.mark.parametrize("argv, message", [
    (["run", "--model", "/no/such/dir", "--task", "sentence-embedding"], "does not exist"),
    (["run", "--model", "x", "--task", "sentense-embedding"], "did you mean 'sentence-embedding'"),
    (["run", "--model", "offline:all-minilm-l6-v2", "--task", "sentence-embedding", "--methods", "fp61"],
     "did you mean 'fp16'"),
    (["run", "--model", "offline:minilm", "--task", "sentence-embedding"], "unknown offline model"),
    (["run", "--model", "offline:all-minilm-l6-v2", "--task", "sentence-embedding", "--dataset", "csv:/nope.csv"],
     "does not exist"),
    (["table", "/no/such/results"], "does not exist"),
])
def test_bad_input_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("squeezebench: error:") and message in err[0]


def test_non_positive_sizes_rejected_in_one_line(capsys):
    assert main(["run", "--model", "x", "--task", "causal-lm", "--batch-size", "0"]) == 2
    assert "--batch-size must be a positive number" in capsys.readouterr().err


def test_newer_schema_results_file_is_skipped_with_what_to_do(tmp_path, capsys, caplog):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "run-1.json").write_text(json.dumps({"schema_version": 999, "records": []}))
    assert main(["table", str(tmp_path)]) == 2
    assert "upgrade squeezebench" in caplog.text
    assert "no results found" in capsys.readouterr().err


def test_hub_id_while_offline_says_what_to_do(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "squeezebench", "run", "--model", "bert-base-uncased", "--task",
                           "sentence-embedding", "--limit", "10", "--out", str(tmp_path), "--devices", "cpu",
                           "--min-iters", "1", "--min-time", "0"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert "Traceback" not in proc.stderr
    assert "cannot reach the Hugging Face Hub" in proc.stdout + proc.stderr
    assert "pass a local directory" in proc.stdout + proc.stderr


def test_lists(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "fp16" in out and "bf16" in out and "original" in out and "distill" in out
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for t in ("sentence-embedding", "text-classification", "causal-lm", "image-classification", "perplexity"):
        assert t in out


@pytest.mark.parametrize("statuses, code", [(["ok", "skipped"], 0), (["ok", "failed", "ok"], 1), (["failed"], 1)])
def test_exit_code_is_1_when_any_variant_failed(monkeypatch, tmp_path, capsys, statuses, code):
    import squeezebench.report.table as table
    import squeezebench.runner as runner
    from squeezebench.cli import _run

    class FakeRunner:
        def __init__(self, config, progress):
            pass

        def run(self):
            from squeezebench.results import Record

            return [Record.model_validate({"model": {"name": "m"}, "task": {"name": "t"}, "method": "original",
                                           "status": s}) for s in statuses]

    monkeypatch.setattr(runner, "Runner", FakeRunner)
    monkeypatch.setattr(table, "table", lambda dirs: "TABLE")
    assert _run(runner.RunConfig(models=["m"], task="t", out=tmp_path)) == code
    assert "TABLE" in capsys.readouterr().out  # printed whatever the outcome


@pytest.mark.parametrize("team", [".", "..", "a/b"])
def test_team_that_is_not_a_plain_name(capsys, tmp_path, team):
    argv = ["run", "--model", "offline:all-minilm-l6-v2", "--task", "sentence-embedding", "--team", team,
            "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "--team must be a plain name" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_out_is_a_file_fails_before_any_build(capsys, tmp_path, image_dir):
    (tmp_path / "r").write_text("not a folder")
    argv = ["run", "--model", "python:tests.helpers_models:tiny_cnn", "--task", "image-classification",
            "--dataset", f"image-dir:{image_dir}", "--out", str(tmp_path / "r"), "--devices", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("squeezebench: error: --out") and "is a file, not a folder" in err[-1]
    assert not any("building" in line for line in err)


def test_methods_say_where_they_are_defined(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "defined in squeezebench.methods.precision:_cast" in out
    assert "defined in squeezebench.methods.export_onnx:onnx_export" in out
    assert "export; parameters" in out and "runtime; parameters" in out  # torch-compile is a runtime choice


def _blocks(out: str) -> dict[str, str]:
    """Method name -> its lines in `squeezebench methods` output."""
    blocks: dict[str, str] = {}
    name = None
    for line in out.splitlines():
        if line and not line.startswith(" "):
            name = line.split()[0]
            blocks[name] = line
        elif name is not None:
            blocks[name] += "\n" + line
    return blocks


def test_methods_for_a_model_and_task(capsys, tiny_bert_dir):
    assert main(["methods", "--model", str(tiny_bert_dir), "--task", "sentence-embedding"]) == 0
    out = capsys.readouterr().out
    blocks = _blocks(out)
    assert blocks["fp16"].endswith("applies")
    assert "does not apply: " in blocks["gguf"]  # not a causal LM (or llama.cpp missing): a stated reason either way
    assert "does not apply: runs on cuda only" in blocks["bnb-int8"]
    assert "does not apply: recovers what an earlier link lost" in blocks["distill"]
    fit = out.rstrip().splitlines()[-1]
    assert "methods apply to" in fit and " fp16," in fit and "bnb-int8" not in fit


def test_methods_model_needs_task(capsys):
    assert main(["methods", "--model", "offline:all-minilm-l6-v2"]) == 2
    assert "--model and --task go together" in capsys.readouterr().err


def test_methods_for_an_offline_model(capsys):
    assert main(["methods", "--model", "offline:all-minilm-l6-v2", "--task", "sentence-embedding"]) == 0
    blocks = _blocks(capsys.readouterr().out)
    assert blocks["int8-dynamic"].endswith("applies") and "does not apply: " in blocks["bnb-nf4"]
