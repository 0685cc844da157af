"""A run folder is owned, a checkpoint is whole or refused, and bad numbers stop before they cost
anything: one test per failure a careless or hostile user met (docs/reliability.md)."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from conftest import tiny
from reliability_helpers import copy_run, edit_config, resign, tree
from unmask.recipes import get
from unmask.recipes.memory import check_fits, estimate
from unmask.train import checkpoint as checkpoint_module
from unmask.train.checkpoint import _sha256, list_checkpoints, verify

pytestmark = pytest.mark.usefixtures("one_thread")


def digits(*changes):
    return [*tiny("digits", *changes), "--no-progress"]



def one_error_line(ran, *needles):
    assert ran.code == 2, ran
    assert "Traceback" not in ran.err
    lines = ran.err.strip().splitlines()
    assert lines[-1].startswith("unmask: error: "), ran.err
    assert all(line.startswith("unmask: warning: ") for line in lines[:-1]), ran.err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


# 1. one writer per run folder ------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path, digits_run, cli):
    run = copy_run(digits_run, tmp_path / "run")
    before = tree(run)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom unmask.train.lock import hold\n"
         f"with hold({str(run)!r}):\n    print('held', flush=True)\n    time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        ran = cli("train", "digits", "--out", run, *digits("train.steps=4"), "--change", "train.steps")
        one_error_line(ran, f"in use by process {holder.pid} on {socket.gethostname()}")
        assert one_error_line(cli("eval", run), f"process {holder.pid}")
        assert tree(run) == before  # the refused commands touched nothing of the holder's
    finally:
        holder.kill()
        holder.wait()
    ran = cli("train", "digits", "--out", run, *digits("train.steps=3"), "--change", "train.steps")
    assert ran.code == 0, ran.err  # the dead holder's lock is taken over
    assert checkpoint_module.load_checkpoint(list_checkpoints(run)[-1])[2]["step"] == 3


def test_the_lock_is_reentrant_in_one_process_and_free_after(tmp_path):
    from unmask.errors import UnmaskError
    from unmask.train.lock import _HELD, hold

    with hold(tmp_path), hold(tmp_path):
        assert len(_HELD) == 1
    assert _HELD == {}
    probe = ("import sys\nfrom unmask.train.lock import hold\n"
             f"with hold({str(tmp_path)!r}): print('ok')")
    with hold(tmp_path):
        other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert other.returncode != 0 and "UnmaskError" in other.stderr and "in use by" in other.stderr
    other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert other.stdout.strip() == "ok", other.stderr
    with pytest.raises(UnmaskError):  # sanity: the error type is ours
        raise UnmaskError("x")


# 2. metrics.csv ---------------------------------------------------------------------------------
def rows(run):
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_that_died_before_its_first_checkpoint_leaves_no_duplicate_rows(tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    # what a run killed at step 3 of 4 before any checkpoint leaves: three rows, no checkpoint
    (run / "metrics.csv").write_text("step,lr,loss\n1,0.1,2.0\n2,0.1,1.9\n3,0.1,1.8\n")
    ran = cli("train", "digits", "--out", run, *digits("train.log_every=1"))
    assert ran.code == 0, ran.err
    assert [r["step"] for r in rows(run)] == ["1", "2"]
    assert all(r["loss"] not in ("2.0", "1.9") for r in rows(run))  # the dead run's rows are gone


def test_a_torn_last_row_never_merges_with_the_next_runs_first_row(tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,lr,loss\n1,0.1,2.0\n2,0.1,1.")  # a full disk cut the row
    ran = cli("train", "digits", "--out", run, *digits("train.log_every=1"))
    assert ran.code == 0, ran.err
    text = (run / "metrics.csv").read_text()
    assert text.endswith("\n") and "1.1" not in text.split("\n")[1]
    got = rows(run)
    assert [r["step"] for r in got] == ["1", "2"]
    assert all(None not in r and all(v != "" for v in r.values()) for r in got)


# 3. a checkpoint is exactly its manifest ---------------------------------------------------------
def test_a_file_the_manifest_does_not_list_is_refused(tmp_path, digits_run, cli):
    run = copy_run(digits_run, tmp_path / "run")
    ckpt = list_checkpoints(run)[-1]
    model = checkpoint_module.load_file(str(ckpt / "model.safetensors"))
    save_file({k: torch.zeros_like(v) for k, v in model.items()}, str(ckpt / "ema.safetensors"))
    assert verify(ckpt) == "ema.safetensors is in the folder but not in state.json"
    one_error_line(cli("eval", run), "ema.safetensors is in the folder but not in state.json")


def test_the_manifest_checksum_is_required(tmp_path, digits_run, cli):
    run = copy_run(digits_run, tmp_path / "run")
    ckpt = list_checkpoints(run)[-1]
    state = json.loads((ckpt / "state.json").read_text())
    del state["state_sha256"]
    (ckpt / "state.json").write_text(json.dumps(state))
    assert verify(ckpt) == "state.json has no checksum of its own"
    one_error_line(cli("eval", run), "no checksum of its own")


def test_checksums_stream_and_a_size_mismatch_is_caught_before_hashing(tmp_path, monkeypatch):
    import hashlib
    from pathlib import Path

    big = tmp_path / "big.bin"
    payload = bytes(range(256)) * 40_000
    big.write_bytes(payload)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("a whole file read into memory"))
    assert _sha256(big) == hashlib.sha256(payload).hexdigest()
    ckpt = tmp_path / "step_00000001"
    ckpt.mkdir()
    for name in ("model.safetensors", "config.json"):
        (ckpt / name).write_bytes(b"x" * 10)
    state = {"step": 1, "files": {"model.safetensors": "0" * 64, "config.json": "0" * 64},
             "sizes": {"model.safetensors": 50 * 2**30, "config.json": 10}}
    state["state_sha256"] = checkpoint_module._state_digest(state)
    (ckpt / "state.json").write_text(json.dumps(state))
    hashed = []
    monkeypatch.setattr(checkpoint_module, "_sha256", lambda p: hashed.append(p) or "0" * 64)
    assert verify(ckpt) == f"model.safetensors has 10 bytes, not the {50 * 2**30} state.json lists"
    assert hashed == []


# 4. settings read from disk are validated before anything is built --------------------------------
@pytest.mark.parametrize("value, needle", [("16", "model.dim='16' is not of type int"),
                                           (10**6, "needs about"), (4, "model.dim=4 is out of range")])
def test_settings_in_a_checkpoint_are_validated_before_use(tmp_path, digits_run, cli, value, needle):
    run = copy_run(digits_run, tmp_path / "run")
    edit_config(run, lambda c: c["settings"]["model"].update(dim=value))
    started = time.perf_counter()
    one_error_line(cli("eval", run), needle)
    one_error_line(cli("sample", run, "--n", "2"), needle)
    assert time.perf_counter() - started < 20  # nothing of 10**6 width was allocated


def test_optimizer_moments_of_the_wrong_shape_are_refused_on_resume(tmp_path, digits_run, cli):
    run = copy_run(digits_run, tmp_path / "run")
    ckpt = list_checkpoints(run)[-1]
    opt = checkpoint_module.load_file(str(ckpt / "optimizer.safetensors"))
    key = next(k for k, v in opt.items() if v.ndim == 2)
    opt[key] = opt[key].reshape(-1)[: opt[key].shape[0]].clone()  # a moment of another shape
    save_file(opt, str(ckpt / "optimizer.safetensors"))
    resign(ckpt)
    ran = cli("train", "digits", "--out", run, *digits("train.steps=3"), "--change", "train.steps")
    one_error_line(ran, f"optimizer state {key} has shape")


# 5. sizes are checked against memory before allocating ---------------------------------------------
@pytest.mark.parametrize("recipe, setting", [
    ("digits", "train.batch_size=1000000000"), ("digits", "model.dim=1000000"),
    ("digits", "model.depth=1000000"), ("digits", "eval.n_samples=1000000000"),
    ("mlm-code", "data.vocab_size=1000000000")])
def test_sizes_that_cannot_fit_are_refused_in_one_line_at_once(tmp_path, cli, recipe, setting):
    started = time.perf_counter()
    ran = cli("train", recipe, "--out", tmp_path / "run", *tiny(recipe, setting))
    one_error_line(ran, "needs about", "GiB", "this machine has")
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "run").exists()


def test_sampling_more_than_fits_is_refused(tmp_path, digits_run, cli):
    one_error_line(cli("sample", digits_run, "--n", str(10**9), "--out", tmp_path / "s.png"),
                   "generating 1,000,000,000 samples needs about")
    assert not (tmp_path / "s.png").exists()


def test_the_memory_rule_on_a_hand_computed_case():
    """dim 16, depth 1, vocab 256 and 256 tokens (the defaults where settings name neither):
    parameters 12*16^2 + 2*257*16 + 256*16 = 3072 + 8224 + 4096 = 15,392."""
    settings = get("digits")().with_overrides(["model.dim=16", "model.depth=1", "model.heads=2"]).settings
    est = estimate(settings)
    assert est.params == 15_392
    per_example = 4 * 256 * (24 * 16 + 2 * 256 + 3 * 256)
    assert est.train_bytes == 4 * 15_392 * 4 + settings.train.batch_size * per_example
    check_fits(settings, "digits", available=est.peak)
    from unmask.errors import UnmaskError

    with pytest.raises(UnmaskError, match="needs about"):
        check_fits(settings, "digits", available=est.peak - 1)


# 6. a full disk ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [SafetensorError("Error while serializing: No space left on device (os error 28)"),
                                   OSError(28, "No space left on device")])
def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_earlier_ones(tmp_path, cli, monkeypatch, error):
    run = tmp_path / "run"
    real = checkpoint_module.save_file
    calls = []

    def save_file_once(tensors, path):
        calls.append(path)
        if "step_00000002" in path:
            raise error
        return real(tensors, path)

    monkeypatch.setattr(checkpoint_module, "save_file", save_file_once)
    ran = cli("train", "digits", "--out", run, *digits("train.checkpoint_every=1"))
    one_error_line(ran, "could not write checkpoint", "No space left on device", "earlier checkpoints are kept")
    (only,) = list_checkpoints(run)
    assert only.name == "step_00000001" and verify(only) is None
    assert not list((run / "checkpoints").glob(".tmp-*"))


# 7. resuming under other settings ---------------------------------------------------------------------
def test_resuming_a_finished_run_with_fewer_steps_is_refused(tmp_path, digits_run, cli):
    run = copy_run(digits_run, tmp_path / "run")
    before = tree(run)
    one_error_line(cli("train", "digits", "--out", run, *digits("train.steps=1")), "at step 2, past train.steps=1")
    assert tree(run) == before


def test_resuming_with_settings_that_change_the_result_is_refused_naming_them(tmp_path, digits_run, cli):
    run = copy_run(digits_run, tmp_path / "run")
    before = tree(run)
    line = one_error_line(cli("train", "digits", "--out", run, *digits("train.seed=9", "train.lr=0.05")),
                          "train.lr is 0.002 there, 0.05 here", "train.seed is 0 there, 9 here")
    assert "--fresh" in line
    one_error_line(cli("train", "digits", "--out", run, *digits("train.steps=3")), "--change train.steps")
    one_error_line(cli("train", "digits", "--out", run, *digits("train.lr=0.05"), "--change", "train.lr"),
                   "train.lr cannot change on resume")
    assert tree(run) == before
    ran = cli("train", "digits", "--out", run, *digits("train.steps=3", "train.log_every=7", "eval.n_samples=12"),
              "--change", "train.steps")
    assert ran.code == 0, ran.err
    assert "3 steps" in (run / "report.md").read_text()


def test_eval_takes_no_training_settings_and_no_key_twice(digits_run, cli):
    one_error_line(cli("eval", digits_run, "train.steps=999999"), "train.steps cannot change here")
    one_error_line(cli("eval", digits_run, "sampler.steps=3", "sampler.steps=4"), "sampler.steps is given twice")
    one_error_line(cli("train", "digits", "train.lr=0.1", "train.lr=0.2"), "train.lr is given twice")


def test_the_report_gives_the_steps_the_evaluated_checkpoint_had(tmp_path, cli):
    run = tmp_path / "run"
    ran = cli("train", "digits", "--out", run, *digits("train.steps=4", "train.checkpoint_every=2"))
    assert ran.code == 0, ran.err
    import shutil

    shutil.rmtree(list_checkpoints(run)[-1])  # as if killed before step 4 was kept
    assert cli("eval", run).code == 0
    assert "2 of 4 (stopped early) steps" in (run / "report.md").read_text()


# 8. output paths --------------------------------------------------------------------------------------
def test_an_empty_out_is_refused_and_writes_nothing(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_error_line(cli("train", "digits", "--out", "", *digits()), "argument --out: is empty")
    one_error_line(cli("train", "digits", "--out", "  ", *digits()), "is empty")
    assert list(tmp_path.iterdir()) == []


def test_sample_out_a_folder_a_bare_name_and_a_wrong_suffix(tmp_path, digits_run, cli):
    folder = tmp_path / "out"
    folder.mkdir()
    ran = cli("sample", digits_run, "--n", "2", "--out", folder)
    assert ran.code == 0 and ran.out.strip() == f"wrote {folder / 'samples.png'}"
    assert (folder / "samples.png").is_file()
    ran = cli("sample", digits_run, "--n", "2", "--out", tmp_path / "bare")
    assert ran.code == 0 and ran.out.strip() == f"wrote {tmp_path / 'bare.png'}"
    one_error_line(cli("sample", digits_run, "--n", "2", "--out", tmp_path / "x.jpg"), "writes .png files, not .jpg")
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path / "x.png").exists()
