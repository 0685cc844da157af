"""One method, one seed, trained once: how the figure benchmarks that compare methods over seeds
(image_text, urfound, aclip, violet, mask_proposal) run, time and keep each run.

Every run lives in RUNS/METHOD-sSEED; its `result.json` holds the method's figures and the CPU seconds
of training and of evaluation. A run whose `result.json` exists is read back, not redone, so an
interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from unmask.train.trainer import TrainConfig, fit


def budget_arguments(p: argparse.ArgumentParser, *, steps: int, batch: int, dim: int, depth: int, methods,
                     runs: str, lr: float = 1e-3, warmup: int = 30) -> None:
    """The options every such benchmark has: seeds, the training budget, the width and the methods."""
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--dim", type=int, default=dim)
    p.add_argument("--depth", type=int, default=depth)
    p.add_argument("--methods", nargs="+", default=list(methods), choices=list(methods))
    p.add_argument("--runs", type=Path, default=Path(runs))


def run_once(method: str, seed: int, args, build: Callable, train: dict,
             evaluate: Callable[[object], dict]) -> dict:
    """Train `build()` (an objective) on `train` for args' budget with `seed`, then `evaluate(objective)`.

    Returns {"method", "seed", **figures, "train_cpu_s", "eval_cpu_s"}; read from
    RUNS/METHOD-sSEED/result.json when that run is done.
    """
    folder = args.runs / f"{method}-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    objective = build()
    tc = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, seed=seed, log_every=50)
    c0 = time.process_time()
    fit(objective, train, tc, folder, {"method": method, **vars(args) | {"runs": str(args.runs)}}, progress=False)
    c1 = time.process_time()
    result = {"method": method, "seed": seed, **evaluate(objective)}
    result |= {"train_cpu_s": c1 - c0, "eval_cpu_s": time.process_time() - c1}
    done.write_text(json.dumps(result, indent=1))
    figures = "  ".join(f"{k} {v:.3f}" for k, v in result.items() if isinstance(v, float) and not k.endswith("cpu_s"))
    print(f"{method:13s} seed {seed}: {figures}  ({result['train_cpu_s']:.0f} + {result['eval_cpu_s']:.0f} CPU s)",
          flush=True)
    return result


def column(results: dict[str, list[dict]], method: str, key: str) -> list[float]:
    """One figure of one method, a value per seed in the order the seeds ran."""
    return [r[key] for r in results[method]]


def keep_table(runs: Path, text: str) -> None:
    """Print the comparison's Markdown table and keep it as RUNS/table.md."""
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "table.md").write_text(text)
    print(text)
