"""The one training loop: AdamW, linear warmup then cosine decay, gradient clipping, optional EMA,
CSV metrics, a progress bar and resumable checkpoints, on one process or many (`distributed.py`).

Every random draw of step k (batch order, masks) comes from generators seeded by (seed, k, micro-batch),
and the learning rate is a function of k, so a run resumed from a checkpoint reaches the same weights,
bit for bit, as one that never stopped. A non-finite loss or gradient norm stops the run with an error
that names the step; the checkpoints written before it stay as they are.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import option, validate
from ..errors import UnmaskError
from . import distributed
from .checkpoint import list_checkpoints, load_checkpoint, newest_whole, save_checkpoint


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


_SETTINGS: dict = {}


@contextlib.contextmanager
def trainer_settings(**changes):
    """Every Trainer built inside the block trains with these TrainConfig values: how the command line
    passes settings a recipe does not expose (`parallel=fsdp`, `micro_batch=8`, `keep=5`)."""
    global _SETTINGS
    before = _SETTINGS
    _SETTINGS = {**before, **changes}
    try:
        yield
    finally:
        _SETTINGS = before


def step_generator(seed: int, step: int, stream: int = 0, micro: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, step, stream, micro-batch). The CPU generator keeps
    the low 32 bits of its seed, so micro-batches step by an odd constant (2^32 / golden ratio) that
    spreads them over all 32 bits."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 97 + stream + micro * 0x9E3779B1) % (2**63 - 1))
    return g


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at the last step."""
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
        perm = torch.randperm(n, generator=step_generator(seed, epoch, stream=1))
        take = min(n - offset, first + batch_size - pos)
        out.append(perm[offset : offset + take])
        pos += take
    return torch.cat(out)


