"""The training flag: a student whose training ended with its loss still high says so in its row (how far it got,
on its budget or not); a training that got its loss down, a row without training and an old record say nothing."""

from __future__ import annotations

from pathlib import Path

from squeezebench.measures import Row
from squeezebench.measures.training import TrainingMeasure, training_outcome
from squeezebench.report.table import collect
from squeezebench.results.schema import Record

ROOT = Path(__file__).resolve().parents[2]


def row(student=None):
    size = {"weights_bytes": 1, "weights_mb": 1e-6, **({"student": student} if student is not None else {})}
    rec = Record.model_validate({"model": {"name": "m"}, "task": {"name": "t"}, "method": "student:layers=3",
                                 "status": "ok", "build": {"status": "ok", "size": size}})
    return Row("team", "m", "t", "student:layers=3", cpu=rec, original={})


def outcome(**kw):
    return {"steps_requested": 200, "steps_done": 20, "stopped_by_budget": True, "loss_still_high": True,
            "loss_first": 3.0, "loss_last": 1.8, "loss_curve": [[1, 3.0], [20, 1.8]], **kw}


def test_a_student_stopped_with_a_high_loss_says_how_far_it_got():
    (flag,) = TrainingMeasure().flags(row(outcome()))
    assert flag == ("training ended on its time budget after 20 of 200 steps with the loss still 60% of its start "
                    "(raise steps= or budget_s=, or keep more layers)")
    (flag,) = TrainingMeasure().flags(row(outcome(stopped_by_budget=False, steps_done=200)))
    assert flag.startswith("training ended after 200 of 200 steps")


def test_no_flag_for_a_trained_down_loss_no_training_or_an_unreadable_outcome():
    assert TrainingMeasure().flags(row(outcome(loss_still_high=False, loss_last=0.3))) == []
    assert TrainingMeasure().flags(row()) == []
    assert training_outcome(row({"loss_first": "?"})) is None  # an older or a plug-in's facts: no verdict


def test_the_committed_whisper_student_row_carries_it():
    rows = {r.method: r for r in collect([ROOT / "results" / "whisper-student"])}
    short = rows["student:steps=200,decoder_layers=2,budget_s=900.0"]  # batch 16: 20 of 200 steps, loss still high
    assert any(f.startswith("training ended on its time budget after 20 of 200 steps") for f in short.flags)
    longer = rows["student:steps=200,batch_size=4,decoder_layers=2,budget_s=900.0"]  # 164 steps, loss at 21 %
    assert not any(f.startswith("training ended") for f in longer.flags)
