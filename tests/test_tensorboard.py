"""`train.log=tensorboard`: the logged scalars and the evaluation's metrics and figures, read back
with TensorBoard's own event reader; a resumed run purges the steps past its checkpoint."""

from __future__ import annotations

import csv

import pytest

from conftest import tiny

pytestmark = pytest.mark.usefixtures("one_thread")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def events(run):
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_events_hold_every_logged_scalar_and_the_evaluation(tmp_path, cli):
    run = tmp_path / "run"
    ran = cli("train", "digits", "--out", run, "--no-progress",
              *tiny("digits", "train.steps=4", "train.log_every=2", "train.log=tensorboard"))
    assert ran.code == 0, ran.err
    with (run / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    acc = events(run)
    tags = acc.Tags()["scalars"]
    for key in rows[0]:
        if key == "step":
            continue
        got = [(e.step, e.value) for e in acc.Scalars(f"train/{key}")]
        assert got == [(int(r["step"]), pytest.approx(float(r[key]), rel=1e-6)) for r in rows], key
    assert "train/lr" in tags and "train/loss" in tags
    assert any(t.startswith("eval/") for t in tags)
    assert acc.Tags()["images"]  # the report's figures


def test_without_the_setting_no_events_are_written(digits_run):
    assert not (digits_run / "tensorboard").exists()


def test_a_resumed_run_purges_the_steps_past_its_checkpoint(tmp_path, cli):
    run = tmp_path / "run"
    args = ["--no-progress", *tiny("digits", "train.steps=4", "train.log_every=1", "train.checkpoint_every=2",
                                   "train.log=tensorboard")]
    assert cli("train", "digits", "--out", run, *args).code == 0
    import shutil

    from unmask.train.checkpoint import list_checkpoints

    shutil.rmtree(list_checkpoints(run)[-1])  # as if killed after step 4 was logged, before it was kept
    assert cli("train", "digits", "--out", run, *args).code == 0
    steps = [e.step for e in events(run).Scalars("train/loss")]
    assert steps == [1, 2, 3, 4]