class Trainer:
    """Train `objective` (an nn.Module mapping (batch, generator) -> (loss, metrics)) on `data`,
    a dict of tensors sharing their first dimension, writing into `run_dir`.

    Under torchrun the objective is wrapped in DDP or FSDP (`cfg.parallel`), each process computes its
    share of every step's batch, and only rank 0 logs and writes checkpoints. `fit()` is the last thing
    the other processes do: they leave once training ends, so whatever follows (evaluation, figures)
    runs once, on rank 0, with the final weights in `objective`.
    """

    def __init__(self, objective: nn.Module, data: dict, cfg: TrainConfig, run_dir, run_config: dict,
                 progress: bool = True):
        cfg = dataclasses.replace(cfg, **_SETTINGS) if _SETTINGS else cfg
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
        self.micro_size, self.micro = distributed.micro_batches(
            cfg.batch_size, cfg.micro_batch, distributed.world_size(), distributed.rank())
        first = next(objective.parameters(), None)
        self.home = first.device if first is not None else torch.device("cpu")
        self.procs = distributed.setup(self.home)
        self.module = distributed.wrap(objective, cfg.parallel, self.procs, cfg.precision)  # what the loop calls
        self.inner = distributed.unwrap(self.module)  # its state_dict has the objective's key names
        decay = [p for p in self.inner.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.inner.parameters() if p.requires_grad and p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=(0.9, cfg.beta2),
        )
        self.ema = {k: v.detach().clone() for k, v in self.inner.state_dict().items()} if cfg.ema else None
        self.step = 0
        self.saved_step = None  # step of the checkpoint that holds the current weights

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
            if name != "step" and value.shape == param.shape:
                value = distributed.shard_like(value.to(param.device), param)
            slots.setdefault(int(pid), {})[name] = value
        for key, value in meta["scalars"].items():
            pid, name = key.split(".", 1)
            slots.setdefault(int(pid), {})[name] = value
        self.optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})

    # the loop ---------------------------------------------------------------------------------
    def _log(self, row: dict) -> None:
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _truncate_log(self) -> None:
        """Drop rows after the resumed step, and a row cut short by a kill; atomically."""
        path = self.run_dir / "metrics.csv"
        if not path.exists():
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if None not in r and None not in r.values() and _step(r) <= self.step]
            fields = reader.fieldnames
        tmp = path.with_name(".metrics.csv.tmp")
        with tmp.open("w", newline="") as f:
            if rows:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
        if rows:
            os.replace(tmp, path)
        else:
            tmp.unlink()
            path.unlink()

    def train_step(self) -> dict:
        cfg, procs = self.cfg, self.procs
        idx = batch_indices(self.n, cfg.batch_size, cfg.seed, self.step)  # the global batch, on every process
        lr = learning_rate(cfg, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        finite = True
        for j in self.micro:
            rows = idx[j * self.micro_size : (j + 1) * self.micro_size]
            batch = {k: v[rows].to(procs.device) for k, v in self.data.items()}
            with distributed.gradient_sync(self.module, sync=j == self.micro[-1]):
                with distributed.autocast(procs.device, cfg.precision):
                    loss, metrics = self.module(batch, generator=step_generator(cfg.seed, self.step, micro=j))
                finite = finite and bool(torch.isfinite(loss))
                (loss / len(self.micro)).backward()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) / len(self.micro)
        # max_norm inf measures without clipping (the grads are multiplied by exactly 1)
        norm = nn.utils.clip_grad_norm_(self.inner.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        sums["grad_norm"] = distributed.total_norm(norm)
        # every process takes the same decision, so none waits forever in a collective
        values = distributed.mean_over_processes([*sums.values(), 0.0 if finite else 1.0], procs)
        metrics = dict(zip(sums, values[:-1], strict=True))
        if values[-1] > 0 or not math.isfinite(metrics["grad_norm"]):
            what = "loss" if values[-1] > 0 else "gradient norm"
            value = metrics.get("loss", math.nan) if values[-1] > 0 else metrics["grad_norm"]
            raise UnmaskError(f"the {what} is {value} at step {self.step}; training stopped, "
                              f"{self._last_good()} (try a lower lr)")
        self.optimizer.step()
        if self.ema is not None:
            with torch.no_grad():
                for k, v in self.inner.state_dict().items():
                    if v.dtype.is_floating_point:
                        self.ema[k].lerp_(v, 1 - cfg.ema)
                    else:
                        self.ema[k].copy_(v)
        self.step += 1
        return {"step": self.step, "lr": lr, **metrics}

    def _last_good(self) -> str:
        ckpts = list_checkpoints(self.run_dir)
        return f"the last good checkpoint {ckpts[-1]} is kept" if ckpts else "before any checkpoint was written"

    def fit(self, resume: bool = True, stop_after: int | None = None) -> dict:
        """Train to `cfg.steps` (or `stop_after` more steps). Returns the last metrics."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.resume() and self.procs.main:
            self._truncate_log()
        last = {}
        end = self.cfg.steps if stop_after is None else min(self.cfg.steps, self.step + stop_after)
        show = self.progress and self.procs.main
        bar = tqdm(total=end, initial=self.step, disable=not show, desc="train", leave=False)
        while self.step < end:
            last = self.train_step()
            bar.update(1)
            if self.procs.main and (self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps):
                self._log(last)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                self.save()
        bar.close()
        if self.step == self.cfg.steps and self.saved_step != self.step:
            self.save()
        self._finish()
        return last

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


def _step(row: dict) -> float:
    try:
        return int(row["step"])
    except (KeyError, ValueError):
        return math.inf


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fit(objective: nn.Module, data: dict, config: TrainConfig, run_dir: Path, run_config: dict,
        progress: bool = True) -> nn.Module:
    """Train `objective` on `data` with the one Trainer (resuming the run found in `run_dir`), then load
    the weights to evaluate (EMA ones when EMA is on) into it; returns it. What every recipe's `train` does."""
    trainer = Trainer(objective, data, config, run_dir, run_config, progress=progress)
    trainer.fit()
    objective.load_state_dict(trainer.eval_state_dict())
    return objective
