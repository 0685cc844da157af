"""The one training loop: AdamW, linear warmup then cosine decay, gradient clipping, optional EMA,
CSV metrics, a progress bar and resumable checkpoints.

Every random draw of step k (batch order, masks) comes from generators seeded by (seed, k), and the
learning rate is a function of k, so a run resumed from a checkpoint reaches the same weights, bit
for bit, as one that never stopped.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import option, validate
from ..errors import UnmaskError
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class TrainConfig:
    steps: int = option(1000, lo=1, help="optimizer steps")
    batch_size: int = option(128, lo=1, help="examples per step")
    lr: float = option(1e-3, lo=0, lo_open=True, help="peak learning rate")
    min_lr_ratio: float = option(0.1, lo=0.0, hi=1.0, help="final lr as a share of the peak")
    warmup: int = option(50, lo=0, help="linear warmup steps")
    weight_decay: float = option(0.05, lo=0.0, help="AdamW weight decay")
    beta2: float = option(0.95, lo=0.0, hi=1.0, help="AdamW beta2")
    grad_clip: float = option(1.0, lo=0.0, help="max gradient norm; 0 turns clipping off")
    ema: float = option(0.0, lo=0.0, hi=1.0, help="EMA decay; 0 turns EMA off")
    seed: int = option(0, lo=0, help="seed of every random draw")
    log_every: int = option(50, lo=1, help="steps between metric rows")
    checkpoint_every: int = option(0, lo=0, help="steps between checkpoints; 0: only at the end")
    keep: int = option(2, lo=1, help="checkpoints kept")


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, step, stream)."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 97 + stream) % (2**63 - 1))
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
    a dict of tensors sharing their first dimension, writing into `run_dir`."""

    def __init__(self, objective: nn.Module, data: dict, cfg: TrainConfig, run_dir, run_config: dict,
                 progress: bool = True):
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
        decay = [p for p in objective.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in objective.parameters() if p.requires_grad and p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=(0.9, cfg.beta2),
        )
        self.ema = {k: v.detach().clone() for k, v in objective.state_dict().items()} if cfg.ema else None
        self.step = 0

    # checkpoints ------------------------------------------------------------------------------
    def _optimizer_tensors(self) -> tuple[dict, dict]:
        sd = self.optimizer.state_dict()
        tensors, scalars = {}, {}
        for pid, slots in sd["state"].items():
            for name, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"{pid}.{name}"] = value
                else:
                    scalars[f"{pid}.{name}"] = value
        return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}

    def save(self) -> Path:
        opt_tensors, opt_json = self._optimizer_tensors()
        tensors = {"model": self.objective.state_dict(), "optimizer": opt_tensors}
        if self.ema is not None:
            tensors["ema"] = self.ema
        state = {"seed": self.cfg.seed, "optimizer": opt_json, "train": asdict(self.cfg)}
        return save_checkpoint(self.run_dir, self.step, tensors, self.run_config, state, self.cfg.keep)

    def resume(self) -> bool:
        """Load the newest whole checkpoint of `run_dir`, if any. True if one was loaded."""
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            return False
        tensors, config, state = load_checkpoint(ckpt)
        if config.get("recipe") != self.run_config.get("recipe") or config.get("model") != self.run_config.get("model"):
            raise UnmaskError(f"checkpoint {ckpt} belongs to another recipe or model; use a new --out folder")
        self.objective.load_state_dict(tensors["model"])
        slots: dict[int, dict] = {}
        for key, value in tensors.get("optimizer", {}).items():
            pid, name = key.split(".", 1)
            slots.setdefault(int(pid), {})[name] = value
        for key, value in state["optimizer"]["scalars"].items():
            pid, name = key.split(".", 1)
            slots.setdefault(int(pid), {})[name] = value
        self.optimizer.load_state_dict({"state": slots, "param_groups": state["optimizer"]["param_groups"]})
        if self.ema is not None and "ema" in tensors:
            self.ema = tensors["ema"]
        self.step = int(state["step"])
        return True

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
        path = self.run_dir / "metrics.csv"
        if not path.exists():
            return
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        path.unlink()
        for r in rows:
            self._log(r)

    def train_step(self) -> dict:
        cfg = self.cfg
        idx = batch_indices(self.n, cfg.batch_size, cfg.seed, self.step)
        batch = {k: v[idx] for k, v in self.data.items()}
        lr = learning_rate(cfg, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.objective.train()
        loss, metrics = self.objective(batch, generator=step_generator(cfg.seed, self.step))
        if not torch.isfinite(loss):
            raise UnmaskError(f"loss is {loss.item()} at step {self.step}; the last good checkpoint is kept")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            metrics["grad_norm"] = float(nn.utils.clip_grad_norm_(self.objective.parameters(), cfg.grad_clip))
        self.optimizer.step()
        if self.ema is not None:
            with torch.no_grad():
                for k, v in self.objective.state_dict().items():
                    if v.dtype.is_floating_point:
                        self.ema[k].lerp_(v, 1 - cfg.ema)
                    else:
                        self.ema[k].copy_(v)
        self.step += 1
        return {"step": self.step, "lr": lr, **metrics}

    def fit(self, resume: bool = True, stop_after: int | None = None) -> dict:
        """Train to `cfg.steps` (or `stop_after` more steps). Returns the last metrics."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.resume():
            self._truncate_log()
        last = {}
        end = self.cfg.steps if stop_after is None else min(self.cfg.steps, self.step + stop_after)
        bar = tqdm(total=end, initial=self.step, disable=not self.progress, desc="train", leave=False)
        while self.step < end:
            last = self.train_step()
            bar.update(1)
            if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                self._log(last)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                self.save()
        bar.close()
        if self.step == self.cfg.steps and not (
            self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0
        ):
            self.save()
        return last

    def eval_state_dict(self) -> dict:
        """The weights to evaluate: the EMA ones if EMA is on."""
        return self.ema if self.ema is not None else self.objective.state_dict()
