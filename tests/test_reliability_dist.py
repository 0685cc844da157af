"""A lost peer ends a run of several processes with one line, soon: `unmask train digits` on two
gloo/CPU processes (started as torchrun starts them: RANK, WORLD_SIZE, MASTER_ADDR/PORT), where rank 1
freezes or dies at step AT through a hook this file puts in front of the command line.

- rank 1 sleeps forever: rank 0 waits `train.timeout` seconds at the next collective, then exits
  with code 2 and one line naming the timeout (not PyTorch's 30 minutes, not a gloo traceback);
- rank 1 exits at once (a crash, a killed node): rank 0 exits with code 2 and one line, within
  seconds, long before its timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from unmask.errors import UnmaskError
from unmask.train import TrainConfig
from unmask.train.distributed import lost_contact, lost_peer

pytestmark = pytest.mark.dist

TINY = ["train.steps=4", "train.warmup=1", "model.dim=16", "model.depth=1", "model.heads=2", "train.batch_size=16",
        "eval.n_samples=10", "sampler.steps=1"]
AT = 2  # rank 1 stops before training step AT (counted from 0)

# the test hook: only these processes run it, in front of the real command line
HOOK = """
import os, sys, time
from unmask.cli import main
from unmask.train.trainer import Trainer

step = Trainer.train_step

def train_step(self):
    if self.procs.rank == 1 and self.step == {at}:
        {stop}
    return step(self)

Trainer.train_step = train_step
sys.exit(main(sys.argv[1:]))
"""
FREEZE = "time.sleep(3600)"
DIE = "os._exit(1)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_two(tmp_path, stop: str, timeout: float) -> list[subprocess.Popen]:
    port = free_port()
    code = HOOK.format(at=AT, stop=stop)
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1",
               "CUDA_VISIBLE_DEVICES": ""}
        cmd = [sys.executable, "-c", code, "train", "digits", "--out", str(tmp_path / "run"), "--no-progress",
               *TINY, f"train.timeout={timeout:g}"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    return procs


def wait_for_both(procs: list[subprocess.Popen], limit: float) -> list[float | None]:
    """Seconds until each process ended, polled until rank 0 ends (None: still running then, or after
    `limit`). Their pipes are read only at the end: the tiny runs print far less than a pipe holds."""
    begin, ended = time.monotonic(), [None, None]
    while time.monotonic() - begin < limit and ended[0] is None:
        for i, p in enumerate(procs):
            if ended[i] is None and p.poll() is not None:
                ended[i] = time.monotonic() - begin
        time.sleep(0.05)
    return ended


def finish(procs: list[subprocess.Popen]) -> list[tuple[int | None, str]]:
    """Kill what still runs (a frozen rank); (exit code, stderr) of each."""
    out = []
    for p in procs:
        if p.poll() is None:
            p.kill()
        _, err = p.communicate(timeout=30)
        out.append((p.returncode, err))
    return out


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def test_a_frozen_peer_stops_the_run_after_the_timeout(tmp_path):
    timeout = 5
    procs = start_two(tmp_path, FREEZE, timeout)
    try:
        ended = wait_for_both(procs, limit=timeout + 90)  # two torch start-ups on a loaded machine take a while
    finally:
        (code, err), (code1, _) = finish(procs)
    assert ended[0] is not None, "rank 0 still waited after the timeout"
    assert ended[1] is None  # rank 1 froze (and was killed here)
    assert code == 2, err[-3000:]
    line = one_error_line(err)
    print(f"rank 0 ended after {ended[0]:.1f} s: {line}")
    assert line.startswith("unmask: error: lost contact with another process (this is rank 0 of 2)"), line
    assert f"no reply within train.timeout={timeout} s" in line and line.endswith("the last checkpoint is kept")


def test_a_dead_peer_stops_the_run_at_once(tmp_path):
    timeout = 120  # far longer than the test: rank 0 must not wait for it
    procs = start_two(tmp_path, DIE, timeout)
    try:
        ended = wait_for_both(procs, limit=100)  # < timeout; 'at once' is checked against rank 1's end below
    finally:
        (code, err), (code1, _) = finish(procs)
    assert ended[1] is not None and code1 == 1  # rank 1 died at step AT
    assert ended[0] is not None and ended[0] - ended[1] < 10, ended
    assert code == 2, err[-3000:]
    line = one_error_line(err)
    print(f"rank 0 ended {ended[0] - ended[1]:.1f} s after rank 1: {line}")
    assert line.startswith("unmask: error: lost contact with another process (this is rank 0 of 2)"), line
    assert "train.timeout" not in line and "Traceback" not in err


# the pieces, without processes ---------------------------------------------------------------------
GLOO_TIMEOUT = "[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 5000ms " \
               "for recv operation to complete"
GLOO_CLOSED = "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer " \
              "[127.0.0.1]:2445. This is typically caused by a remote worker crashing. Check the logs"


def test_the_timeout_is_a_train_setting_checked_like_the_others():
    from unmask.config import validate

    assert TrainConfig().timeout == 300.0
    validate(TrainConfig(timeout=5.0))
    for bad in (0.5, float("nan"), -1.0):
        with pytest.raises(UnmaskError, match="timeout"):
            validate(TrainConfig(timeout=bad))


def test_gloo_errors_of_a_lost_peer_read_as_one_line():
    assert lost_peer(RuntimeError(GLOO_TIMEOUT)) and lost_peer(RuntimeError(GLOO_CLOSED))
    assert not lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x2)"))
    assert not lost_peer(ValueError("Timed out"))
    closed = str(lost_contact(RuntimeError(GLOO_CLOSED), step=12))
    assert closed == ("lost contact with another process (this is rank 0 of 1) at step 12: Connection closed by "
                      "peer [127.0.0.1]:2445; the last checkpoint is kept")
    timed_out = str(lost_contact(RuntimeError(GLOO_TIMEOUT)))
    assert "no reply within train.timeout=" in timed_out and "Timed out waiting 5000ms" in timed_out
    assert "\n" not in timed_out and "[" not in timed_out
