"""TokenUnify (P30) on the 8x8 digits: the mixture of random-token, next-token and next-all-token
prediction against each term alone, on the same network (`nn.MaskedTokenModel`, the 64 grey levels as
tokens, vocabulary 17) at the same steps, batch and learning rate, 3 seeds; `unify-third` is the
mixture at a third of the steps, the same number of forward passes as one term alone (the mixture
runs three per step). Figure: linear probes (`eval.probe`) of the frozen, mean-pooled features of
the clean held-out digits, with 10 labels per class (mean over 5 draws) and with all labels. Features
are read with bidirectional attention, and also with the causal mask (the reading that next-token
training alone sees).

    .venv/bin/python benchmarks/token_unify.py
    .venv/bin/python benchmarks/token_unify.py --seeds 0 --steps 30

Runs are kept under --runs (default runs/token-unify/ARM-sSEED) and reused when their result.json
exists, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from spread import mean_std

from unmask.data import digits
from unmask.eval.probe import pooled_features, probe
from unmask.layout import Layout
from unmask.nn.masked_model import MaskedTokenModel, ModelConfig
from unmask.objectives.token_unify import TokenUnify
from unmask.train import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

# name -> (what it is, (random, next, next-all) weights, share of the steps)
ARMS = {
    "random": ("random-token prediction alone (masked, ratio 0.5)", (1.0, 0.0, 0.0), 1.0),
    "next": ("next-token prediction alone (causal)", (0.0, 1.0, 0.0), 1.0),
    "next-all": ("next-all-token prediction alone", (0.0, 0.0, 1.0), 1.0),
    "unify": ("TokenUnify: all three, weights 1 (P30)", (1.0, 1.0, 1.0), 1.0),
    "unify-third": ("TokenUnify at 1/3 of the steps (equal forward passes)", (1.0, 1.0, 1.0), 1 / 3),
}


def objective_for(arm: str, seed: int, args) -> TokenUnify:
    torch.manual_seed(seed)
    model = MaskedTokenModel(ModelConfig(vocab_size=digits.LEVELS, layout=Layout.grid(8, 8, name="pixels"),
                                         dim=args.dim, depth=args.depth, heads=args.heads))
    w = ARMS[arm][1]
    return TokenUnify(model, random_weight=w[0], next_weight=w[1], next_all_weight=w[2], ratio=args.ratio)


def probe_scores(objective: TokenUnify | None, seed: int, args) -> dict:
    train, test = digits.load("train"), digits.load("test")
    out = {}
    for reading in ("bi", "causal"):
        def encode(x, causal=reading == "causal"):
            return objective.features(x, causal=causal)
        tr = pooled_features(encode, train.images)
        te = pooled_features(encode, test.images)
        s = probe(tr, train.labels, te, test.labels, shots=10, draws=5, seed=seed)
        out[f"{reading}_linear_few"], out[f"{reading}_linear"] = s.linear_few, s.linear
    return out


def run_one(arm: str, seed: int, args, runs: Path) -> dict:
    out = runs / f"{arm}-s{seed}"
    if (out / "result.json").exists():
        return json.loads((out / "result.json").read_text())
    steps = max(round(args.steps * ARMS[arm][2]), 1)
    cfg = TrainConfig(steps=steps, batch_size=args.batch, lr=args.lr, warmup=min(args.warmup, steps // 2), seed=seed,
                      log_every=max(steps // 4, 1))
    objective = objective_for(arm, seed, args)
    c0 = time.process_time()
    objective = fit(objective, {"tokens": digits.load("train").images}, cfg, out,
                    {"arm": arm, "seed": seed, **vars(args) | {"runs": str(args.runs)}}, progress=False)
    cpu_ms = (time.process_time() - c0) * 1000 / steps
    objective.eval()
    with torch.no_grad():
        result = {"arm": arm, "seed": seed, "steps": steps, "cpu_ms_per_step": cpu_ms,
                  **probe_scores(objective, seed, args)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{arm:11s} seed {seed}: 10-shot linear {result['bi_linear_few']:.3f} (causal reading "
          f"{result['causal_linear_few']:.3f})  all-label {result['bi_linear']:.3f}  {cpu_ms:.0f} CPU ms/step",
          flush=True)
    return result


def random_init(seed: int, args, runs: Path) -> dict:
    out = runs / f"random-init-s{seed}.json"
    if out.exists():
        return json.loads(out.read_text())
    objective = objective_for("unify", seed, args).eval()
    with torch.no_grad():
        result = {"arm": "random-init", "seed": seed, **probe_scores(objective, seed, args)}
    runs.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result



def table(results: dict[str, list[dict]], init: list[dict], args) -> str:
    lines = [
        f"8x8 digits as 64 grey-level tokens (vocabulary 17), {len(digits.load('train').labels)} train / "
        f"{len(digits.load('test').labels)} held-out; width {args.dim}, depth {args.depth}, {args.heads} heads, "
        f"{args.steps} steps of batch {args.batch}, lr {args.lr}, warmup {args.warmup}, random-token ratio "
        f"{args.ratio}; seeds {', '.join(map(str, args.seeds))}. delta = unify minus the arm, per seed (paired).",
        "",
        "| arm | steps | 10-shot linear | unify - arm (per seed) | all-label linear | unify - arm (per seed) "
        "| 10-shot, causal reading | all-label, causal reading | CPU ms/step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    unify = {r["seed"]: r for r in results.get("unify", [])}

    def delta(rows, key):
        if not unify or rows is results.get("unify"):
            return "—"
        d = [unify[r["seed"]][key] - r[key] for r in rows]
        return f"{mean_std(d)} ({', '.join(f'{x:+.3f}' for x in d)})"

    for arm, rows in results.items():
        lines.append(
            f"| {ARMS[arm][0]} | {rows[0]['steps']} | {mean_std([r['bi_linear_few'] for r in rows])} | "
            f"{delta(rows, 'bi_linear_few')} | {mean_std([r['bi_linear'] for r in rows])} | "
            f"{delta(rows, 'bi_linear')} | "
            f"{mean_std([r['causal_linear_few'] for r in rows])} | {mean_std([r['causal_linear'] for r in rows])} | "
            f"{statistics.mean(r['cpu_ms_per_step'] for r in rows):.0f} |")
    lines.append(f"| same network, random init | 0 | {mean_std([r['bi_linear_few'] for r in init])} | | "
                 f"{mean_std([r['bi_linear'] for r in init])} | | {mean_std([r['causal_linear_few'] for r in init])} | "
                 f"{mean_std([r['causal_linear'] for r in init])} | |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=list(ARMS), help="arms to run (default all)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--runs", type=Path, default=Path("runs/token-unify"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(describe(), flush=True)
    results = {arm: [run_one(arm, s, args, args.runs) for s in args.seeds] for arm in (args.only or ARMS)}
    init = [random_init(s, args, args.runs) for s in args.seeds]
    print(table(results, init, args))


if __name__ == "__main__":
    main()
