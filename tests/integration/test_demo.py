"""The real offline demo (all-MiniLM-L6-v2 on BBC News) on a small subset, as a user runs it."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_prints_a_full_cpu_table(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "squeezebench", "demo", "--limit", "60", "--min-time", "0.5",
                           "--min-iters", "10", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("| Model |"))
    rows = [l for l in lines[header + 2:] if l.startswith("|")]
    assert [r.split(" | ")[1] for r in rows] == ["original", "bf16", "fp16"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[0] == "all-MiniLM-L6-v2"
        assert cells[2].endswith("bit/w)") or "bit/w" in cells[2]
        float(cells[3].split(" ")[0])  # CPU ms filled
        float(cells[5].split(" ")[0])  # RAM filled
        assert cells[7].startswith("accuracy 0.")
        import torch

        if not torch.cuda.is_available():
            assert "no CUDA device" in cells[4]
    assert "[1/6]" in proc.stderr  # progress display
    # the original 90.9 MB safetensors, halved by fp16/bf16
    assert "90.9 MB" in rows[0]
    data = json.loads(subprocess.run([sys.executable, "-m", "squeezebench", "table", str(tmp_path), "--format", "json"],
                                     capture_output=True, text=True, check=True).stdout)
    orig = next(r for r in data if r["method"] == "original")
    assert orig["quality_value"] > 0.5  # BBC News topics are easy for MiniLM embeddings
