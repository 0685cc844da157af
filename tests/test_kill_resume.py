"""SIGKILL a training process at three random steps and resume it each time: it ends with the same
weights, optimizer state, metrics and evaluation as a run that was never stopped, bit for bit.

The kills land wherever the process happens to be a few milliseconds after the chosen step's
checkpoint appears: in a forward or backward pass, writing metrics.csv, or halfway through writing
the next checkpoint (which checkpoints every step, so that is often).
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from unmask.train.checkpoint import latest_checkpoint, list_checkpoints, newest_whole

STEPS = 30
ARGS = [sys.executable, "-m", "unmask", "train", "digits", "--no-progress", f"train.steps={STEPS}", "train.warmup=5",
        "model.dim=16", "model.depth=1", "model.heads=2", "train.batch_size=16", "eval.n_samples=10",
        "sampler.steps=1", "train.checkpoint_every=1", "train.keep=2", "train.log_every=1"]


def newest_step(run) -> int:
    try:
        names = os.listdir(run / "checkpoints")
    except FileNotFoundError:
        return 0
    return max((int(n[5:]) for n in names if n.startswith("step_")), default=0)


def test_killed_and_resumed_run_equals_an_unbroken_one(tmp_path):
    rng = random.Random(6)
    kills = sorted(rng.sample(range(2, 22), 3))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.Popen([*ARGS, "--out", str(tmp_path / "whole")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env)
    broken = tmp_path / "broken"
    for target in kills:
        proc = subprocess.Popen([*ARGS, "--out", str(broken)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=env)
        while newest_step(broken) < target:
            assert proc.poll() is None, f"stopped before step {target}: {proc.stderr.read()[-2000:]}"
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        # whatever the kill interrupted, every listed checkpoint is whole and the run is unfinished
        ckpt, damaged = newest_whole(broken)
        assert damaged == [] and ckpt is not None and newest_step(broken) < STEPS
        assert len(list_checkpoints(broken)) <= 3  # keep=2, plus one if killed before pruning
    last = subprocess.run([*ARGS, "--out", str(broken)], capture_output=True, text=True, env=env, timeout=300)
    assert last.returncode == 0, last.stderr[-2000:]
    assert whole.wait(timeout=300) == 0, whole.stderr.read()[-2000:]

    a, b = latest_checkpoint(tmp_path / "whole"), latest_checkpoint(broken)
    assert a.name == b.name == f"step_{STEPS:08d}"
    for name in ("model.safetensors", "optimizer.safetensors"):
        x, y = load_file(a / name), load_file(b / name)
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), f"{name}: {k}"
    assert (a / "state.json").read_text() == (b / "state.json").read_text()
    assert (tmp_path / "whole" / "metrics.csv").read_text() == (broken / "metrics.csv").read_text()
    assert len((broken / "metrics.csv").read_text().splitlines()) == STEPS + 1  # no row lost or doubled
    assert (tmp_path / "whole" / "metrics.json").read_text() == (broken / "metrics.json").read_text()
    assert not any(p.name.startswith(".tmp") for p in (broken / "checkpoints").iterdir())


@pytest.mark.parametrize("cut", [1, 9])  # the step only; the step and part of the next field
def test_a_metrics_row_cut_short_by_a_kill_is_dropped_on_resume(tmp_path, cut):
    from unmask.layout import Layout
    from unmask.nn import MaskedTokenModel, ModelConfig
    from unmask.objectives import MaskedTokenModeling
    from unmask.train import TrainConfig, Trainer

    def trainer():
        torch.manual_seed(0)
        objective = MaskedTokenModeling(MaskedTokenModel(ModelConfig(6, Layout.seq(8), dim=16, depth=1, heads=2)))
        data = {"tokens": torch.randint(0, 6, (20, 8), generator=torch.Generator().manual_seed(0))}
        cfg = TrainConfig(steps=6, batch_size=4, log_every=1, checkpoint_every=3)
        return Trainer(objective, data, cfg, tmp_path / "run", {"recipe": "toy", "model": {}}, progress=False)

    trainer().fit(stop_after=4)  # rows 1..4, checkpoint 3
    path = tmp_path / "run" / "metrics.csv"
    whole_rows = path.read_text().splitlines()
    path.write_text("\n".join(whole_rows) + "\n" + whole_rows[-1][:cut])  # a kill while writing row 5
    trainer().fit()
    rows = path.read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3", "4", "5", "6"]
    assert rows[1:4] == whole_rows[1:4]
