"""Count host syncs: Python reads of a tensor's values (STYLE habit 11). On a GPU each one waits
until every kernel queued before it has run, so a training step should make none, and the trainer
one per logged step.

`count_host_syncs()` patches the Python methods that read values out of a tensor, for the duration
of the block: `Tensor.item`, `Tensor.tolist`, `Tensor.__bool__` (`if t:`, `bool(t)`, `not t`),
`Tensor.__float__`, `Tensor.__int__` and `Tensor.__index__` (a tensor used as a Python int, as in
`x[:, :t]`). It records every call with the tensor's device and the code that made it: the first
frame outside torch's own package, so `f"{t:.3f}"` (torch's `__format__` calls `item`) is charged to
the line that formats, and a read inside `optimizer.step()` to that line.

Not counted, because no Python method is called: the synchronisations inside torch's own kernels.
Boolean indexing (`x[mask]`, `nonzero`, `masked_select`) waits for the device to learn the output's
size; a blocking copy between the host and a device (`t.cpu()`, `t.to("cuda")` without
`non_blocking=True`) waits for the stream; `torch.equal` and `torch.unique` read values. On CUDA,
`torch.cuda.set_sync_debug_mode("warn")` reports those too.

Which calls are syncs (`HostSyncs.syncs`): a read of a tensor that lives on an accelerator always
is. A read of a CPU tensor stalls nothing on a GPU machine, but on a CPU-only machine, where tests
run, every tensor is a CPU tensor, so a CPU read counts too, unless it is made inside host-side mask
code (`HOST_CODE`): maskers draw on the CPU with the step's CPU generator and return a CPU mask
(DESIGN.md), and `nn/visible.py` turns that host mask into index form before it moves to the
device, so their reads of those CPU tensors are host work by contract. On a CPU-only machine the
counter cannot tell when host-side mask code is handed a device tensor instead; on a GPU it can,
since every accelerator read counts wherever it is made (tests/test_host_syncs.py runs the same
check there). Reads inside torch count at the caller's line: the foreach AdamW reads its step
counters (CPU tensors) with `item` at every step, the fused one the trainer uses reads nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

import unmask

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")
TORCH = str(Path(torch.__file__).parent) + os.sep
UNMASK = str(Path(unmask.__file__).parent) + os.sep
HOST_CODE = (UNMASK + "masking" + os.sep, UNMASK + os.path.join("nn", "visible.py"))
HERE = os.path.abspath(__file__)


@dataclass(frozen=True)
class Read:
    method: str  # "item", "__bool__", ...
    device: str  # the tensor's device type: "cpu", "cuda", ...
    file: str  # the first frame outside torch that led to the call
    line: int
    function: str

    @property
    def is_sync(self) -> bool:
        return self.device != "cpu" or not self.file.startswith(HOST_CODE)

    def where(self) -> str:
        name = self.file[len(UNMASK) :] if self.file.startswith(UNMASK) else os.path.basename(self.file)
        return f"{name}:{self.line} {self.function} ({self.method}, {self.device})"


class HostSyncs:
    """What `count_host_syncs` saw: every read (`reads`) and the ones that are syncs (`syncs`)."""

    def __init__(self):
        self.reads: list[Read] = []

    @property
    def syncs(self) -> list[Read]:
        return [r for r in self.reads if r.is_sync]

    @property
    def count(self) -> int:
        """The number of syncs."""
        return len(self.syncs)

    def report(self, reads: list[Read] | None = None) -> str:
        """One line per place, with how often it read: `N x file:line function (method, device)`."""
        counts: dict[str, int] = {}
        for r in self.syncs if reads is None else reads:
            counts[r.where()] = counts.get(r.where(), 0) + 1
        return "\n".join(f"{n:4d} x {place}" for place, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _caller() -> tuple[str, int, str]:
    frame = sys._getframe(2)  # the frame that called the patched method
    while frame is not None and (frame.f_code.co_filename.startswith(TORCH) or
                                 os.path.abspath(frame.f_code.co_filename) == HERE):
        frame = frame.f_back
    if frame is None:
        return "?", 0, "?"
    return os.path.abspath(frame.f_code.co_filename), frame.f_lineno, frame.f_code.co_name


@contextlib.contextmanager
def count_host_syncs():
    """Within the block, count the reads of tensor values into Python; yields a `HostSyncs`."""
    seen = HostSyncs()
    saved = {name: torch.Tensor.__dict__.get(name) for name in READS}

    def patch(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            seen.reads.append(Read(name, self.device.type, *_caller()))
            return original(self, *args, **kwargs)

        read.__name__ = name
        return read

    for name in READS:
        setattr(torch.Tensor, name, patch(name))
    try:
        yield seen
    finally:
        for name, original in saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


def read_steps(steps: int, log_every: int, checkpoint_every: int = 0) -> int:
    """How many steps the trainer reads at: every `log_every`-th and the last (a metrics row), and
    every `checkpoint_every`-th (its check before a checkpoint); one read per step at most."""
    logged = {k for k in range(1, steps + 1) if k % log_every == 0 or k == steps}
    saved = {k for k in range(1, steps + 1) if checkpoint_every and k % checkpoint_every == 0}
    return len(logged | saved)


def assert_sync_budget(objective: torch.nn.Module, data: dict, steps: int = 6, log_every: int = 3,
                       **train) -> HostSyncs:
    """Train `objective` on `data` (a dict of tensors sharing their first dimension; one batch of all
    of them unless `batch_size` says otherwise) for `steps` steps, logging every `log_every`, and
    assert at most one host sync per logged step. That one is the trainer's: it reads the step's
    metrics and its non-finite record in one `tolist`. The checkpoint written at the end adds none:
    it is checked for a non-finite step first, by the read of the last step, which is always logged.
    With `checkpoint_every` in `train`, each checkpoint at a step that is not logged adds its one
    check (`read_steps`). Returns what was counted (`.report()` lists the places)."""
    from unmask.train import TrainConfig, Trainer

    n = len(next(iter(data.values())))
    settings = {"batch_size": n, "lr": 1e-3, "warmup": 0, "precision": "fp32", **train}
    cfg = TrainConfig(steps=steps, log_every=log_every, **settings)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(objective, data, cfg, run_dir, {"recipe": "host-syncs"}, progress=False)
        with count_host_syncs() as seen:
            trainer.fit()
    budget = read_steps(steps, log_every, cfg.checkpoint_every)
    assert seen.count <= budget, (f"{seen.count} host syncs in {steps} steps, at most {budget} allowed (one per "
                                  f"logged or checkpointed step):\n{seen.report()}")
    return seen
