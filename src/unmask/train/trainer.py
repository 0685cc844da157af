"""The one training loop: AdamW, linear warmup then cosine decay, gradient clipping, optional EMA,
CSV metrics, a progress bar and resumable checkpoints, on one process or many (`distributed.py`).

Every random draw of step k (batch order, masks) comes from generators seeded by (seed, k, micro-batch),
and the learning rate is a function of k, so a run resumed from a checkpoint reaches the same weights,
bit for bit, as one that never stopped. An objective with a method `begin_step(k)` is told k before
the forward passes of step k (a rule that changes over training, as Masked Thought's mask rate): a
Python int, so telling it reads nothing from the device, and resumed runs tell the same k.

Host syncs only where a human reads a number (STYLE habit 11): a step reads nothing from the device.
Metrics stay tensors there, and are gathered over processes and read in one go at a logged step. A
non-finite loss or gradient norm is recorded on the device (first step, what, value) and skips the
update there (fused AdamW's `found_inf`, as AMP's grad scaler), so the weights keep their last finite
values; the record is read with the metrics, before every checkpoint and at the end, and stops the
run with an error naming that step. No checkpoint is written after it; earlier ones stay as they are.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import option, validate
from ..errors import UnmaskError
from ..objectives.base import as_metric
from . import distributed
from .board import open_board
from .checkpoint import list_checkpoints, load_checkpoint, newest_whole, save_checkpoint
from .lock import hold
from .metrics_csv import MetricsCsv
from .resume_rules import check_changes, check_resume

FUSED_DEVICES = ("cpu", "cuda")  # where fused AdamW runs, and so can skip a non-finite step on the device


@dataclass(frozen=True)
class TrainConfig:
    steps: int = option(1000, lo=1, help="optimizer steps")
    batch_size: int = option(128, lo=1, help="examples per step")
    lr: float = option(1e-3, lo=0, lo_open=True, help="peak learning rate")
    min_lr_ratio: float = option(0.1, lo=0.0, hi=1.0, help="final lr as a share of the peak")
    warmup: int = option(50, lo=0, help="linear warmup steps")
    weight_decay: float = option(0.05, lo=0.0, help="AdamW weight decay")
    beta2: float = option(0.95, lo=0.0, hi=1.0, hi_open=True, help="AdamW beta2")
    grad_clip: float = option(1.0, lo=0.0, help="max gradient norm; 0 turns clipping off")
    ema: float = option(0.0, lo=0.0, hi=1.0, help="EMA decay; 0 turns EMA off")
    seed: int = option(0, lo=0, help="seed of every random draw")
    log_every: int = option(50, lo=1, help="steps between metric rows")
    checkpoint_every: int = option(0, lo=0, help="steps between checkpoints; 0: only at the end")
    keep: int = option(2, lo=1, help="checkpoints kept")
    parallel: str = option("ddp", choices=distributed.PARALLEL, help="under torchrun: ddp (replicate) or fsdp (shard)")
    micro_batch: int = option(0, lo=0, help="examples per forward pass; 0: the batch split evenly across processes")
    precision: str = option("auto", choices=distributed.PRECISIONS,
                            help="forward pass in bf16 autocast: auto (on a GPU only), bf16 (a CPU too: "
                                 "fast with AMX), fp32")
    log: str = option("csv", choices=("csv", "tensorboard"),
                      help="metrics.csv always; tensorboard also writes TensorBoard events (extra: tensorboard)")
    timeout: float = option(300.0, lo=1.0,
                            help="seconds a process waits for the others (a frozen or lost peer) before the run stops")


def step_generator(seed: int, step: int, stream: int = 0, micro: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, step, stream, micro-batch). The CPU generator keeps
    the low 32 bits of its seed, so micro-batches step by an odd constant (2^32 / golden ratio) that
    spreads them over all 32 bits."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 97 + stream + micro * 0x9E3779B1) % (2**63 - 1))
    return g


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warmup to `lr` (step k < warmup trains at lr * (k + 1) / warmup), then cosine decay that
    reaches `lr * min_lr_ratio` at step `steps`, one past the last trained step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of step `step`'s batch: epochs are fresh permutations seeded by (seed, epoch)."""
    first = step * batch_size
    out, pos = [], first
    while pos < first + batch_size:
        epoch, offset = divmod(pos, n)
        perm = epoch_order(n, seed, epoch)
        take = min(n - offset, first + batch_size - pos)
        out.append(perm[offset : offset + take])
        pos += take
    return torch.cat(out).long()


@functools.lru_cache(maxsize=2)  # two: a batch may span an epoch's end
def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Int[n], the order of epoch `epoch`, drawn once and kept: drawing it anew every step costs O(n)
    (0.16 s for the 8M windows of a billion-token shard set). int32 below 2^31 halves what is kept;
    randperm draws the same order in either dtype. Callers get copies (`torch.cat`)."""
    dtype = torch.int32 if n < 2**31 else torch.long
    return torch.randperm(n, generator=step_generator(seed, epoch, stream=1), dtype=dtype)


class Trainer:
    """Train `objective` (an nn.Module mapping (batch, generator) -> (loss, metrics)) on `data`,
    a dict of tensors sharing their first dimension, writing into `run_dir`.

    Under torchrun the objective is wrapped in DDP or FSDP (`cfg.parallel`), each process computes its
    share of every step's batch, and only rank 0 logs and writes checkpoints. `fit()` is the last thing
    the other processes do: they leave once training ends, so whatever follows (evaluation, figures)
    runs once, on rank 0, with the final weights in `objective`.
    """

    def __init__(self, objective: nn.Module, data: dict, cfg: TrainConfig, run_dir, run_config: dict,
                 progress: bool = True, changes=frozenset()):
        validate(cfg)
        sizes = {k: len(v) for k, v in data.items()}
        if not sizes or min(sizes.values()) == 0:
            raise UnmaskError("the training data is empty")
        if len(set(sizes.values())) != 1:
            raise UnmaskError(f"data tensors differ in length: {sizes}")
        self.objective, self.data, self.cfg = objective, data, cfg
        self.n = next(iter(sizes.values()))
        self.run_dir = Path(run_dir)
        self.run_config = run_config
        self.progress = progress
        self.changes = frozenset(changes)  # settings allowed to differ from the checkpoint's
        check_changes(self.changes)
        self.micro_size, self.micro = distributed.micro_batches(
            cfg.batch_size, cfg.micro_batch, distributed.world_size(), distributed.rank())
        first = next(objective.parameters(), None)
        self.home = first.device if first is not None else torch.device("cpu")
        self.procs = distributed.setup(self.home, self.cfg.timeout)
        self.module = distributed.wrap(objective, cfg.parallel, self.procs, cfg.precision)  # what the loop calls
        self.inner = distributed.unwrap(self.module)  # its state_dict has the objective's key names
        decay = [p for p in self.inner.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.inner.parameters() if p.requires_grad and p.ndim < 2]
        # fused: one kernel per step, and it skips the update on the device when `found_inf` is set
        self.fused = self.procs.device.type in FUSED_DEVICES
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=(0.9, cfg.beta2), fused=self.fused or None,
        )
        self.ema = {k: v.detach().clone() for k, v in self.inner.state_dict().items()} if cfg.ema else None
        self.step = 0
        self.metrics = MetricsCsv(self.run_dir / "metrics.csv")
        self.board = None  # TensorBoard writer (train.log=tensorboard), on rank 0
        self.saved_step = None  # step of the checkpoint that holds the current weights
        # the first non-finite step, on the device: (step, 1 = loss or 2 = gradient norm, its value); inf: none
        self.nonfinite = torch.tensor([math.inf, 0.0, 0.0], device=self.procs.device)

    # checkpoints ------------------------------------------------------------------------------
    def _optimizer_tensors(self) -> tuple[dict, dict]:
        sd = self.optimizer.state_dict()
        tensors, scalars = {}, {}
        for pid, slots in sd["state"].items():
            for name, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"{pid}.{name}"] = distributed.full_tensor(value)
                else:
                    scalars[f"{pid}.{name}"] = value
        return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (every process gathers, rank 0 writes)."""
        model = distributed.gather_state(self.inner.state_dict())
        opt_tensors, opt_json = self._optimizer_tensors()
        ema = distributed.gather_state(self.ema) if self.ema is not None else None
        self.saved_step = self.step
        if not self.procs.main:
            return None
        tensors = {"model": model, "optimizer": opt_tensors}
        if ema is not None:
            tensors["ema"] = ema
        state = {"seed": self.cfg.seed, "optimizer": opt_json, "train": asdict(self.cfg)}
        return save_checkpoint(self.run_dir, self.step, tensors, self.run_config, state, self.cfg.keep)

    def resume(self) -> bool:
        """Load the newest whole checkpoint of `run_dir`, if any. True if one was loaded. Broken
        checkpoints are skipped with a warning; if every one is broken, that is an error."""
        ckpt, broken = newest_whole(self.run_dir)
        for path, problem in broken:
            if self.procs.main:
                warnings.warn(f"skipping checkpoint {path}: {problem}", stacklevel=2)
        if ckpt is None:
            if broken:
                path, problem = broken[0]
                raise UnmaskError(f"no checkpoint in {path.parent} is whole ({path.name}: {problem}); "
                                  "move them away or start over with --fresh")
            return False
        tensors, config, state = load_checkpoint(ckpt)
        self._check_same_run(ckpt, config)
        check_resume(self.run_dir, ckpt, config.get("settings", {}), self.run_config.get("settings", {}),
                     state.get("step", 0), self.cfg.steps, self.changes)
        try:
            self._load_model(ckpt, tensors["model"])
            self._load_optimizer(ckpt, tensors.get("optimizer", {}), state["optimizer"])
            if self.ema is not None and "ema" in tensors:
                self.ema = {k: distributed.shard_like(v.to(self.ema[k].device), self.ema[k])
                            for k, v in tensors["ema"].items()}
            self.step = int(state["step"])
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise UnmaskError(f"checkpoint {ckpt} cannot be loaded: {e.__class__.__name__} {e}") from None
        self.saved_step = self.step
        return True

    def _check_same_run(self, ckpt: Path, config: dict) -> None:
        for part in ("recipe", "model"):
            saved, here = config.get(part), self.run_config.get(part)
            if saved == here:
                continue
            what = part
            if isinstance(saved, dict) and isinstance(here, dict):
                key = sorted(k for k in saved.keys() | here.keys() if saved.get(k) != here.get(k))[0]
                what, saved, here = f"{part} {key}", saved.get(key), here.get(key)
            raise UnmaskError(
                f"checkpoint {ckpt} belongs to another recipe or model: {what} is {_short(saved)} there, "
                f"{_short(here)} here; use a new --out folder or --fresh")

    def _load_model(self, ckpt: Path, weights: dict) -> None:
        ref = self.inner.state_dict()
        for key in sorted(ref.keys() ^ weights.keys()):
            where = "missing from" if key in ref else "unexpected in"
            raise UnmaskError(f"checkpoint {ckpt} does not fit the model: {key} is {where} it")
        for key, value in weights.items():
            if tuple(value.shape) != tuple(ref[key].shape):
                raise UnmaskError(f"checkpoint {ckpt} does not fit the model: {key} has shape "
                                  f"{tuple(value.shape)} there, {tuple(ref[key].shape)} here")
        self.inner.load_state_dict({k: distributed.shard_like(v, ref[k]) for k, v in weights.items()})

    def _load_optimizer(self, ckpt: Path, tensors: dict, meta: dict) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        slots: dict[int, dict] = {}
        for key, value in tensors.items():
            pid, name = key.split(".", 1)
            param = params[int(pid)]
            if name != "step":
                if tuple(value.shape) != tuple(param.shape):
                    raise ValueError(f"optimizer state {key} has shape {tuple(value.shape)}, the parameter "
                                     f"{tuple(param.shape)}")
                value = distributed.shard_like(value.to(param.device), param)
            slots.setdefault(int(pid), {})[name] = value
        for key, value in meta["scalars"].items():
            pid, name = key.split(".", 1)
            slots.setdefault(int(pid), {})[name] = value
        self.optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})

    # the loop ---------------------------------------------------------------------------------
    def _log(self, row: dict) -> None:
        self.metrics.append(row)
        if self.board is not None:
            self.board.scalars(row)

    def train_step(self) -> dict:
        """One optimizer step. Returns {"step", "lr", each metric and "grad_norm"}: the metrics as
        0-dim tensors on the device, averaged over this process's micro-batches; nothing is read."""
        cfg, procs = self.cfg, self.procs
        idx = batch_indices(self.n, cfg.batch_size, cfg.seed, self.step)  # the global batch, on every process
        for v in self.data.values():  # data that reads ahead (data/windows.py) hears which step is read now
            if hasattr(v, "reading_step"):
                v.reading_step(self.step)
        if hasattr(self.inner, "begin_step"):  # an objective whose rule moves with the step (Masked Thought's ramp)
            self.inner.begin_step(self.step)
        lr = learning_rate(cfg, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        losses = torch.zeros((), device=procs.device)
        for j in self.micro:
            rows = idx[j * self.micro_size : (j + 1) * self.micro_size]
            batch = {k: v[rows].to(procs.device, non_blocking=True) for k, v in self.data.items()}
            with distributed.gradient_sync(self.module, sync=j == self.micro[-1], step=self.step + 1):
                with distributed.autocast(procs.device, cfg.precision):
                    loss, metrics = self.module(batch, generator=step_generator(cfg.seed, self.step, micro=j))
                (loss / len(self.micro)).backward()
            losses += loss.detach().float() / len(self.micro)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + as_metric(v, losses).float() / len(self.micro)
        # max_norm inf measures without clipping (the grads are multiplied by exactly 1)
        norm = nn.utils.clip_grad_norm_(self.inner.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        sums["grad_norm"] = distributed.total_norm(norm)
        skip = self._record(losses, sums["grad_norm"])
        if self.fused:
            self.optimizer.found_inf = skip.float()
        self.optimizer.step()
        if self.ema is not None:
            keep = (1 - cfg.ema) * ~skip  # no move towards weights the update skipped
            with torch.no_grad():
                for k, v in self.inner.state_dict().items():
                    if v.dtype.is_floating_point:
                        self.ema[k].lerp_(v, keep.to(v.dtype))
                    else:
                        self.ema[k].copy_(torch.where(skip, self.ema[k], v))
        self.step += 1
        return {"step": self.step, "lr": lr, **sums}

    def _record(self, loss: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        """Note this step in the non-finite record if its mean loss or gradient norm is not finite
        (and no earlier step was). Returns Bool[], on the device: a step so far was not finite."""
        bad_loss, bad_norm = ~torch.isfinite(loss), ~torch.isfinite(norm.float())
        entry = torch.stack([torch.full_like(loss, self.step), torch.where(bad_loss, 1.0, 2.0),
                             torch.where(bad_loss, loss, norm.float())])
        first = (bad_loss | bad_norm) & torch.isinf(self.nonfinite[0])
        self.nonfinite = torch.where(first, entry, self.nonfinite)
        return torch.isfinite(self.nonfinite[0])

    def read(self, row: dict) -> dict:
        """The one host sync of a logged step: `row`'s tensor metrics, averaged over processes, and
        the non-finite record, in one read (every process must call it). Raises if a step so far had
        a non-finite loss or gradient norm; returns `row` with Python floats."""
        names = [k for k, v in row.items() if torch.is_tensor(v)]
        local = torch.cat([torch.stack([row[k].float() for k in names]) if names else self.nonfinite[:0],
                           self.nonfinite])
        rows = distributed.gather_over_processes(local, self.procs, step=row["step"]).tolist()  # [W, K + 3]
        step, what, value = min((r[-3:] for r in rows), key=lambda r: r[0])
        if math.isfinite(step):
            raise UnmaskError(f"the {'loss' if what == 1 else 'gradient norm'} is {value} at step {int(step)}; "
                              f"training stopped, {self._last_good()} (try a lower lr)")
        means = [sum(r[i] for r in rows) / len(rows) for i in range(len(names))]
        return {**row, **dict(zip(names, means, strict=True))}

    def _last_good(self) -> str:
        ckpts = list_checkpoints(self.run_dir)
        return f"the last good checkpoint {ckpts[-1]} is kept" if ckpts else "before any checkpoint was written"

    def fit(self, resume: bool = True, stop_after: int | None = None) -> dict:
        """Train to `cfg.steps` (or `stop_after` more steps). Returns the last step's metrics, as floats."""
        with hold(self.run_dir, self.procs.rank):
            try:
                return self._fit(resume, stop_after)
            finally:
                if self.board is not None:
                    self.board.close()
                    self.board = None

    def _fit(self, resume: bool, stop_after: int | None) -> dict:
        if resume:
            self.resume()
        if self.procs.main:
            self.metrics.truncate(self.step)
            self.board = open_board(self.cfg.log, self.run_dir, self.step)
        last, read = {}, {}
        end = self.cfg.steps if stop_after is None else min(self.cfg.steps, self.step + stop_after)
        show = self.progress and self.procs.main
        bar = tqdm(total=end, initial=self.step, disable=not show, desc="train", leave=False)
        while self.step < end:
            last = self.train_step()
            bar.update(1)
            if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                read = self.read(last)
                if self.procs.main:
                    self._log(read)
                    if "loss" in read:
                        bar.set_postfix(loss=f"{read['loss']:.4f}")
            if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                read = self._read_once(last, read)  # no checkpoint after a non-finite step
                self.save()
        bar.close()
        if self.step == self.cfg.steps and self.saved_step != self.step:
            read = self._read_once(last, read)
            self.save()
        if last:
            read = self._read_once(last, read)
        self._finish()
        return read

    def _read_once(self, last: dict, read: dict) -> dict:
        """`read` if it is the current step's, else `self.read(last)`: one read per step at most."""
        return read if read and read.get("step") == self.step else self.read(last)

    def _finish(self) -> None:
        """Final weights into `objective`, on the device it came on, and the EMA as whole tensors there.
        Under torchrun the process group then ends and every process but rank 0 leaves."""
        if self.module is self.objective and self.procs.device == self.home:
            return
        model = distributed.gather_state(self.inner.state_dict())
        if self.ema is not None:
            self.ema = {k: v.to(self.home) for k, v in distributed.gather_state(self.ema).items()}
        if self.inner is not self.objective:  # FSDP trained a sharded copy
            self.objective.load_state_dict(model)
        self.objective.to(self.home)
        main = self.procs.main
        distributed.teardown()
        self.procs = distributed.Processes(0, 0, 1, self.home)
        self.module = self.inner = self.objective
        if not main:
            raise SystemExit(0)

    def eval_state_dict(self) -> dict:
        """The weights to evaluate: the EMA ones if EMA is on."""
        return self.ema if self.ema is not None else self.objective.state_dict()


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fit(objective: nn.Module, data: dict, config: TrainConfig, run_dir: Path, run_config: dict,
        progress: bool = True, changes=frozenset()) -> nn.Module:
    """Train `objective` on `data` with the one Trainer (resuming the run found in `run_dir`), then load
    the weights to evaluate (EMA ones when EMA is on) into it; returns it. What every recipe's `train` does."""
    trainer = Trainer(objective, data, config, run_dir, run_config, progress=progress, changes=changes)
    trainer.fit()
    objective.load_state_dict(trainer.eval_state_dict())
    return objective
